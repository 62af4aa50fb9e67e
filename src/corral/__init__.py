"""Corral: a container stack in Python, one package per layer.

``corral.runtime`` is the OCI runtime (``corral-runtime``); ``corral.oci``
holds the OCI models shared by the layers; ``corral._syscalls`` the system
calls Python's ``os`` lacks. See docs/architecture.md.
"""

__version__ = "0.1.0"
