"""Convergence driven by a burst worker alone: the dataset's lease and lookups by id.

Kept apart from ``test_convergence.py``, whose module-wide workers (the ``workers``
fixture) would take these tests' jobs while they run: a test that drives the jobs with
``run_worker`` must be the only one taking them."""

from __future__ import annotations

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot.cli import append_resource
from ckanext.dcor_depot.jobs import converge

from ..conftest import anonymous_status, appended

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


def test_a_switch_made_while_work_on_the_dataset_fails_is_converged_all_the_same(
    cli, random_file, run_worker
):
    """A convergence job that finds the dataset held leaves the change to the holder (a
    move to another circle holds it for a long copy): when the holder's work fails, the
    change must still reach the objects."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    appended = cli.invoke(append_resource, [str(random_file(1000)), dataset["id"]])
    assert appended.exit_code == 0, appended.output
    url = helpers.call_action("package_show", id=dataset["id"])["resources"][0]["s3_url"]
    assert anonymous_status(url) == 200
    with pytest.raises(RuntimeError):
        with converge.dataset_lease(dataset["id"]):
            helpers.call_action("package_patch", id=dataset["id"], private=True)
            run_worker()  # the convergence job finds the dataset held
            assert anonymous_status(url) == 200
            raise RuntimeError("the copy failed")
    run_worker()
    assert anonymous_status(url) == 403


def test_a_dataset_named_after_another_ones_id_gets_none_of_its_convergence(
    cli, random_file, run_worker
):
    """Dataset names are free (any user names theirs); a lookup by "id or name" takes
    the id first, whatever the rows' order."""
    dataset = factories.Dataset(owner_org=factories.Organization()["id"], private=False)
    url = appended(cli, dataset, random_file(1000))["s3_url"]
    assert anonymous_status(url) == 200
    mallory = factories.User()
    own = factories.Organization(users=[{"name": mallory["name"], "capacity": "admin"}])
    namesake = factories.Dataset(name=dataset["id"], owner_org=own["id"], user=mallory)
    assert namesake["name"] == dataset["id"]
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    run_worker()
    assert anonymous_status(url) == 403
