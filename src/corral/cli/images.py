"""The image commands: pull, push, images, rmi, tag, inspect, history, save,
load, import, and ``image`` with ls, rm, prune, mount, unmount, bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import output
from .progress import LayerDisplay


def register(commands) -> None:
    image_parser = commands.add_parser("image", help="manage images")
    group = image_parser.add_subparsers(dest="image_command", metavar="COMMAND")
    group.required = True
    for name, aliases, top_level, adder in _COMMANDS:
        adder(group.add_parser(name, aliases=list(aliases), help=adder.__doc__))
        if top_level:
            adder(commands.add_parser(top_level, help=adder.__doc__))


# pull ---------------------------------------------------------------------

def _pull_parser(parser: argparse.ArgumentParser) -> None:
    """download an image from a registry, ready to run"""
    parser.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    parser.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    _tls_flag(parser)
    parser.set_defaults(func=cmd_pull)


def _tls_flag(parser: argparse.ArgumentParser) -> None:
    """The registry flags of podman's pull and push."""
    parser.add_argument("--tls-verify", type=_boolean, default=True, metavar="BOOL",
                        help="require HTTPS and verify certificates (default true)")
    parser.add_argument("--cert-dir", type=Path, metavar="DIR",
                        help="a certs.d-style directory: DIR/HOST:PORT/ca.crt")
    parser.add_argument("--authfile", type=Path, metavar="FILE",
                        help="credentials file (default $DOCKER_CONFIG/config.json or "
                             "~/.docker/config.json)")


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


