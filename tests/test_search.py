"""Who finds which dataset in CKAN's search, against the real Apache Solr (scripts/solr.sh).

Search decides who sees a dataset by CKAN's permission labels, which CKAN writes to the
index on every write: an anonymous user and a user of another circle never find a
private dataset, nor one whose private switch has committed, on every path that
switches a dataset (as an editor or admin who is not a sysadmin).
"""

from __future__ import annotations

import pytest
from ckan.tests import factories, helpers

pytestmark = [
    pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index"),
    # what users get: CKAN's default, every write committed to the index at once
    pytest.mark.ckan_config("ckan.search.solr_commit", True),
]


@pytest.fixture
def people():
    """An editor and an admin of circle A, and an outsider who is the admin of circle B
    (every registered user may make a circle of their own)."""
    editor, admin, outsider = factories.User(), factories.User(), factories.User()
    circle = factories.Organization(
        users=[
            {"name": editor["name"], "capacity": "editor"},
            {"name": admin["name"], "capacity": "admin"},
        ]
    )
    factories.Organization(users=[{"name": outsider["name"], "capacity": "admin"}])
    return {"editor": editor, "admin": admin, "outsider": outsider, "circle": circle}


def found(user: dict | None, **params) -> set[str]:
    """The ids of the datasets this user (None: anonymous) finds, asking for private and
    draft datasets too."""
    context = {"user": user["name"] if user else "", "ignore_auth": False}
    params = {"include_private": True, "include_drafts": True, "rows": 1000, **params}
    return {d["id"] for d in helpers.call_action("package_search", context, **params)["results"]}


def test_a_private_dataset_is_found_by_its_circle_only(people):
    public, private = (
        factories.Dataset(owner_org=people["circle"]["id"], private=flag, title="HL60 cells")
        for flag in (False, True)
    )
    assert found(None, q="HL60") == {public["id"]}
    assert found(people["outsider"], q="HL60") == {public["id"]}
    assert found(people["editor"], q="HL60") == {public["id"], private["id"]}
    # a filter on the id does not reach around the permission labels
    assert found(None, fq=f"id:{private['id']}") == set()
    reached = found(people["outsider"], fq=f"capacity:private OR id:{private['id']}")
    assert private["id"] not in reached and reached <= {public["id"]}


def _patch(people, dataset):
    helpers.call_action(
        "package_patch", {"user": people["editor"]["name"]}, id=dataset["id"], private=True
    )


def _update(people, dataset):
    context = {"user": people["editor"]["name"]}
    shown = helpers.call_action("package_show", dict(context), id=dataset["id"])
    helpers.call_action("package_update", context, **{**shown, "private": True})


def _revise(people, dataset):
    helpers.call_action(
        "package_revise",
        {"user": people["editor"]["name"]},
        match={"id": dataset["id"]},
        update={"private": True},
    )


def _bulk_private(people, dataset):
    helpers.call_action(
        "bulk_update_private",
        {"user": people["admin"]["name"]},
        org_id=people["circle"]["id"],
        datasets=[dataset["id"]],
    )


def _delete(people, dataset):
    helpers.call_action("package_delete", {"user": people["editor"]["name"]}, id=dataset["id"])


def _bulk_delete(people, dataset):
    helpers.call_action(
        "bulk_update_delete",
        {"user": people["admin"]["name"]},
        org_id=people["circle"]["id"],
        datasets=[dataset["id"]],
    )


def _to_draft(people, dataset):
    helpers.call_action(
        "package_patch", {"user": people["editor"]["name"]}, id=dataset["id"], state="draft"
    )


SWITCHES = {
    "package_patch": _patch,
    "package_update": _update,
    "package_revise": _revise,
    "bulk_update_private": _bulk_private,
    "package_delete": _delete,
    "bulk_update_delete": _bulk_delete,
    "back to draft": _to_draft,
}


@pytest.mark.parametrize("switch", SWITCHES)
def test_a_dataset_switched_private_is_not_found_once_the_switch_returned(switch, people):
    """The moment the action returns (its transaction committed), anonymous users and
    users of other circles no longer find the dataset, by text or by id; the switched
    dataset's other circle mates' datasets are not affected."""
    dataset, other = (
        factories.Dataset(owner_org=people["circle"]["id"], private=False, title="HL60 cells")
        for _ in range(2)
    )
    assert found(None, q="HL60") == {dataset["id"], other["id"]}
    SWITCHES[switch](people, dataset)
    for user in (None, people["outsider"]):
        assert found(user, q="HL60") == {other["id"]}
        assert found(user, fq=f"id:{dataset['id']}") == set()
