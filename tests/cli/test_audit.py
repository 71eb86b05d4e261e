"""The rolling fixity audit ``ckan dcor-verify-object-store``: every copy (S3 object,
local backup copy, depot file) re-hashed, least recently checked first, within a
budget; every result recorded in the extension's tables."""

from __future__ import annotations

import json
import os
import shutil

import ckan.model as model
import pytest
import sqlalchemy as sa
from ckan.tests import factories

from ckanext.dcor_depot import locks, placement
from ckanext.dcor_depot.cli import (
    dcor_migrate_resources_to_object_store,
    dcor_move_dataset_to_circle,
    dcor_verify_object_store,
)
from ckanext.dcor_depot.jobs.resource_jobs import RESOURCE_JOBS
from ckanext.dcor_depot.leases import connection
from ckanext.dcor_depot.model import audit_table, check_table, checks, copy_table
from ckanext.dcor_depot.operations import audit, circle_move
from ckanext.dcor_depot.storage.depot import backup_path_for
from ckanext.dcor_depot.storage.s3 import ObjectStore, S3Error, object_key

from ..conftest import appended, corrupt_object, sha256_path

pytestmark = pytest.mark.usefixtures(
    "with_plugins", "clean_db", "clean_index", "clean_queues", "clean_circles"
)

GiB = 1024**3


@pytest.fixture
def backups(tmp_path, ckan_config, monkeypatch):
    folder = tmp_path / "backup"
    monkeypatch.setitem(ckan_config, "dcor_object_store.local_backup_location", str(folder))
    return folder


def rows(table, **where):
    query = sa.select(table)
    for name, value in where.items():
        query = query.where(getattr(table.c, name) == value)
    found = [dict(row._mapping) for row in model.Session.execute(query)]
    model.Session.rollback()
    return found


def copies() -> dict[tuple[str, str], dict]:
    return {(row["resource_id"], row["copy"]): row for row in rows(copy_table)}


def verify(cli, *args: str):
    result = cli.invoke(dcor_verify_object_store, ["--json", *args])
    return result.exit_code, json.loads(result.stdout)


def append(cli, path, dataset: str) -> dict:
    return appended(cli, dataset, path)


