"""The depot layer: where a resource's file lives on block storage.

CKAN keeps an uploaded file at ``<storage_path>/resources/RES/OUR/CEID``.
The depot keeps the same bytes under a path a human can browse
(:func:`depot_path_for`), and CKAN's path becomes a symlink to it
(:func:`move_into_depot`). Like the S3 layer (``s3/``), it knows nothing of CKAN.

Crash model of :func:`move_into_depot`: the file first gets a second name in
the depot (a hard link, or on another filesystem a copy that is synced to disk
and re-read from disk to verify it), and only then is CKAN's path replaced by a
symlink in one ``rename``. Killed at any moment, CKAN's path is either the
original file or a symlink to a complete depot file; a leftover ``.part`` file
in the depot is removed by the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import re
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from .s3 import resource_subpath

#: Longest file name (in bytes) most filesystems accept.
NAME_MAX = 255
_COPY_CHUNK = 4 * 1024**2
#: A resource's files on block storage by artifact (the names of ``s3.ARTIFACTS``):
#: its own file at CKAN's path and, beside it, what DCOR derives from it.
ARTIFACT_SUFFIXES = {"resource": "", "condensed": "_condensed.rtdc", "preview": "_preview.jpg"}
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f/\\]+")


class DepotError(Exception):
    """A file could not be moved into the depot; the message says why."""


@dataclasses.dataclass(frozen=True)
class DepotResult:
    depot_path: Path
    #: "moved" (same filesystem, no copy), "copied" (other filesystem) or
    #: "already" (CKAN's path was already a symlink to a complete depot file)
    action: str


def safe_name(text: str, max_bytes: int = 100, fallback: str = "unnamed") -> str:
    """One path component made from a user-supplied name.

    Separators, NUL and control characters become ``_``, leading dots are
    dropped (no ``..``, no hidden files), the result is NFC-normalised and cut
    to ``max_bytes`` of UTF-8 without splitting a character.
    """
    name = unicodedata.normalize("NFC", str(text or ""))
    name = _UNSAFE_RE.sub("_", name).strip().lstrip(".")
    name = name.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore").strip()
    return name or fallback


def depot_path_for(
    depots_path: Path,
    users_depot_name: str,
    user_name: str,
    org_name: str,
    package_id: str,
    package_name: str,
    resource_id: str,
    resource_name: str,
) -> Path:
    """``<depots>/<users depot>/<user>-<org>/<pkgid[:2]>/<pkgid[2:4]>/<pkg>_<resid>_<resname>``.

    Every component is made safe with :func:`safe_name`; the file name is cut
    to :data:`NAME_MAX` bytes, shortening the resource name first.
    """
    pkg_id = safe_name(package_id, 36)
    root = Path(depots_path) / safe_name(users_depot_name)
    folder = root / f"{safe_name(user_name)}-{safe_name(org_name)}" / pkg_id[:2] / pkg_id[2:4]
    return _file_in(
        root, folder, f"{safe_name(package_name)}_{safe_name(resource_id, 36)}_", resource_name
    )


#: Folder of the figshare mirror inside the depots.
FIGSHARE_DEPOT = "figshare"


def figshare_depot_path(
    depots_path: Path, package_name: str, resource_id: str, file_name: str
) -> Path:
    """``<depots>/figshare/<dataset name>/<resid>_<file name>``: a file of the figshare mirror."""
    root = Path(depots_path) / FIGSHARE_DEPOT
    return _file_in(
        root, root / safe_name(package_name), f"{safe_name(resource_id, 36)}_", file_name
    )


def _file_in(root: Path, folder: Path, stem: str, name: str) -> Path:
    """``folder/<stem><name>``, cut to :data:`NAME_MAX` bytes; refused outside ``root``."""
    room = NAME_MAX - len(stem.encode("utf-8"))
    path = folder / (stem + safe_name(name, room, fallback="resource"))
    if os.path.commonpath([root, path]) != str(root) or ".." in path.parts:
        raise DepotError(f"Refusing depot path {path}: it leaves {root}")
    return path


def artifact_path(ckan_path: Path, artifact: str) -> Path:
    """Where an artifact of a resource lies on block storage, beside CKAN's path."""
    return Path(f"{ckan_path}{ARTIFACT_SUFFIXES[artifact]}")


def behind(ckan_path: Path) -> Path:
    """The file behind CKAN's path: the target of the symlink into the depot, or the
    path itself (a file not moved into the depot yet)."""
    return ckan_path.resolve() if ckan_path.is_symlink() else ckan_path


