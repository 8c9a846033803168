"""edge/detectors."""
