"""corral-shim: the supervisor of one running container (docs/dev/manager.md).

It sits between the runtime and whichever front end started the container,
owns the container's stdio or pty, its json-file log and its exit status,
and applies the restart policy, so a container outlives corrald.
"""
