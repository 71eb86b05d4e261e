"""The depot layer on real files: names from users stay inside the depot, the
move is atomic, works across filesystems, and is harmless when repeated or
run from two processes at once."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import uuid
from pathlib import Path

import pytest
import redis

from ckanext.dcor_depot.leases import Lease
from ckanext.dcor_depot.storage.depot import (
    NAME_MAX,
    DepotError,
    depot_path_for,
    file_state,
    move_into_depot,
    remove_local,
    safe_name,
    write_verified,
)

RID = "a1b2c3d4-0000-4000-8000-000000000001"


def lease() -> Lease:
    """What the jobs hold around a move: a lease in CKAN's Redis (``locks.depot_lock``)."""
    return Lease(f"depot:{RID}:{uuid.uuid4()}", wait=60)


PKG = "f0e1d2c3-0000-4000-8000-000000000002"


def sha256_path(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def path_for(depots: Path, **names: str) -> Path:
    args = {
        "users_depot_name": "users-host",
        "user_name": "alice",
        "org_name": "lab",
        "package_id": PKG,
        "package_name": "cells",
        "resource_id": RID,
        "resource_name": "m.rtdc",
    }
    args.update(names)
    return depot_path_for(depots, **args)


def test_depot_path_scheme(tmp_path):
    assert path_for(tmp_path) == (
        tmp_path / "users-host" / "alice-lab" / "f0" / "e1" / f"cells_{RID}_m.rtdc"
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("resource_name", "../../x"),
        ("resource_name", "/etc/passwd"),
        ("resource_name", "a\x00b"),
        ("resource_name", ".."),
        ("resource_name", "x" * 5000),
        ("resource_name", "Zellen_ü_😀" * 60),
        ("user_name", "../.."),
        ("org_name", "/"),
        ("package_name", "..\\..\\x"),
        ("users_depot_name", ".."),
        ("package_id", "../../../../"),
    ],
)
def test_user_supplied_names_never_leave_the_depot(tmp_path, field, value):
    root = tmp_path / "depots"
    path = path_for(root, **{field: value})
    assert path.resolve().is_relative_to(root.resolve())
    assert len(path.parts) == len(path_for(root).parts)
    assert all(len(part.encode()) <= NAME_MAX and "\x00" not in part for part in path.parts)
    # the file can really be created there
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ok")


def test_safe_name_keeps_unicode_and_cuts_on_character_boundaries():
    assert safe_name("Zellen ü") == "Zellen ü"
    cut = safe_name("ü" * 100, max_bytes=5)
    assert cut == "üü"
    assert safe_name("...") == "unnamed"


@pytest.fixture
def ckan_file(tmp_path):
    """A file at a CKAN-like path storage/resources/RES/OUR/CEID."""
    path = tmp_path / "storage" / "resources" / RID[:3] / RID[3:6] / RID[6:]
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(3 * 1024**2 + 7))
    return path


def test_move_on_one_filesystem_links_then_swaps(tmp_path, ckan_file):
    expected = sha256_path(ckan_file)
    inode = ckan_file.stat().st_ino
    depot = path_for(tmp_path / "depots")
    result = move_into_depot(ckan_file, depot, lease())
    assert result.action == "moved"
    assert ckan_file.is_symlink() and Path(os.readlink(ckan_file)) == depot
    assert depot.stat().st_ino == inode  # no copy
    assert sha256_path(ckan_file) == expected
    # a second run changes nothing
    assert move_into_depot(ckan_file, depot, lease()).action == "already"
    assert sorted(p.name for p in depot.parent.iterdir()) == [depot.name]


def test_move_to_another_filesystem_copies_and_verifies(tmp_path, ckan_file):
    shm = Path("/dev/shm") / f"dcor-depot-test-{uuid.uuid4().hex}"
    assert os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev
    try:
        expected = sha256_path(ckan_file)
        depot = path_for(shm)
        result = move_into_depot(ckan_file, depot, lease())
        assert result.action == "copied"
        assert ckan_file.is_symlink()
        assert sha256_path(depot) == sha256_path(ckan_file) == expected
        assert sorted(p.name for p in depot.parent.iterdir()) == [depot.name]
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_leftover_part_file_of_a_killed_run_is_replaced(tmp_path, ckan_file):
    depot = path_for(tmp_path / "depots")
    depot.parent.mkdir(parents=True)
    leftover = depot.with_name(f".{RID}.part")
    leftover.write_bytes(b"half a file")
    move_into_depot(ckan_file, depot, lease())
    assert not leftover.exists()
    assert sha256_path(depot) == sha256_path(ckan_file)


def test_missing_file_and_dangling_symlink_are_errors(tmp_path, ckan_file):
    depot = path_for(tmp_path / "depots")
    ckan_file.unlink()
    with pytest.raises(DepotError, match="does not exist"):
        move_into_depot(ckan_file, depot, lease())
    ckan_file.symlink_to(tmp_path / "gone")
    with pytest.raises(DepotError, match="which is missing"):
        move_into_depot(ckan_file, depot, lease())


def _move_in_process(args):
    ckan_file, depot, redis_url = args
    # a spawned process has no CKAN config: the lease period is given
    client = redis.Redis.from_url(redis_url)
    lock = Lease(f"depot:{ckan_file}", seconds=30, wait=60, client=client)
    return move_into_depot(Path(ckan_file), Path(depot), lock).action


