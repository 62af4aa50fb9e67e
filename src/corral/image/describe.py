"""Images described the way Docker describes them: the ``docker image
inspect`` document and ``docker history`` rows. The CLI prints these and the
manager will serve them from /images/{name}/json and /history unchanged."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .errors import Error
from .store import Image, Store


def familiar(name: str) -> str:
    """``docker.io/library/busybox:1`` as Docker shows it: ``busybox:1``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def repository_and_tag(name: str) -> tuple[str, str]:
    shown = familiar(name)
    if "@" in shown:
        return shown.split("@", 1)[0], "<none>"
    repository, _, tag = shown.rpartition(":")
    if "/" in tag or not repository:
        return shown, "<none>"
    return repository, tag


def inspect(store: Store, image: Image) -> dict:
    """The ``docker image inspect`` document of one image."""
    config = store.config(image)
    raw = config.raw
    document = {
        "Id": str(image.id),
        "RepoTags": [familiar(n) for n in image.tags],
        "RepoDigests": [familiar(n) for n in image.digests],
        "Parent": "",
        "Comment": _last_comment(raw),
        "Created": config.created or "",
        "DockerVersion": raw.get("docker_version", ""),
        "Author": raw.get("author", ""),
        "Config": raw.get("config") or {},
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": image.size,
        "GraphDriver": {"Name": store.snapshots.name, "Data": None},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {"mediaType": image.media_type, "digest": str(image.manifest),
                       "size": store.content.size(image.manifest) or 0},
    }
    if raw.get("variant"):
        document["Variant"] = raw["variant"]
    return document


def _last_comment(raw: dict) -> str:
    history = raw.get("history") or []
    if history and isinstance(history[-1], dict):
        return str(history[-1].get("comment") or "")
    return ""


@dataclass(frozen=True)
class HistoryEntry:
    id: str            # the image ID on the newest row, "<missing>" below it
    created: str
    created_by: str
    size: int
    comment: str
    empty_layer: bool


def history(store: Store, image: Image) -> list[HistoryEntry]:
    """``docker history``: newest first; each non-empty entry owns a layer."""
    config = store.config(image)
    chain = store.chain(image)
    entries = [h for h in (config.raw.get("history") or []) if isinstance(h, dict)]
    if not entries:
        entries = [{"created": config.created or ""} for _ in chain]
    rows = []
    layer = 0
    for entry in entries:
        empty = bool(entry.get("empty_layer"))
        size = 0
        if not empty and layer < len(chain):
            size = _layer_size(store, str(chain[layer]))
            layer += 1
        rows.append(HistoryEntry("<missing>", str(entry.get("created") or ""),
                                 str(entry.get("created_by") or ""), size,
                                 str(entry.get("comment") or ""), empty))
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryEntry(str(image.id), top.created, top.created_by, top.size,
                               top.comment, top.empty_layer)
    return rows


def _layer_size(store: Store, name: str) -> int:
    with contextlib.suppress(Error, OSError):
        return store.snapshots.usage(name)
    return 0
