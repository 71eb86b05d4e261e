"""Migration of the files on block storage into the circle buckets.

Used by ``ckan dcor-migrate-resources-to-object-store``, which parses its options and
prints what :func:`run` reports. The work for one resource (:func:`migrate_resource`)
touches files and S3 only, never the database, so :func:`run` runs it in threads; it
then records the results (:func:`record`), one dataset update at a time, and deletes
local files only after their objects are recorded.

Rule of deletion: a local file is deleted only when, in this same run, the
object's bytes were read back from S3 and their SHA-256 and size equal
those of the local file, also hashed in this run, and the file has not
changed since.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import ckan.model as model
import sqlalchemy as sa

from .. import config, errors, locks, placement, resource_fields
from ..jobs.verified import record_verified
from ..model import checks
from ..storage.depot import DepotError, behind, file_state, remove_local
from ..storage.s3 import (
    ARTIFACTS,
    ObjectConflictError,
    ObjectStore,
    S3Error,
    UploadResult,
    sha256_of_file,
)
from .status import Candidate, candidates

#: Seconds after which the finished resources of a dataset are recorded even
#: if others of it are still uploading (so an interrupted run loses little).
RECORD_EVERY = 10.0


@dataclasses.dataclass(frozen=True)
class Options:
    verify_existence: bool = False
    verify_checksum: bool = False
    delete_after_migration: bool = False
    dry_run: bool = False


@dataclasses.dataclass(frozen=True)
class Deletion:
    """A local file whose object was verified in this run, and its state then."""

    path: Path
    state: tuple[int, ...]
    artifact: str
    #: (sha256, size) of the object, as verified
    verified: tuple[str, int]


@dataclasses.dataclass
class Outcome:
    """What happened to one resource; counts are of objects (resource and artifacts)."""

    candidate: Candidate
    #: resource fields to record
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: what was done, for the operator, e.g. "uploaded condensed"
    actions: list[str] = dataclasses.field(default_factory=list)
    uploaded: int = 0
    repaired: int = 0
    already: int = 0
    #: objects a dry run would upload
    planned: int = 0
    #: local files deleted (a symlink and its depot file count once)
    deleted: int = 0
    #: the resource's file is neither on block storage nor recorded in S3
    missing: str | None = None
    errors: list[str] = dataclasses.field(default_factory=list)
    deletions: list[Deletion] = dataclasses.field(default_factory=list)
    #: the verified objects to record, by artifact
    results: dict[str, UploadResult] = dataclasses.field(default_factory=dict)


def migrate_resource(
    candidate: Candidate, ckan_path: Path, store: ObjectStore, options: Options
) -> Outcome:
    """Upload and verify the objects of one resource; never raises."""
    outcome = Outcome(candidate)
    try:
        placement.require_circle(candidate.package_name, candidate.owner_org)
    except errors.NoCircle as exc:
        outcome.errors.append(str(exc))
        return outcome
    # the upload job of this resource (or another run) must not upload at the same time
    with locks.upload_lock(candidate.resource_id):
        for artifact in ARTIFACTS:
            try:
                path = placement.local_artifact(ckan_path, artifact)
                _migrate_artifact(outcome, artifact, path, store, options)
            except (S3Error, DepotError, OSError) as exc:
                outcome.errors.append(f"{artifact}: {exc}")
    return outcome


def _migrate_artifact(
    outcome: Outcome,
    artifact: str,
    path: Path,
    store: ObjectStore,
    options: Options,
) -> None:
    candidate = outcome.candidate
    placed = candidate.files.get(artifact)
    recorded = None
    if placed is not None and placed.recorded is not None:
        bucket, key = placed.recorded
        recorded = (placed.sha256, placed.size)
    else:
        bucket, key = placement.object_location(
            store, candidate.owner_org, candidate.resource_id, artifact
        )
    local = path.is_file()
    if recorded is None and not local:
        if artifact == "resource":
            outcome.missing = f"the file is missing at {path} and it is not recorded in S3"
        return
    object_sha256 = None  # of the object's bytes, read back in this run
    expected = None  # the SHA-256 the local file must have
    overwrite = False
    problem = None
    if recorded is not None:
        expected = recorded[0]
        if options.verify_existence or options.verify_checksum:
            problem = store.fixity_problem(bucket, key, *recorded, rehash=options.verify_checksum)
        if problem is None:
            outcome.already += 1
            if options.verify_checksum:
                object_sha256 = recorded[0]
            if not (options.delete_after_migration and local):
                return
        elif not local:
            raise S3Error(f"s3://{bucket}/{key}: {problem}, and there is no local file to upload")
        else:
            overwrite = True
            if options.dry_run:
                outcome.actions.append(f"would upload {artifact} again ({problem})")
                outcome.planned += 1
                return
    elif options.dry_run:
        outcome.actions.append(f"would upload {artifact}")
        outcome.planned += 1
        return
    elif artifact == "resource":
        expected = resource_fields.claimed_sha256(candidate.extras)

    result = None
    headers = resource_fields.object_headers(candidate.fields) if artifact == "resource" else None
    if recorded is None or overwrite:
        state = file_state(path)
        try:
            # private until recorded: an object nobody records is never public
            result = store.upload_verified(
                path, bucket, key, overwrite=overwrite, sha256=expected, headers=headers
            )
        except ObjectConflictError as exc:
            # an object nobody recorded, with other bytes: the local file is the original
            outcome.actions.append(f"replacing an unrecorded object ({exc})")
            result = store.upload_verified(
                path, bucket, key, overwrite=True, sha256=expected, headers=headers
            )
        if overwrite:
            outcome.repaired += 1
            outcome.actions.append(f"uploaded {artifact} again ({problem})")
        elif result.skipped:
            # an object left by an interrupted run, compared by its metadata so far
            if options.verify_checksum:
                problem = store.fixity_problem(bucket, key, result.sha256, result.size, True)
                if problem is not None:
                    raise S3Error(f"s3://{bucket}/{key}: {problem}; nothing recorded")
                object_sha256 = result.sha256
            outcome.already += 1
            outcome.actions.append(f"{artifact} was already in S3, verified")
        else:
            outcome.uploaded += 1
            outcome.actions.append(f"uploaded {artifact}")
        outcome.fields.update(placement.s3_fields(store, artifact, result))
        outcome.results[artifact] = result
        recorded = (result.sha256, result.size)
        local_sha256 = None if result.skipped else result.sha256  # read in this run
    else:
        state = file_state(path)
        local_sha256 = None

    if options.delete_after_migration and local and options.dry_run:
        outcome.actions.append(f"would delete {path} once its object is verified")
    elif options.delete_after_migration and local:
        _confirm_for_deletion(
            outcome,
            artifact,
            path,
            state,
            local_sha256,
            object_sha256,
            bucket,
            key,
            store,
            recorded,
        )


def _confirm_for_deletion(
    outcome: Outcome,
    artifact: str,
    path: Path,
    state: tuple[int, ...],
    local_sha256: str | None,
    object_sha256: str | None,
    bucket: str,
    key: str,
    store: ObjectStore,
    recorded: tuple[str, int],
) -> None:
    """Hash what was not hashed in this run yet; mark the file for deletion if all agree."""
    local_sha256 = local_sha256 or sha256_of_file(path)
    if local_sha256 != recorded[0]:
        raise S3Error(
            f"kept {path}: its SHA-256 is {local_sha256}, the resource records {recorded[0]}"
        )
    if object_sha256 is None:  # read the object's bytes back
        problem = store.fixity_problem(bucket, key, local_sha256, state[1], rehash=True)
    elif object_sha256 != local_sha256:
        problem = f"the object's bytes have SHA-256 {object_sha256}, expected {local_sha256}"
    else:
        problem = None
    if problem is not None:
        raise S3Error(
            f"kept {path}: s3://{bucket}/{key}: {problem}; run with --verify-checksum "
            "to upload it again"
        )
    outcome.deletions.append(Deletion(path, state, artifact, recorded))


def record(
    package_id: str,
    outcomes: list[Outcome],
    store: ObjectStore,
    depots_path: Path,
    options: Options,
) -> list[Outcome]:
    """Record the outcomes of one dataset's resources, then delete the verified local files.

    The objects are recorded (``jobs/verified.record_verified``): in the extension's
    table, then with the visibility the dataset has now (they were uploaded private),
    then on the resources.
    Returns the outcomes (their errors say what could not be recorded or deleted).
    """
    if options.dry_run:
        return outcomes
    fields = {o.candidate.resource_id: o.fields for o in outcomes if o.fields}
    objects = {o.candidate.resource_id: o.results for o in outcomes if o.results}
    try:
        record_verified(store, package_id, objects, fields)
        files = placement.dataset_files(store, package_id)
    except Exception as exc:  # noqa: BLE001 - reported per resource, the run goes on
        for outcome in outcomes:
            if outcome.fields or outcome.deletions:
                outcome.errors.append(f"recording the S3 fields failed: {exc}")
                outcome.deletions.clear()
        return outcomes
    for outcome in outcomes:
        rid = outcome.candidate.resource_id
        if not any(f.resource_id == rid and f.resource_state == "active" for f in files.files):
            outcome.errors.append("the resource was deleted during the migration")
            continue
        for deletion in outcome.deletions:
            placed = files.file(rid, deletion.artifact)
            if placed is None or (placed.sha256, placed.size) != deletion.verified:
                outcome.errors.append(
                    f"kept {deletion.path}: the resource does not record its object"
                )
                continue
            try:
                if deletion.artifact == "resource":
                    # deleted on purpose: the audit does not look for the depot file
                    depot = {
                        "resource_id": rid,
                        "artifact": deletion.artifact,
                        "copy": "depot",
                        "package_id": package_id,
                        "location": str(behind(deletion.path)),
                        "size": placed.size,
                        "sha256": placed.sha256,
                    }
                    checks.deleted(depot, "deleted by the migration: the object is verified")
                removed = remove_local(deletion.path, depots_path, deletion.state)
            except (DepotError, OSError) as exc:
                checks.forget([(rid, deletion.artifact, "depot")])  # kept: audited as found
                outcome.errors.append(f"delete: {exc}")
            except (sa.exc.SQLAlchemyError, errors.JobError) as exc:
                model.Session.rollback()
                outcome.errors.append(f"kept {deletion.path}: recording its deletion failed: {exc}")
            else:
                outcome.deleted += 1
                outcome.actions.append("deleted " + ", ".join(map(str, removed)))
    return outcomes


@dataclasses.dataclass
class Run:
    """What one run did: how many resources it checked, the counts of :class:`Outcome`
    by name, and one line per resource that failed or has no file anywhere."""

    resources: int = 0
    totals: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        t = self.totals
        uploaded = (
            f"{t['planned']} objects would be uploaded"
            if dry_run
            else f"{t['uploaded']} objects uploaded"
        )
        return (
            f"{self.resources} resources: {uploaded}, "
            f"{t['repaired']} uploaded again after a failed check, "
            f"{t['already']} already in S3, {t['deleted']} local files deleted, "
            f"{t['missing']} missing, {t['failed']} failed"
        )


def run(
    store: ObjectStore,
    modified_days: int | None,
    options: Options,
    jobs: int,
    echo: Callable[[str], None] = print,
    progress: Callable[[int], None] | None = None,
) -> Run:
    """Migrate every uploaded resource (changed in the last ``modified_days``) with
    ``jobs`` uploads in parallel; ``echo`` gets what was done per resource, ``progress``
    the count of resources done (first the total, as a negative number). On Ctrl-C no
    new upload starts; those in flight finish, and all that was verified is recorded."""
    todo = list(candidates(store, modified_days))
    done = Run(len(todo))
    remaining: collections.Counter = collections.Counter(c.package_id for c in todo)
    finished: dict[str, list[Outcome]] = collections.defaultdict(list)
    last_record: dict[str, float] = collections.defaultdict(time.monotonic)
    echo(f"{'Dry run: ' if options.dry_run else ''}checking {len(todo)} uploaded resources")
    if progress is not None:
        progress(-len(todo))

    def record_dataset(package_id: str) -> None:
        outcomes = finished.pop(package_id, [])
        last_record[package_id] = time.monotonic()
        if outcomes:
            _report(record(package_id, outcomes, store, config.depots_path(), options), done, echo)

    pool = ThreadPoolExecutor(jobs, thread_name_prefix="migrate")
    futures = [pool.submit(_migrate_one, c, store, options) for c in todo]
    handled = set()
    try:
        for future in as_completed(futures):
            handled.add(future)
            outcome = future.result()
            package_id = outcome.candidate.package_id
            finished[package_id].append(outcome)
            remaining[package_id] -= 1
            if remaining[package_id] == 0 or time.monotonic() - last_record[package_id] > (
                RECORD_EVERY
            ):
                record_dataset(package_id)
            if progress is not None:
                progress(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future not in handled and not future.cancelled():
                outcome = future.result()
                finished[outcome.candidate.package_id].append(outcome)
        for package_id in list(finished):
            record_dataset(package_id)
    return done


def _report(outcomes: list[Outcome], done: Run, echo: Callable[[str], None]) -> None:
    for outcome in outcomes:
        candidate = outcome.candidate
        where = f"resource {candidate.resource_id} (dataset {candidate.package_name})"
        for name in ("uploaded", "repaired", "already", "planned", "deleted"):
            done.totals[name] += getattr(outcome, name)
        if outcome.missing:
            done.totals["missing"] += 1
            done.failures.append(f"{where}: {outcome.missing}")
        if outcome.errors:
            done.totals["failed"] += 1
            done.failures.append(f"{where}: {'; '.join(outcome.errors)}")
        if outcome.actions:
            echo(f"\n{where}: {'; '.join(outcome.actions)}")


def _migrate_one(candidate: Candidate, store: ObjectStore, options: Options) -> Outcome:
    try:
        path = placement.ckan_path(candidate.resource_id)
        return migrate_resource(candidate, path, store, options)
    except Exception as exc:  # noqa: BLE001 - this resource's failure; the run goes on
        return Outcome(candidate, errors=[f"{type(exc).__name__}: {exc}"])