def test_two_processes_at_once(tmp_path, ckan_file, ckan_config):
    """Two moves of one 300 MiB file to another filesystem: the copies (about a
    second each) overlap unless the lock serializes them."""
    with open(ckan_file, "ab") as fd:
        for _ in range(30):
            fd.write(os.urandom(10 * 1024**2))
    expected = sha256_path(ckan_file)
    shm = Path("/dev/shm") / f"dcor-depot-test-{uuid.uuid4().hex}"
    try:
        depot = path_for(shm)
        args = (str(ckan_file), str(depot), ckan_config["ckan.redis.url"])
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            actions = pool.map(_move_in_process, [args, args], chunksize=1)
        assert sorted(actions) == ["already", "copied"]
        assert ckan_file.is_symlink()
        assert sha256_path(ckan_file) == expected
        assert sorted(p.name for p in depot.parent.iterdir()) == [depot.name]
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_remove_local_keeps_a_file_that_changed_after_it_was_verified(tmp_path):
    depots = tmp_path / "depots"
    target = depots / "users" / "file.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"verified bytes")
    link = tmp_path / "ckan" / "abcdef"
    link.parent.mkdir()
    link.symlink_to(target)
    state = file_state(link)
    target.write_bytes(b"other bytes!!!")  # same size as before
    os.utime(target, ns=(state[2], state[2]))  # and the mtime restored
    with pytest.raises(DepotError, match="changed after it was verified"):
        remove_local(link, depots, state)
    assert target.read_bytes() == b"other bytes!!!" and link.is_symlink()

    removed = remove_local(link, depots, file_state(link))
    assert removed == [link, target]
    assert not link.is_symlink() and not target.exists()


def test_write_verified_keeps_only_a_copy_with_the_expected_sha256(tmp_path):
    data = os.urandom(3 * 1024**2)
    target = tmp_path / "backup" / "a1b" / "2c3" / "d4"
    chunks = [data[i : i + 1024**2] for i in range(0, len(data), 1024**2)]
    with pytest.raises(DepotError, match="it was not kept"):
        write_verified(target, iter(chunks), hashlib.sha256(b"other").hexdigest())
    assert list(target.parent.iterdir()) == []  # no partial file, no leftover
    target.write_bytes(b"an older, damaged copy")
    assert write_verified(target, iter(chunks), hashlib.sha256(data).hexdigest()) == len(data)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["d4"]


def test_a_depot_file_holding_other_bytes_is_never_overwritten(tmp_path, ckan_file):
    depot = path_for(tmp_path / "depots")
    depot.parent.mkdir(parents=True)
    depot.write_bytes(b"the bytes first published")
    original = ckan_file.read_bytes()
    with pytest.raises(DepotError, match="already holds other bytes than .*never overwritten"):
        move_into_depot(ckan_file, depot, lease())
    assert depot.read_bytes() == b"the bytes first published"
    assert not ckan_file.is_symlink() and ckan_file.read_bytes() == original
    assert sorted(p.name for p in depot.parent.iterdir()) == [depot.name]  # no part file left
    # the same bytes (a rerun after a kill between the rename and the symlink) are fine
    depot.write_bytes(original)
    assert move_into_depot(ckan_file, depot, lease()).action == "moved"
    assert ckan_file.is_symlink() and ckan_file.read_bytes() == original


class _StolenLease(Lease):
    """A lease that expires right after it was taken (the holder paused longer
    than one period) and is then taken by another process."""

    def __enter__(self):
        super().__enter__()
        self._redis().set(self.key, "another holder's token", px=int(self.seconds * 1000))
        return self


def test_a_move_whose_lease_was_lost_changes_nothing(tmp_path, ckan_file):
    original = ckan_file.read_bytes()
    depot = path_for(tmp_path / "depots")
    with pytest.raises(DepotError, match="lost its lease .* nothing was changed"):
        move_into_depot(ckan_file, depot, _StolenLease(f"depot:{RID}:{uuid.uuid4()}"))
    assert not ckan_file.is_symlink() and ckan_file.read_bytes() == original
    assert not depot.exists()
    assert list(depot.parent.iterdir()) == []  # no part file left


def test_each_move_writes_a_part_file_of_its_own(tmp_path, ckan_file, monkeypatch):
    """Two holders (one of which lost its lease) never write into one part file,
    and the leftovers of killed runs are removed by the next one."""
    from ckanext.dcor_depot.storage import depot as depot_module

    depot = path_for(tmp_path / "depots")
    depot.parent.mkdir(parents=True)
    leftovers = [depot.with_name(f".{RID}.part"), depot.with_name(f".{RID}.0123abcd.part")]
    for leftover in leftovers:
        leftover.write_bytes(b"half a file")
    parts = []
    link = os.link

    def record_part(source, target):
        parts.append(Path(target).name)
        link(source, target)

    monkeypatch.setattr(depot_module.os, "link", record_part)
    move_into_depot(ckan_file, depot, lease())
    assert sorted(p.name for p in depot.parent.iterdir()) == [depot.name]
    ckan_file.unlink()
    ckan_file.write_bytes(depot.read_bytes())
    depot.unlink()
    move_into_depot(ckan_file, depot, lease())
    assert len(set(parts)) == 2 and all(p.startswith(f".{RID}.") for p in parts)


def test_a_part_removed_by_the_next_holder_ends_the_move_with_a_clear_error(
    tmp_path, ckan_file, monkeypatch
):
    """The holder after a lost lease removes this move's part file: the move says so."""
    from ckanext.dcor_depot.storage import depot as depot_module

    original = ckan_file.read_bytes()
    depot = path_for(tmp_path / "depots")
    link = os.link

    def linked_then_removed(source, target):
        link(source, target)
        Path(target).unlink()  # the next holder's clean-up of leftovers

    monkeypatch.setattr(depot_module.os, "link", linked_then_removed)
    with pytest.raises(DepotError, match="lost its lease of the move and the holder now"):
        move_into_depot(ckan_file, depot, lease())
    assert not ckan_file.is_symlink() and ckan_file.read_bytes() == original
    assert list(depot.parent.iterdir()) == []
