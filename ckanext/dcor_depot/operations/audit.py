"""The rolling fixity audit (``ckan dcor-verify-object-store``): do the copies hold what
was recorded?

Every copy of every verified file of an active resource is known to the audit
(``checks.py``): the S3 object (each artifact: resource, condensed, preview),
the local backup copy of a file uploaded straight to S3, and the depot file
behind CKAN's path of an uploaded file. A run re-hashes the copies least
recently checked first (never checked ones before all others) until its
budget of bytes or minutes is spent, and records every result, so that
successive runs cover everything. A copy that changed (another bucket after a
move, other recorded bytes) is due again at once. A copy found wrong is judged
with the other copies of its file, read in the same run. A copy the audit saw
once and that is gone is missing, except a depot file the migration deleted
once its object was verified. A folder of local copies that is not there or
empty (not mounted) is one error, not the loss of every copy in it. Objects
in the circle buckets that no file accounts for are orphans
(:func:`sweep.orphans`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic

import ckan.model as model
import ckan.plugins.toolkit as tk

from .. import config, errors, placement
from ..errors import JobError
from ..model import COPY_KINDS, checks, ckan_rows, depot_files
from ..model.checks import NO_CIRCLE
from ..storage.depot import behind
from ..storage.s3 import ObjectStore, S3Error, parse_object_key, sha256_of_file
from . import sweep
from .status import candidates


@dataclasses.dataclass(frozen=True)
class Copy:
    """One copy of one file, and what it must hold."""

    record: checks.CopyRecord
    package_name: str
    #: the circle (organization) name, :data:`NO_CIRCLE` without one
    circle: str
    #: the object (bucket, key), or None for a local copy
    object: tuple[str, str] | None = None
    path: Path | None = None

    @property
    def where(self) -> str:
        return f"resource {self.record.resource_id} of dataset {self.package_name}"

    @property
    def file(self) -> tuple[str, str]:
        return (self.record.resource_id, self.record.artifact)


@dataclasses.dataclass(frozen=True)
class Finding:
    #: "missing", "mismatch", "disagrees", "error", "orphan", or "over-budget" (too
    #: large for the budget: no run with it can check it)
    kind: str
    copy: str
    location: str
    detail: str
    circle: str = NO_CIRCLE
    resource_id: str | None = None
    package_name: str | None = None

    @classmethod
    def of(cls, copy: Copy, kind: str, detail: str) -> Finding:
        """A finding about one known copy."""
        record = copy.record
        return cls(
            kind,
            record.copy,
            record.location,
            detail,
            copy.circle,
            record.resource_id,
            copy.package_name,
        )

    def line(self) -> str:
        where = f" {self.location}" if self.location else ""
        return f"{self.kind.upper()} {self.copy}{where}: {self.detail}"


@dataclasses.dataclass
class CircleSummary:
    checked: int = 0
    bytes_read: int = 0
    ok: int = 0
    missing: int = 0
    mismatch: int = 0
    disagrees: int = 0
    error: int = 0
    orphans: int = 0
    #: known copies left for a later run
    left: int = 0
    #: files without a recorded SHA-256 yet: nothing to check them against
    unverified: int = 0


@dataclasses.dataclass
class Audit:
    audit_id: int
    copies: int = 0
    checked: int = 0
    bytes_read: int = 0
    findings: list[Finding] = dataclasses.field(default_factory=list)
    circles: dict[str, CircleSummary] = dataclasses.field(default_factory=dict)
    #: whether orphans were looked for (not with --dataset)
    orphans_checked: bool = True

    def circle(self, name: str) -> CircleSummary:
        return self.circles.setdefault(name, CircleSummary())

    def total(self, field: str) -> int:
        return sum(getattr(summary, field) for summary in self.circles.values())

    def add(self, finding: Finding, record: checks.CopyRecord | None = None) -> None:
        """A finding that is not the result of a check: also in the history."""
        self.findings.append(finding)
        checks.record_finding(
            self.audit_id, finding.kind, finding.copy, finding.location, finding.detail, record
        )

    def as_dict(self) -> dict:
        return {
            "audit_id": self.audit_id,
            "copies_known": self.copies,
            "copies_checked": self.checked,
            "bytes_read": self.bytes_read,
            "copies_left": self.total("left"),
            "files_unverified": self.total("unverified"),
            "orphans_checked": self.orphans_checked,
            "findings": [dataclasses.asdict(finding) for finding in self.findings],
            "circles": {
                name: dataclasses.asdict(summary) for name, summary in sorted(self.circles.items())
            },
        }


@dataclasses.dataclass(frozen=True)
class _Found:
    """A copy found in this run, before it is registered."""

    location: str
    placed: placement.PlacedFile
    path: Path | None
    package_id: str
    package_name: str
    circle: str


class Roots:
    """The folders the local copies are in. An unmounted one (not there, or empty while
    copies should be in it) must not look like the loss of every copy in it: it is
    checked once per run, before any copy in it."""

    def __init__(self, backup_root: Path | None):
        storage = tk.config.get("ckan.storage_path")
        settings = (
            (config.depots_path(), "ckanext.dcor_depot.depots_path"),
            (Path(storage) if storage else None, "ckan.storage_path"),
            (backup_root, "dcor_object_store.local_backup_location"),
        )
        self.settings = {Path(os.path.abspath(p)): name for p, name in settings if p is not None}
        self._problems: dict[Path, str | None] = {}

    def root_of(self, path: Path) -> Path | None:
        path = Path(os.path.abspath(path))
        inside = [root for root in self.settings if path.is_relative_to(root)]
        return max(inside, key=lambda root: len(root.parts), default=None)

    def problem(self, path: Path) -> str | None:
        """Why the folder holding ``path`` cannot be audited now; None when it can."""
        root = self.root_of(path)
        if root is None:
            return None
        if root not in self._problems:
            self._problems[root] = self._check(root)
        return self._problems[root]

    def _check(self, root: Path) -> str | None:
        where = f"{root} ({self.settings[root]}) on host {socket.gethostname()}"
        try:
            if not root.is_dir():
                return f"{where} is not a folder"
            with os.scandir(root) as entries:
                if next(entries, None) is None:
                    return f"{where} is empty"
        except OSError as exc:
            return f"{where} cannot be read ({exc.strerror or exc})"
        return None


@dataclasses.dataclass
class Known:
    """The copies to audit, due first first, and what cannot be audited."""

    copies: list[Copy]
    #: per circle: files without a recorded SHA-256 yet (the jobs' matter)
    unverified: dict[str, int]
    #: files the depot cannot place (``PlacedFile.problem``): one error each
    problems: list[Finding] = dataclasses.field(default_factory=list)


def known_copies(store: ObjectStore, package_id: str | None = None) -> Known:
    """Register the copies of every verified file of the active resources (of one
    dataset) and forget those that are gone on purpose; those due first come first:
    never checked, then least recently checked."""
    circles = ckan_rows.circle_names()
    found: dict[tuple[str, str, str], _Found] = {}
    unverified: collections.Counter[str] = collections.Counter()
    problems: list[Finding] = []
    seen = checks.copy_records(package_id)
    for candidate in candidates(store, package_id=package_id, url_types=None):
        dataset = (
            candidate.package_id,
            candidate.package_name,
            circles.get(candidate.owner_org or "", NO_CIRCLE),
        )

        def add(kind, placed, location: str, path: Path | None = None, dataset=dataset):
            found[(placed.resource_id, placed.artifact, kind)] = _Found(
                location, placed, path, *dataset
            )

        for placed in candidate.files.values():
            if placed.problem:
                location = str(placed.recorded) if placed.recorded else ""
                problems.append(
                    Finding(
                        "error",
                        "object",
                        location,
                        f"not checked: {placed.problem}",
                        dataset[2],
                        placed.resource_id,
                        dataset[1],
                    )
                )
                continue
            if not placed.sha256 or placed.size is None:
                unverified[dataset[2]] += 1  # nothing to check it against yet: run-jobs-dcor-depot
                continue
            if placed.recorded is not None:
                add("object", placed, str(placed.recorded))
            if placed.artifact != "resource":
                continue
            depot = (placed.resource_id, placed.artifact, "depot")
            local = placed.local
            if local is not None and (local.is_symlink() or local.exists()):
                path = behind(local)
                add("depot", placed, str(path), path)
            elif depot in seen and seen[depot].result != checks.DELETED:
                # CKAN's path is gone, and not by the migration, which marks the depot
                # files it deletes (operations/migrate.py): this one is still audited
                add("depot", placed, seen[depot].location, Path(seen[depot].location))
            path = placement.backup_path(placed.resource_id)
            if path is not None:
                if path.exists() or (placed.resource_id, placed.artifact, "backup") in seen:
                    add("backup", placed, str(path), path)
    # deleted resources, backups no longer kept, depot files the migration deleted
    checks.forget(seen.keys() - found.keys())
    checks.register(
        [
            {
                "resource_id": key[0],
                "artifact": key[1],
                "copy": key[2],
                "package_id": copy.package_id,
                "location": copy.location,
                "size": copy.placed.size,
                "sha256": copy.placed.sha256,
            }
            for key, copy in found.items()
        ]
    )
    registered = checks.copy_records(package_id)
    copies = [
        Copy(
            registered[key],
            copy.package_name,
            copy.circle,
            object=tuple(copy.placed.recorded) if key[2] == "object" else None,
            path=copy.path,
        )
        for key, copy in found.items()
        if key in registered
    ]
    order = {kind: index for index, kind in enumerate(COPY_KINDS)}
    copies.sort(
        key=lambda c: (
            c.record.checked is not None,
            c.record.checked or c.record.first_seen,
            order[c.record.copy],
        )
    )
    return Known(copies, dict(unverified), problems)


class ReadFailed(Exception):
    """Reading a copy's bytes failed part way: it may have read most of them."""


