"""What the fixity audit records (``tables.py``): every copy it knows with its last
check (``dcor_depot_copy``), one row per check (``dcor_depot_check``, the history)
and one per run (``dcor_depot_audit``). Written only by ``dcor-verify-object-store``;
read by it (which copies are due) and by the depot health page."""

from __future__ import annotations

import dataclasses
import datetime
import socket
from collections.abc import Iterable

import ckan.model as model
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from .depot_files import plugin_tables
from .tables import audit_table, check_table, copy_table

#: The results of a check; every one but "ok" is a finding.
RESULTS = ("ok", "missing", "mismatch", "disagrees", "error")
#: The result of a copy deleted on purpose (:func:`deleted`): not a finding; the next
#: audit forgets it once it is gone.
DELETED = "deleted"
#: The circle of datasets without an organization, as the audit and the page name it.
NO_CIRCLE = "(no circle)"


@dataclasses.dataclass(frozen=True)
class CopyRecord:
    """A row of ``dcor_depot_copy``."""

    resource_id: str
    artifact: str
    copy: str
    package_id: str
    location: str
    size: int
    sha256: str
    first_seen: datetime.datetime
    checked: datetime.datetime | None
    result: str | None
    detail: str | None
    last_ok: datetime.datetime | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.resource_id, self.artifact, self.copy)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _run(statement, commit: bool = True):
    with plugin_tables():
        result = model.Session.execute(statement)
        if commit:
            model.Session.commit()
        return result


def copy_records(package_id: str | None = None) -> dict[tuple[str, str, str], CopyRecord]:
    query = sa.select(copy_table)
    if package_id is not None:
        query = query.where(copy_table.c.package_id == package_id)
    rows = _run(query, commit=False).all()
    model.Session.rollback()
    return {(r.resource_id, r.artifact, r.copy): CopyRecord(**r._mapping) for r in rows}


#: What a copy must hold and where it is; when one of them changes, the copy is due again.
_WHAT = ("package_id", "location", "size", "sha256")


def register(copies: list[dict]) -> None:
    """Know these copies (dicts of the table's key and :data:`_WHAT`), in one statement per
    1000; one that moved or must now hold other bytes is due again (never checked)."""
    statement = insert(copy_table)
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["resource_id", "artifact", "copy"],
        set_={
            **{name: getattr(new, name) for name in _WHAT},
            "checked": None,
            "result": None,
            "detail": None,
            "last_ok": None,
        },
        where=sa.or_(*(getattr(copy_table.c, name) != getattr(new, name) for name in _WHAT)),
    )
    seen = now()
    for start in range(0, len(copies), 1000):
        rows = [{**row, "first_seen": seen} for row in copies[start : start + 1000]]
        with plugin_tables():
            model.Session.execute(statement, rows)
    model.Session.commit()


def forget(keys: Iterable[tuple[str, str, str]]) -> None:
    """No longer audit these copies (keys of :func:`copy_records`): their resource was
    deleted, the copy was deleted on purpose, or it changed (registered again)."""
    gone = sorted(keys)
    columns = sa.tuple_(copy_table.c.resource_id, copy_table.c.artifact, copy_table.c.copy)
    for start in range(0, len(gone), 1000):
        _run(sa.delete(copy_table).where(columns.in_(gone[start : start + 1000])), commit=False)
    model.Session.commit()


def _is(key: tuple[str, str, str]):
    """The condition on ``dcor_depot_copy`` that selects the row of one copy."""
    resource_id, artifact, copy = key
    return sa.and_(
        copy_table.c.resource_id == resource_id,
        copy_table.c.artifact == artifact,
        copy_table.c.copy == copy,
    )


def current(key: tuple[str, str, str]) -> CopyRecord | None:
    """The row of this copy (a key of :func:`copy_records`) as it is now, or None."""
    row = _run(sa.select(copy_table).where(_is(key)), commit=False).first()
    model.Session.rollback()
    return CopyRecord(**row._mapping) if row is not None else None


