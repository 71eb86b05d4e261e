"""``ckan dcor-migrate-resources-to-object-store``: block storage to the circle buckets."""

from __future__ import annotations

import contextlib
import sys

import click

from .. import locks
from ..operations import migrate
from .common import exit_on_failures, modified_days_option, require_object_store, single_run

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
        with click.progressbar(length=0, file=sys.stderr, label="resources") as bar:

            def progress(count: int) -> None:
                if count < 0:
                    bar.length = -count
                else:
                    bar.update(count)

            done = migrate.run(store, modified_days, options, jobs, click.echo, progress)
    click.echo(("Dry run, nothing changed. " if dry_run else "") + done.summary(dry_run))
    exit_on_failures(done.failures)
