"""Removing images: ``docker rmi`` and ``docker image prune`` semantics, for
every front end (the CLI now, the manager's DELETE /images later).

- Removing by name drops that name; the image itself goes with its last tag
  (its digest names go with it).
- Removing by ID removes the image with all its names, but refuses when
  several repositories name it, unless forced.
- An image that is mounted (``image mount``) or used by a container is
  refused; ``in_use`` is the manager's say on the latter.
- Content goes at the garbage collection that follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import views
from .describe import familiar
from .errors import FailedPrecondition, NotFound
from .store import Image, Store


@dataclass
class Removed:
    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reclaimed: int = 0


def remove(store: Store, text: str, *, force: bool = False,
           in_use: Callable[[Image], bool] = lambda image: False) -> Removed:
    image = store.resolve(text)
    result = Removed()
    by_id = _names_id(text, image)
    if by_id:
        repositories = {n.rsplit(":", 1)[0] for n in image.tags}
        if len(repositories) > 1 and not force:
            raise FailedPrecondition(
                f"conflict: unable to delete {image.id.short} (must be forced) - image is "
                f"referenced in multiple repositories")
    else:
        name = _matching_name(store, text, image)
        if len(image.tags) > 1 or (name not in image.tags and image.tags):
            store.untag(name)
            result.untagged.append(familiar(name))
            return result
    _check_unused(store, image, in_use, force)
    result.untagged.extend(familiar(n) for n in image.names)
    store.delete(image)
    result.deleted.append(str(image.id))
    result.reclaimed = store.collect_garbage()[2]
    return result


def _names_id(text: str, image: Image) -> bool:
    hex_ = text.removeprefix("sha256:")
    return len(hex_) >= 4 and image.id.hex.startswith(hex_)


def _matching_name(store: Store, text: str, image: Image) -> str:
    from . import reference

    ref = reference.parse(text)
    for candidate in (str(ref), f"{ref.name}@{ref.digest}" if ref.digest else None):
        if candidate in image.names:
            return candidate
    raise NotFound(f"image '{text}': no such name")


def _check_unused(store: Store, image: Image, in_use, force: bool) -> None:
    if views.is_mounted(store, image):
        raise FailedPrecondition(f"image '{image.id.short}' is mounted at "
                                 f"{views.mount_path(store, image)}; run "
                                 f"'corral image unmount {image.id.short}' first")
    if in_use(image) or store.users(image):
        raise FailedPrecondition(f"conflict: unable to delete {image.id.short} - image is "
                                 f"being used by a container or bundle")


def prune(store: Store, *, all_images: bool = False,
          in_use: Callable[[Image], bool] = lambda image: False) -> Removed:
    """Remove dangling images (with ``all_images``, every unused image)."""
    result = Removed()
    for image in store.list():
        if image.tags and not all_images:
            continue
        if in_use(image) or views.is_mounted(store, image) or store.users(image):
            continue
        result.untagged.extend(familiar(n) for n in image.names)
        store.delete(image)
        result.deleted.append(str(image.id))
    # Always collect: an interrupted pull or a removed bundle may have left
    # content that no image references.
    result.reclaimed = store.collect_garbage()[2]
    return result