def test_corrupted_depot_file_object_and_backup_copy_are_found_and_recorded(
    api_upload, random_file, cli, store, backups
):
    user = factories.User()
    org = factories.Organization(name="lab", users=[{"name": user["name"], "capacity": "editor"}])
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    uploaded = api_upload(user, dataset["id"], random_file(3000, name="local.bin"))
    for kind in ("symlink", "s3-upload"):
        RESOURCE_JOBS[kind](uploaded["id"])  # what the worker does
    far = append(cli, random_file(4000, name="far.bin"), dataset["id"])
    RESOURCE_JOBS["backup"](far["id"])
    bucket = store.circle_bucket(org["id"])
    depot_file = placement.ckan_path(uploaded["id"]).resolve()
    backup = backup_path_for(backups, far["id"])
    far_key = object_key("resource", far["id"])

    # all four copies hold the recorded bytes
    status, clean = verify(cli)
    assert status == 0, clean
    assert (clean["copies_checked"], clean["bytes_read"], clean["findings"]) == (4, 14000, [])
    assert clean["circles"]["lab"]["ok"] == 4
    assert set(copies()) == {
        (uploaded["id"], "object"),
        (uploaded["id"], "depot"),
        (far["id"], "object"),
        (far["id"], "backup"),
    }
    assert {row["result"] for row in copies().values()} == {"ok"}
    first_ok = copies()[(far["id"], "object")]["last_ok"]

    # the depot file and the object: other bytes of the same size (the object's metadata kept)
    depot_file.write_bytes(os.urandom(3000))
    corrupt_object(store, bucket, far)
    status, found = verify(cli)
    assert status == 1
    by_copy = {(f["resource_id"], f["copy"]): f for f in found["findings"]}
    depot = by_copy[(uploaded["id"], "depot")]
    assert depot["kind"] == "disagrees" and depot["location"] == str(depot_file)
    assert f"its bytes have SHA-256 {sha256_path(depot_file)}" in depot["detail"]
    assert "the object copy at s3://" in depot["detail"] and "restore this copy" in depot["detail"]
    far_object = by_copy[(far["id"], "object")]
    assert far_object["kind"] == "disagrees"
    assert far_object["location"] == f"s3://{bucket}/{far_key}"
    assert (
        f"the backup copy at {backup} holds the recorded bytes (read in this run)"
        in (far_object["detail"])
    )
    assert found["circles"]["lab"]["disagrees"] == 2 and found["circles"]["lab"]["ok"] == 2
    recorded = copies()
    assert recorded[(far["id"], "object")]["result"] == "disagrees"
    assert recorded[(far["id"], "object")]["last_ok"] == first_ok
    assert recorded[(uploaded["id"], "depot")]["result"] == "disagrees"

    # the backup copy cut short, the uploaded file's object gone, an orphan: in text
    backup.write_bytes(b"short")
    store.delete_object(bucket, object_key("resource", uploaded["id"]))
    orphan_key = object_key("resource", "0123456789abcdef")
    store.client.put_object(Bucket=bucket, Key=orphan_key, Body=b"nobody's")
    text = cli.invoke(dcor_verify_object_store, [])
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert (
        f"MISMATCH backup {backup}: has 5 bytes, the file has 4000; no other copy read in this "
        f"run holds the recorded bytes (resource {far['id']} of dataset {dataset['name']})"
    ) in lines
    assert any(
        line.startswith(f"MISSING object s3://{bucket}/{object_key('resource', uploaded['id'])}")
        for line in lines
    )
    assert f"ORPHAN object s3://{bucket}/{orphan_key}: no resource 0123456789abcdef exists" in (
        text.stdout
    )
    assert lines[-1].startswith("Audit ") and "4 of 4 copies checked" in lines[-1]
    assert "5 findings; 1 orphaned" in lines[-1]
    table = [line.split() for line in lines if line.startswith(("circle ", "lab "))]
    assert table[0][:4] == ["circle", "checked", "read", "ok"]
    assert table[1][0] == "lab" and table[1][1] == "4" and table[1][-2:] == ["1", "0"]

    # the history: every check of every run, and each run
    audits = rows(audit_table)
    assert [a["findings"] for a in audits] == [0, 2, 5]
    assert all(a["finished"] is not None for a in audits)
    history = rows(check_table, audit_id=audits[-1]["id"])
    assert sorted((h["resource_id"] or "", h["copy"]) for h in history) == sorted(
        [*copies(), ("", "object")]
    )
    assert "ok" not in {h["result"] for h in history}
    assert len(rows(check_table)) == 4 + 4 + 5

    # one dataset: its copies, no orphans; refusals say what is wrong
    one = cli.invoke(dcor_verify_object_store, ["--dataset", dataset["name"]])
    assert one.exit_code == 1
    assert "ORPHAN" not in one.stdout and "orphans not checked (--dataset)" in one.stdout
    unknown = cli.invoke(dcor_verify_object_store, ["--dataset", "nope"])
    assert unknown.exit_code == 1 and "There is no dataset 'nope'" in unknown.output


def findings_of(run: dict) -> dict[tuple[str | None, str], dict]:
    return {(f["resource_id"], f["copy"]): f for f in run["findings"]}