def check(store: ObjectStore, copy: Copy) -> tuple[str, str | None, int]:
    """Check one copy by reading all its bytes: (result, detail, bytes read).

    Raises :class:`S3Error` or :class:`OSError` when it failed before reading
    the bytes, :class:`ReadFailed` when it failed while reading them.
    """
    record = copy.record
    if copy.object is not None:
        info = store.object_info(*copy.object)
        if info is None:
            return "missing", "the object is missing", 0
        if info.size != record.size:
            return "mismatch", f"has {info.size} bytes, the file has {record.size}", 0
        if info.sha256 is not None and info.sha256 != record.sha256:
            return "mismatch", f"its metadata says SHA-256 {info.sha256}, not {record.sha256}", 0
        try:
            hashes = store.hash_object(*copy.object)
        except S3Error as exc:
            raise ReadFailed(str(exc)) from exc
        actual, read = hashes.sha256, hashes.size
    else:
        path = copy.path
        if not path.is_file():
            return "missing", "the file is missing", 0
        size = path.stat().st_size
        if size != record.size:
            return "mismatch", f"has {size} bytes, the file has {record.size}", 0
        try:
            actual, read = sha256_of_file(path), size
        except OSError as exc:
            raise ReadFailed(str(exc)) from exc
    if actual != record.sha256:
        return "mismatch", f"its bytes have SHA-256 {actual}, not {record.sha256}", read
    return "ok", None, read


