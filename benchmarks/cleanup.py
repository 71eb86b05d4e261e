"""Remove what the benchmarks leave on the object store: their circle buckets
(``bench-circle-*``, see lifecycle.py) with every object and unfinished multipart
upload in them, and their objects in the staging bucket (keys ``resource/``). Run by
``scripts/benchmark.sh`` after the benchmarks, also when one failed: a full OSD has
hung a run before.

Usage: .venv/bin/python benchmarks/cleanup.py [--ini services.ini]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from upload import plain_client, settings_from_ini  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PREFIX = "bench-circle-"


def empty(client, bucket: str, prefix: str = "") -> tuple[int, int]:
    """Delete the objects (and abort the multipart uploads) under ``prefix``: their counts
    and bytes."""
    count = size = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
            count += 1
            size += item["Size"]
    return count, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ini", type=Path, default=REPO / "services.ini")
    args = parser.parse_args()
    settings = settings_from_ini(args.ini)
    client = plain_client(settings)
    buckets = [b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(PREFIX)]
    objects = size = 0
    for bucket in buckets:
        count, bytes_ = empty(client, bucket)
        client.delete_bucket(Bucket=bucket)
        objects, size = objects + count, size + bytes_
    print(
        f"Benchmarks' leftovers removed: {len(buckets)} {PREFIX}* buckets, {objects} objects "
        f"({size / 2**30:.2f} GiB)"
    )
    left = [b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith(PREFIX)]
    print(f"{'PASS' if not left else 'FAIL'}  benchmarks leave no {PREFIX}* bucket behind")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
