"""What the depot health page (``/ckan-admin/depot``) shows, from the extension's tables
and the job queues: bytes and files per circle, files waiting for or failed in the
depot's jobs, copies the fixity audit has not checked yet or found wrong, and its
last run. Every count comes with the resources behind it (:func:`listing`)."""

from __future__ import annotations

import dataclasses
import datetime

import ckan.model as model

from ..jobs.converge import NO_CIRCLE_LINE
from ..jobs.queue import depot_jobs
from ..model import checks, ckan_rows, depot_files
from ..model.checks import NO_CIRCLE, RESULTS

#: The lists behind the page's numbers.
LISTS = {
    "files": "Files kept",
    "unverified": "Files without a verified object yet",
    "waiting": "Waiting for a job",
    "failed": "Failed in a job",
    "unchecked": "Copies not checked yet",
    "findings": "Copies found wrong",
}
#: The lists behind the numbers of the last audit.
AUDIT_LISTS = {
    "checked": "Copies the last audit checked",
    "left": "Copies the last audit left for a later run",
    "audit-findings": "What the last audit found",
}
#: Entries shown per page of a list.
PAGE_SIZE = 500


@dataclasses.dataclass
class Circle:
    name: str
    title: str
    files: int = 0
    bytes: int = 0
    unverified: int = 0
    waiting: int = 0
    failed: int = 0
    unchecked: int = 0
    findings: int = 0


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a list: a resource (or dataset), where, and what about it."""

    circle: str
    package_name: str | None
    resource_id: str | None
    what: str
    detail: str
    when: datetime.datetime | None = None


@dataclasses.dataclass
class Health:
    circles: list[Circle]
    last_audit: dict | None
    #: an audit that started after the last one that ended (running, or killed)
    unfinished_audit: dict | None

    def total(self, field: str) -> int:
        return sum(getattr(circle, field) for circle in self.circles)


def _datasets() -> dict[str, tuple[str, str, str]]:
    """package id -> (name, circle name, circle title)."""
    return {
        pid: (name, circle or NO_CIRCLE, title or circle or NO_CIRCLE)
        for pid, (name, circle, title) in ckan_rows.dataset_circles().items()
    }


def entries(datasets: dict[str, tuple[str, str, str]], last: dict | None) -> dict[str, list[Entry]]:
    """Every list behind the page's numbers (``datasets``: :func:`_datasets`; ``last``:
    the last audit that ended)."""
    lists: dict[str, list[Entry]] = {name: [] for name in LISTS}

    def entry(package_id: str | None, resource_id: str | None, what: str, detail: str, when=None):
        name, circle, _ = datasets.get(package_id or "", (None, NO_CIRCLE, NO_CIRCLE))
        return Entry(circle, name, resource_id, what, detail, when)

    kept = depot_files.kept_records()
    rows = [row for row in kept if row.bucket is not None]
    # the files the audit checks: of active resources of datasets not deleted
    audited_files = ckan_rows.audited_resource_ids()
    for row in kept:
        if row.bucket is None:
            lists["unverified"].append(
                entry(row.package_id, row.resource_id, row.artifact, "not in S3 yet", row.recorded)
            )
    for row in rows:
        lists["files"].append(
            entry(row.package_id, row.resource_id, row.artifact, f"{row.size} bytes", row.recorded)
        )
    # copies of files deleted since the last audit are forgotten by the next one
    copies = {
        key: record
        for key, record in checks.copy_records().items()
        if record.resource_id in audited_files and record.result != checks.DELETED
    }
    audited = {(rid, artifact) for rid, artifact, kind in copies if kind == "object"}
    for row in rows:
        if row.resource_id in audited_files and (row.resource_id, row.artifact) not in audited:
            where = f"s3://{row.bucket}/{row.key}"
            lists["unchecked"].append(
                entry(row.package_id, row.resource_id, "object", f"{where}: never checked")
            )
    for record in copies.values():
        if record.result not in (None, "ok"):  # an error is in the history only
            lists["findings"].append(
                entry(
                    record.package_id,
                    record.resource_id,
                    f"{record.copy}: {record.result}",
                    f"{record.location}: {record.detail}",
                    record.checked,
                )
            )
        elif record.checked is None:
            lists["unchecked"].append(
                entry(record.package_id, record.resource_id, record.copy, record.location)
            )
    lists.update({name: [] for name in AUDIT_LISTS})
    if last is not None:
        history = checks.audit_history(last["id"])
        erred = set()
        for row in history:
            if row.result == "error":
                erred.add((row.resource_id, row.artifact, row.copy))
            what = f"{row.copy}: {row.result}"
            detail = row.location + (f": {row.detail}" if row.detail else "")
            found = entry(row.package_id, row.resource_id, what, detail, row.checked)
            if row.resource_id is not None and row.result in RESULTS:
                lists["checked"].append(found)
            if row.result != "ok":
                lists["audit-findings"].append(found)
        for record in copies.values():
            if last["package_id"] not in (None, record.package_id):
                continue  # the audit checked one dataset
            if record.first_seen > last["finished"] or record.key in erred:
                continue  # known since, or its check failed (in the findings)
            if record.checked is None or record.checked < last["started"]:
                when = record.checked
                lists["left"].append(
                    entry(record.package_id, record.resource_id, record.copy, record.location, when)
                )
    jobs = depot_jobs()
    packages = ckan_rows.datasets_of(job.object_id for job in jobs)
    circles = ckan_rows.circle_names()
    for job in jobs:
        detail = job.reason or job.state
        if job.object_id in packages:
            found = entry(packages[job.object_id], job.object_id, job.kind, detail, job.when)
        elif job.object_id in circles or job.object_id == NO_CIRCLE_LINE:  # a circle's turn
            circle = circles.get(job.object_id, NO_CIRCLE)
            found = Entry(circle, None, None, job.kind, detail, job.when)
        else:  # a dataset's job (convergence, index)
            found = entry(job.object_id, None, job.kind, detail, job.when)
        lists["failed" if job.state == "failed" else "waiting"].append(found)
    model.Session.rollback()
    return lists


def health() -> Health:
    datasets = _datasets()
    circles: dict[str, Circle] = {}
    for _, circle, title in datasets.values():
        circles.setdefault(circle, Circle(circle, title))
    last = checks.last_audit(finished=True)
    lists = entries(datasets, last)
    for name in LISTS:
        found = lists[name]
        for item in found:
            circle = circles.setdefault(item.circle, Circle(item.circle, item.circle))
            setattr(circle, name, getattr(circle, name) + 1)
    for package_id, size in depot_files.verified_bytes_by_dataset().items():
        _, circle, _ = datasets.get(package_id, (None, NO_CIRCLE, NO_CIRCLE))
        circles.setdefault(circle, Circle(circle, circle)).bytes += size
    latest = checks.last_audit(finished=False)
    unfinished = latest if latest and (last is None or latest["id"] != last["id"]) else None
    model.Session.rollback()
    shown = sorted(
        (c for c in circles.values() if any(getattr(c, f) for f in (*LISTS, "bytes"))),
        key=lambda c: c.title.lower(),
    )
    return Health(shown, last, unfinished)


def listing(name: str, circle: str | None = None, page: int = 1) -> tuple[list[Entry], int]:
    """The resources behind one number of the page (of one circle, or all): one page of
    :data:`PAGE_SIZE` entries, and how many there are."""
    found = entries(_datasets(), checks.last_audit(finished=True))[name]
    found = [item for item in found if circle is None or item.circle == circle]
    start = (page - 1) * PAGE_SIZE
    return found[start : start + PAGE_SIZE], len(found)
