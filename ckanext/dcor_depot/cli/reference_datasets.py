"""``ckan import-figshare``: DCOR's reference datasets from figshare."""

from __future__ import annotations

from pathlib import Path

import click

from .. import config
from ..operations.figshare_import import BUNDLED_DOIS, import_all, read_dois
from ..storage.figshare_api import FigshareError, parse_doi
from .common import exit_on_failures, single_run


@click.command("import-figshare")
@click.option(
    "--doi",
    "dois",
    multiple=True,
    help="Import this DOI (10.6084/m9.figshare.<id>.v<version>); repeatable.",
)
@click.option(
    "--dois-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Import the DOIs in this file (one per line, # starts a comment).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Import at most this many of the DOIs.")
def import_figshare(dois: tuple[str, ...], dois_file: Path | None, limit: int | None):
    """Import DCOR's reference datasets from figshare into the circle "figshare-import".

    Without --doi or --dois-file: the DOIs listed in the extension's
    figshare_dois.txt. Each becomes a public dataset figshare-<id>-v<version>
    with reproducible ids; every file is downloaded once, checked against
    figshare's MD5, and uploaded to the circle's bucket with a verified
    upload (without an object store: kept in <depots_path>/figshare/). The
    dataset stays a draft until all its files are in place; a run that
    stops half way is completed by the next one, and a finished import is
    left unchanged. Exits 1 when any DOI failed.

    Example: ckan -c /etc/ckan/default/ckan.ini import-figshare --limit 1
    """
    wanted = list(dois) + (read_dois(dois_file) if dois_file else [])
    if not dois and not dois_file:
        wanted = read_dois(BUNDLED_DOIS)
    for doi in wanted:
        try:
            parse_doi(doi)
        except FigshareError as exc:
            raise click.ClickException(str(exc)) from exc
    wanted = list(dict.fromkeys(wanted))[:limit]
    store = config.object_store()
    with single_run("import-figshare"):
        _counts, failures = import_all(wanted, store, click.echo)
    exit_on_failures(failures)


#: The same command under the name DCOR used before.
dcor_import_figshare = click.Command(
    "dcor-import-figshare",
    callback=import_figshare.callback,
    params=import_figshare.params,
    help=import_figshare.help,
)
