"""cloud/sources."""
