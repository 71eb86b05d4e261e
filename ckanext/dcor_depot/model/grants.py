"""Uploads granted by ``dcor_depot_upload_urls`` and not yet registered, and what a
circle holds: the extension's table ``dcor_depot_upload`` (``tables.py``).

The action writes a row when it grants an upload (resuming never extends it);
the registration marks it registered in the transaction that creates the
resource; ``ckan dcor-prune-orphaned-objects`` removes the rows of expired
grants with what they left in the store.
"""

from __future__ import annotations

import dataclasses
import datetime

import ckan.model as model
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from .tables import upload_table

#: A grant's states: its upload may be sent and registered; the store no longer knows its
#: multipart upload; registered (kept until it expires: it refuses another registration)
PENDING, ABORTED, REGISTERED = "pending", "aborted", "registered"


@dataclasses.dataclass(frozen=True)
class Grant:
    resource_id: str
    #: None: granted to the circle (DCOR-Aid's resource_upload_s3_urls), bound to the
    #: dataset it is registered in
    package_id: str | None
    owner_org: str
    user_id: str | None
    bucket: str
    key: str
    name: str
    size: int
    part_size: int
    md5: str | None
    upload_id: str | None
    issued: datetime.datetime
    expires: datetime.datetime
    state: str

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return self.expires <= (now or utcnow())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def add(grant: Grant) -> None:
    """Record a new grant (in the caller's transaction)."""
    model.Session.execute(insert(upload_table).values(**dataclasses.asdict(grant)))


def get(resource_id: str, lock: bool = False) -> Grant | None:
    """The grant of a resource id; ``lock``: its row stays locked until the transaction ends."""
    query = sa.select(upload_table).where(upload_table.c.resource_id == resource_id)
    if lock:
        query = query.with_for_update()
    row = model.Session.execute(query).first()
    return Grant(**row._mapping) if row is not None else None


def update(resource_id: str, **values) -> None:
    model.Session.execute(
        sa.update(upload_table).where(upload_table.c.resource_id == resource_id).values(**values)
    )


def remove(resource_id: str) -> None:
    model.Session.execute(sa.delete(upload_table).where(upload_table.c.resource_id == resource_id))


def expired(now: datetime.datetime | None = None) -> list[Grant]:
    """Grants whose URLs expired (and aborted ones), oldest first."""
    query = (
        sa.select(upload_table)
        .where(sa.or_(upload_table.c.expires <= (now or utcnow()), upload_table.c.state == ABORTED))
        .order_by(upload_table.c.expires)
    )
    rows = model.Session.execute(query).all()
    model.Session.rollback()
    return [Grant(**row._mapping) for row in rows]


def lock_circle(owner_org: str) -> None:
    """Serialize the grants of one circle until the transaction ends (its quota)."""
    model.Session.execute(
        sa.text('SELECT 1 FROM "group" WHERE id = :id FOR NO KEY UPDATE'), {"id": owner_org}
    )


#: The bytes of one file row ``f`` (its resource ``r`` joined): the size recorded when it
#: arrived or was verified, else the resource's, never below 0
_FILE_BYTES = "GREATEST(COALESCE(f.size, r.size, 0), 0)"


def circle_usage(
    owner_org: str,
    bucket: str | None = None,
    excluding: str | None = None,
    excluding_package: str | None = None,
) -> tuple[int, int]:
    """Bytes a circle holds: ``(its files, pending grants)``, until they are pruned.

    Files: every file the extension keeps a row of (from its arrival on: deleted
    resources, rows CKAN dropped, datasets purged and kept for the retention period; a
    dataset's current circle, else the one recorded when the file arrived or its dataset
    was purged, else the circle of ``bucket``, where its object lies). Read in one
    statement: a registration that commits meanwhile (the grant becomes a file) is
    counted once. ``excluding``: a resource being created (its file is what the caller
    asks about); ``excluding_package``: a dataset moving into the circle.
    """
    row = model.Session.execute(
        sa.text(
            f"""
            SELECT
              (SELECT COALESCE(SUM({_FILE_BYTES}), 0)
                 FROM dcor_depot_file f
                 LEFT JOIN resource r ON r.id = f.resource_id
                 LEFT JOIN package p ON p.id = f.package_id
                WHERE f.artifact = 'resource' AND f.resource_id != :excluding
                  AND f.package_id != :excluding_package
                  AND (p.owner_org = :org OR (p.id IS NULL AND COALESCE(
                       f.owner_org, CASE WHEN f.bucket = :bucket THEN :org END) = :org))),
              (SELECT COALESCE(SUM(size), 0) FROM dcor_depot_upload
                WHERE owner_org = :org AND state = :pending
                  AND (:excluding_package = ''
                       OR package_id IS DISTINCT FROM :excluding_package))
            """
        ),
        {
            "org": owner_org,
            "bucket": bucket,
            "excluding": excluding or "",
            "excluding_package": excluding_package or "",
            "pending": PENDING,
        },
    ).one()
    return int(row[0]), int(row[1])


def dataset_usage(package_id: str) -> tuple[int, int]:
    """Bytes of a dataset as :func:`circle_usage` counts them: ``(its files, pending
    grants)``."""
    row = model.Session.execute(
        sa.text(
            f"""
            SELECT
              (SELECT COALESCE(SUM({_FILE_BYTES}), 0)
                 FROM dcor_depot_file f LEFT JOIN resource r ON r.id = f.resource_id
                WHERE f.artifact = 'resource' AND f.package_id = :package),
              (SELECT COALESCE(SUM(size), 0) FROM dcor_depot_upload
                WHERE package_id = :package AND state = :pending)
            """
        ),
        {"package": package_id, "pending": PENDING},
    ).one()
    return int(row[0]), int(row[1])


def move_pending(package_id: str, owner_org: str) -> None:
    """The pending grants of a dataset that moves count against its new circle."""
    model.Session.execute(
        sa.update(upload_table)
        .where(upload_table.c.package_id == package_id, upload_table.c.state == PENDING)
        .values(owner_org=owner_org)
    )


def pending_of(user_id: str, now: datetime.datetime | None = None) -> int:
    """How many unexpired grants a user holds that are not registered (aborted ones too:
    aborting and asking again is no way round the limit)."""
    count = model.Session.execute(
        sa.select(sa.func.count()).where(
            upload_table.c.user_id == user_id,
            upload_table.c.state != REGISTERED,
            upload_table.c.expires > (now or utcnow()),
        )
    ).scalar_one()
    return int(count)


def pending_locations(now: datetime.datetime | None = None) -> set[tuple[str, str]]:
    """``(bucket, key)`` of the uploads that may still be sent and registered, and of the
    registered ones that have not expired (their staged objects stay until then)."""
    rows = model.Session.execute(
        sa.select(upload_table.c.bucket, upload_table.c.key).where(
            upload_table.c.state.in_([PENDING, REGISTERED]),
            upload_table.c.expires > (now or utcnow()),
        )
    ).all()
    model.Session.rollback()
    return {(row.bucket, row.key) for row in rows}