def test_what_is_gone_on_purpose_is_forgotten_and_nothing_is_missed(
    api_upload, random_file, cli, store, backups, tmp_path, monkeypatch, ckan_config
):
    user = factories.User()
    org = factories.Organization(name="lab", users=[{"name": user["name"], "capacity": "editor"}])
    other = factories.Organization(name="other-lab")
    dataset = factories.Dataset(owner_org=org["id"], user=user)
    moving = factories.Dataset(owner_org=org["id"], user=user)
    kept, dangling, unlinked = (
        api_upload(user, dataset["id"], random_file(size, name=f"{size}.bin"))
        for size in (3000, 3500, 3700)
    )
    for rid in (kept["id"], dangling["id"], unlinked["id"]):
        for kind in ("symlink", "s3-upload"):
            RESOURCE_JOBS[kind](rid)
    far = append(cli, random_file(4000, name="far.bin"), dataset["id"])
    RESOURCE_JOBS["backup"](far["id"])
    moved = append(cli, random_file(2000, name="moved.bin"), moving["id"])
    # a depot file lost before any audit: CKAN's path dangles
    placement.ckan_path(dangling["id"]).resolve().unlink()

    status, first = verify(cli)
    assert status == 1
    assert set(findings_of(first)) == {(dangling["id"], "depot")}
    lost = findings_of(first)[(dangling["id"], "depot")]
    assert lost["kind"] == "disagrees" and "the file is missing" in lost["detail"]
    assert "holds the recorded bytes (read in this run)" in lost["detail"]
    assert first["files_unverified"] == 0

    # a depot file and its symlink deleted, not by the migration: still audited, and lost
    symlink = placement.ckan_path(unlinked["id"])
    symlink.resolve().unlink()
    symlink.unlink()

    # the migration deletes the depot file once its object is verified, here while an
    # audit runs, after the audit found the file: not a loss, in this run or later
    real_check = audit.check
    migrated = []

    def migrating_check(store_, copy):
        if copy.record.key == (kept["id"], "resource", "depot") and not migrated:
            migrated.append(
                cli.invoke(dcor_migrate_resources_to_object_store, ["--delete-after-migration"])
            )
            assert checks.current(copy.record.key).result == checks.DELETED
        return real_check(store_, copy)

    with monkeypatch.context() as patched:
        patched.setattr(audit, "check", migrating_check)
        status, during = verify(cli)
    assert "deleted" in migrated[0].output, migrated[0].output
    assert not placement.ckan_path(kept["id"]).is_symlink()
    assert status == 1
    assert set(findings_of(during)) == {(dangling["id"], "depot"), (unlinked["id"], "depot")}
    assert (kept["id"], "depot") not in copies()

    # and deleted by the migration while the audit reads it (the read ends well): the
    # mark stays, and the next run forgets the copy instead of reporting it
    later = api_upload(user, dataset["id"], random_file(2600, name="later.bin"))
    for kind in ("symlink", "s3-upload"):
        RESOURCE_JOBS[kind](later["id"])
    migrated.clear()

    def migrating_after_read(store_, copy):
        result = real_check(store_, copy)
        if copy.record.key == (later["id"], "resource", "depot") and not migrated:
            migrated.append(
                cli.invoke(dcor_migrate_resources_to_object_store, ["--delete-after-migration"])
            )
        return result

    with monkeypatch.context() as patched:
        patched.setattr(audit, "check", migrating_after_read)
        status, read_then_deleted = verify(cli, "--dataset", dataset["name"])
    assert "deleted" in migrated[0].output, migrated[0].output
    assert (later["id"], "depot") not in findings_of(read_then_deleted)
    assert copies()[(later["id"], "depot")]["result"] == checks.DELETED
    waiting = api_upload(user, dataset["id"], random_file(2500, name="waiting.bin"))

    # a local read that fails: an error, and the copy stays due (checked unchanged)
    def unreadable(path):
        raise OSError(f"Input/output error: {path}")

    before = copies()
    with monkeypatch.context() as patched:
        patched.setattr(audit, "sha256_of_file", unreadable)
        status, failing = verify(cli)
    assert status == 1
    assert (later["id"], "depot") not in copies()  # forgotten, not reported
    assert set(findings_of(failing)) == {
        (dangling["id"], "depot"),
        (unlinked["id"], "depot"),
        (far["id"], "backup"),
    }
    gone = findings_of(failing)[(unlinked["id"], "depot")]
    assert gone["kind"] == "disagrees" and "the file is missing" in gone["detail"]
    error = findings_of(failing)[(far["id"], "backup")]
    assert error["kind"] == "error" and "Input/output error" in error["detail"]
    # the check and result before it are kept: the copy stays due, an earlier finding stays
    for field in ("checked", "result", "detail"):
        assert copies()[(far["id"], "backup")][field] == before[(far["id"], "backup")][field]
    assert failing["files_unverified"] == 1  # the file that waits for its jobs: counted
    assert failing["circles"]["lab"]["unverified"] == 1

    # the copy that erred comes first in the next run
    status, again = verify(cli, "--budget-gib", str(4000 / GiB))
    assert status == 0, again
    assert [
        (h["resource_id"], h["copy"]) for h in rows(check_table, audit_id=again["audit_id"])
    ] == [(far["id"], "backup")]

    text = cli.invoke(dcor_verify_object_store, ["--dataset", waiting["package_id"]])
    assert "1 files not verified yet (run-jobs-dcor-depot)" in text.stdout.splitlines()[-1]

    # a backup folder that is unmounted (empty), missing or unreadable: one error, not the
    # loss of every copy in it
    backups.rename(tmp_path / "backup-away")
    checked_before = copies()[(far["id"], "backup")]["checked"]
    real_scandir = os.scandir

    def unreadable(path):  # root reads any folder: what a refusal looks like to the audit
        if os.fspath(path) == str(backups):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    for state, says in (
        ("empty", "is empty"),
        ("missing", "is not a folder"),
        ("unreadable", "cannot be read (Permission denied)"),
    ):
        with monkeypatch.context() as patched:
            if state != "missing":
                backups.mkdir()
            if state == "unreadable":
                (backups / "something").touch()
                patched.setattr(os, "scandir", unreadable)
            status, unmounted = verify(cli)
        assert status == 1
        assert (far["id"], "backup") not in findings_of(unmounted), state
        (folder,) = [f for f in unmounted["findings"] if f["copy"] == "local"]
        assert folder["kind"] == "error" and folder["location"] == str(backups)
        assert f"{backups} (dcor_object_store.local_backup_location) on host" in folder["detail"]
        assert f"{says}: is it mounted? 1 copies in it were not" in folder["detail"], state
        assert copies()[(far["id"], "backup")]["checked"] == checked_before
        if state != "missing":
            shutil.rmtree(backups)
    (tmp_path / "backup-away").rename(backups)

    # both copies of a file wrong: each read in the same run, neither trusts the other's past
    bucket = store.circle_bucket(org["id"])
    corrupt_object(store, bucket, far)
    backup_path_for(backups, far["id"]).write_bytes(os.urandom(4000))
    status, both = verify(cli, "--dataset", dataset["name"])
    assert status == 1
    for kind in ("object", "backup"):
        found = findings_of(both)[(far["id"], kind)]
        assert found["kind"] == "mismatch", found
        assert "no other copy read in this run holds the recorded bytes" in found["detail"]

    # backups no longer kept: their copies are forgotten, not missing
    monkeypatch.delitem(ckan_config, "dcor_object_store.local_backup_location")
    # a dataset that moves to another circle while the audit runs: not missing
    real_check = audit.check
    calls = []

    def moving_check(store_, copy):
        if copy.record.resource_id == moved["id"] and not calls:
            calls.append(circle_move.move_to_circle(store_, moving["name"], other["name"]))
            assert store_.object_info(*copy.object) is None  # the old object is gone
        return real_check(store_, copy)

    with monkeypatch.context() as patched:
        patched.setattr(audit, "check", moving_check)
        status, during = verify(cli)
    assert calls
    assert (moved["id"], "object") not in findings_of(during)
    assert not any(key[1] == "backup" for key in copies())
    status, after = verify(cli)
    assert (moved["id"], "object") not in findings_of(after)
    relocated = copies()[(moved["id"], "object")]
    assert relocated["result"] == "ok"
    assert relocated["location"].startswith(f"s3://{store.circle_bucket(other['id'])}/")


