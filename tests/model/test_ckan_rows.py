"""What the jobs record on resources, written beside what users change."""

from __future__ import annotations

import json
import threading
import time

import ckan.model as model
import pytest
import sqlalchemy as sa
from ckan.lib import search
from ckan.lib.search.common import make_connection
from ckan.tests import factories, helpers

from ckanext.dcor_depot.jobs import index
from ckanext.dcor_depot.model import ckan_rows

pytestmark = pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index")


def _someone_waits_for_a_lock() -> bool:
    with model.meta.engine.connect() as connection:
        return bool(
            connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar()
        )


def test_a_job_recording_fields_does_not_undo_a_dataset_change_made_meanwhile(monkeypatch):
    """A job reads the dataset, a user makes it public, the job writes its fields:
    the dataset stays public (the job must not write back what it read)."""
    editor = factories.User()
    circle = factories.Organization(users=[{"name": editor["name"], "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=circle["id"], private=True)
    resource = factories.Resource(package_id=dataset["id"], url="https://example.org/x")
    made_public = threading.Event()
    user = threading.Thread(
        target=lambda: (
            helpers.call_action(
                "package_patch", {"user": editor["name"]}, id=dataset["id"], private=False
            ),
            model.Session.remove(),
            made_public.set(),
        )
    )
    read = ckan_rows._resource_rows

    def read_then_the_user_changes_the_dataset(package_id, fields):
        rows = read(package_id, fields)
        user.start()
        deadline = time.monotonic() + 30
        while not (made_public.is_set() or _someone_waits_for_a_lock()):
            assert time.monotonic() < deadline, "the user's update neither ended nor waited"
            time.sleep(0.01)
        return rows

    monkeypatch.setattr(ckan_rows, "_resource_rows", read_then_the_user_changes_the_dataset)
    changed, gone = index.patch_resources(dataset["id"], {resource["id"]: {"etag": "abc"}})
    user.join(30)
    assert made_public.is_set()
    assert (changed, gone) == ({resource["id"]}, set())
    model.Session.remove()
    shown = helpers.call_action("package_show", {"use_cache": False}, id=dataset["id"])
    assert shown["private"] is False


def _rename(editor, dataset, resource):
    helpers.call_action(
        "package_patch", {"user": editor["name"]}, id=dataset["id"], title="HL60, fixed"
    )


def _drop_resource(editor, dataset, resource):
    helpers.call_action("resource_delete", {"user": editor["name"]}, id=resource["id"])


#: a user's change made while the index job runs: (the change, a search that must find
#: the dataset afterwards, one that must not)
CHANGES_WHILE_INDEXED = {
    "renamed": (_rename, 'title:"HL60, fixed"', 'title:"HL60, first run"'),
    "resource dropped": (_drop_resource, "res_name:fixed", "res_name:dropped"),
}


@pytest.mark.parametrize("change", CHANGES_WHILE_INDEXED)
@pytest.mark.ckan_config("ckan.search.solr_commit", True)  # CKAN's default: searched at once
def test_the_index_job_never_writes_back_what_a_user_changed_meanwhile(change, monkeypatch):
    """The index job reads the dataset, its editor changes it (a new title, a resource
    dropped), the job writes its (older) copy to the search index (Apache Solr): the
    search must show the dataset as the user left it."""
    from ckan.lib.search.index import PackageSearchIndex

    from ckanext.dcor_depot.jobs import index

    act, found_by, not_by = CHANGES_WHILE_INDEXED[change]
    editor = factories.User()
    circle = factories.Organization(users=[{"name": editor["name"], "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=circle["id"], private=False, title="HL60, first run")
    factories.Resource(package_id=dataset["id"], name="fixed", url="https://example.org/a")
    dropped = factories.Resource(
        package_id=dataset["id"], name="dropped", url="https://example.org/b"
    )
    assert _found(not_by) == [dataset["id"]]  # indexed by CKAN as it was
    changed = threading.Event()
    user = threading.Thread(
        target=lambda: (act(editor, dataset, dropped), model.Session.remove(), changed.set())
    )
    job = threading.current_thread()
    write = PackageSearchIndex.update_dict

    def the_user_changes_the_dataset_then_write(self, pkg_dict, *args, **kwargs):
        if threading.current_thread() is job and user.ident is None:
            assert pkg_dict["title"] == "HL60, first run"  # read before the change
            assert len(pkg_dict["resources"]) == 2
            user.start()
            deadline = time.monotonic() + 30
            while not (changed.is_set() or _someone_waits_for_a_lock()):
                assert time.monotonic() < deadline, "the user's update neither ended nor waited"
                time.sleep(0.01)
        return write(self, pkg_dict, *args, **kwargs)

    monkeypatch.setattr(PackageSearchIndex, "update_dict", the_user_changes_the_dataset_then_write)
    index.index_dataset(dataset["id"])
    user.join(30)
    assert changed.is_set() and user.ident is not None
    model.Session.remove()
    assert _found(found_by) == [dataset["id"]]
    assert _found(not_by) == []


def _found(fq: str) -> list[str]:
    """The ids of the datasets an anonymous search with this filter finds."""
    found = helpers.call_action("package_search", {"user": ""}, fq=fq)["results"]
    return [d["id"] for d in found]


def _statements(fn) -> int:
    """How many SQL statements ``fn()`` sends."""
    count = 0

    def counted(*args, **kwargs):
        nonlocal count
        count += 1

    sa.event.listen(model.meta.engine, "before_cursor_execute", counted)
    try:
        fn()
    finally:
        sa.event.remove(model.meta.engine, "before_cursor_execute", counted)
    return count


@pytest.mark.usefixtures("clean_queues")
def test_recording_costs_the_same_for_the_1st_and_the_60th_resource(run_worker):
    circle = factories.Organization()
    dataset = factories.Dataset(owner_org=circle["id"])
    resources = [
        factories.Resource(package_id=dataset["id"], url=f"https://example.org/{n}")
        for n in range(60)
    ]
    first, last = resources[0]["id"], resources[-1]["id"]
    fields = {"etag": "abc", "sha256": "a" * 64, "size": 7, "dc:setup:channel width": 20.5}
    small = _statements(lambda: index.patch_resource(first, fields))
    alone = factories.Dataset(owner_org=circle["id"])
    only = factories.Resource(package_id=alone["id"], url="https://example.org/only")["id"]
    assert _statements(lambda: index.patch_resource(only, fields)) == small
    assert _statements(lambda: index.patch_resource(last, fields)) == small
    # what package_show shows at once (from the database), the search index after its job
    shown = helpers.call_action("resource_show", id=last)
    assert (shown["etag"], shown["size"], shown["dc:setup:channel width"]) == ("abc", 7, 20.5)
    run_worker()
    # the workers of the tests index without a commit (test.ini); CKAN's search.commit()
    # does not wait for Solr's new searcher, which a read right after may not see yet
    make_connection().commit(waitSearcher=True)
    indexed = json.loads(search.show(dataset["id"])["validated_data_dict"])
    assert {r["id"]: r.get("etag") for r in indexed["resources"]}[last] == "abc"
    # None removes a field; fields already holding their values change nothing
    assert index.patch_resource(last, {"etag": None}) is True
    assert "etag" not in helpers.call_action("resource_show", id=last)
    assert index.patch_resource(last, {"size": 7}) is False
