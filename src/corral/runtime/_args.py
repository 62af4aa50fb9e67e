"""Command-line flags the way runc's callers send them.

runc parses flags with Go's urfave/cli, and containerd, dockerd and podman
send what that accepts: ``--flag value``, ``--flag=value``, single-dash long
flags (``-bundle x``, ``-no-subreaper``), short aliases (``-b x``), and
``--bool=false``. Flags end at the first positional argument or at ``--``.
argparse differs on each of these (it guesses abbreviations, and it cannot
take ``-bundle``), so the runtime has this small parser of its own.
"""

from __future__ import annotations


class UsageError(Exception):
    pass


class Flag:
    def __init__(self, names: str, kind: str = "bool", default: object = None) -> None:
        self.names = names.split(",")
        self.name = self.names[0].replace("-", "_")
        self.kind = kind  # "bool", "str", "int" or "list"
        self.default = [] if kind == "list" else (False if kind == "bool" else default)


_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


def parse(flags: list[Flag], argv: list[str], interspersed: bool = False):
    """Return (values by flag name, positional arguments)."""
    by_name = {name: flag for flag in flags for name in flag.names}
    values: dict[str, object] = {
        flag.name: list(flag.default) if flag.kind == "list" else flag.default
        for flag in flags
    }
    positional: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positional.extend(argv[index:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            if not interspersed:
                positional.extend(argv[index:])
                break
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        flag = by_name.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if has_value:
                if value.lower() not in _TRUE | _FALSE:
                    raise UsageError(f"invalid boolean value {value!r} for -{name}")
                values[flag.name] = value.lower() in _TRUE
            else:
                values[flag.name] = True
            continue
        if not has_value:
            if index >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[index]
            index += 1
        if flag.kind == "int":
            try:
                values[flag.name] = int(value)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for -{name}: not a number") from None
        elif flag.kind == "list":
            values[flag.name].append(value)  # type: ignore[union-attr]
        else:
            values[flag.name] = value
    return values, positional
