"""Bucket names and object keys."""

from __future__ import annotations

import pytest

from ckanext.dcor_depot.storage import s3
from ckanext.dcor_depot.storage.s3 import MiB

from .helpers import RID


def test_object_key_layout():
    assert s3.object_key("resource", RID) == f"resource/7f4/c0a/{RID[6:]}"
    assert s3.object_key("condensed", RID).startswith("condensed/7f4/c0a/")
    assert s3.object_key("preview", RID).startswith("preview/7f4/c0a/")


@pytest.mark.parametrize(
    "artifact, rid",
    [
        ("thumbnail", RID),
        ("resource", "../../etc"),
        ("resource", "abc"),
        ("resource", "ABCDEF-GHIJ"),
    ],
)
def test_object_key_refuses_bad_input(artifact, rid):
    with pytest.raises(ValueError):
        s3.object_key(artifact, rid)


def test_circle_bucket_name_from_template():
    assert s3.circle_bucket_name("circle-{organization_id}", "abc-123") == "circle-abc-123"
    with pytest.raises(ValueError, match="placeholder"):
        s3.circle_bucket_name("circle", "abc")
    with pytest.raises(ValueError, match="not a valid S3 bucket name"):
        s3.circle_bucket_name("Circle_{organization_id}", "abc")


def test_part_size_grows_to_stay_within_the_part_limit():
    assert s3.part_size_for(10 * MiB, 16 * MiB) == 16 * MiB
    size = 200 * 1024 * MiB  # 200 GiB
    part = s3.part_size_for(size, 16 * MiB)
    assert part % MiB == 0 and -(-size // part) <= s3.MAX_PARTS
