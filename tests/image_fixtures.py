"""Fixtures for the image layer's tests (filled in by the registry work)."""