def file_state(path: Path) -> tuple[int, int, int, int]:
    """Inode, size, modification and change time of the file a path leads to (symlinks followed).

    A rewrite changes them even when it keeps the size and restores the mtime.
    """
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def remove_local(path: Path, depots_path: Path, expected_state: tuple[int, ...]) -> list[Path]:
    """Delete a file from block storage; when ``path`` is a symlink into the depots, its target too.

    ``expected_state`` is :func:`file_state` of the file when it was verified:
    a file that changed since is kept (:class:`DepotError`). The symlink goes
    first, so CKAN's path never dangles. Returns the paths removed.
    """
    path = Path(path)
    if file_state(path) != tuple(expected_state):
        raise DepotError(f"{path} changed after it was verified; it was kept, run again")
    removed = [path]
    target = None
    if path.is_symlink():
        target = path.resolve()
        depots = Path(depots_path).resolve()
        if os.path.commonpath([depots, target]) != str(depots):
            raise DepotError(
                f"{path} is a symlink to {target}, outside the depots ({depots}); "
                "it was kept: delete it by hand if that file may go"
            )
    path.unlink()
    _fsync_dir(path.parent)
    if target is not None:
        target.unlink()
        _fsync_dir(target.parent)
        removed.append(target)
    return removed


def is_in_depot(ckan_path: Path) -> bool:
    """True when CKAN's path is a symlink to an existing regular file."""
    return ckan_path.is_symlink() and ckan_path.is_file()


