"""cloud/sinks."""
