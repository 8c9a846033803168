"""Models the edge runs: plain arrays and a manifest, fitted with numpy (never a fitting framework)."""
