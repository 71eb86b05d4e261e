"""What the jobs record on resources, written beside what users change."""

from __future__ import annotations

import threading
import time

import ckan.model as model
import pytest
import sqlalchemy as sa
from ckan.tests import factories, helpers

from ckanext.dcor_depot import records

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
    read = records.show_package

    def read_then_the_user_changes_the_dataset(package_id, fresh=False):
        package = read(package_id, fresh)
        user.start()
        deadline = time.monotonic() + 30
        while not (made_public.is_set() or _someone_waits_for_a_lock()):
            assert time.monotonic() < deadline, "the user's update neither ended nor waited"
            time.sleep(0.01)
        return package

    monkeypatch.setattr(records, "show_package", read_then_the_user_changes_the_dataset)
    changed, gone = records.patch_resources(dataset["id"], {resource["id"]: {"etag": "abc"}})
    user.join(30)
    assert made_public.is_set()
    assert (changed, gone) == ({resource["id"]}, set())
    model.Session.remove()
    shown = helpers.call_action("package_show", {"use_cache": False}, id=dataset["id"])
    assert shown["private"] is False
