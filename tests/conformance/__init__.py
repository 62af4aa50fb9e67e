"""Shared suites that every backend of an interface must pass."""
