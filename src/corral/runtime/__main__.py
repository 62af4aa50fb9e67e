"""Entry point of the ``corral-runtime`` console script."""

import os
import sys


def main() -> None:
    from .cli import main as cli_main

    status = cli_main(sys.argv[1:])
    # Skip the interpreter's teardown, which is slow and does nothing for us.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