def cmd_pull(context, args) -> int:
    from ..image import reference
    from ..image.errors import NotFound
    from ..image.platform import Platform
    from ..image.pull import pull

    ref = reference.parse(args.image)
    platform = Platform.parse(args.platform) if args.platform else None
    store = context.store
    before = _existing_id(store, str(ref), NotFound)
    display = LayerDisplay(quiet=args.quiet)
    with display, context.registry(args, ref.domain) as client:
        display.message(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
        image = pull(store, client, ref, platform=platform, progress=display)
        display.message(f"Digest: {image.index_digest or image.manifest}")
        fresh = "Image is up to date" if before == image.id else "Downloaded newer image"
        display.message(f"Status: {fresh} for {ref.familiar()}")
    print(ref.familiar())
    return 0


def _existing_id(store, name: str, not_found):
    try:
        return store.resolve(name).id
    except not_found:
        return None


# push ---------------------------------------------------------------------

def _push_parser(parser: argparse.ArgumentParser) -> None:
    """upload an image to a registry"""
    parser.add_argument("image", metavar="NAME[:TAG]")
    parser.add_argument("destination", nargs="?", metavar="DESTINATION",
                        help="push under this name instead (podman's form)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--chunk-size", type=int, metavar="BYTES",
                        help="upload blobs in chunks of this size")
    _tls_flag(parser)
    parser.set_defaults(func=cmd_push)


def cmd_push(context, args) -> int:
    from ..image import reference
    from ..image.push import push

    store = context.store
    image = store.resolve(args.image)
    ref = reference.parse(args.destination or args.image)
    if ref.digest is not None:
        from ..image.errors import InvalidArgument

        raise InvalidArgument(f"push '{ref}': cannot push to a digest reference; "
                              f"give a tag")
    display = LayerDisplay(quiet=args.quiet)
    with display, context.registry(args, ref.domain) as client:
        display.message(f"The push refers to repository [{ref.name}]")
        digest = push(store, client, image, ref, chunk_size=args.chunk_size,
                      progress=display)
        size = store.content.size(image.manifest) or 0
        display.message(f"{ref.tag or 'latest'}: digest: {digest} size: {size}")
    return 0


# images -------------------------------------------------------------------

def _images_parser(parser: argparse.ArgumentParser) -> None:
    """list images"""
    parser.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")
    parser.add_argument("-a", "--all", action="store_true", help="accepted; all are shown")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    parser.add_argument("--digests", action="store_true", help="show digests")
    parser.add_argument("--no-trunc", action="store_true", help="full image IDs")
    parser.add_argument("--format", help="'json' (one object per line) or a Go template")
    parser.set_defaults(func=cmd_images)


def cmd_images(context, args) -> int:
    from ..image.describe import repository_and_tag

    rows = []
    for image in context.store.list():
        names = image.tags or [None]
        for name in names:
            repository, tag = repository_and_tag(name) if name else ("<none>", "<none>")
            if args.repository and not _matches(args.repository, repository, tag):
                continue
            rows.append((image, repository, tag))
    if args.quiet:
        for image_id in dict.fromkeys(str(i.id) if args.no_trunc else i.id.short
                                      for i, _, _ in rows):
            print(image_id)
        return 0
    if args.format:
        fields = [{"Repository": repository, "Tag": tag,
                   "ID": str(image.id) if args.no_trunc else image.id.short,
                   "Digest": _digest_of(image, repository), "CreatedAt": image.created,
                   "CreatedSince": output.ago(output.parse_time(image.created)),
                   "Size": output.human_size(image.size)} for image, repository, tag in rows]
        output.formatted(args.format, fields, {"ID": "IMAGE ID", "CreatedSince": "CREATED",
                                               "CreatedAt": "CREATED AT"})
        return 0
    headers = ["REPOSITORY", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID",
               "CREATED", "SIZE"]
    table = []
    for image, repository, tag in rows:
        digest = [_digest_of(image, repository)] if args.digests else []
        table.append([repository, tag, *digest,
                      str(image.id) if args.no_trunc else image.id.short,
                      output.ago(output.parse_time(image.created)),
                      output.human_size(image.size)])
    output.table(headers, table)
    return 0


def _matches(pattern: str, repository: str, tag: str) -> bool:
    from ..image.describe import familiar

    repo_pattern, _, tag_pattern = familiar(pattern).partition(":")
    return repository == repo_pattern and (not tag_pattern or tag == tag_pattern)


def _digest_of(image, repository: str) -> str:
    from ..image.describe import familiar

    for name in image.digests:
        shown = familiar(name)
        if shown.split("@")[0] == repository:
            return shown.split("@")[1]
    return "<none>"


# rmi, tag, prune ------------------------------------------------------------

def _rmi_parser(parser: argparse.ArgumentParser) -> None:
    """remove images"""
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("-f", "--force", action="store_true",
                        help="remove an image named by several repositories")
    parser.set_defaults(func=cmd_rmi)


def cmd_rmi(context, args) -> int:
    from ..image.errors import Error
    from ..image.removal import remove

    status = 0
    for text in args.images:
        try:
            removed = remove(context.store, text, force=args.force)
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
            continue
        for name in removed.untagged:
            print(f"Untagged: {name}")
        for image_id in removed.deleted:
            print(f"Deleted: {image_id}")
    return status


def _tag_parser(parser: argparse.ArgumentParser) -> None:
    """give an image another name"""
    parser.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    parser.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    parser.set_defaults(func=cmd_tag)


def cmd_tag(context, args) -> int:
    store = context.store
    store.tag(store.resolve(args.source), args.target)
    return 0


def _prune_parser(parser: argparse.ArgumentParser) -> None:
    """remove unused images"""
    parser.add_argument("-a", "--all", action="store_true",
                        help="every unused image, not just dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask")
    parser.set_defaults(func=cmd_prune)


def cmd_prune(context, args) -> int:
    from ..image.removal import prune

    if not args.force:
        what = "all images without at least one container associated to them" \
            if args.all else "all dangling images"
        sys.stdout.write(f"WARNING! This will remove {what}.\n"
                         f"Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed = prune(context.store, all_images=args.all)
    if removed.deleted:
        print("Deleted Images:")
        for name in removed.untagged:
            print(f"untagged: {name}")
        for image_id in removed.deleted:
            print(f"deleted: {image_id}")
        print()
    print(f"Total reclaimed space: {output.human_size(removed.reclaimed)}")
    return 0


# inspect, history ------------------------------------------------------------

def _inspect_parser(parser: argparse.ArgumentParser) -> None:
    """show images' details as JSON"""
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("-f", "--format", help="'json' (the default) or a {{.Field}} template")
    parser.set_defaults(func=cmd_inspect)


def cmd_inspect(context, args) -> int:
    from ..image.describe import inspect
    from ..image.errors import Error

    documents, status = [], 0
    for text in args.images:
        try:
            documents.append(inspect(context.store, context.store.resolve(text)))
        except Error as exc:
            print(f"corral: {exc}", file=sys.stderr)
            status = 1
    output.inspected(documents, args.format)
    return status


def _history_parser(parser: argparse.ArgumentParser) -> None:
    """show how an image was built"""
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--no-trunc", action="store_true", help="do not shorten output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    parser.add_argument("--format", help="'json' (one object per line) or a Go template")
    parser.set_defaults(func=cmd_history)


def cmd_history(context, args) -> int:
    from ..image.describe import history

    rows = history(context.store, context.store.resolve(args.image))
    short = (lambda i: i) if args.no_trunc else (lambda i: i[7:19] if i.startswith("sha256:") else i)
    if args.quiet:
        for row in rows:
            print(short(row.id))
        return 0
    if args.format:
        fields = [{"ID": short(row.id), "CreatedAt": row.created,
                   "CreatedSince": output.ago(output.parse_time(row.created)),
                   "CreatedBy": row.created_by, "Size": output.human_size(row.size),
                   "Comment": row.comment} for row in rows]
        output.formatted(args.format, fields, {"ID": "IMAGE", "CreatedSince": "CREATED",
                                               "CreatedBy": "CREATED BY"})
        return 0
    table = []
    for row in rows:
        created_by = row.created_by if args.no_trunc or len(row.created_by) <= 45 \
            else row.created_by[:44] + "…"
        table.append([short(row.id), output.ago(output.parse_time(row.created)),
                      created_by, output.human_size(row.size), row.comment])
    output.table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], table)
    return 0


