"""``ckan run-jobs-dcor-depot``: catch up on the jobs that did not run."""

from __future__ import annotations

import sys

import click

from .. import config
from ..jobs.queue import RESOURCE_JOBS
from ..jobs.visibility import apply_visibility
from ..operations.status import candidates, missing_jobs
from ..records import S3_URL_TYPE, JobError
from ..storage.s3 import S3Error
from .common import modified_days_option


@click.command("run-jobs-dcor-depot")
@modified_days_option
@click.option("--dry-run", is_flag=True, help="Only list the jobs that would run.")
def run_jobs_dcor_depot(modified_days: int | None, dry_run: bool):
    """Run the depot's missing jobs for resources that need them.

    Checks every uploaded resource of every dataset that is not deleted: is
    the file in the user depot, is there a verified S3 object with the
    dataset's visibility, are the DC metadata recorded? For files uploaded
    straight to S3: is their SHA-256 recorded, is there a local backup (when
    dcor_object_store.local_backup_location is set)? Runs the missing jobs
    here, one resource after the other, and ends with counts. Exits 1 when a
    job failed. Running it again finds nothing to do.

    Example: ckan -c /etc/ckan/default/ckan.ini run-jobs-dcor-depot --modified-days 7
    """
    store = config.object_store()
    done = fine = 0
    failures: list[str] = []
    todo = list(candidates(modified_days, url_types=("upload", S3_URL_TYPE)))
    click.echo(f"Checking {len(todo)} uploaded resources")
    with click.progressbar(todo, file=sys.stderr, label="resources") as bar:
        for candidate in bar:
            where = f"resource {candidate.resource_id} (dataset {candidate.package_name})"
            try:
                missing = missing_jobs(candidate, store)
            except (JobError, S3Error) as exc:
                failures.append(f"{where}: {exc}")
                continue
            if not missing:
                fine += 1
                continue
            if dry_run:
                done += 1
                click.echo(f"\n{where}: would run {', '.join(missing)}")
                continue
            errors = []
            for kind in missing:
                try:
                    if kind == "visibility":
                        apply_visibility(candidate.package_id)
                    else:
                        RESOURCE_JOBS[kind](candidate.resource_id)
                except Exception as exc:  # report and go on with the next job
                    errors.append(f"{kind} failed: {exc}")
            if errors:
                failures.append(f"{where}: {'; '.join(errors)}")
            else:
                done += 1
                click.echo(f"\n{where}: ran {', '.join(missing)}")
    verb = "would need jobs" if dry_run else "done"
    click.echo(f"{len(todo)} resources: {done} {verb}, {fine} already fine, {len(failures)} failed")
    for failure in failures:
        click.echo(f"FAILED {failure}", err=True)
    if failures:
        sys.exit(1)
