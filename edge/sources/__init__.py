"""edge/sources."""
