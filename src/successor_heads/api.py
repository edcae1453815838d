"""Public Python API (placeholder while the package is reorganised)."""
