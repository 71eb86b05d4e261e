"""The sweep behind ``ckan run-jobs-dcor-depot``: every dataset's objects as CKAN says now.

A convergence job runs only when a change is announced; the sweep also
catches what happened while no job ran (a worker down, Redis flushed, a tag
changed behind the extension's back). For every dataset that has files, a
dry convergence pass (:func:`converge.converge_files`) tells whether its S3
state differs from the derived one; if so it is converged here and its
objects moved. Objects in the circle buckets that nothing accounts for
(orphans) are made private; ``dcor-prune-orphaned-objects`` removes them
after the retention period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from .. import errors, placement
from ..jobs import converge, move
from ..jobs.queue import forget_failures
from ..model import depot_files, grants
from ..storage.s3 import ObjectInfo, ObjectStore, S3Error, circle_bucket_prefix


@dataclasses.dataclass
class Swept:
    checked: int = 0
    converged: list[converge.Converged] = dataclasses.field(default_factory=list)
    moved: int = 0
    orphans: int = 0
    orphans_made_private: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    #: ids of the datasets whose objects follow CKAN now (their failed jobs are stale)
    settled: list[str] = dataclasses.field(default_factory=list)
    #: failed jobs of settled datasets removed from RQ's failed list
    cleared: int = 0


def sweep(store: ObjectStore, dry_run: bool = False, echo: Callable[[str], None] = print) -> Swept:
    swept = Swept()
    for package_id in depot_files.datasets_with_files():
        swept.checked += 1
        try:
            files = placement.dataset_files(store, package_id)
            plan = converge.converge_files(store, files, dry_run=True)
            if not (plan.changed or plan.moves or plan.problems):
                swept.settled.append(package_id)
                continue
            if dry_run:
                swept.converged.append(plan)
                echo(f"would converge {plan.summary()}")
                continue
            done = converge.converge_here(store, package_id)
            swept.converged.append(done)
            echo(f"converged {done.summary()}")
            if done.moves:
                moved, size = move.move_objects(store, package_id)
                swept.moved += moved
                echo(f"  moved {moved} objects ({size} bytes) to the circle's bucket")
            for problem in done.problems:
                swept.failures.append(f"dataset {done.name}: {problem}")
            if not done.problems:
                swept.settled.append(package_id)
        except Exception as exc:  # noqa: BLE001 - one failed item, named; the rest goes on
            swept.failures.append(f"dataset {package_id}: {errors.one_item_failed(exc)}")
    try:
        for info in orphans(store):
            swept.orphans += 1
            if store.visibility(info.bucket, info.key):
                swept.orphans_made_private += 1
                echo(
                    f"{'would make' if dry_run else 'made'} private: orphan "
                    f"s3://{info.bucket}/{info.key}"
                )
                if not dry_run:
                    store.set_public(info.bucket, info.key, False)
    except S3Error as exc:
        swept.failures.append(f"listing the circle buckets: {exc}")
    if not dry_run:
        swept.cleared = forget_failures(swept.settled)
    return swept


def accounted_for(store: ObjectStore) -> set[tuple[str, str]]:
    """Every ``(bucket, key)`` the extension records or expects (a file that will be
    uploaded, an upload granted that has not expired)."""
    known: set[tuple[str, str]] = grants.pending_locations()
    for package_id in depot_files.datasets_with_files():
        for placed in placement.dataset_files(store, package_id).files:
            for location in (placed.recorded, placed.wanted, placed.moved_from):
                if location is not None:
                    known.add(tuple(location))
    return known


def orphans(store: ObjectStore) -> Iterator[ObjectInfo]:
    """Objects in the circle buckets that no file of any dataset accounts for."""
    known = accounted_for(store)
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    for bucket in store.list_buckets(prefix=prefix):
        for info in store.iter_objects(bucket):
            if (bucket, info.key) not in known:
                yield info