class Lock(Protocol):
    """What a move holds: a context manager that can say, just before the
    rename, that it still holds (a lease in Redis, ``leases.py``)."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def ensure_held(self) -> None:
        """Raise when the lock was lost to another process."""


def move_into_depot(
    ckan_path: Path,
    depot_path: Path,
    lock: Lock,
    source: Path | None = None,
) -> DepotResult:
    """Put the file at ``ckan_path`` at ``depot_path`` and symlink it from ``ckan_path``.

    With ``source`` (e.g. a download in the tmp folder), that file is moved
    to ``depot_path`` instead, and CKAN's path, which must not hold a file,
    becomes the symlink. Safe to run twice or from two processes at once
    (``lock``, held around the move: a lease of the resource, ``locks.py``;
    a process that lost it renames nothing); safe to kill at any moment (see
    the module's docstring). A symlink that already points at a complete file
    is left as it is, even if it points elsewhere than ``depot_path``.
    """
    ckan_path = Path(ckan_path)
    depot_path = Path(depot_path).absolute()
    source = ckan_path if source is None else Path(source)
    # CKAN's path ends in RES/OUR/CEID: together, the resource id
    file_id = "".join(ckan_path.parts[-3:])
    with lock:
        if is_in_depot(ckan_path):
            return DepotResult(ckan_path.resolve(), "already")
        if ckan_path.is_symlink():
            raise DepotError(
                f"{ckan_path} is a symlink to {os.readlink(ckan_path)}, which is missing"
            )
        if source != ckan_path and ckan_path.exists():
            raise DepotError(f"{ckan_path} already holds a file: not replaced by {source}")
        if not source.is_file():
            raise DepotError(f"{source} does not exist: nothing to move into the depot")
        _make_dirs(depot_path.parent)
        # leftovers of killed runs, or of a holder that lost its lease (whose own
        # rename then fails): removed only while this process holds the lease
        _ensure_held(lock, source)
        for leftover in depot_path.parent.glob(f".{file_id}.*part"):
            leftover.unlink(missing_ok=True)
        part = depot_path.with_name(f".{file_id}.{uuid.uuid4().hex[:8]}.part")
        try:
            action = _fill_part(source, part, depot_path)
            _ensure_held(lock, source)
            os.replace(part, depot_path)
        except FileNotFoundError as exc:
            if part.exists() or not source.exists():
                raise
            # another holder removed this part: this process lost its lease
            raise DepotError(
                f"{source} was not moved into the depot: this process lost its lease of the "
                "move and the holder now finishes it; nothing was changed"
            ) from exc
        finally:
            part.unlink(missing_ok=True)
        _fsync_dir(depot_path.parent)
        _make_dirs(ckan_path.parent)
        link = ckan_path.with_name(f"{ckan_path.name}.dcor-symlink")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(depot_path, link)
        os.replace(link, ckan_path)
        _fsync_dir(ckan_path.parent)
        if source != ckan_path:
            source.unlink()
        return DepotResult(depot_path, action)


def _ensure_held(lock: Lock, source: Path) -> None:
    try:
        lock.ensure_held()
    except Exception as exc:  # lost, or Redis cannot tell: do not touch the depot
        raise DepotError(
            f"{source} was not moved into the depot: this process lost its lease of the "
            f"move ({exc}), nothing was changed; the holder now finishes it, or run again"
        ) from exc


def _fill_part(source: Path, part: Path, depot_path: Path) -> str:
    """A second name of ``source`` at ``part`` (a hard link, or a verified copy on
    another filesystem), checked against ``depot_path`` if that exists; "moved" or "copied"."""
    before = os.stat(source)
    try:
        os.link(source, part)
        action = "moved"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        _copy_verified(source, part)
        action = "copied"
    after = os.stat(source)
    if (before.st_ino, before.st_size, before.st_mtime_ns) != (
        after.st_ino,
        after.st_size,
        after.st_mtime_ns,
    ):
        raise DepotError(f"{source} changed while it was moved into the depot; run again")
    if depot_path.exists() and not _same_bytes(part, depot_path):
        raise DepotError(
            f"{depot_path} already holds other bytes than {source}: a depot file is "
            "never overwritten. The resource's file was replaced behind its record; "
            "compare both files and keep the one the resource's sha256 names"
        )
    return action


def make_unreadable(path: Path, dry_run: bool = False) -> bool:
    """Take every permission from the file ``path`` leads to (a purged file, kept for a while).

    Returns whether its mode changed (or, in a dry run, would change).
    """
    mode = os.stat(path).st_mode & 0o7777
    if mode == 0:
        return False
    if not dry_run:
        os.chmod(path, 0)
    return True


def remove_purged(path: Path, depots_path: Path, dry_run: bool = False) -> list[Path]:
    """Delete a purged file's local copy: ``path`` and, if it is a symlink into the depots, its
    target. A symlink that leads elsewhere is removed, its target kept. Returns what goes."""
    path = Path(path)
    if not path.is_symlink() and not path.exists():
        return []
    removed = [path]
    target = path.resolve() if path.is_symlink() else None
    depots = Path(depots_path).resolve()
    if target is not None and target.exists():
        if os.path.commonpath([depots, target]) == str(depots):
            removed.append(target)
    if not dry_run:
        for gone in removed:
            gone.unlink()
            _fsync_dir(gone.parent)
    return removed


def backup_path_for(backup_root: Path, resource_id: str) -> Path:
    """``<backup root>/RES/OUR/CEID``: the local backup copy of a resource's object."""
    return Path(backup_root) / resource_subpath(resource_id)


def write_verified(path: Path, chunks: Iterable[bytes], sha256: str) -> int:
    """Write ``chunks`` to ``path`` so that ``path`` is never a partial or wrong copy.

    The bytes go to a temporary name beside ``path``, are synced and re-read
    from disk; only when their SHA-256 is ``sha256`` does that file replace
    ``path`` in one rename. Returns the size written.
    """
    path = Path(path)
    _make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "xb") as fd:
            for chunk in chunks:
                fd.write(chunk)
            fd.flush()
            os.fsync(fd.fileno())
        actual, size = _sha256_from_disk(tmp)
        if actual != sha256:
            raise DepotError(
                f"The copy for {path} has SHA-256 {actual}, expected {sha256}; it was not kept"
            )
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def _same_bytes(a: Path, b: Path) -> bool:
    if os.path.samefile(a, b):
        return True
    if a.stat().st_size != b.stat().st_size:
        return False
    return _sha256_from_disk(a)[0] == _sha256_from_disk(b)[0]


def _sha256_from_disk(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a synced file, read from disk rather than the page cache."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fd:
        os.posix_fadvise(fd.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := fd.read(_COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _copy_verified(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, sync it, and re-read it from disk to compare SHA-256."""
    expected = hashlib.sha256()
    with open(source, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(_COPY_CHUNK):
            expected.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    actual, _ = _sha256_from_disk(target)
    if actual != expected.hexdigest():
        target.unlink()
        raise DepotError(
            f"The copy of {source} at {target} differs from the original "
            f"(SHA-256 {actual} != {expected.hexdigest()}); nothing was changed"
        )


def _make_dirs(folder: Path) -> None:
    """``mkdir -p`` whose new entries survive a power cut (each parent synced)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
