"""The fixity audit (``ckan dcor-verify-object-store``): do the objects hold what CKAN recorded?

Every resource's recorded objects (see :func:`records.recorded_object`) are
checked against their size and the SHA-256 in their metadata; a sample of
them is also read back and hashed. Objects in the circle buckets that no
resource accounts for are orphans.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import ckan.model as model

from .. import placement, records
from ..storage.s3 import (
    ARTIFACTS,
    OBJECT_MISSING,
    ObjectStore,
    circle_bucket_prefix,
    parse_object_key,
)
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
    for candidate in candidates(package_id=package_id, url_types=None):
        for artifact in ARTIFACTS:
            recorded = records.recorded_object(candidate.fields, artifact)
            if recorded is not None and candidate.owner_org:
                expected.append(
                    Expected(
                        *placement.object_location(
                            store, candidate.owner_org, candidate.resource_id, artifact
                        ),
                        *recorded,
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
    """Objects in the circle buckets whose key names no resource of that bucket's circle."""
    owners = dict(
        model.Session.query(model.Resource.id, model.Package.owner_org).join(
            model.Package, model.Package.id == model.Resource.package_id
        )
    )
    model.Session.rollback()
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    for bucket in store.list_buckets(prefix=prefix):
        for info in store.iter_objects(bucket):
            detail = _not_accounted_for(store, owners, bucket, info.key)
            if detail is not None:
                yield Finding("orphan", bucket, info.key, f"{detail} ({info.size} bytes)")


def _not_accounted_for(
    store: ObjectStore, owners: dict[str, str | None], bucket: str, key: str
) -> str | None:
    """Why no resource accounts for the object, or None when one does."""
    parsed = parse_object_key(key)
    if parsed is None:
        return "the key is not one of a resource's objects"
    artifact, resource_id = parsed
    if resource_id not in owners:
        return f"no resource {resource_id} exists"
    owner = owners[resource_id]
    if not owner or placement.object_location(store, owner, resource_id, artifact) != (bucket, key):
        return f"resource {resource_id} belongs to another circle"
    return None