def test_the_budget_holds_and_the_least_recently_checked_come_first(
    cli, random_file, monkeypatch, store
):
    org = factories.Organization(name="lab")
    dataset = factories.Dataset(owner_org=org["id"])
    sizes = {
        append(cli, random_file(size, name=f"{size}.bin"), dataset["id"])["id"]: size
        for size in (3000, 4000, 5000)
    }
    budget = str(8000 / GiB)  # exact: a power of two apart

    def checked(run: dict) -> list[str]:
        history = rows(check_table, audit_id=run["audit_id"])
        return [h["resource_id"] for h in sorted(history, key=lambda h: h["id"])]

    seen_before: dict[str, object] = {}
    runs = []
    for _ in range(4):
        before = {rid: row["checked"] for (rid, _), row in copies().items()}
        status, run = verify(cli, "--budget-gib", budget)
        assert status == 0, run
        assert run["bytes_read"] <= 8000
        order = checked(run)
        assert run["copies_checked"] == len(order) >= 1
        assert run["copies_left"] == 3 - len(order)
        assert run["bytes_read"] == sum(sizes[rid] for rid in order)
        # never checked first, then by the moment of the last check
        due = sorted(sizes, key=lambda rid: (before.get(rid) is not None, before.get(rid) or 0))
        assert order[0] == due[0]
        assert [before.get(rid) for rid in order] == sorted(
            (before.get(rid) for rid in order), key=lambda t: (t is not None, t or 0)
        )
        seen_before.update(dict.fromkeys(order))
        runs.append(order)
    assert set(seen_before) == set(sizes)  # successive runs cover everything
    assert runs[0] != runs[1]

    # a budget smaller than a copy: said, and exit 1
    status, tight = verify(cli, "--budget-gib", str(2000 / GiB))
    assert status == 1 and tight["copies_checked"] == 0
    assert {f["kind"] for f in tight["findings"]} == {"over-budget"}
    assert "raise --budget-gib" in tight["findings"][0]["detail"]

    # the dataset moves to another circle: its objects are other copies, due at once
    other = factories.Organization(name="other-lab")
    moved = cli.invoke(dcor_move_dataset_to_circle, [dataset["name"], other["name"]])
    assert moved.exit_code == 0, moved.output
    status, after = verify(cli, "--budget-gib", budget)
    assert status == 0 and after["circles"]["other-lab"]["checked"] == len(checked(after)) >= 1
    relocated = copies()
    assert {row["location"].split("/")[2] for row in relocated.values()} == {
        store.circle_bucket(other["id"])
    }
    # checked before the move, but not in this run: never checked at the new place
    assert {rid: row["checked"] is not None for (rid, _), row in relocated.items()} == {
        rid: rid in checked(after) for rid in sizes
    }

    # a read that fails part way counts the copy's full size against the budget; a check
    # that fails before reading (the object's metadata) counts nothing
    def broken_off(self, bucket, key):
        raise S3Error("the connection broke off after most of the bytes")

    with monkeypatch.context() as patched:
        patched.setattr(ObjectStore, "hash_object", broken_off)
        status, reads_fail = verify(cli, "--budget-gib", budget)
    assert status == 1 and reads_fail["bytes_read"] == 0
    failed_sizes = [sizes[rid] for rid in checked(reads_fail)]
    assert reads_fail["copies_left"] >= 1 and sum(failed_sizes) <= 8000

    def no_metadata(self, bucket, key):
        raise S3Error("HEAD failed")

    with monkeypatch.context() as patched:
        patched.setattr(ObjectStore, "object_info", no_metadata)
        status, heads_fail = verify(cli, "--budget-gib", budget)
    assert status == 1 and (heads_fail["copies_checked"], heads_fail["copies_left"]) == (3, 0)

    # --budget-minutes: no check starts after the time is spent (a clock 50 s per step)
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(audit, "monotonic", lambda: next(clock))
    status, timed = verify(cli, "--budget-minutes", "2")
    assert status == 0 and timed["copies_checked"] == 2 and timed["copies_left"] == 1


