"""Commands about the object store itself."""

from __future__ import annotations

import datetime
import random
import sys

import ckan.model as model
import click

from .. import config
from ..operations import audit, prune
from ..storage.s3 import S3Error, circle_bucket_prefix
from .common import exit_on_failures, require_object_store


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
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    try:
        buckets = store.list_buckets(prefix=prefix)
    except S3Error as exc:
        raise click.ClickException(str(exc)) from exc
    total = 0
    failures = []
    for bucket in buckets:
        try:
            stale = store.prune_multipart_uploads(bucket, cutoff, dry_run=dry_run)
        except S3Error as exc:
            failures.append(f"{bucket}: {exc}")
            continue
        for upload in stale:
            click.echo(
                f"{'would abort' if dry_run else 'aborted'} {upload.bucket}:{upload.key} "
                f"(upload {upload.upload_id}, started {upload.initiated:%Y-%m-%d %H:%M} UTC)"
            )
        total += len(stale)
    verb = "would be aborted" if dry_run else "aborted"
    click.echo(
        f"{len(buckets)} circle buckets: {total} multipart uploads started before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC {verb}, {len(failures)} buckets failed"
    )
    exit_on_failures(failures)


@click.command("dcor-verify-object-store")
@click.option("--dataset", help="Only the resources of this dataset (id or name); no orphans.")
@click.option(
    "--sample-percent",
    type=click.FloatRange(min=0, max=100),
    default=0,
    show_default=True,
    help="Also read back this percentage of the objects, chosen at random, and hash their "
    "bytes (100: all).",
)
def dcor_verify_object_store(dataset: str | None, sample_percent: float):
    """Fixity audit: check every recorded copy against the resource's SHA-256 and size.

    Each object a resource records (the resource's file and its condensed and
    preview artifacts) must exist with the recorded size and the SHA-256 in
    its metadata, and a local file CKAN serves must have the recorded size; a
    sample (--sample-percent) is read back and hashed, which also finds bytes
    changed behind the metadata's back. Without --dataset,
    objects in the circle buckets that belong to no resource are reported as
    orphans. Exits 1 when anything is missing, mismatched or orphaned.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-verify-object-store --sample-percent 5
    """
    store = require_object_store()
    package_id = None
    if dataset is not None:
        package = model.Package.get(dataset)
        if package is None:
            raise click.ClickException(f"There is no dataset {dataset!r}: check its name or id")
        if package.state == "deleted":
            raise click.ClickException(
                f"Dataset {package.name} is deleted: its objects are no longer audited"
            )
        package_id = package.id
    expected = audit.expected_objects(store, package_id)
    rehash = audit.sample(expected, sample_percent, random.Random())
    findings = []
    with click.progressbar(expected, file=sys.stderr, label="objects") as bar:
        for item in bar:
            try:
                finding = audit.check(store, item, item in rehash)
            except S3Error as exc:  # counted; the audit goes on
                finding = audit.Finding("error", item.bucket, item.key, str(exc))
            if finding is not None:
                findings.append(finding)
    if package_id is None:
        try:
            findings.extend(audit.orphans(store))
        except S3Error as exc:
            findings.append(audit.Finding("error", "", "", f"listing the buckets failed: {exc}"))
    counts = dict.fromkeys(("missing", "mismatch", "orphan", "error"), 0)
    for finding in findings:
        counts[finding.kind] += 1
        click.echo(f"{finding.kind.upper()} {finding.bucket}:{finding.key}: {finding.detail}")
    orphans = "not checked (--dataset)" if package_id else f"{counts['orphan']} orphaned"
    local = sum(item.local is not None for item in expected)
    click.echo(
        f"{len(expected) - local} recorded objects and {local} local files checked "
        f"({len(rehash)} read back and hashed): "
        f"{len(expected) - counts['missing'] - counts['mismatch'] - counts['error']} ok, "
        f"{counts['missing']} missing, {counts['mismatch']} mismatched, "
        f"{counts['error']} could not be checked; {orphans}"
    )
    if findings:
        sys.exit(1)


@click.command("dcor-prune-orphaned-objects")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def dcor_prune_orphaned_objects(dry_run: bool):
    """Remove the kept copies of purged files, and orphaned objects, after the retention period.

    A purged dataset or resource leaves its S3 objects private and its local
    copies (CKAN's path, the depot file, the local backup) unreadable; after
    ckanext.dcor_depot.purge_retention_days they are removed here, as are
    objects in the circle buckets that nothing accounts for and that are
    older than that. Uploads granted by dcor_depot_upload_urls and never
    registered are removed once their URLs expired. Never removes anything
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
        f"{pruned.kept} kept (CKAN has them again); "
        f"{len(pruned.failures)} failed"
    )
    exit_on_failures(pruned.failures)
