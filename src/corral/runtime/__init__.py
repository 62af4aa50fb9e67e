"""corral-runtime: an OCI runtime with runc's command line.

The library (``container``, ``process``, ``rootfs`` ...) does the work; the
``cli`` module only parses arguments and calls one entry point per verb.
"""
