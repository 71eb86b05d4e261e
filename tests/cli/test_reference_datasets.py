"""``ckan import-figshare`` against the local figshare-protocol server, the real
Ceph RGW and CKAN: datasets appear only complete, files are verified, reruns
finish what was left and change nothing when all is there."""

from __future__ import annotations

import functools
import hashlib
import os
import uuid

import ckan.model as model
import pytest
from ckan.tests import factories, helpers

from ckanext.dcor_depot import config
from ckanext.dcor_depot.cli import dcor_import_figshare, import_figshare
from ckanext.dcor_depot.operations import figshare_import
from ckanext.dcor_depot.operations.figshare_import import BUNDLED_DOIS, read_dois
from ckanext.dcor_depot.placement import ckan_path
from ckanext.dcor_depot.storage.figshare_api import FigshareClient
from ckanext.dcor_depot.storage.s3 import object_key

from ..conftest import anonymous_status, chosen_before, object_sha256, sha256_path

pytestmark = pytest.mark.usefixtures("with_plugins", "clean_db", "clean_index", "clean_queues")

#: The documented recipe of the ids (README, "import-figshare").
NAMESPACE = uuid.UUID("41656e0b-719c-48e8-9212-6ae70980bbcb")


@pytest.fixture
def figshare(figshare_server, ckan_config, monkeypatch):
    monkeypatch.setitem(ckan_config, "ckanext.dcor_depot.figshare_api_url", figshare_server.api_url)
    # the local server asks for no pause between API requests (figshare's second between
    # two of them: tests/storage/test_figshare_api.py)
    monkeypatch.setattr(
        figshare_import, "FigshareClient", functools.partial(FigshareClient, interval=0)
    )
    return figshare_server


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def ids_for(doi: str, name: str, md5s: list[str]) -> tuple[str, list[str]]:
    dataset_id = str(uuid.uuid5(NAMESPACE, f"{doi}/{name}"))
    return dataset_id, [str(uuid.uuid5(NAMESPACE, f"{dataset_id}/{m}")) for m in md5s]


def bucket_keys(store, org_id: str) -> list[str]:
    bucket = store.circle_bucket(org_id)
    if bucket not in store.list_buckets():
        return []
    return sorted(o.key for o in store.iter_objects(bucket))


def tmp_leftovers() -> list[str]:
    folder = config.tmp_dir()
    return [p.name for p in folder.glob("figshare-*")] if folder.exists() else []


def assert_nothing_stored(store, name: str) -> None:
    """The dataset is an empty draft; no object, open upload or tmp file is left."""
    dataset = helpers.call_action("package_show", id=name)
    assert (dataset["state"], dataset["resources"]) == ("draft", [])
    bucket = store.circle_bucket(dataset["owner_org"])
    assert bucket_keys(store, dataset["owner_org"]) == []
    assert store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert tmp_leftovers() == []


def test_bundled_dois_are_dcors_reference_datasets():
    assert read_dois(BUNDLED_DOIS) == [
        "10.6084/m9.figshare.7771184.v2",
        "10.6084/m9.figshare.11302595.v1",
        "10.6084/m9.figshare.11662773.v2",
        "10.6084/m9.figshare.12721436.v1",
    ]


