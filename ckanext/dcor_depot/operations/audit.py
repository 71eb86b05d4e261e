"""The fixity audit (``ckan dcor-verify-object-store``): do the copies hold what CKAN recorded?

Every recorded object of an active resource (see :func:`placement.dataset_files`)
is checked against its recorded size and the SHA-256 in its metadata; a
sample of them is also read back and hashed. The local file CKAN serves
(its path, a symlink into the depot) is checked the same way: its size
always, its bytes in the sample. Objects in the circle buckets that no file
accounts for are orphans (:func:`sweep.orphans`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import ckan.model as model
import sqlalchemy as sa

from .. import records
from ..storage.s3 import OBJECT_MISSING, ObjectStore, parse_object_key, sha256_of_file
from . import sweep
from .status import candidates


@dataclasses.dataclass(frozen=True)
class Expected:
    """An object a resource's fields record."""

    bucket: str
    key: str
    sha256: str
    size: int
    resource_id: str
    package_name: str
    #: CKAN's path of the file it serves itself (None: the object is the only copy)
    local: Path | None = None


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str  # "missing", "mismatch", "orphan" or "error" (the check itself failed)
    bucket: str
    key: str
    detail: str


def expected_objects(store: ObjectStore, package_id: str | None = None) -> list[Expected]:
    """The recorded objects of active resources of datasets that are not deleted."""
    expected = []
    for candidate in candidates(store, package_id=package_id, url_types=None):
        for placed in candidate.files.values():
            if placed.recorded is not None:
                expected.append(
                    Expected(
                        *placed.recorded,
                        placed.sha256,
                        placed.size,
                        candidate.resource_id,
                        candidate.package_name,
                    )
                )
            if placed.artifact == "resource" and placed.local is not None and placed.sha256:
                if placed.local.exists() or placed.local.is_symlink():
                    where = (
                        (*placed.recorded, placed.sha256, placed.size)
                        if placed.recorded
                        else ("", "", placed.sha256, placed.size)
                    )
                    expected.append(
                        Expected(
                            *where, candidate.resource_id, candidate.package_name, placed.local
                        )
                    )
    return expected


def sample(objects: list[Expected], percent: float, rng: random.Random) -> set[Expected]:
    """``percent`` of the objects (at least one when ``percent`` > 0), chosen at random."""
    if percent <= 0 or not objects:
        return set()
    count = max(1, round(len(objects) * percent / 100))
    return set(rng.sample(objects, min(count, len(objects))))


def check(store: ObjectStore, expected: Expected, rehash: bool) -> Finding | None:
    if expected.local is not None:
        return check_local(expected, rehash)
    problem = store.fixity_problem(
        expected.bucket, expected.key, expected.sha256, expected.size, rehash=rehash
    )
    if problem is None:
        return None
    kind = "missing" if problem == OBJECT_MISSING else "mismatch"
    where = f"resource {expected.resource_id} of dataset {expected.package_name}"
    return Finding(kind, expected.bucket, expected.key, f"{problem} ({where})")


def check_local(expected: Expected, rehash: bool) -> Finding | None:
    """The local file CKAN serves: its size, and with ``rehash`` its SHA-256."""
    path = expected.local
    where = f"resource {expected.resource_id} of dataset {expected.package_name}"
    if not path.is_file():
        return Finding("missing", "local", str(path), f"the file CKAN serves is missing ({where})")
    size = path.stat().st_size
    if size != expected.size:
        detail = f"has {size} bytes, the resource records {expected.size}"
    elif rehash and (actual := sha256_of_file(path)) != expected.sha256:
        detail = f"has SHA-256 {actual}, the resource records {expected.sha256}"
    else:
        return None
    return Finding("mismatch", "local", str(path), f"{detail}: CKAN serves other bytes ({where})")


def orphans(store: ObjectStore) -> Iterator[Finding]:
    """Objects in the circle buckets that no file of any dataset accounts for."""
    known = set(model.Session.execute(sa.select(model.Resource.id)).scalars())
    known |= {row.resource_id for row in records.file_records()}
    model.Session.rollback()
    for info in sweep.orphans(store):
        parsed = parse_object_key(info.key)
        if parsed is None:
            detail = "the key is not one of a resource's objects"
        elif parsed[1] not in known:
            detail = f"no resource {parsed[1]} exists"
        else:
            detail = f"resource {parsed[1]} records no object here (another circle's bucket?)"
        yield Finding("orphan", info.bucket, info.key, f"{detail} ({info.size} bytes)")
