"""The registry client: the OCI distribution spec over HTTP(S), with Docker's
auth, TLS and retry behaviour (see client.py, _http.py, auth.py)."""

from __future__ import annotations

from .blobs import BlobStream
from .client import Client, Manifest

__all__ = ["BlobStream", "Client", "Manifest"]
