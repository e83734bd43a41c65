"""The spec language: positioned YAML, field types, validation, error messages."""
