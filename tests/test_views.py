"""Downloads through CKAN's download URL: files still on block storage are
served by CKAN as before; files in S3 redirect to a presigned GET that names
the file, after CKAN's own permission check."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import placement
from ckanext.dcor_depot.cli import dcor_migrate_resources_to_object_store as migrate
from ckanext.dcor_depot.storage.s3 import content_disposition

from .conftest import derived_ini, http, sha256_path
from .logic.test_upload_route import uploaded

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)


@pytest.fixture
def owner_and_dataset():
    user = factories.User(name="alice")
    org = factories.Organization(users=[{"name": "alice", "capacity": "admin"}])
    dataset = factories.Dataset(name="cells", owner_org=org["id"], private=True, user=user)
    return user, dataset


def download_url(resource: dict) -> str:
    return f"/dataset/{resource['package_id']}/resource/{resource['id']}/download"


def test_local_file_is_served_by_ckan_then_from_s3_once_migrated_away(
    owner_and_dataset, app, api_upload, random_file, run_worker, cli
):
    user, dataset = owner_and_dataset
    path = random_file(20_000, "cells.bin")
    data = path.read_bytes()
    resource = api_upload(user, dataset["id"], path)
    auth = {"Authorization": factories.APIToken(user="alice")["token"]}
    url = download_url(resource)

    # before and after the jobs (a symlink into the depot): CKAN serves the file itself
    assert app.get(url, headers=auth).data == data
    run_worker()
    assert placement.ckan_path(resource["id"]).is_symlink()
    assert app.get(url, headers=auth).data == data

    # the local file is gone after a migration: the download comes from S3
    result = cli.invoke(migrate, ["--delete-after-migration"])
    assert result.exit_code == 0, result.output
    assert not placement.ckan_path(resource["id"]).exists()
    assert app.get(url).status_code == 403  # private dataset, anonymous user
    outsider = {"Authorization": factories.APIToken(user=factories.User()["name"])["token"]}
    assert app.get(url, headers=outsider, follow_redirects=False).status_code == 403
    answer = app.get(url, headers=auth, follow_redirects=False)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert "X-Amz-Expires=600&" in location
    with http.get(location, timeout=30) as s3:
        assert s3.status_code == 200 and s3.content == data
        assert s3.headers["Content-Disposition"] == 'attachment; filename="cells.bin"'
    # an S3 URL alone does not open a private file
    assert http.get(location.split("?")[0], timeout=30).status_code == 403


def test_download_of_a_resource_under_another_dataset_is_not_found(
    owner_and_dataset, app, api_upload, random_file, run_worker, cli
):
    user, dataset = owner_and_dataset
    resource = api_upload(user, dataset["id"], random_file(3000))
    run_worker()
    assert cli.invoke(migrate, ["--delete-after-migration"]).exit_code == 0
    other = factories.Dataset(owner_org=dataset["owner_org"], private=False, user=user)
    wrong = f"/dataset/{other['id']}/resource/{resource['id']}/download"
    assert app.get(wrong, follow_redirects=False).status_code in (403, 404)
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    run_worker()
    right = app.get(download_url(resource), follow_redirects=False)
    assert right.status_code == 302 and "X-Amz" not in right.headers["Location"]
    assert app.get(wrong, follow_redirects=False).status_code == 404


def test_file_uploaded_to_s3_downloads_under_its_non_ascii_name(
    owner_and_dataset, app, random_file, run_worker
):
    user, dataset = owner_and_dataset
    path = random_file(3000, "Zellmessung µ-Kanal.rtdc")
    answer = uploaded(app, user, dataset, path)
    resource = {"id": answer["resource_id"], "package_id": dataset["id"]}
    auth = {"Authorization": factories.APIToken(user="alice")["token"]}
    run_worker()  # until its SHA-256 is recorded, the file is not handed out

    redirect = app.get(download_url(resource), headers=auth, follow_redirects=False)
    with http.get(redirect.headers["Location"], timeout=30) as s3:
        assert s3.content == path.read_bytes()
        disposition = s3.headers["Content-Disposition"]
        assert s3.headers["Content-Type"] == "application/x-hdf5"
    assert disposition.startswith('attachment; filename="Zellmessung _-Kanal.rtdc"; ')
    encoded = disposition.split("filename*=UTF-8''")[1]
    assert urllib.parse.unquote(encoded) == "Zellmessung µ-Kanal.rtdc"

    # a deleted resource has no download
    helpers.call_action("resource_delete", id=resource["id"])
    gone = app.get(download_url(resource), headers=auth, follow_redirects=False)
    assert gone.status_code == 404


def test_content_disposition_keeps_a_plain_name_and_neutralises_quotes():
    assert content_disposition("cells.rtdc") == 'attachment; filename="cells.rtdc"'
    assert content_disposition('a"b\\c.rtdc') == 'attachment; filename="a_b_c.rtdc"'


@pytest.mark.parametrize("private", [True, False], ids=["private", "public"])
def test_download_while_the_store_cannot_be_reached_answers_503(
    owner_and_dataset, app, random_file, run_worker, ckan_config, monkeypatch, private
):
    user, dataset = owner_and_dataset
    helpers.call_action("package_patch", id=dataset["id"], private=private)
    path = random_file(3000, "cells.bin")
    answer = uploaded(app, user, dataset, path)
    resource = {"id": answer["resource_id"], "package_id": dataset["id"]}
    auth = {"Authorization": factories.APIToken(user="alice")["token"]}
    run_worker()
    assert app.get(download_url(resource), headers=auth, follow_redirects=False).status_code == 302

    # the store stops answering (nothing listens on port 9 of loopback)
    monkeypatch.setitem(ckan_config, "dcor_object_store.endpoint_url", "http://127.0.0.1:9")
    down = app.get(download_url(resource), headers=auth, follow_redirects=False)
    assert down.status_code == 503
    assert "The object store cannot be reached; try again later" in down.get_data(as_text=True)


def test_users_get_urls_at_the_address_they_reach_the_store_at(
    owner_and_dataset,
    app,
    rtdc_file,
    run_worker,
    store,
    forwarder,
    tmp_path,
    ckan_config,
    monkeypatch,
):
    user, dataset = owner_and_dataset
    internal = store.settings.endpoint_url
    gateway = urllib.parse.urlsplit(internal).port
    # the users' address: another name and port of the one gateway, closed while the
    # workers run (CKAN's processes need not reach it)
    users = forwarder(gateway)
    public = f"https://localhost:{users.port}"
    monkeypatch.setitem(ckan_config, "dcor_object_store.public_endpoint_url", public)
    ini = str(derived_ini(tmp_path, **{"dcor_object_store.public_endpoint_url": public}))
    path = rtdc_file(300, "cells.rtdc")
    answer = uploaded(app, user, dataset, path)  # the README's client, at the users' address
    granted = json.dumps(answer["upload"])
    assert f'"{public}/' in granted and internal not in granted
    resource = {"id": answer["resource_id"], "package_id": dataset["id"]}
    users.close()
    run_worker(ini)
    users = forwarder(gateway, users.port)

    shown = helpers.call_action("resource_show", id=resource["id"])
    assert shown["s3_url"].startswith(f"{public}/")
    assert shown["sha256"] == sha256_path(path)
    # the DC metadata job read the file at CKAN's address
    assert shown["dc:experiment:sample"] == "test sample"
    auth = {"Authorization": factories.APIToken(user="alice")["token"]}
    private = app.get(download_url(resource), headers=auth, follow_redirects=False)
    assert private.headers["Location"].startswith(f"{public}/")
    with http.get(private.headers["Location"], timeout=30) as s3:
        assert s3.status_code == 200 and s3.content == path.read_bytes()
    # signed for the users' address: at CKAN's it is refused
    elsewhere = private.headers["Location"].replace(public, internal)
    assert http.get(elsewhere, timeout=30).status_code == 403

    helpers.call_action("package_patch", id=dataset["id"], private=False)
    users.close()
    run_worker(ini)
    users = forwarder(gateway, users.port)
    public_file = app.get(download_url(resource), follow_redirects=False)
    assert public_file.headers["Location"] == shown["s3_url"]
    with http.get(shown["s3_url"], timeout=30) as s3:
        assert s3.status_code == 200 and s3.content == path.read_bytes()


def test_a_public_file_not_yet_published_is_never_a_presigned_url(
    owner_and_dataset, app, random_file, run_worker, store
):
    """A public dataset's file whose object is not tagged public yet (its convergence has
    not run): anybody gets "being published, try again" with Retry-After, never a
    presigned URL that would keep working after the dataset turns private."""
    user, dataset = owner_and_dataset
    helpers.call_action("package_patch", id=dataset["id"], private=False)
    path = random_file(3000, "cells.bin")
    answer = uploaded(app, user, dataset, path)
    resource = {"id": answer["resource_id"], "package_id": dataset["id"]}
    run_worker()
    recorded = placement.file_of(store, dataset["id"], resource["id"]).recorded
    store.set_public(*recorded, False)  # as before its convergence ran
    auth = {"Authorization": factories.APIToken(user="alice")["token"]}
    stranger = {"Authorization": factories.APIToken(user=factories.User()["name"])["token"]}
    for headers in ({}, stranger, auth):
        answer = app.get(download_url(resource), headers=headers, follow_redirects=False)
        assert answer.status_code == 503, headers
        assert answer.headers["Retry-After"] == "5"
        assert "being published; try again" in answer.get_data(as_text=True)
        assert "X-Amz-" not in answer.headers.get("Location", "")
    store.set_public(*recorded, True)  # the convergence ran
    for headers in ({}, stranger, auth):
        answer = app.get(download_url(resource), headers=headers, follow_redirects=False)
        assert answer.status_code == 302, headers
        assert answer.headers["Location"] == store.object_url(*recorded)
    # made private: members get a presigned URL of the documented expiry
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    run_worker()
    answer = app.get(download_url(resource), headers=auth, follow_redirects=False)
    assert answer.status_code == 302 and "X-Amz-Expires=600&" in answer.headers["Location"]
    assert app.get(download_url(resource), follow_redirects=False).status_code in (403, 404)


def test_a_switch_to_public_during_a_download_gives_no_presigned_url(
    owner_and_dataset, app, random_file, run_worker, store, monkeypatch
):
    """The dataset turns public between the download's read of the file and CKAN's
    permission check: a stranger passes the check, and must get the object's own URL
    (or "being published"), never a presigned URL that outlives the next private switch.
    What decides is the dataset CKAN's check answered with."""
    user, dataset = owner_and_dataset
    path = random_file(3000, "cells.bin")
    answer = uploaded(app, user, dataset, path)
    resource = {"id": answer["resource_id"], "package_id": dataset["id"]}
    run_worker()
    read = placement.file_of

    def switched_meanwhile(*args, **kwargs):
        placed = read(*args, **kwargs)
        assert not placed.public
        helpers.call_action("package_patch", id=dataset["id"], private=False)
        return placed

    monkeypatch.setattr(placement, "file_of", switched_meanwhile)
    stranger = {"Authorization": factories.APIToken(user=factories.User()["name"])["token"]}
    answer = app.get(download_url(resource), headers=stranger, follow_redirects=False)
    assert "X-Amz-" not in answer.headers.get("Location", ""), answer.headers
    assert answer.status_code == 503  # its convergence has not tagged it yet
    assert "being published; try again" in answer.get_data(as_text=True)