def test_without_the_plugins_migrations_it_says_what_to_run(cli, store):
    model.Session.execute(sa.text("ALTER TABLE dcor_depot_copy RENAME TO dcor_depot_copy_away"))
    model.Session.commit()
    try:
        result = cli.invoke(dcor_verify_object_store, [])
    finally:
        model.Session.rollback()
        model.Session.execute(sa.text("ALTER TABLE dcor_depot_copy_away RENAME TO dcor_depot_copy"))
        model.Session.commit()
    assert result.exit_code == 1
    assert "The table dcor_depot_copy is missing: run `ckan -c CKAN_INI db upgrade -p" in (
        result.output
    )


def test_a_second_audit_is_refused_while_one_runs(cli, store, random_file, monkeypatch):
    monkeypatch.setattr(locks, "COMMAND_LEASE_SECONDS", 0.5)  # a shorter wait for the refusal
    with locks.command_lock("dcor-verify-object-store"):
        refused = cli.invoke(dcor_verify_object_store, [])
    assert refused.exit_code == 1
    assert "Another dcor-verify-object-store is running" in refused.output
    assert rows(audit_table) == []  # nothing recorded of the refused run
    assert cli.invoke(dcor_verify_object_store, []).exit_code == 0

    # the lock lost while it runs (it expired, or Redis was flushed): it stops and says so
    dataset = factories.Dataset(owner_org=factories.Organization()["id"])
    for size in (1000, 2000):
        append(cli, random_file(size, name=f"{size}.bin"), dataset["id"])
    real_check = audit.check

    def check_and_lose(store_, copy):
        connection().delete(locks.command_lock("dcor-verify-object-store").key)
        return real_check(store_, copy)

    monkeypatch.setattr(audit, "check", check_and_lose)
    lost = cli.invoke(dcor_verify_object_store, [])
    assert lost.exit_code == 1
    assert "This dcor-verify-object-store lost its lock" in lost.output
    # what it did is printed all the same
    assert "ERROR audit: this audit lost its lock" in lost.output
    assert "1 of 2 copies checked" in lost.output
    stopped = max(rows(audit_table), key=lambda row: row["id"])
    assert (stopped["copies"], stopped["left"], stopped["findings"]) == (1, 1, 1)
    assert "this audit lost its lock" in rows(check_table, audit_id=stopped["id"])[-1]["detail"]

    # 12 copies in all, for the 10 failed checks in a row after which the run asks the store
    monkeypatch.setattr(audit, "check", real_check)
    assert audit.MAX_ERRORS_IN_A_ROW == 10
    for number in range(10):
        append(cli, random_file(10 + number, name=f"tiny-{number}.bin"), dataset["id"])
    assert verify(cli)[0] == 0

    # 10 failed checks in a row while the store answers: only these copies fail, the run
    # goes on (they must not keep every later run from the others)
    real_info = ObjectStore.object_info
    due_first = sorted(copies().values(), key=lambda row: row["checked"])
    failing = {row["location"] for row in due_first[:10]}  # checked one after the other

    def refused(self, bucket, key):
        if f"s3://{bucket}/{key}" in failing:
            raise S3Error("An error occurred (AccessDenied)")
        return real_info(self, bucket, key)

    with monkeypatch.context() as patched:
        patched.setattr(ObjectStore, "object_info", refused)
        status, ten_fail = verify(cli)
    assert status == 1 and ten_fail["copies_checked"] == 12 and ten_fail["copies_left"] == 0
    assert [f["kind"] for f in ten_fail["findings"]] == ["error"] * 10

    # the store unreachable: the run stops after 10 failed checks, and the copies keep their
    # last check (the next run starts with them); no orphans looked for
    before = copies()

    def unreachable(*args):
        raise S3Error("Could not connect to the endpoint URL")

    with monkeypatch.context() as patched:
        patched.setattr(ObjectStore, "object_info", unreachable)
        patched.setattr(ObjectStore, "list_buckets", unreachable)
        status, outage = verify(cli)
    assert status == 1
    assert (outage["copies_checked"], outage["copies_left"], outage["bytes_read"]) == (10, 2, 0)
    assert [f["kind"] for f in outage["findings"]] == ["error"] * 11
    assert (
        "10 checks in a row failed (the last: the check failed: Could not connect"
        in (outage["findings"][-1]["detail"])
    )
    assert "the object store does not answer" in outage["findings"][-1]["detail"]
    assert outage["orphans_checked"] is False
    assert copies() == before
