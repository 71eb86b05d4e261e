"""Commands about the object store itself."""

from __future__ import annotations

import datetime
import json
import sys

import click

from .. import config
from ..errors import JobError
from ..operations import audit, human_size, prune
from ..storage.s3 import MiB, S3Error, circle_bucket_prefix
from .common import exit_on_failures, require_object_store, single_run


@click.command("dcor-check-object-store")
def dcor_check_object_store():
    """Check that the configured S3 object store answers and accepts the credentials.

    Prints the endpoint and the circle buckets found; exits 1 with the reason
    when the store is not configured, unreachable or refuses the credentials.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-check-object-store
    """
    store = require_object_store()
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    try:
        buckets = store.list_buckets(prefix=prefix)
    except S3Error as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Object store {store.settings.endpoint_url}: reachable, credentials accepted")
    click.echo(f"{len(buckets)} circle bucket(s) matching '{prefix}*'")
    for name in buckets:
        click.echo(f"  {name}")


@click.command("dcor-prune-stale-multipart-uploads")
@click.option(
    "--initiated-before-days",
    type=click.IntRange(min=0),
    default=7,
    show_default=True,
    help="Abort uploads started more than N days ago (0: all unfinished uploads, also "
    "those of uploads running right now).",
)
@click.option("--dry-run", is_flag=True, help="Only list the uploads that would be aborted.")
def dcor_prune_stale_multipart_uploads(initiated_before_days: int, dry_run: bool):
    """Abort unfinished multipart uploads in the circle buckets.

    An upload that was interrupted (a killed job, a lost browser) leaves
    parts that use space in the store until they are aborted. The buckets'
    lifecycle rule does it too, after dcor_object_store.abort_incomplete_multipart_days.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-prune-stale-multipart-uploads
    --initiated-before-days 2
    """
    store = require_object_store()
    cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        days=initiated_before_days
    )
    try:
        buckets, total, failures = prune.prune_multipart(store, cutoff, dry_run, click.echo)
    except S3Error as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would be aborted" if dry_run else "aborted"
    click.echo(
        f"{buckets} circle buckets: {total} multipart uploads started before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC {verb}, {len(failures)} buckets failed"
    )
    exit_on_failures(failures)


@click.command("dcor-verify-object-store")
@click.option("--dataset", help="Only the copies of this dataset (id or name); no orphans.")
@click.option(
    "--budget-gib",
    type=click.FloatRange(min=0, min_open=True),
    help="Read at most this many GiB; the copies checked least recently come first.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Start no check after this many minutes (a check started is finished).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for monitoring).")
def dcor_verify_object_store(
    dataset: str | None, budget_gib: float | None, budget_minutes: float | None, as_json: bool
):
    """Fixity audit: re-hash every copy of every file, least recently checked first.

    The copies are the S3 objects (resource, condensed, preview), the local
    backup copies and the depot files. Each copy checked is read in full and
    must have the file's recorded size and SHA-256; every result is recorded
    (the depot health page shows them), so that runs with a budget
    (--budget-gib, --budget-minutes) cover everything in turn. Findings:
    missing, mismatch, disagrees (another copy still holds the recorded
    bytes: restore from it), error, over-budget (a copy larger than
    --budget-gib) and, without --dataset, orphans (objects in the circle
    buckets no file accounts for). Ends with a summary per circle; exits 1 on
    any finding.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-verify-object-store --budget-gib 2000
    --budget-minutes 300
    """
    store = require_object_store()
    try:
        package_id = None if dataset is None else audit.audited_dataset(dataset)
    except JobError as exc:
        raise click.ClickException(str(exc)) from None

    def progress(copies):
        if as_json:  # for monitoring: the JSON document alone
            yield from copies
            return
        with click.progressbar(copies, file=sys.stderr, label="copies") as bar:
            yield from bar

    try:
        # one audit at a time: two would check the same copies first
        with single_run("dcor-verify-object-store") as lost:
            done = audit.run(
                store,
                package_id,
                budget_bytes=round(budget_gib * 1024 * MiB) if budget_gib else None,
                budget_seconds=budget_minutes * 60 if budget_minutes else None,
                progress=progress,
                lost=lost,
            )
            # before single_run's exit, which fails when the lock was lost
            if as_json:
                click.echo(json.dumps(done.as_dict(), indent=2))
            else:
                for finding in done.findings:
                    click.echo(finding.line())
                _echo_circles(done)
    except JobError as exc:
        raise click.ClickException(str(exc)) from exc
    if done.findings:
        sys.exit(1)


def _echo_circles(done: audit.Audit) -> None:
    header = ("circle", "checked", "read", "ok", "missing", "mismatch", "disagrees", "error")
    rows = [(*header, "orphans", "left")]
    for name, summary in sorted(done.circles.items()):
        rows.append(
            (
                name,
                summary.checked,
                human_size(summary.bytes_read),
                summary.ok,
                summary.missing,
                summary.mismatch,
                summary.disagrees,
                summary.error,
                summary.orphans if done.orphans_checked else "-",
                summary.left,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        click.echo("  ".join(str(cell).ljust(width) for cell, width in cells).rstrip())
    orphans = (
        f"{sum(s.orphans for s in done.circles.values())} orphaned"
        if done.orphans_checked
        else "orphans not checked (--dataset)"
    )
    click.echo(
        f"Audit {done.audit_id}: {done.checked} of {done.copies} copies checked "
        f"({human_size(done.bytes_read)} read), {done.total('left')} left for a later run, "
        f"{len(done.findings)} findings; {orphans}; "
        f"{done.total('unverified')} files not verified yet (run-jobs-dcor-depot)"
    )


@click.command("dcor-prune-orphaned-objects")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def dcor_prune_orphaned_objects(dry_run: bool):
    """Remove the kept copies of purged files, and orphaned objects, after the retention period.

    A purged dataset or resource leaves its S3 objects private and its local
    copies (CKAN's path, the depot file, the local backup) unreadable; after
    ckanext.dcor_depot.purge_retention_days they are removed here, as are
    objects in the circle buckets that nothing accounts for and that are
    older than that. Uploads granted by dcor_depot_upload_urls and never
    registered are removed once their URLs expired, and what is staged
    without a pending grant once it is an hour old. Never removes anything
    a resource still records. Ends with counts; exits 1 when something could not be removed.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-prune-orphaned-objects --dry-run
    """
    store = config.object_store()
    pruned = prune.prune(store, dry_run=dry_run, echo=click.echo)
    verb = "would be removed" if dry_run else "removed"
    click.echo(
        f"{pruned.files} purged files past {config.purge_retention_days()} days: "
        f"{pruned.objects} objects and {pruned.local} local copies {verb}; "
        f"{pruned.orphans} orphaned objects {verb}; {pruned.uploads} expired uploads {verb}; "
        f"{pruned.staged} staged uploads without a grant {verb}; "
        f"{pruned.kept} kept (CKAN has them again); "
        f"{len(pruned.failures)} failed"
    )
    exit_on_failures(pruned.failures)
