"""Weight loading and key conversion, one module per weight family."""
