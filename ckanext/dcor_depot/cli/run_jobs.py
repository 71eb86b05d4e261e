"""``ckan run-jobs-dcor-depot``: catch up on the jobs that did not run, and sweep S3."""

from __future__ import annotations

import sys

import click

from .. import config
from ..operations import catch_up, sweep
from .common import exit_on_failures, modified_days_option


@click.command("run-jobs-dcor-depot")
@modified_days_option
@click.option("--dry-run", is_flag=True, help="Only list what would be done.")
def run_jobs_dcor_depot(modified_days: int | None, dry_run: bool):
    """Run the depot's missing jobs, then bring every dataset's objects in line with CKAN.

    First every uploaded resource of every dataset that is not deleted (with
    --modified-days, of those changed lately): is the file in the user depot,
    is there a verified S3 object, are the DC metadata recorded? For files
    uploaded straight to S3: is their SHA-256 recorded, is there a local
    backup (when dcor_object_store.local_backup_location is set)? The
    missing jobs run here, one resource after the other.

    Then, with an object store, the sweep, over every dataset whatever
    --modified-days says: objects whose tag differs from what CKAN allows,
    objects in another circle's bucket than their dataset's (moved), old
    copies of moved objects, files of resources CKAN lost (made private,
    kept for ckanext.dcor_depot.purge_retention_days), and orphans in the
    circle buckets (made private). Ends with counts; exits 1 when something
    could not be done, with the reason. Running it again finds nothing to do.

    Example: ckan -c /etc/ckan/default/ckan.ini run-jobs-dcor-depot --modified-days 7
    """
    store = config.object_store()
    caught = catch_up.catch_up(
        store,
        modified_days,
        dry_run,
        click.echo,
        lambda todo: click.progressbar(todo, file=sys.stderr, label="resources"),
    )
    failures = caught.failures
    verb = "would need jobs" if dry_run else "done"
    click.echo(
        f"{caught.total} resources: {caught.done} {verb}, {caught.fine} already fine, "
        f"{len(failures)} failed"
    )
    if caught.cleared:
        click.echo(
            f"{caught.cleared} failed jobs of resources that are fine now: removed from RQ's list"
        )
    if store is not None:
        click.echo("Sweeping the object store: every dataset's objects against CKAN")
        swept = sweep.sweep(store, dry_run=dry_run, echo=click.echo)
        failures += swept.failures
        verb = "would be converged" if dry_run else "converged"
        click.echo(
            f"{swept.checked} datasets with files: {len(swept.converged)} {verb}, "
            f"{swept.moved} objects moved to their circle's bucket; {swept.orphans} orphaned "
            f"objects, {swept.orphans_made_private} of them "
            f"{'would be made' if dry_run else 'made'} private; "
            f"{len(swept.failures)} failed"
        )
        if swept.cleared:
            click.echo(
                f"{swept.cleared} failed jobs of datasets that are fine now: removed from RQ's list"
            )
    exit_on_failures(failures)
