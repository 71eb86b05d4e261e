"""The rolling fixity audit (``ckan dcor-verify-object-store``): do the copies hold what
was recorded?

Every copy of every file of an active resource is known to the audit
(``checks.py``): the S3 object (each artifact: resource, condensed, preview),
the local backup copy of a file uploaded straight to S3, and the depot file
behind CKAN's path of an uploaded file. A run re-hashes the copies least
recently checked first (never checked ones before all others) until its
budget of bytes or minutes is spent, and records every result, so that
successive runs cover everything. A copy that changed (another bucket after a
move, other recorded bytes) is due again at once. A copy the audit saw once
and that is gone is missing. Objects in the circle buckets that no file
accounts for are orphans (:func:`sweep.orphans`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic

import ckan.model as model
import sqlalchemy as sa

from .. import checks, config, records
from ..model import COPY_KINDS
from ..storage.depot import backup_path_for
from ..storage.s3 import ObjectStore, S3Error, parse_object_key, sha256_of_file
from . import sweep
from .status import candidates


@dataclasses.dataclass(frozen=True)
class Copy:
    """One copy of one file, and what it must hold."""

    record: checks.CopyRecord
    package_name: str
    #: the circle (organization) name, "" without one
    circle: str
    #: the object (bucket, key), or None for a local copy
    object: tuple[str, str] | None = None
    path: Path | None = None

    @property
    def where(self) -> str:
        return f"resource {self.record.resource_id} of dataset {self.package_name}"


@dataclasses.dataclass(frozen=True)
class Finding:
    #: "missing", "mismatch", "disagrees", "error", "orphan", or "over-budget" (too
    #: large for the budget: no run with it can check it)
    kind: str
    copy: str
    location: str
    detail: str
    circle: str = ""
    resource_id: str | None = None
    package_name: str | None = None

    def line(self) -> str:
        return f"{self.kind.upper()} {self.copy} {self.location}: {self.detail}"


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

    @property
    def left(self) -> int:
        return sum(summary.left for summary in self.circles.values())

    def as_dict(self) -> dict:
        return {
            "audit_id": self.audit_id,
            "copies_known": self.copies,
            "copies_checked": self.checked,
            "bytes_read": self.bytes_read,
            "copies_left": self.left,
            "orphans_checked": self.orphans_checked,
            "findings": [dataclasses.asdict(finding) for finding in self.findings],
            "circles": {
                name: dataclasses.asdict(summary) for name, summary in sorted(self.circles.items())
            },
        }


def known_copies(store: ObjectStore, package_id: str | None = None) -> list[Copy]:
    """Register the copies of every file of the active resources (of one dataset); those
    due first: never checked, then least recently checked."""
    backup_root = config.local_backup_location()
    circles = dict(model.Session.execute(sa.select(model.Group.id, model.Group.name)).all())
    found: dict[tuple[str, str, str], tuple] = {}
    seen = checks.copy_records(package_id)
    active = []
    for candidate in candidates(store, package_id=package_id, url_types=None):
        active.append(candidate.resource_id)
        dataset = (candidate.package_id, candidate.package_name)
        circle = circles.get(candidate.owner_org or "", "")
        for placed in candidate.files.values():
            if not placed.sha256 or placed.size is None:
                continue  # not verified yet: the jobs' matter (run-jobs-dcor-depot)
            base = (placed.resource_id, placed.artifact)
            if placed.recorded is not None:
                found[(*base, "object")] = (str(placed.recorded), placed, None, dataset, circle)
            if placed.artifact != "resource":
                continue
            if placed.local is not None:
                path = placed.local.resolve() if placed.local.is_symlink() else placed.local
                if path.exists() or (*base, "depot") in seen:
                    found[(*base, "depot")] = (str(path), placed, path, dataset, circle)
            if backup_root is not None:
                path = backup_path_for(backup_root, placed.resource_id)
                if path.exists() or (*base, "backup") in seen:
                    found[(*base, "backup")] = (str(path), placed, path, dataset, circle)
    checks.forget_others(seen, active)
    checks.register(
        [
            {
                "resource_id": key[0],
                "artifact": key[1],
                "copy": key[2],
                "package_id": dataset[0],
                "location": location,
                "size": placed.size,
                "sha256": placed.sha256,
            }
            for key, (location, placed, _, dataset, _) in found.items()
        ]
    )
    registered = checks.copy_records(package_id)
    copies = [
        Copy(
            registered[key],
            dataset[1],
            circle,
            object=tuple(placed.recorded) if key[2] == "object" else None,
            path=path,
        )
        for key, (_, placed, path, dataset, circle) in found.items()
    ]
    order = {kind: index for index, kind in enumerate(COPY_KINDS)}
    copies.sort(
        key=lambda c: (
            c.record.checked is not None,
            c.record.checked or c.record.first_seen,
            order[c.record.copy],
        )
    )
    return copies


def check(store: ObjectStore, copy: Copy) -> tuple[str, str | None, int]:
    """Check one copy by reading all its bytes: (result, detail, bytes read)."""
    record = copy.record
    if copy.object is not None:
        info = store.object_info(*copy.object)
        if info is None:
            return "missing", "the object is missing", 0
        if info.size != record.size:
            return "mismatch", f"has {info.size} bytes, the file has {record.size}", 0
        if info.sha256 is not None and info.sha256 != record.sha256:
            return "mismatch", f"its metadata says SHA-256 {info.sha256}, not {record.sha256}", 0
        hashes = store.hash_object(*copy.object)
        actual, read = hashes.sha256, hashes.size
    else:
        path = copy.path
        if not path.is_file():
            return "missing", "the file is missing", 0
        size = path.stat().st_size
        if size != record.size:
            return "mismatch", f"has {size} bytes, the file has {record.size}", 0
        actual, read = sha256_of_file(path), size
    if actual != record.sha256:
        return "mismatch", f"its bytes have SHA-256 {actual}, not {record.sha256}", read
    return "ok", None, read


def _other_good(copy: Copy, known: dict) -> checks.CopyRecord | None:
    """Another copy of the same file that held the recorded bytes when last checked."""
    for kind in COPY_KINDS:
        other = known.get((copy.record.resource_id, copy.record.artifact, kind))
        if other is not None and kind != copy.record.copy and other.result == "ok":
            return other
    return None


def run(
    store: ObjectStore,
    package_id: str | None = None,
    budget_bytes: int | None = None,
    budget_seconds: float | None = None,
    progress: Callable[[list[Copy]], Iterable[Copy]] = iter,
) -> Audit:
    """Check the copies due first within the budget, record every result; then orphans."""
    audit = Audit(
        checks.start_audit(
            package_id,
            budget_bytes,
            int(budget_seconds) if budget_seconds is not None else None,
        ),
        orphans_checked=package_id is None,
    )
    started = monotonic()
    copies = known_copies(store, package_id)
    audit.copies = len(copies)
    known = {copy.record.key: copy.record for copy in copies}
    for copy in progress(copies):
        summary = audit.circle(copy.circle)
        record = copy.record
        if budget_bytes is not None and record.size > budget_bytes:
            summary.left += 1
            audit.findings.append(
                Finding(
                    "over-budget",
                    record.copy,
                    record.location,
                    f"{record.size} bytes, more than the budget of {budget_bytes} bytes: no "
                    "run with this budget can check it; raise --budget-gib "
                    f"({copy.where})",
                    copy.circle,
                    record.resource_id,
                    copy.package_name,
                )
            )
            continue
        spent_time = budget_seconds is not None and monotonic() - started >= budget_seconds
        too_big = budget_bytes is not None and audit.bytes_read + record.size > budget_bytes
        if spent_time or too_big:
            summary.left += 1  # a smaller copy further on may still fit
            continue
        try:
            result, detail, read = check(store, copy)
        except (S3Error, OSError) as exc:
            result, detail, read = "error", f"the check failed: {exc}", 0
        if result in ("missing", "mismatch") and (other := _other_good(copy, known)):
            result = "disagrees"
            detail += (
                f"; the {other.copy} copy at {other.location} held the recorded bytes when "
                f"checked at {other.checked:%Y-%m-%d %H:%M} UTC: restore this copy from it"
            )
        elif result in ("missing", "mismatch"):
            detail += "; no other copy was found holding the recorded bytes"
        if detail is not None:
            detail += f" ({copy.where})"
        checks.record_check(audit.audit_id, record, result, detail, read)
        known[record.key] = dataclasses.replace(record, result=result)
        audit.checked += 1
        audit.bytes_read += read
        summary.checked += 1
        summary.bytes_read += read
        setattr(summary, result, getattr(summary, result) + 1)
        if result != "ok":
            audit.findings.append(
                Finding(
                    result,
                    record.copy,
                    record.location,
                    detail,
                    copy.circle,
                    record.resource_id,
                    copy.package_name,
                )
            )
    if package_id is None:
        _orphans(store, audit)
    checks.finish_audit(
        audit.audit_id,
        audit.checked,
        audit.bytes_read,
        len(audit.findings),
        audit.left,
        json.dumps(audit.as_dict()["circles"]),
    )
    return audit


def _orphans(store: ObjectStore, audit: Audit) -> None:
    """Objects in the circle buckets that no file of any dataset accounts for."""
    known = set(model.Session.execute(sa.select(model.Resource.id)).scalars())
    known |= {row.resource_id for row in records.file_records()}
    circles = {
        store.circle_bucket(org_id): name
        for org_id, name in model.Session.execute(sa.select(model.Group.id, model.Group.name))
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
            detail = f"{detail} ({info.size} bytes)"
            circle = circles.get(info.bucket, "")
            audit.circle(circle).orphans += 1
            audit.findings.append(Finding("orphan", "object", location, detail, circle))
            checks.record_orphan(audit.audit_id, location, detail)
    except S3Error as exc:
        detail = f"listing the buckets failed: {exc}"
        audit.findings.append(Finding("error", "object", "", detail))
        checks.record_orphan(audit.audit_id, "", detail)
