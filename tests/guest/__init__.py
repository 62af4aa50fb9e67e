"""A throwaway qemu guest with a pure cgroup v2 hierarchy (see vm.py)."""