def test_import_maps_the_article_and_verifies_every_file(
    figshare, rtdc_file, tmp_path, store, clean_circles, cli, monkeypatch
):
    # the command's own client, with figshare's pause between two API requests
    monkeypatch.setattr(figshare_import, "FigshareClient", FigshareClient)
    rtdc = [rtdc_file(name=f"M{i}_data.rtdc", fluorescence=i == 0) for i in range(3)]
    texts = []
    for i in range(9):
        path = tmp_path / f"notes_{i}.txt"
        path.write_text(f"notes {i}\n" * (i + 1))
        texts.append(path)
    files = rtdc + texts  # 12: more than the article's inline list of 10
    entries = [figshare.file_entry(p) for p in files]
    entries.append(figshare.file_entry(texts[0], name="elsewhere.zip", link_only=True))
    doi = figshare.add_article(
        7771184,
        2,
        entries,
        title="Reference data: HL60 cells",
        description="<p>Cells in <b>buffer</b>:</p><ul><li>HL60</li><li>RBC</li></ul>",
        references=["https://example.org/paper", "10.1038/nmeth.3281", " "],
    )

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert "figshare-7771184-v2: imported, 12 files" in result.output
    assert "skipped elsewhere.zip: a link, not a file" in result.output
    assert "Done: 1 imported, 0 completed, 0 repaired, 0 unchanged, 0 failed" in result.output

    org = helpers.call_action("organization_show", id="figshare-import")
    assert org["title"] == "Figshare mirror"
    dataset_id, resource_ids = ids_for(doi, "figshare-7771184-v2", [md5_of(p) for p in files])
    dataset = helpers.call_action("package_show", id="figshare-7771184-v2")
    assert dataset["id"] == dataset_id
    assert (dataset["state"], dataset["private"]) == ("active", False)
    assert dataset["owner_org"] == org["id"]
    assert dataset["title"] == "Reference data: HL60 cells"
    assert dataset["author"] == "Ada Lovelace, Paul Müller"
    assert dataset["license_id"] == "CC0-1.0"
    assert dataset["notes"] == "Cells in **buffer**:\n\n- HL60\n- RBC"
    extras = {e["key"]: e["value"] for e in dataset["extras"]}
    assert extras["doi"] == doi
    assert extras["references"] == "https://example.org/paper, doi:10.1038/nmeth.3281"

    resources = dataset["resources"]
    assert [r["id"] for r in resources] == resource_ids
    assert [r["name"] for r in resources] == [p.name for p in files]
    bucket = store.circle_bucket(org["id"])
    for resource, path in zip(resources, files, strict=True):
        sha256 = sha256_path(path)
        assert resource["sha256"] == sha256
        assert resource["size"] == path.stat().st_size
        assert resource["md5"] == md5_of(path)
        key = object_key("resource", resource["id"])
        assert object_sha256(store, bucket, key) == sha256
        assert anonymous_status(resource["s3_url"]) == 200
    assert resources[0]["format"] == "RT-FDC"
    assert resources[1]["dc:experiment:sample"] == "test sample"
    assert resources[1]["mimetype"] == "application/x-hdf5"
    assert resources[3]["mimetype"] == "text/plain"
    assert "format" not in resources[3] or resources[3]["format"] != "RT-DC"
    times = figshare.api_request_times()
    assert len(times) == 2  # the article, one page of files
    assert times[1] - times[0] >= 1.0
    assert tmp_leftovers() == []

    # a second run over the finished import changes nothing and says so
    modified = dataset["metadata_modified"]
    stamps = {k: store.object_info(bucket, k).last_modified for k in bucket_keys(store, org["id"])}
    result = cli.invoke(dcor_import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert "figshare-7771184-v2: already imported, nothing changed" in result.output
    assert "0 imported, 0 completed, 0 repaired, 1 unchanged, 0 failed" in result.output
    assert helpers.call_action("package_show", id=dataset_id)["metadata_modified"] == modified
    assert {k: store.object_info(bucket, k).last_modified for k in stamps} == stamps


def test_bot_challenge_leaves_a_draft_that_the_next_run_completes(
    figshare, rtdc_file, store, clean_circles, cli
):
    first, second = rtdc_file(name="a.rtdc"), rtdc_file(name="b.rtdc", events=300)
    entries = [figshare.file_entry(first), figshare.file_entry(second)]
    doi = figshare.add_article(11302595, 1, entries)
    figshare.challenged.add(entries[1]["id"])

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert "bot challenge, not the file" in result.output
    assert f"FAILED {doi}" in result.output
    dataset = helpers.call_action("package_show", id="figshare-11302595-v1")
    assert dataset["state"] == "draft"
    (resource,) = dataset["resources"]  # no empty resource for the challenged file
    assert resource["sha256"] == sha256_path(first)
    assert anonymous_status(resource["s3_url"]) == 403  # a draft's objects are private
    assert len(bucket_keys(store, dataset["owner_org"])) == 1
    assert tmp_leftovers() == []

    figshare.challenged.clear()
    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert "figshare-11302595-v1: completed, 1 files" in result.output
    dataset = helpers.call_action("package_show", id="figshare-11302595-v1")
    assert dataset["state"] == "active"
    assert [r["sha256"] for r in dataset["resources"]] == [sha256_path(first), sha256_path(second)]
    for resource in dataset["resources"]:
        assert anonymous_status(resource["s3_url"]) == 200


def test_a_500_is_retried(figshare, rtdc_file, clean_circles, cli):
    path = rtdc_file()
    entry = figshare.file_entry(path)
    doi = figshare.add_article(11662773, 2, [entry])
    figshare.faults["/v2/articles/11662773"] = [500]
    figshare.faults[f"/storage/{entry['id']}"] = [500]

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    storage = [p for _, p in figshare.requests if p.startswith("/storage/")]
    assert len(storage) == 2
    (resource,) = helpers.call_action("package_show", id="figshare-11662773-v2")["resources"]
    assert resource["sha256"] == sha256_path(path)


def test_md5_mismatch_stores_nothing(figshare, random_file, store, clean_circles, cli):
    path = random_file(3 * store.settings.part_size + 12345)  # a multipart upload
    doi = figshare.add_article(12721436, 1, [figshare.file_entry(path, md5="0" * 32)])

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert f"has MD5 {md5_of(path)}, figshare lists {'0' * 32}; nothing was stored" in result.output
    assert_nothing_stored(store, "figshare-12721436-v1")


def test_unknown_license_imports_nothing_of_that_dataset(figshare, rtdc_file, clean_circles, cli):
    good = figshare.add_article(1, 1, [figshare.file_entry(rtdc_file(name="g.rtdc"))])
    bad = figshare.add_article(
        2,
        1,
        [figshare.file_entry(rtdc_file(name="b.rtdc"))],
        license_name="GPL 3.0",
        license_url="https://www.gnu.org/licenses/gpl-3.0.html",
    )
    result = cli.invoke(import_figshare, ["--doi", bad, "--doi", good])
    assert result.exit_code == 1
    assert f"{bad}: figshare's license 'GPL 3.0' (https://www.gnu.org/licenses/gpl-3.0.html)" in (
        result.output
    )
    assert "nothing of this dataset was imported" in result.output
    assert model.Package.get("figshare-2-v1") is None
    assert model.Package.get("figshare-1-v1").state == "active"
    assert "Done: 1 imported, 0 completed, 0 repaired, 0 unchanged, 1 failed" in result.output


def test_dois_file_limit_and_bad_dois(figshare, rtdc_file, tmp_path, clean_circles, cli):
    dois = [
        figshare.add_article(n, 1, [figshare.file_entry(rtdc_file(name=f"{n}.rtdc"))])
        for n in (31, 32)
    ]
    listing = tmp_path / "dois.txt"
    listing.write_text(f"# mine\n{dois[0]}  # first\n\n{dois[1]}\n")
    result = cli.invoke(import_figshare, ["--dois-file", str(listing), "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "Importing 1 datasets" in result.output
    assert model.Package.get("figshare-31-v1") is not None
    assert model.Package.get("figshare-32-v1") is None

    listing.write_text(f"{dois[1]}\n10.6084/m9.figshare.32\n")
    result = cli.invoke(import_figshare, ["--dois-file", str(listing)])
    assert result.exit_code == 1
    assert "'10.6084/m9.figshare.32' is not the DOI of a version of a figshare article" in (
        result.output
    )
    assert model.Package.get("figshare-32-v1") is None  # checked before anything is imported


def test_object_left_by_an_interrupted_run_is_compared_not_replaced(
    figshare, rtdc_file, store, clean_circles, cli
):
    keep, other = rtdc_file(name="keep.rtdc"), rtdc_file(name="other.rtdc")
    doi = figshare.add_article(41, 1, [figshare.file_entry(keep)])
    org = helpers.call_action(
        "organization_create",
        context={"user": helpers.call_action("get_site_user")["name"]},
        name="figshare-import",
    )
    dataset_id, (resource_id,) = ids_for(doi, "figshare-41-v1", [md5_of(keep)])
    bucket, key = store.circle_bucket(org["id"]), object_key("resource", resource_id)
    store.upload_verified(keep, bucket, key)  # uploaded, then the run stopped

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert f"keep.rtdc: MD5 verified, already at s3://{bucket}/{key}" in result.output
    assert helpers.call_action("resource_show", id=resource_id)["sha256"] == sha256_path(keep)

    doi = figshare.add_article(42, 1, [figshare.file_entry(keep)])
    dataset_id, (resource_id,) = ids_for(doi, "figshare-42-v1", [md5_of(keep)])
    key = object_key("resource", resource_id)
    store.upload_verified(other, bucket, key)  # not the file figshare lists
    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert f"{doi}: s3://{bucket}/{key} exists, belongs to no resource and is not" in result.output
    assert "check and delete that object, then run again" in result.output
    assert object_sha256(store, bucket, key) == sha256_path(other)


@pytest.mark.ckan_config("dcor_object_store.endpoint_url", "")
def test_without_object_store_files_go_to_the_figshare_depot(figshare, rtdc_file, cli):
    path = rtdc_file()
    entry = figshare.file_entry(path, name="../../escape.rtdc")
    doi = figshare.add_article(7771184, 2, [entry])

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert "(no object store)" in result.output
    (resource,) = helpers.call_action("package_show", id="figshare-7771184-v2")["resources"]
    assert resource["url_type"] == "upload"
    assert resource["sha256"] == sha256_path(path)
    assert resource["dc:experiment:sample"] == "test sample"
    link = ckan_path(resource["id"])
    assert link.is_symlink()
    target = link.resolve()
    depot = config.depots_path() / "figshare" / "figshare-7771184-v2"
    assert target.parent == depot  # the name's "../" did not escape the folder
    assert target.name.startswith(resource["id"]) and target.name.endswith("escape.rtdc")
    assert sha256_path(target) == sha256_path(path)
    assert os.stat(target).st_nlink == 1
    assert tmp_leftovers() == []


def test_a_dataset_deleted_here_is_not_imported_again(figshare, rtdc_file, clean_circles, cli):
    doi = figshare.add_article(51, 1, [figshare.file_entry(rtdc_file())])
    assert cli.invoke(import_figshare, ["--doi", doi]).exit_code == 0
    helpers.call_action("package_delete", id="figshare-51-v1")

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert f"{doi}: dataset figshare-51-v1 was deleted on this site; restore or purge it" in (
        result.output
    )
    assert model.Package.get("figshare-51-v1").state == "deleted"


def test_a_derived_id_taken_in_another_dataset_is_reported_not_skipped(
    figshare, rtdc_file, clean_circles, cli
):
    """The ids are reproducible from public facts (the DOI, figshare's MD5s): somebody
    may have chosen one for a resource of their own. The import says so and adopts
    nothing."""
    path = rtdc_file()
    doi = figshare.add_article(71, 1, [figshare.file_entry(path)])
    _, (resource_id,) = ids_for(doi, "figshare-71-v1", [md5_of(path)])
    theirs = factories.Dataset(owner_org=factories.Organization()["id"])
    chosen_before(theirs["id"], resource_id)

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert f"resource id {resource_id} is taken by dataset {theirs['id']}" in result.output
    assert model.Resource.get(resource_id).package_id == theirs["id"]
    assert helpers.call_action("package_show", id="figshare-71-v1")["resources"] == []


def test_a_file_added_on_figshare_joins_the_active_dataset_public(
    figshare, rtdc_file, random_file, store, clean_circles, cli
):
    """Also the multipart path of the streaming upload, end to end."""
    first = rtdc_file()
    entries = [figshare.file_entry(first)]
    doi = figshare.add_article(61, 1, entries)
    assert cli.invoke(import_figshare, ["--doi", doi]).exit_code == 0
    large = random_file(3 * store.settings.part_size + 4321, "large.bin")
    entries.append(figshare.file_entry(large))

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    assert "figshare-61-v1: repaired, 1 files" in result.output
    dataset = helpers.call_action("package_show", id="figshare-61-v1")
    assert dataset["state"] == "active"
    added = dataset["resources"][1]
    assert (added["name"], added["sha256"]) == ("large.bin", sha256_path(large))
    bucket = store.circle_bucket(dataset["owner_org"])
    assert object_sha256(store, bucket, object_key("resource", added["id"])) == added["sha256"]
    assert anonymous_status(added["s3_url"]) == 200
    assert tmp_leftovers() == []


def test_a_download_that_breaks_off_stores_nothing(
    figshare, random_file, store, clean_circles, cli
):
    path = random_file(4 * store.settings.part_size)
    entry = figshare.file_entry(path)
    doi = figshare.add_article(71, 1, [entry])
    figshare.broken_off.add(entry["id"])

    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 1
    assert "The download of file 'data.bin'" in result.output
    assert "broke off" in result.output
    assert_nothing_stored(store, "figshare-71-v1")

    figshare.broken_off.clear()
    result = cli.invoke(import_figshare, ["--doi", doi])
    assert result.exit_code == 0, result.output
    (resource,) = helpers.call_action("package_show", id="figshare-71-v1")["resources"]
    assert resource["sha256"] == sha256_path(path)
