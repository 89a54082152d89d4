"""Reads of annotate, one module per purpose; import them from their modules."""
