"""Dataset artifacts: what load_data writes and every later stage reads."""