def deleted(copy: dict, detail: str) -> None:
    """Mark a copy (a dict as for :func:`register`) as deleted on purpose, before it is
    deleted: an audit that read it before sees that it is gone on purpose, and
    :func:`register` (the same location) leaves the mark."""
    checked = now()
    values = {**copy, "result": DELETED, "detail": detail, "checked": checked}
    statement = insert(copy_table).values(first_seen=checked, **values)
    statement = statement.on_conflict_do_update(
        index_elements=["resource_id", "artifact", "copy"], set_=values
    )
    _run(statement)


def start_audit(
    package_id: str | None, budget_bytes: int | None, budget_seconds: int | None
) -> int:
    statement = (
        sa.insert(audit_table)
        .values(
            started=now(),
            host=socket.gethostname(),
            package_id=package_id,
            budget_bytes=budget_bytes,
            budget_seconds=budget_seconds,
            copies=0,
            bytes_read=0,
            findings=0,
            left=0,
        )
        .returning(audit_table.c.id)
    )
    audit_id = _run(statement, commit=False).scalar_one()  # read before the commit
    model.Session.commit()
    return audit_id


def finish_audit(
    audit_id: int, copies: int, bytes_read: int, findings: int, left: int, summary: str
) -> None:
    _run(
        sa.update(audit_table)
        .where(audit_table.c.id == audit_id)
        .values(
            finished=now(),
            copies=copies,
            bytes_read=bytes_read,
            findings=findings,
            left=left,
            summary=summary,
        )
    )


def record_check(
    audit_id: int,
    record: CopyRecord,
    result: str,
    detail: str | None,
    bytes_read: int,
) -> None:
    """The result of one check: the copy's row and the history's. A check that failed
    ("error") is in the history only: the copy keeps its last check and result (an
    earlier finding stays), and stays due."""
    if result != "error":
        checked = now()
        values = {"result": result, "detail": detail, "checked": checked}
        if result == "ok":
            values["last_ok"] = checked
        _run(
            sa.update(copy_table)
            .where(
                _is(record.key),
                # deleted on purpose while it was read: the mark stays
                copy_table.c.result.is_distinct_from(DELETED),
            )
            .values(**values),
            commit=False,
        )
    _history(audit_id, record.copy, record.location, result, detail, bytes_read, record)


def record_finding(
    audit_id: int,
    kind: str,
    copy: str,
    location: str,
    detail: str,
    record: CopyRecord | None = None,
) -> None:
    """A finding that is not the result of a check (an orphan, a copy over the budget, a
    folder not mounted): in the history only."""
    _history(audit_id, copy, location, kind, detail, 0, record)


def _history(
    audit_id: int,
    copy: str,
    location: str,
    result: str,
    detail: str | None,
    bytes_read: int,
    record: CopyRecord | None,
) -> None:
    _run(
        sa.insert(check_table).values(
            audit_id=audit_id,
            resource_id=record.resource_id if record else None,
            artifact=record.artifact if record else None,
            copy=copy,
            package_id=record.package_id if record else None,
            location=location,
            checked=now(),
            result=result,
            detail=detail,
            bytes_read=bytes_read,
        )
    )


def last_audit(finished: bool = True) -> dict | None:
    """The latest audit run (``finished``: the latest that ended) as a dict, or None."""
    query = sa.select(audit_table).order_by(audit_table.c.started.desc()).limit(1)
    if finished:
        query = query.where(audit_table.c.finished.is_not(None))
    row = _run(query, commit=False).first()
    model.Session.rollback()
    return dict(row._mapping) if row is not None else None


def audit_history(audit_id: int) -> list:
    """The rows of the checks one audit made (``dcor_depot_check``)."""
    return model.Session.execute(
        sa.select(check_table).where(check_table.c.audit_id == audit_id)
    ).all()
