"""``corral``: the command line, with Docker's verbs and flags.

Thin by rule: each command parses its flags and calls one library entry
point (corral.image now; the manager later). Like podman, it needs no
daemon and works on the store directly.
"""
