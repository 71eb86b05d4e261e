"""``ckan dcor-check-object-store`` against the real object store."""

from __future__ import annotations

import pytest

from ckanext.dcor_depot.cli import dcor_check_object_store

pytestmark = pytest.mark.usefixtures("with_plugins")


def test_reports_a_reachable_store(cli, store, bucket):
    result = cli.invoke(dcor_check_object_store)
    assert result.exit_code == 0, result.output
    assert "reachable, credentials accepted" in result.output


@pytest.mark.ckan_config("dcor_object_store.secret_access_key", "wrong-secret-value")
def test_wrong_secret_exits_1_without_printing_it(cli):
    result = cli.invoke(dcor_check_object_store)
    assert result.exit_code == 1
    assert "rejected the credentials" in result.output
    assert "wrong-secret-value" not in result.output


@pytest.mark.ckan_config("dcor_object_store.endpoint_url", "http://127.0.0.1:9")
def test_unreachable_endpoint_exits_1(cli):
    result = cli.invoke(dcor_check_object_store)
    assert result.exit_code == 1
    assert "unreachable" in result.output
