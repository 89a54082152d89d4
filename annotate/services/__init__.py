"""Domain writes of annotate, one module per entity; import them from their modules."""
