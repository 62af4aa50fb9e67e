"""The image store: image records and their names, over the content store
and a snapshotter, under one root (``/var/lib/corral`` by default).

    <root>/content/      blobs by digest (content.py)
    <root>/snapshots/    unpacked layers, keyed by chain ID (snapshots/)
    <root>/images.db     SQLite: images and the names that point at them
    <root>/images.lock   flock: shared while adding content, exclusive to
                         collect garbage, so a collection never takes a blob
                         that a pull running beside it has just written

An image is known by its ID, the digest of its config (as Docker has it),
and by any number of names: tags (``docker.io/library/busybox:latest``)
and digests (``docker.io/library/busybox@sha256:...``, the digest it was
pulled or pushed by). An image with no name is *dangling* and stays until
pruned, as in Docker.

Every change is one SQLite transaction, and content is written and
unpacked before the record that points at it, so a process killed at any
point leaves either the old record or the new one, and at worst some
unreferenced content that the next garbage collection takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._sqlite import open_db, transaction
from . import manifest as manifests
from . import reference as references
from .content import ContentStore
from .digest import Digest
from .errors import AlreadyExists, Error, FailedPrecondition, InvalidArgument, NotFound
from .layers import recover

DEFAULT_ROOT = Path("/var/lib/corral")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,            -- config digest
    manifest TEXT NOT NULL,         -- manifest digest
    media_type TEXT NOT NULL,       -- of the manifest
    index_digest TEXT,              -- the index it was chosen from, if any
    platform TEXT NOT NULL,
    created TEXT,                   -- from the config
    added REAL NOT NULL,            -- when it entered this store
    size INTEGER NOT NULL           -- bytes of the unpacked layers
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(id)
);
CREATE INDEX IF NOT EXISTS names_by_image ON names(image);
"""


@dataclass
class Image:
    """One image record and its names."""

    id: Digest
    manifest: Digest
    media_type: str
    index_digest: Digest | None
    platform: str
    created: str | None
    added: float
    size: int
    names: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [n for n in self.names if "@" not in n]

    @property
    def digests(self) -> list[str]:
        return [n for n in self.names if "@" in n]