def changed_since(store: ObjectStore, copy: Copy) -> bool:
    """Whether the copy's file changed after the run read it: deleted, other bytes
    recorded, its object moved (another circle). A copy found wrong is reported only
    when it did not."""
    record = copy.record
    row = checks.current(record.key)
    if row is None or row.result == checks.DELETED:
        return True  # the migration deleted this depot file on purpose
    try:
        placed = placement.file_of(store, record.package_id, record.resource_id, record.artifact)
    except JobError:
        return True
    if placed.resource_state != "active" or (placed.sha256, placed.size) != (
        record.sha256,
        record.size,
    ):
        return True
    return copy.object is not None and tuple(placed.recorded or ()) != copy.object


#: After this many failed checks in a row an audit asks the object store whether it
#: answers, and stops when it does not: the copies stay due, the next run starts with them.
MAX_ERRORS_IN_A_ROW = 10


@dataclasses.dataclass
class _Budget:
    budget_bytes: int | None
    budget_seconds: float | None
    started: float = 0.0
    #: bytes read, and the size of each copy whose check failed part way
    spent: int = 0

    def __post_init__(self) -> None:
        self.started = monotonic()

    def allows(self, size: int) -> bool:
        if self.budget_seconds is not None and monotonic() - self.started >= self.budget_seconds:
            return False
        return self.budget_bytes is None or self.spent + size <= self.budget_bytes


