"""Per-dataset defaults (architectures, recipes, validation size) and, later, search spaces."""
