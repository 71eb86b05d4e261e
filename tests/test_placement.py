"""CKAN's path of a resource's file (``placement.ckan_path``): inside CKAN's storage folder,
or a symlink into the depots, and nowhere else."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ckanext.dcor_depot import config, placement
from ckanext.dcor_depot.errors import JobError


@pytest.mark.usefixtures("with_plugins")
def test_an_id_names_a_file_inside_ckan_s_storage_folder_only(ckan_config):
    rid = str(uuid.uuid4())
    root = Path(ckan_config["ckan.storage_path"]).resolve() / "resources"
    assert placement.ckan_path(rid) == root / rid[:3] / rid[3:6] / rid[6:]
    for bad in ("ab/../../../etc/passwd", "abc/et/c-passwd", "../xyz", "abc", "a\0b-c-d-e"):
        with pytest.raises(JobError, match="no resource id"):
            placement.ckan_path(bad)


@pytest.mark.usefixtures("with_plugins")
def test_a_symlinked_folder_of_an_id_is_refused_unless_it_leads_into_the_depots(
    ckan_config, tmp_path
):
    rid = str(uuid.uuid4())
    folder = Path(ckan_config["ckan.storage_path"]) / "resources" / rid[:3]
    folder.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / rid[3:6]).mkdir(parents=True)
    (elsewhere / rid[3:6] / rid[6:]).write_bytes(b"not the depot's")
    folder.symlink_to(elsewhere)
    try:
        with pytest.raises(JobError, match="leads outside the depots"):
            placement.ckan_path(rid)
    finally:
        folder.unlink()
    # a file symlinked into the depots is CKAN's path after the symlink job
    depots = Path(config.depots_path())
    target = depots / "test-placement" / rid
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"the depot's")
    path = placement.ckan_path(rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    try:
        assert placement.ckan_path(rid) == path
        outside = tmp_path / "outside.bin"
        outside.write_bytes(b"x")
        path.unlink()
        path.symlink_to(outside)
        with pytest.raises(JobError, match="leads outside the depots"):
            placement.ckan_path(rid)
    finally:
        path.unlink()
        target.unlink()
