"""Models of the OCI specifications shared by every layer."""
