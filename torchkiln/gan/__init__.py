"""(pack placeholder)"""
