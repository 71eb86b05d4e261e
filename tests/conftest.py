"""Fixtures shared by the test suite: real files, the real object store, clean buckets."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from ckanext.dcor_depot import config
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(with_plugins) -> ObjectStore:
    """The object store configured in test.ini (services.ini): the real Ceph RGW."""
    store = config.object_store()
    assert store is not None, "no S3 endpoint configured: run `bash scripts/services.sh` first"
    return store


@pytest.fixture
def bucket(store):
    """A fresh bucket, emptied and removed after the test (also its open uploads)."""
    name = f"dcor-test-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(name)
    yield name
    client = store.client
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for obj in store.iter_objects(name):
        client.delete_object(Bucket=name, Key=obj.key)
    client.delete_bucket(Bucket=name)


@pytest.fixture
def random_file(tmp_path):
    """Factory: a file of ``size`` random bytes, written in chunks."""

    def make(size: int, name: str = "data.bin") -> Path:
        path = tmp_path / name
        with open(path, "wb") as fd:
            remaining = size
            while remaining:
                chunk = min(remaining, 16 * MiB)
                fd.write(os.urandom(chunk))
                remaining -= chunk
        return path

    return make


@pytest.fixture
def rtdc_file(tmp_path):
    """Factory: a real, valid .rtdc file written with dclab."""
    import dclab

    def make(events: int = 200, name: str = "measurement.rtdc") -> Path:
        path = tmp_path / name
        rng = np.random.default_rng()
        with dclab.RTDCWriter(path, mode="reset") as writer:
            writer.store_metadata(
                {
                    "experiment": {
                        "date": "2026-11-21",
                        "time": "12:00:00",
                        "sample": "test sample",
                        "run index": 1,
                    },
                    "setup": {
                        "channel width": 20,
                        "chip region": "channel",
                        "flow rate": 0.04,
                        "medium": "CellCarrier",
                    },
                    "imaging": {"pixel size": 0.34, "frame rate": 2000},
                }
            )
            writer.store_feature("deform", rng.uniform(0, 0.1, events))
            writer.store_feature("area_um", rng.uniform(20, 200, events))
            writer.store_feature("bright_avg", rng.uniform(80, 120, events))
        return path

    return make
