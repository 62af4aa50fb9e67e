"""The ``filters`` of ``GET /containers/json`` and ``POST /containers/prune``
(Docker Engine API, ContainerList): a JSON object of filter name to a list
of values (or, as old clients send it, to an object whose keys are the
values). Values of one filter are alternatives; different filters must all
match.
"""

from __future__ import annotations

from collections.abc import Callable

from .docker_model import State, parse_time
from .errors import InvalidArgument, NotFound

KNOWN = ("id", "name", "label", "status", "exited", "ancestor", "before", "since",
         "until")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def parse(filters: dict | None, known: tuple[str, ...]) -> dict[str, list[str]]:
    """Any ``filters`` object of the API (containers, volumes, networks) as
    ``{"name": ["value", ...]}`` from either form, its keys among ``known``;
    InvalidArgument otherwise."""
    result: dict[str, list[str]] = {}
    for key, values in (filters or {}).items():
        if key not in known:
            raise InvalidArgument(f"invalid filter '{key}'")
        if isinstance(values, dict):
            values = [value for value, on in values.items() if on]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidArgument(f"filter '{key}': must be a list of strings")
        result[key] = values
    return result


def normalize(filters: dict | None) -> dict[str, list[str]]:
    """``{"status": ["running"]}`` from either form; InvalidArgument otherwise."""
    result = parse(filters, KNOWN)
    for status in result.get("status", []):
        if status not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={status}'")
    return result


class ContainerFilter:
    """Which containers a ``filters`` object selects."""

    def __init__(self, filters: dict | None, resolve: Callable) -> None:
        self.filters = normalize(filters)
        self._created_bounds(resolve)

    def _created_bounds(self, resolve: Callable) -> None:
        self.before = self.since = None
        for key in ("before", "since"):
            for ref in self.filters.get(key, []):
                try:
                    setattr(self, key, resolve(ref).created)
                except NotFound:
                    raise InvalidArgument(f"No such container: {ref}") from None

    def wants_stopped(self) -> bool:
        """Whether the filters alone ask for containers that are not running."""
        statuses = self.filters.get("status", [])
        return bool(self.filters.get("exited")) or any(s != "running" for s in statuses)

    def accept(self, container, state: State) -> bool:
        checks = {
            "id": lambda v: container.id.startswith(v),
            "name": lambda v: v.removeprefix("/") in container.name,
            "label": lambda v: _label(container.config.get("Labels") or {}, v),
            "status": lambda v: state.status == v,
            "exited": lambda v: state.status == "exited" and str(state.exit_code) == v,
            "ancestor": lambda v: v in (container.image_ref, container.image_id)
            or container.image_id.removeprefix("sha256:").startswith(v),
            "until": lambda v: container.created <= _until(v),
        }
        for key, check in checks.items():
            values = self.filters.get(key)
            if values and not any(check(v) for v in values):
                return False
        if self.before is not None and container.created >= self.before:
            return False
        return not (self.since is not None and container.created <= self.since)

    def accept_labels(self, container) -> bool:
        labels = container.config.get("Labels") or {}
        values = self.filters.get("label")
        return not values or all(_label(labels, v) for v in values)


def _label(labels: dict, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def _until(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        stamp = parse_time(text)
        if not stamp:
            raise InvalidArgument(f"filter 'until': bad time '{text}'") from None
        return stamp
