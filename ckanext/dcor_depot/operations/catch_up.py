"""The first half of ``ckan run-jobs-dcor-depot``: run the jobs that did not run.

Every uploaded resource (of datasets that are not deleted; ``modified_days``: of those
changed lately) is checked for the jobs it still needs (``status.missing_jobs``), and
they run here, one resource after the other. One resource that cannot be checked or
whose jobs fail is one failed item, named; the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

from ..errors import one_item_failed
from ..jobs.queue import forget_failures
from ..jobs.resource_jobs import run_steps
from ..resource_fields import S3_URL_TYPE
from ..storage.s3 import ObjectStore
from .status import Candidate, candidates, missing_jobs


@dataclasses.dataclass
class CaughtUp:
    """What a catch-up found and did."""

    total: int = 0
    #: resources whose missing jobs ran (or would run, with ``dry_run``)
    done: int = 0
    #: resources that needed nothing
    fine: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    #: resources whose work is done: their failed jobs may leave RQ's failed list
    settled: list[str] = dataclasses.field(default_factory=list)
    #: failed jobs of settled resources removed from RQ's failed list
    cleared: int = 0


def _as_is(items: list[Candidate]) -> ContextManager[Iterable[Candidate]]:
    return contextlib.nullcontext(items)


def catch_up(
    store: ObjectStore | None,
    modified_days: int | None,
    dry_run: bool,
    echo: Callable[[str], Any],
    progress: Callable[[list[Candidate]], ContextManager[Iterable[Candidate]]] = _as_is,
) -> CaughtUp:
    """Run the missing jobs of every uploaded resource but convergence (the sweep that
    follows converges every dataset); ``progress`` wraps the list for a progress bar."""
    todo = list(candidates(store, modified_days, url_types=("upload", S3_URL_TYPE)))
    caught = CaughtUp(total=len(todo))
    echo(f"Checking {len(todo)} uploaded resources")
    with progress(todo) as bar:
        for candidate in bar:
            where = f"resource {candidate.resource_id} (dataset {candidate.package_name})"
            try:
                missing = [kind for kind in missing_jobs(candidate, store) if kind != "converge"]
            except Exception as exc:  # noqa: BLE001 - one failed item, named; the rest goes on
                caught.failures.append(f"{where}: {one_item_failed(exc)}")
                continue
            if not missing:
                caught.fine += 1
                caught.settled.append(candidate.resource_id)
                continue
            if dry_run:
                caught.done += 1
                echo(f"\n{where}: would run {', '.join(missing)}")
                continue
            try:
                run_steps(candidate.resource_id, missing)
            except Exception as exc:  # noqa: BLE001 - one failed item, named; the rest goes on
                caught.failures.append(f"{where}: {one_item_failed(exc)}")
            else:
                caught.done += 1
                caught.settled.append(candidate.resource_id)
                echo(f"\n{where}: ran {', '.join(missing)}")
    if not dry_run:
        caught.cleared = forget_failures(caught.settled)
    return caught
