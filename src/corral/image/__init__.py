"""The image layer: references, registries, the content store, unpacking and
snapshots, and turning an image into a bundle for the runtime.

It speaks the OCI image and distribution specifications (and Docker's
schema 2, which is the same model with other media types). It never imports
the manager or the CLI.
"""
