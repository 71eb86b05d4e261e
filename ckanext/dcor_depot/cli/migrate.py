"""``ckan dcor-migrate-resources-to-object-store``: block storage to the circle buckets."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed

import click

from .. import config, locks, placement
from ..operations import migrate
from ..operations.status import candidates
from .common import exit_on_failures, modified_days_option, require_object_store, single_run

#: Seconds after which the finished resources of a dataset are recorded even
#: if others of it are still uploading (so an interrupted run loses little).
RECORD_EVERY = 10.0


#: The command's name, also of the lease that keeps a second run from starting (on any host).
NAME = "dcor-migrate-resources-to-object-store"


def run_lock():
    """The lease of a run: the one ``single_run(NAME)`` takes (tests hold it)."""
    return locks.command_lock(NAME)


@click.command(NAME)
@modified_days_option
@click.option(
    "--verify-existence",
    is_flag=True,
    help="For resources recorded as migrated, check that the object exists with the "
    "recorded size and SHA-256 (metadata); upload again when not.",
)
@click.option(
    "--verify-checksum",
    is_flag=True,
    help="For resources recorded as migrated, read the object back and compare its "
    "SHA-256 with the recorded one; upload again on a mismatch.",
)
@click.option(
    "--delete-after-migration",
    is_flag=True,
    help="Delete a local file (and the depot file behind a symlink) once its object's "
    "bytes, read back in this run, equal the file's.",
)
@click.option("--dry-run", is_flag=True, help="Change nothing; say what would be done.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Resources uploaded in parallel.",
)
def dcor_migrate_resources_to_object_store(
    modified_days: int | None,
    verify_existence: bool,
    verify_checksum: bool,
    delete_after_migration: bool,
    dry_run: bool,
    jobs: int,
):
    """Upload the resource files on block storage to their circle buckets.

    Every uploaded resource of every dataset that is not deleted: its file at
    CKAN's path (or the depot file behind its symlink) and the artifacts
    beside it (PATH_condensed.rtdc, PATH_preview.jpg) go to the bucket of the
    dataset's circle with a verified upload; the resource then records
    sha256, size, etag, s3_available and s3_url. Objects of public, active
    datasets are tagged public. Resources recorded as migrated are skipped
    without asking S3, unless a --verify option asks to check them.
    Interrupted and run again, it goes on where it stopped: verified objects
    are not uploaded again. A missing local file is reported and counted.
    Exits 1 when any resource failed or has no file anywhere.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-migrate-resources-to-object-store
    --jobs 4 --delete-after-migration
    """
    store = require_object_store(parallel_uploads=jobs)
    options = migrate.Options(verify_existence, verify_checksum, delete_after_migration, dry_run)
    # one run at a time (a dry run changes nothing and may run beside one)
    with contextlib.nullcontext() if dry_run else single_run(NAME):
        _run(store, modified_days, options, jobs)


def _run(store, modified_days: int | None, options: migrate.Options, jobs: int) -> None:
    dry_run = options.dry_run
    todo = list(candidates(store, modified_days))
    remaining = defaultdict(int)
    for candidate in todo:
        remaining[candidate.package_id] += 1
    click.echo(f"{'Dry run: ' if dry_run else ''}checking {len(todo)} uploaded resources")

    totals = defaultdict(int)
    failures: list[str] = []
    finished: dict[str, list[migrate.Outcome]] = defaultdict(list)
    last_record: dict[str, float] = defaultdict(time.monotonic)

    def report(outcomes: list[migrate.Outcome]) -> None:
        for outcome in outcomes:
            candidate = outcome.candidate
            where = f"resource {candidate.resource_id} (dataset {candidate.package_name})"
            for name in ("uploaded", "repaired", "already", "planned", "deleted"):
                totals[name] += getattr(outcome, name)
            if outcome.missing:
                totals["missing"] += 1
                failures.append(f"{where}: {outcome.missing}")
            if outcome.errors:
                totals["failed"] += 1
                failures.append(f"{where}: {'; '.join(outcome.errors)}")
            if outcome.actions:
                click.echo(f"\n{where}: {'; '.join(outcome.actions)}")

    def record(package_id: str) -> None:
        outcomes = finished.pop(package_id, [])
        last_record[package_id] = time.monotonic()
        if outcomes:
            report(migrate.record(package_id, outcomes, store, config.depots_path(), options))

    pool = ThreadPoolExecutor(jobs, thread_name_prefix="migrate")
    futures = [pool.submit(_migrate, c, store, options) for c in todo]
    handled = set()
    with click.progressbar(length=len(todo), file=sys.stderr, label="resources") as bar:
        try:
            for future in as_completed(futures):
                handled.add(future)
                outcome = future.result()
                package_id = outcome.candidate.package_id
                finished[package_id].append(outcome)
                remaining[package_id] -= 1
                if (
                    remaining[package_id] == 0
                    or time.monotonic() - last_record[package_id] > RECORD_EVERY
                ):
                    record(package_id)
                bar.update(1)
        finally:
            # on Ctrl-C: no new uploads; those in flight finish, and all that
            # was verified gets recorded
            pool.shutdown(wait=True, cancel_futures=True)
            for future in futures:
                if future not in handled and not future.cancelled():
                    outcome = future.result()
                    finished[outcome.candidate.package_id].append(outcome)
            for package_id in list(finished):
                record(package_id)

    uploaded = (
        f"{totals['planned']} objects would be uploaded"
        if dry_run
        else f"{totals['uploaded']} objects uploaded"
    )
    summary = (
        f"{len(todo)} resources: {uploaded}, "
        f"{totals['repaired']} uploaded again after a failed check, "
        f"{totals['already']} already in S3, {totals['deleted']} local files deleted, "
        f"{totals['missing']} missing, {totals['failed']} failed"
    )
    click.echo(("Dry run, nothing changed. " if dry_run else "") + summary)
    exit_on_failures(failures)


def _migrate(candidate, store, options) -> migrate.Outcome:
    try:
        path = placement.ckan_path(candidate.resource_id)
        return migrate.migrate_resource(candidate, path, store, options)
    except Exception as exc:  # counted as this resource's failure; the run goes on
        return migrate.Outcome(candidate, errors=[f"{type(exc).__name__}: {exc}"])
