"""The plugin loads, and CKAN's writes work on the test stack (PostgreSQL, Redis, Solr stand-in)."""

from __future__ import annotations

import ckan.plugins as p
import pytest
from ckan.tests import factories, helpers


@pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index")
def test_plugin_loaded_and_datasets_are_searchable():
    assert p.plugin_loaded("dcor_depot")
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"], title="Deformability of HL60 cells")
    found = helpers.call_action("package_search", q="HL60", include_private=True)
    assert [d["id"] for d in found["results"]] == [dataset["id"]]
