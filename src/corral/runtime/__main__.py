"""Entry point of the ``corral-runtime`` console script."""

import os
import sys

# The verbs that move a process into a cgroup (see cgroups.warm_up).
_MAKERS = frozenset(("create", "run", "exec"))


def main() -> None:
    argv = sys.argv[1:]
    # First of all, before even the command line is parsed: the earlier the
    # warm-up starts, the more of its wait is over when init is moved. Any
    # word of the command line will do here; a wrong guess (an id named
    # "run") costs a shell that exits at once.
    warm_pid = 0
    if not _MAKERS.isdisjoint(argv):
        from .cgroups import warm_up

        warm_pid = warm_up()
    from .cli import main as cli_main

    status = cli_main(argv)
    if warm_pid:
        try:
            os.waitpid(warm_pid, 0)
        except ChildProcessError:
            pass  # run and exec reap every child they see
    # Skip the interpreter's teardown, which is slow and does nothing for us.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
