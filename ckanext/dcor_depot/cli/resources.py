"""Commands about single resources: append a file, list resources, list their objects."""

from __future__ import annotations

from pathlib import Path

import click

from .. import errors
from ..model import ckan_rows
from ..operations import human_size, listing
from ..operations.append import AppendError
from ..operations.append import append_resource as append
from ..storage.s3 import S3Error
from .common import exit_on_failures, require_object_store

_VISIBILITY_COLOURS = {"public": "green", "private": "yellow", "missing": "red"}


@click.command("append-resource")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("dataset")
@click.option("--name", help="Name of the new resource (default: the file's name).")
@click.option(
    "--delete-source",
    is_flag=True,
    help="Delete PATH once the resource exists and its object's bytes were read back.",
)
@click.option(
    "--no-dc-check", is_flag=True, help="Append a .rtdc file even if dclab cannot read it."
)
def append_resource(
    path: Path, dataset: str, name: str | None, delete_source: bool, no_dc_check: bool
):
    """Add the file PATH to the dataset DATASET (id or name), also an active one.

    The file goes straight to the circle's bucket with a verified upload; then
    the resource is created with a reproducible id (from the dataset's id and
    the file's SHA-256), its sha256, size, S3 fields and mimetype, and for
    .rtdc files the DC metadata. Refuses, changing nothing: a missing,
    unreadable or directory PATH, an unknown or deleted dataset, a .rtdc file
    dclab cannot read (unless --no-dc-check), a file already in the dataset.

    Example: ckan -c /etc/ckan/default/ckan.ini append-resource
    /data/M001_data.rtdc my-dataset --delete-source
    """
    store = require_object_store()
    try:
        appended = append(store, path, dataset, name, not no_dc_check, delete_source)
    except (AppendError, S3Error) as exc:
        raise click.ClickException(str(exc)) from exc
    resource = appended.resource
    action = "uploaded" if appended.uploaded else "already in S3, verified"
    click.echo(
        f"Appended {path} to dataset {dataset} as resource {resource['id']} "
        f"({resource['name']}, {resource['size']} bytes, sha256 {resource['sha256']}): "
        f"{action} at {resource['s3_url']}"
    )
    if appended.source_deleted:
        click.echo(f"Deleted {path}")


@click.command("list-all-resources")
@click.option(
    "--state",
    type=click.Choice(["active", "draft", "deleted", "all"]),
    default="active",
    show_default=True,
    help="active: resources of active datasets; draft: of draft datasets; deleted: "
    "deleted resources and those of deleted datasets; all: every resource.",
)
def list_all_resources(state: str):
    """Print the id of every resource in STATE, one per line.

    Example: ckan -c /etc/ckan/default/ckan.ini list-all-resources --state deleted
    """
    for resource_id in ckan_rows.resource_ids(state):
        click.echo(resource_id)


@click.command("dcor-list-s3-objects-for-dataset")
@click.argument("dataset")
def dcor_list_s3_objects_for_dataset(dataset: str):
    """List the S3 objects of every file of DATASET (resources, deleted ones too, and artifacts).

    One line per object: bucket:key where it is recorded (or where it belongs,
    when it has none yet), public/private/missing, size, and notes (deleted
    resource, a move to the circle's bucket that is pending). Resources
    without a file (links) have no objects. Coloured on a terminal, plain
    when piped.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-list-s3-objects-for-dataset my-dataset
    """
    store = require_object_store()
    try:
        name, objects, failures = listing.dataset_objects(store, dataset)
    except (errors.JobError, S3Error) as exc:
        raise click.ClickException(str(exc)) from None
    counts = dict.fromkeys(_VISIBILITY_COLOURS, 0)
    for found in objects:
        counts[found.state] += 1
        size = human_size(found.size) if found.size is not None else "-"
        label = click.style(f"{found.state:<7}", fg=_VISIBILITY_COLOURS[found.state])
        note = f" ({'; '.join(found.notes)})" if found.notes else ""
        click.echo(f"{found.bucket}:{found.key}  {label}  {size}{note}")
    click.echo(f"Dataset {name}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    exit_on_failures(failures)