class Store:
    """The image store of one root; safe to use from several processes."""

    def __init__(self, root: Path = DEFAULT_ROOT, *, snapshotter: str | None = None) -> None:
        from .snapshots import open_snapshotter

        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.content = ContentStore(root / "content")
        self.snapshots = open_snapshotter(root / "snapshots", snapshotter)
        self.tmp = root / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self._lock_path = root / "images.lock"
        self._db = open_db(root / "images.db", _SCHEMA)
        recover(self)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Locking -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Shared while adding content; exclusive while collecting garbage."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _transaction(self):
        return transaction(self._db)

    # Records -------------------------------------------------------------

    def add(self, image: Image, names: list[str]) -> Image:
        """Record ``image`` (or refresh it) and point ``names`` at it.

        A name that pointed at another image moves; that image keeps its
        other names, or becomes dangling.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO images VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE "
                "SET manifest=excluded.manifest, media_type=excluded.media_type, "
                "index_digest=coalesce(excluded.index_digest, index_digest)",
                (str(image.id), str(image.manifest), image.media_type,
                 str(image.index_digest) if image.index_digest else None,
                 image.platform, image.created, image.added or time.time(),
                 image.size))
            for name in names:
                db.execute("INSERT OR REPLACE INTO names VALUES (?, ?)",
                           (name, str(image.id)))
        return self.get_by_id(image.id)

    def get_by_id(self, image_id: Digest) -> Image:
        row = self._db.execute("SELECT * FROM images WHERE id = ?",
                               (str(image_id),)).fetchone()
        if row is None:
            raise NotFound(f"image '{image_id}': no such image")
        return self._image(row)

    def _image(self, row: tuple) -> Image:
        names = [n for (n,) in self._db.execute(
            "SELECT name FROM names WHERE image = ? ORDER BY name", (row[0],))]
        return Image(Digest.parse(row[0]), Digest.parse(row[1]), row[2],
                     Digest.parse(row[3]) if row[3] else None, row[4], row[5],
                     row[6], row[7], names)

    def list(self) -> list[Image]:
        rows = self._db.execute("SELECT * FROM images ORDER BY added DESC").fetchall()
        return [self._image(row) for row in rows]

    def resolve(self, text: str) -> Image:
        """The image that ``text`` names: a name (``busybox``, normalized as
        Docker does), ``name@digest``, a full image ID, or a unique prefix of
        one (at least 4 hex digits, with or without ``sha256:``)."""
        image = self._by_id_text(text)
        if image is not None:
            return image
        try:
            ref = references.parse(text)
        except InvalidArgument:
            raise NotFound(f"image '{text}': no such image") from None
        for name in (str(ref), _digest_name(ref)):
            if name is None:
                continue
            row = self._db.execute("SELECT image FROM names WHERE name = ?",
                                   (name,)).fetchone()
            if row:
                return self.get_by_id(Digest.parse(row[0]))
        raise NotFound(f"image '{text}': no such image")

    def _by_id_text(self, text: str) -> Image | None:
        hex_ = text.removeprefix("sha256:")
        if len(hex_) < 4 or not all(c in "0123456789abcdef" for c in hex_):
            return None
        rows = self._db.execute("SELECT * FROM images WHERE id LIKE ?",
                                (f"sha256:{hex_}%",)).fetchall()
        if len(rows) > 1:
            raise InvalidArgument(f"image ID '{text}': matches {len(rows)} images; "
                                  f"give more digits")
        return self._image(rows[0]) if rows else None

    def tag(self, image: Image, name: str) -> None:
        ref = references.parse(name)
        if ref.digest is not None:
            raise InvalidArgument(f"tag '{name}': a tag cannot name a digest")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO names VALUES (?, ?)",
                       (str(ref), str(image.id)))

    def untag(self, name: str) -> Image:
        """Remove one name; the image it named, as it is now."""
        ref = references.parse(name)
        full = str(ref)
        with self._transaction() as db:
            row = db.execute("SELECT image FROM names WHERE name = ?", (full,)).fetchone()
            if row is None:
                raise NotFound(f"image '{name}': no such name")
            db.execute("DELETE FROM names WHERE name = ?", (full,))
        return self.get_by_id(Digest.parse(row[0]))

    def delete(self, image: Image) -> None:
        """Forget the record and all its names (content goes at the next gc)."""
        with self._transaction() as db:
            db.execute("DELETE FROM names WHERE image = ?", (str(image.id),))
            db.execute("DELETE FROM images WHERE id = ?", (str(image.id),))

    # What an image is made of ---------------------------------------------

    def manifest(self, image: Image) -> manifests.ImageManifest:
        data = self.content.read(image.manifest)
        return manifests.parse_manifest(data, image.media_type,
                                        f"manifest '{image.manifest}'")

    def config(self, image: Image) -> manifests.ImageConfig:
        return manifests.parse_config(self.content.read(image.id), f"config '{image.id}'")

    def chain(self, image: Image) -> list[Digest]:
        return manifests.chain_ids(self.config(image).diff_ids)

    def top_snapshot(self, image: Image) -> str | None:
        chain = self.chain(image)
        return str(chain[-1]) if chain else None

    # Garbage collection ---------------------------------------------------

    def collect_garbage(self) -> tuple[int, int, int]:
        """Remove blobs and snapshots that no image needs: (blobs removed,
        snapshots removed, bytes freed). Active snapshots (containers,
        bundles, views) keep their parents; their owners remove them."""
        with self.lock(exclusive=True):
            keep_blobs: set[Digest] = set()
            keep_snapshots: set[str] = set()
            for image in self.list():
                keep_blobs.update(self._blobs_of(image))
                keep_snapshots.update(str(c) for c in self.chain(image))
            blobs = freed = 0
            for digest, size in list(self.content.walk()):
                if digest not in keep_blobs and self.content.delete(digest):
                    blobs += 1
                    freed += size
            self.content.sweep_ingests()
            snapshots, snapshot_bytes = self._collect_snapshots(keep_snapshots)
            return blobs, snapshots, freed + snapshot_bytes

    def _blobs_of(self, image: Image) -> set[Digest]:
        blobs = {image.id, image.manifest}
        if image.index_digest:
            blobs.add(image.index_digest)
        with contextlib.suppress(NotFound):
            blobs.update(layer.digest for layer in self.manifest(image).layers)
        return blobs

    def _collect_snapshots(self, keep: set[str]) -> tuple[int, int]:
        removed = freed = 0
        # Children before parents: walk again until nothing more goes.
        while True:
            progress = 0
            for info in list(self.snapshots.walk()):
                if info.kind != "committed" or info.name in keep:
                    continue
                size = 0
                with contextlib.suppress(Error, OSError):
                    size = self.snapshots.usage(info.name)
                try:
                    self.snapshots.remove(info.name)
                except (FailedPrecondition, NotFound):
                    continue
                progress += 1
                freed += size
            removed += progress
            if not progress:
                return removed, freed

    def users(self, image: Image) -> list[str]:
        """Keys of the writable snapshots (containers, bundles) made on this
        image's top layer: while there are any, the image is in use."""
        top = self.top_snapshot(image)
        return [info.name for info in self.snapshots.walk()
                if info.kind == "active" and info.parent == top
                and not info.name.startswith("extract-")]


def _digest_name(ref: references.Reference) -> str | None:
    if ref.digest is None:
        return None
    return f"{ref.name}@{ref.digest}"


def check_name_free(store: Store, name: str) -> None:
    """Raise AlreadyExists if ``name`` is taken (for callers that must not move it)."""
    row = store._db.execute("SELECT image FROM names WHERE name = ?", (name,)).fetchone()
    if row:
        raise AlreadyExists(f"name '{name}': already names image {row[0]}")
