"""Which CKAN actions make a dataset's objects converge again: one table, sender -> receiver.

CKAN sends ``action_succeeded`` after every action called through
``get_action`` (the API and the web forms included). ``package_update`` is
also called by resource_create/update/patch/delete, package_patch,
package_revise and, in CKAN 2.12, the bulk actions; CKAN 2.11's bulk actions
change rows with SQL and only their own signal tells. ``dataset_purge`` is
chained in ``logic/action.py``, because what it removes must be recorded
before it is gone.

A dataset converges again only when something that decides where its files
belong or who may read them changed: its circle, private, state, or the set
of its resources that are not active (a deleted or dropped resource, or a
deleted row CKAN removed). Uploads into a dataset do not count: their own
jobs apply the visibility.
"""

from __future__ import annotations

import hashlib
from typing import Any

import ckan.model as model
import ckan.plugins.toolkit as tk
import sqlalchemy as sa

from .jobs import converge, queue
from .leases import connection as connection_to_redis
from .leases import redis_key
from .model import ckan_rows


def get_subscriptions() -> dict:
    dataset_actions = ("package_create", "package_update", "package_delete")
    bulk_actions = ("bulk_update_private", "bulk_update_public", "bulk_update_delete")
    return {
        tk.signals.action_succeeded: [
            *({"sender": name, "receiver": dataset_changed} for name in dataset_actions),
            {"sender": "package_owner_org_update", "receiver": dataset_changed},
            *({"sender": name, "receiver": datasets_changed} for name in bulk_actions),
        ]
    }


def dataset_changed(sender: str, **kwargs: Any) -> None:
    result, data_dict = kwargs.get("result"), kwargs.get("data_dict") or {}
    package_id = result.get("id") if isinstance(result, dict) else result
    if not isinstance(package_id, str):
        package_id = data_dict.get("id")
    if package_id:
        _announce_after_commit(package_id)


def datasets_changed(sender: str, **kwargs: Any) -> None:
    for package_id in (kwargs.get("data_dict") or {}).get("datasets", []):
        _announce_after_commit(package_id)


#: the datasets to read before CKAN's transaction commits, and what was read (kept until
#: the session begins its next transaction)
_TO_READ = "dcor_depot_announce_read"
_READ = "dcor_depot_announce_visibility"


def _announce_after_commit(package_id: str) -> None:
    if queue.commit_pending():  # read what the commit makes of it in CKAN's transaction
        queue.transaction_list(_TO_READ).append(package_id)
    queue.after_commit(_announce, package_id)


def _read_before_commit(session) -> None:
    if session.in_nested_transaction() or not session.info.get(_TO_READ):
        return
    read = {
        name_or_id: ckan_rows.visibility_to_commit(name_or_id)  # (flushes first)
        for name_or_id in dict.fromkeys(session.info[_TO_READ])
    }
    queue.until_next_statement(_READ).update(read)


if not sa.event.contains(model.Session, "before_commit", _read_before_commit):
    sa.event.listen(model.Session, "before_commit", _read_before_commit)


def _announce(name_or_id: str) -> None:
    """Request a convergence when what decides the dataset's objects differs from last time.

    Runs once CKAN committed. What the commit made of the dataset was read in CKAN's
    transaction just before it committed (a transaction that changes a dataset
    holds its row until then); a signal after an action that committed reads on a
    connection of its own, and leaves no transaction open in CKAN's session.
    """
    read = model.Session().info.get(_READ, {})
    if name_or_id in read:
        found = read[name_or_id]
    else:
        found = ckan_rows.committed_visibility(name_or_id)
    if found is None:
        return
    text = "|".join(
        [found.owner_org or "", str(found.private), found.state]
        + [f"{rid}:{state}" for rid, state in found.inactive]
    )
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    key = redis_key("fingerprint", found.id)
    if connection_to_redis().get(key) == fingerprint.encode():
        return
    converge.request_convergence(found.id, found.owner_org or converge.NO_CIRCLE_LINE)
    connection_to_redis().set(key, fingerprint, ex=30 * 86400)
