"""The fixity audit (``ckan dcor-verify-object-store``): do the objects hold what CKAN recorded?

Every recorded object of an active resource (see :func:`placement.dataset_files`)
is checked against its recorded size and the SHA-256 in its metadata; a
sample of them is also read back and hashed. Objects in the circle buckets
that no file accounts for are orphans (:func:`sweep.orphans`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import ckan.model as model
import sqlalchemy as sa

from .. import records
from ..storage.s3 import OBJECT_MISSING, ObjectStore, parse_object_key
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
    return expected


def sample(objects: list[Expected], percent: float, rng: random.Random) -> set[Expected]:
    """``percent`` of the objects (at least one when ``percent`` > 0), chosen at random."""
    if percent <= 0 or not objects:
        return set()
    count = max(1, round(len(objects) * percent / 100))
    return set(rng.sample(objects, min(count, len(objects))))


def check(store: ObjectStore, expected: Expected, rehash: bool) -> Finding | None:
    problem = store.fixity_problem(
        expected.bucket, expected.key, expected.sha256, expected.size, rehash=rehash
    )
    if problem is None:
        return None
    kind = "missing" if problem == OBJECT_MISSING else "mismatch"
    where = f"resource {expected.resource_id} of dataset {expected.package_name}"
    return Finding(kind, expected.bucket, expected.key, f"{problem} ({where})")


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