def run(
    store: ObjectStore,
    package_id: str | None = None,
    budget_bytes: int | None = None,
    budget_seconds: float | None = None,
    progress: Callable[[list[Copy]], Iterable[Copy]] = iter,
    lost: Callable[[], bool] = lambda: False,
) -> Audit:
    """Check the copies due first within the budget, record every result; then orphans.

    ``lost``: whether this run's lock was lost (another audit may run): asked
    before each read; the run stops then, and after :data:`MAX_ERRORS_IN_A_ROW`
    failed checks in a row when the object store does not answer. The copies not checked
    are left for the next run.
    """
    audit = Audit(
        checks.start_audit(
            package_id,
            budget_bytes,
            int(budget_seconds) if budget_seconds is not None else None,
        ),
        orphans_checked=package_id is None,
    )
    budget = _Budget(budget_bytes, budget_seconds)
    known = known_copies(store, package_id)
    roots = Roots(config.local_backup_location())
    audit.copies = len(known.copies)
    for circle, count in known.unverified.items():
        audit.circle(circle).unverified = count
    for finding in known.problems:
        audit.add(finding)
    by_file: dict[tuple[str, str], list[Copy]] = collections.defaultdict(list)
    for copy in known.copies:
        by_file[copy.file].append(copy)
    done: set[tuple[str, str, str]] = set()
    #: the result of each copy read in this run, before it was judged
    outcomes: dict[tuple[str, str, str], str] = {}
    unavailable: collections.Counter[Path] = collections.Counter()
    #: why the run stopped early, and how many checks in a row failed
    stopped: str | None = None
    errors: list[str] = []
    for copy in progress(known.copies):
        if copy.record.key in done:
            continue
        summary = audit.circle(copy.circle)
        record = copy.record
        if stopped is not None:
            summary.left += 1
            continue
        if budget_bytes is not None and record.size > budget_bytes:
            summary.left += 1
            detail = (
                f"{record.size} bytes, more than the budget of {budget_bytes} bytes: no run "
                f"with this budget can check it; raise --budget-gib ({copy.where})"
            )
            audit.add(Finding.of(copy, "over-budget", detail), record)
            continue
        if copy.path is not None and roots.problem(copy.path):
            summary.left += 1
            unavailable[roots.root_of(copy.path)] += 1
            continue
        if not budget.allows(record.size):
            summary.left += 1  # a smaller copy further on may still fit
            continue
        if lost():
            stopped = (
                "this audit lost its lock (Redis unreachable, or the process paused longer "
                "than a lease)"
            )
            summary.left += 1
            continue
        results = {record.key: _check(store, copy, budget)}
        siblings = {c.record.key: c for c in by_file[copy.file]}
        if results[record.key][0] in ("missing", "mismatch"):
            # judge it with the file's other copies as they are now
            for key, other in siblings.items():
                readable = other.path is None or not roots.problem(other.path)
                if key in done or key in results or not readable:
                    continue
                if budget.allows(other.record.size):
                    results[key] = _check(store, other, budget)
        for key, (result, _, _) in list(results.items()):
            # ("error": an object replaced, a file deleted while it was read)
            if result != "ok" and changed_since(store, siblings[key]):
                # moved, changed or deleted during the run: registered anew next run
                checks.forget([key])
                del results[key]
                done.add(key)
                audit.circle(siblings[key].circle).left += 1
        outcomes.update((key, found[0]) for key, found in results.items())
        for key, (result, detail, read) in results.items():
            _record(audit, siblings[key], result, detail, read, outcomes, siblings)
            done.add(key)
            if siblings[key].object is not None:  # the store's errors in a row
                errors = errors + [detail] if result == "error" else []
        if len(errors) >= MAX_ERRORS_IN_A_ROW:
            # the store does not answer, or only these copies fail (they stay due and
            # must not keep every later run from the copies behind them)
            try:
                store.list_buckets()
            except S3Error as exc:
                stopped = (
                    f"{len(errors)} checks in a row failed (the last: {errors[-1]}) and the "
                    f"object store does not answer ({exc})"
                )
            errors = []
    for root, count in unavailable.items():
        detail = (
            f"{roots.problem(root)}: is it mounted? {count} copies in it were not "
            "checked; mount it (or correct the setting) and run again"
        )
        audit.add(Finding("error", "local", str(root), detail))
    if stopped is not None:
        detail = f"{stopped}; the audit stopped, {audit.total('left')} copies left: run it again"
        audit.add(Finding("error", "audit", "", detail))
        audit.orphans_checked = False
    elif package_id is None:
        _orphans(store, audit)
    checks.finish_audit(
        audit.audit_id,
        audit.checked,
        audit.bytes_read,
        len(audit.findings),
        audit.total("left"),
        json.dumps(audit.as_dict()["circles"]),
    )
    return audit


