"""plantwire: shared contracts (wire format, plant model, config loading, metrics) and the CLI."""
