"""The plugin loads, and CKAN's writes work on the test stack (PostgreSQL, Redis, Apache Solr)."""

from __future__ import annotations

import functools

import ckan.plugins as p
import pytest
from ckan.tests import factories, helpers


@pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index")
@pytest.mark.ckan_config("ckan.search.solr_commit", True)  # CKAN's default: searched at once
def test_plugin_loaded_and_datasets_are_searchable():
    assert p.plugin_loaded("dcor_depot")
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"], title="Deformability of HL60 cells")
    found = helpers.call_action("package_search", q="HL60", include_private=True)
    assert [d["id"] for d in found["results"]] == [dataset["id"]]


def _plugin_statements(run) -> tuple[list[str], int]:
    """The SQL statements the extension's own code sends while ``run()`` runs (CKAN's
    are not counted), and the rows they return."""
    import traceback

    import ckan.model as model
    import sqlalchemy as sa

    sent, rows = [], [0]

    def before(conn, cursor, statement, params, context, executemany):
        # the innermost frame of CKAN or the extension is the extension's
        frames = [f.filename for f in traceback.extract_stack() if "/ckan" in f.filename]
        if frames and "ckanext/dcor_depot" in frames[-1]:
            sent.append(statement)
            context._dcor_depot_counted = True

    def after(conn, cursor, statement, params, context, executemany):
        if getattr(context, "_dcor_depot_counted", False) and cursor.description:
            rows[0] += max(cursor.rowcount, 0)

    sa.event.listen(model.meta.engine, "before_cursor_execute", before)
    sa.event.listen(model.meta.engine, "after_cursor_execute", after)
    try:
        run()
    finally:
        sa.event.remove(model.meta.engine, "before_cursor_execute", before)
        sa.event.remove(model.meta.engine, "after_cursor_execute", after)
    return sent, rows[0]


@pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index", "clean_queues")
def test_the_plugin_s_cost_of_an_upload_does_not_grow_with_the_dataset(api_upload, tmp_path):
    """An editor's upload (resource_create through the API) into a dataset of 1 and of
    300 resources: the extension sends the same statements and reads the same rows."""
    editor = factories.User()
    org = factories.Organization(users=[{"name": editor["name"], "capacity": "editor"}])
    path = tmp_path / "one.bin"
    path.write_bytes(b"\x01" * 4096)
    measured = {}
    for size in (1, 300):
        links = [{"url": f"https://example.org/{i}.txt", "name": f"{i}.txt"} for i in range(size)]
        dataset = factories.Dataset(owner_org=org["id"], resources=links)
        api_upload(editor, dataset["id"], path)  # warm: the first upload of a request type
        upload = functools.partial(api_upload, editor, dataset["id"], path)
        measured[size] = _plugin_statements(upload)
    (small, small_rows), (large, large_rows) = measured[1], measured[300]
    assert len(small) == len(large), (small, large)
    assert small_rows == large_rows
    # what an upload needs: the dataset's lock, the committed rows under the new id, the
    # circle's lock (quota), the file's record, after the commit the dataset's visibility
    assert len(large) <= 5, large
