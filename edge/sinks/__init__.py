"""edge/sinks."""
