"""Entry point of the ``corral-runtime`` console script."""

import sys


def main() -> None:
    from .cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