# save, load, import ----------------------------------------------------------

def _save_parser(parser: argparse.ArgumentParser) -> None:
    """write images to an archive (docker-archive by default)"""
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("-o", "--output", type=Path, help="file (or directory for oci-dir)")
    parser.add_argument("--format", default="docker-archive",
                        choices=("docker-archive", "oci-archive", "oci-dir"))
    parser.set_defaults(func=cmd_save)


def cmd_save(context, args) -> int:
    from ..image import archive

    if args.output is None:
        if args.format == "oci-dir":
            raise SystemExit("corral: save --format oci-dir needs -o DIRECTORY")
        if sys.stdout.isatty():
            print("corral: refusing to write an archive to a terminal; use -o FILE "
                  "or redirect", file=sys.stderr)
            return 1
        archive.save(context.store, args.images, sys.stdout.buffer, format=args.format)
    else:
        _check_output(args.output, args.format)
        archive.save(context.store, args.images, args.output, format=args.format)
    return 0


def _check_output(path: Path, format: str) -> None:
    """Refuse a -o that cannot be written before writing a whole archive."""
    from ..image.errors import InvalidArgument

    if format != "oci-dir" and path.is_dir():
        raise InvalidArgument(f"save -o '{path}': is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InvalidArgument(f"save -o '{path}': directory '{parent}' does not exist")


def _load_parser(parser: argparse.ArgumentParser) -> None:
    """read images from an archive (docker-archive or OCI)"""
    parser.add_argument("-i", "--input", type=Path, help="file or OCI layout directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.set_defaults(func=cmd_load)


def cmd_load(context, args) -> int:
    from ..image import archive
    from ..image.describe import familiar

    if args.input is None and sys.stdin.isatty():
        print("corral: requested load from stdin, but stdin is a terminal; use -i FILE "
              "or redirect", file=sys.stderr)
        return 1
    source = args.input if args.input is not None else sys.stdin.buffer
    for image in archive.load(context.store, source):
        if args.quiet:
            continue
        if image.tags:
            for name in image.tags:
                print(f"Loaded image: {familiar(name)}")
        else:
            print(f"Loaded image ID: {image.id}")
    return 0


def _import_parser(parser: argparse.ArgumentParser) -> None:
    """make a one-layer image from a root filesystem tarball"""
    parser.add_argument("file", metavar="FILE|-")
    parser.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    parser.add_argument("-c", "--change", action="append", default=[],
                        help="a Dockerfile instruction (CMD, ENV, ...) to apply")
    parser.add_argument("-m", "--message", help="commit message of the history entry")
    parser.set_defaults(func=cmd_import)


def cmd_import(context, args) -> int:
    from ..image import archive

    source = sys.stdin.buffer if args.file == "-" else Path(args.file)
    image = archive.import_rootfs(context.store, source, reference=args.reference,
                                  changes=args.change, message=args.message)
    print(str(image.id))
    return 0


# mount, unmount, bundle -------------------------------------------------------

def _mount_parser(parser: argparse.ArgumentParser) -> None:
    """mount an image's root filesystem read-only and print where"""
    parser.add_argument("images", nargs="*", metavar="IMAGE")
    parser.set_defaults(func=cmd_mount)


def cmd_mount(context, args) -> int:
    from ..image import views
    from ..image.describe import familiar

    store = context.store
    if not args.images:
        for image, path in views.mounted(store):
            print(f"{image.id.short} {familiar(image.tags[0]) if image.tags else '<none>'} {path}")
        return 0
    for text in args.images:
        print(views.mount(store, store.resolve(text)))
    return 0


def _unmount_parser(parser: argparse.ArgumentParser) -> None:
    """unmount what 'image mount' mounted"""
    parser.add_argument("images", nargs="*", metavar="IMAGE")
    parser.add_argument("-a", "--all", action="store_true", help="every mounted image")
    parser.set_defaults(func=cmd_unmount)


def cmd_unmount(context, args) -> int:
    from ..image import views

    store = context.store
    targets = [i for i, _ in views.mounted(store)] if args.all else \
        [store.resolve(t) for t in args.images]
    for image in targets:
        if views.unmount(store, image):
            print(image.id.hex)
    return 0


def _bundle_parser(parser: argparse.ArgumentParser) -> None:
    """make an OCI bundle (config.json + rootfs) of an image, for corral-runtime"""
    parser.add_argument("image", metavar="IMAGE", nargs="?")
    parser.add_argument("bundle", type=Path, metavar="DIR")
    parser.add_argument("--rm", action="store_true", help="undo: unmount and remove")
    parser.add_argument("-t", "--tty", action="store_true", help="the process gets a terminal")
    parser.add_argument("-u", "--user", help="run as this user (name or uid[:gid])")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--entrypoint", help="program to run instead of the image's")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    parser.set_defaults(func=cmd_bundle)


def cmd_bundle(context, args) -> int:
    from ..image import bundle

    store = context.store
    bundle_dir = args.bundle.resolve()
    key = f"bundle {bundle_dir}"
    if args.rm:
        if not bundle.bundle_exists(store, key):
            from ..image.errors import NotFound

            raise NotFound(f"bundle '{bundle_dir}': not made by 'corral image bundle' "
                           f"(in this store); nothing removed")
        bundle.remove_bundle(store, bundle_dir, key)
        return 0
    if args.image is None:
        raise SystemExit("corral: image bundle needs an IMAGE (or --rm)")
    options = bundle.RunOptions(
        command=tuple(args.command) or None,
        entrypoint=(args.entrypoint,) if args.entrypoint else None,
        env=tuple(args.env), user=args.user, workdir=args.workdir, terminal=args.tty)
    bundle.create_bundle(store, store.resolve(args.image), bundle_dir, key, options)
    print(bundle_dir)
    return 0


# (name under "image", its aliases, the top-level name as in docker, parser)
_COMMANDS = [
    ("pull", (), "pull", _pull_parser),
    ("push", (), "push", _push_parser),
    ("ls", ("list",), "images", _images_parser),
    ("rm", (), "rmi", _rmi_parser),
    ("tag", (), "tag", _tag_parser),
    ("inspect", (), None, _inspect_parser),
    ("history", (), "history", _history_parser),
    ("save", (), "save", _save_parser),
    ("load", (), "load", _load_parser),
    ("import", (), "import", _import_parser),
    ("prune", (), None, _prune_parser),
    ("mount", (), None, _mount_parser),
    ("unmount", ("umount",), None, _unmount_parser),
    ("bundle", (), None, _bundle_parser),
]