def _check(store: ObjectStore, copy: Copy, budget: _Budget) -> tuple[str, str | None, int]:
    try:
        result, detail, read = check(store, copy)
    except ReadFailed as exc:
        budget.spent += copy.record.size  # it may have read most of it
        return "error", f"reading it failed: {exc}; it stays due", 0
    except (S3Error, OSError) as exc:
        return "error", f"the check failed: {exc}; it stays due", 0
    except Exception as exc:  # noqa: BLE001 - one failed copy; the audit goes on
        return "error", f"the check failed: {errors.one_item_failed(exc)}; it stays due", 0
    budget.spent += read
    return result, detail, read


def _record(
    audit: Audit,
    copy: Copy,
    result: str,
    detail: str | None,
    read: int,
    outcomes: dict[tuple[str, str, str], str],
    siblings: dict[tuple[str, str, str], Copy],
) -> None:
    """Record the result of one copy, judged with the other copies of its file
    (``siblings``) as read in this run (``outcomes``)."""
    record = copy.record
    if result in ("missing", "mismatch"):
        good = [c.record for key, c in siblings.items() if outcomes.get(key) == "ok"]
        if good:
            result = "disagrees"
            detail += (
                f"; the {good[0].copy} copy at {good[0].location} holds the recorded bytes "
                "(read in this run): restore this copy from it"
            )
        else:
            detail += "; no other copy read in this run holds the recorded bytes"
            detail += "".join(
                f"; the {other.copy} copy at {other.location} held them when checked at "
                f"{other.last_ok:%Y-%m-%d %H:%M} UTC (not read again in this run)"
                for key, other in ((k, c.record) for k, c in siblings.items())
                if key not in outcomes and other.last_ok is not None
            )
    if detail is not None:
        detail += f" ({copy.where})"
    checks.record_check(audit.audit_id, record, result, detail, read)
    summary = audit.circle(copy.circle)
    audit.checked += 1
    audit.bytes_read += read
    summary.checked += 1
    summary.bytes_read += read
    setattr(summary, result, getattr(summary, result) + 1)
    if result != "ok":
        audit.findings.append(Finding.of(copy, result, detail))


def _orphans(store: ObjectStore, audit: Audit) -> None:
    """Objects in the circle buckets that no file of any dataset accounts for."""
    known = ckan_rows.all_resource_ids()
    known |= {row.resource_id for row in depot_files.file_records()}
    circles = {
        placement.circle_bucket(store, org_id): name
        for org_id, name in ckan_rows.circle_names().items()
    }
    model.Session.rollback()
    try:
        for info in sweep.orphans(store):
            parsed = parse_object_key(info.key)
            if parsed is None:
                detail = "the key is not one of a resource's objects"
            elif parsed[1] not in known:
                detail = f"no resource {parsed[1]} exists"
            else:
                detail = f"resource {parsed[1]} records no object here (another circle's bucket?)"
            location = f"s3://{info.bucket}/{info.key}"
            circle = circles.get(info.bucket, NO_CIRCLE)
            audit.circle(circle).orphans += 1
            detail = f"{detail} ({info.size} bytes)"
            audit.add(Finding("orphan", "object", location, detail, circle))
    except S3Error as exc:
        audit.add(Finding("error", "object", "", f"listing the buckets failed: {exc}"))


def audited_dataset(dataset: str) -> str:
    """The id of a dataset whose copies are audited (``--dataset``); :class:`JobError` when
    there is no such dataset or it is deleted."""
    package = model.Package.get(dataset)
    if package is None:
        raise errors.JobError(f"There is no dataset {dataset!r}: check its name or id")
    if package.state == "deleted":
        raise errors.JobError(
            f"Dataset {package.name} is deleted: its copies are no longer audited"
        )
    return package.id
