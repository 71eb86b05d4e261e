"""Commands about the object store itself."""

from __future__ import annotations

import click

from .. import config
from ..storage.s3 import S3Error, circle_bucket_prefix


@click.command("dcor-check-object-store")
def dcor_check_object_store():
    """Check that the configured S3 object store answers and accepts the credentials.

    Prints the endpoint and the circle buckets found; exits 1 with the reason
    when the store is not configured, unreachable or refuses the credentials.

    Example: ckan -c /etc/ckan/default/ckan.ini dcor-check-object-store
    """
    store = config.object_store()
    if store is None:
        raise click.ClickException(
            "No object store configured: set dcor_object_store.endpoint_url, "
            ".access_key_id and .secret_access_key in the ini file"
        )
    prefix = circle_bucket_prefix(store.settings.bucket_name_template)
    try:
        buckets = store.list_buckets(prefix=prefix)
    except S3Error as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Object store {store.settings.endpoint_url}: reachable, credentials accepted")
    click.echo(f"{len(buckets)} circle bucket(s) matching '{prefix}*'")
    for name in buckets:
        click.echo(f"  {name}")
