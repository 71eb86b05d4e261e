"""Commands about whole datasets: moving one to another circle."""

from __future__ import annotations

import sys

import click

from ..operations import human_size
from ..operations.circle_move import CircleMoveError, move_to_circle, plan
from ..placement import dataset_files
from ..storage.s3 import S3Error
from .common import exit_on_failures, require_object_store


@click.command("dcor-move-dataset-to-circle")
@click.argument("dataset")
@click.argument("circle")
@click.option(
    "--verify-checksum",
    is_flag=True,
    help="Also read every copy back and hash it (a copy is always checked by its size, ETag "
    "and the SHA-256 in its metadata).",
)
def dcor_move_dataset_to_circle(dataset: str, circle: str, verify_checksum: bool):
    """Move DATASET (id or name) to the circle (organization) CIRCLE, files included.

    Every object the dataset records is copied server-side to CIRCLE's bucket
    and checked against its record (size, ETag, SHA-256; with
    --verify-checksum its bytes are read back and hashed too); only when all
    are verified does the dataset change circle, the new objects get the
    dataset's visibility and the old ones are deleted. A dataset whose files
    cannot all be verified in the target is not moved (the copies are
    removed); exits 1 then, with the reason. While it runs, a change of the
    dataset's visibility takes effect when it ends.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-move-dataset-to-circle
    hl60-blood blood-lab
    """
    store = require_object_store()
    try:
        package, group = plan(store, dataset, circle)
        files = [f for f in dataset_files(store, package.id).files if f.recorded]
        total = sum(f.size or 0 for f in files)
        click.echo(
            f"Moving dataset {package.name} ({len(files)} objects, {human_size(total)}) "
            f"to circle {group.name}"
        )
        with click.progressbar(length=total, file=sys.stderr, label="verified copies") as bar:
            report = move_to_circle(
                store, dataset, circle, rehash=verify_checksum, progress=bar.update
            )
    except (CircleMoveError, S3Error) as exc:
        raise click.ClickException(str(exc)) from exc
    done = report.converged
    click.echo(
        f"Dataset {report.name} moved from circle {report.source} to {report.target}: "
        f"{report.copied} objects copied and verified, {report.already} were already there "
        f"({human_size(report.bytes)}); {done.deleted} old copies deleted, "
        f"{done.tagged} tags changed"
    )
    exit_on_failures(done.problems)
