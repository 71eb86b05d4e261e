"""Benchmark of the README's direct-to-S3 client against boto3 ``upload_file``.

In one run, the same file is uploaded
  (a) with plain boto3 ``upload_file`` (its default: 10 threads, 8 MiB parts; the baseline),
  (b) with the README's ``send_to_s3`` (parts sent in parallel, 4 threads) through the
      presigned URLs of a grant made as ``dcor_depot_upload_urls`` makes it
      (``ObjectStore.presigned_upload``, signed headers, the site's part size),
each in a fresh process so that its peak RSS is its own; (b) is repeated with a
file twice as large to show that memory does not grow with file size. The
action's own calls (grant, registration) are not timed: they cost a few
milliseconds and do not grow with the file.

Usage: .venv/bin/python benchmarks/client.py [--size-mib 2048] [--repeat 3]
Needs the services (``bash scripts/services.sh``): the S3 settings come from services.ini.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from upload import make_file, measure, plain_client, settings_from_ini  # noqa: E402

from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = {"a": "boto3 upload_file", "b": "README client, parts in parallel"}


def readme_client() -> dict:
    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def child(args) -> None:
    store = ObjectStore(settings_from_ini(args.ini))
    path = Path(args.file)
    size = path.stat().st_size
    bucket = args.bucket
    if args.method == "b":  # URLs of the upload identity write the staging area
        bucket = store.settings.staging_bucket
        grant = store.presigned_upload(args.key, size, 3600, write_once=False)
        upload = {
            "method": "multipart",
            "part_size": grant.part_size,
            "parts": [{"part_number": n, "url": url} for n, url in grant.part_urls],
            "parts_done": [],
            "complete": {"url": grant.complete_url},
        }
        send_to_s3 = readme_client()["send_to_s3"]
        if isinstance(store.settings.ssl_verify, str):  # as the README says for a private CA
            os.environ["REQUESTS_CA_BUNDLE"] = store.settings.ssl_verify
    start = time.perf_counter()
    if args.method == "a":
        plain_client(store.settings).upload_file(str(path), args.bucket, args.key)
    else:
        send_to_s3(upload, str(path))
    seconds = time.perf_counter() - start
    assert store.object_info(bucket, args.key).size == size
    store.client.delete_object(Bucket=bucket, Key=args.key)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--ini", type=Path, default=REPO / "services.ini")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    store = ObjectStore(settings_from_ini(args.ini))
    bucket = f"dcor-bench-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        path = make_file(Path(folder), args.size_mib * MiB)
        for method in "ab":
            rows.append(measure(args, method, path, bucket, __file__))
            print(f"  measured ({method}) {METHODS[method]}", file=sys.stderr)
        path.unlink()
        large = make_file(Path(folder), 2 * args.size_mib * MiB)
        rows.append(measure(args, "b", large, bucket, __file__))
    store.client.delete_bucket(Bucket=bucket)

    a, b, b2 = rows
    print(
        f"\nDirect-to-S3 client benchmark ({args.repeat} runs each, median; "
        f"S3: Ceph RGW on loopback, {store.settings.endpoint_url.split(':')[0]}; "
        f"{os.cpu_count()} cores)\n"
    )
    print("| method | file | time (s) | MB/s | vs (a) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| ({row['method']}) {METHODS[row['method']]} | {row['size_mib']} MiB "
            f"| {row['seconds']:.2f} | {row['mb_s']:.0f} | {row['mb_s'] / a['mb_s']:.2f} "
            f"| {row['peak_rss_mib']:.0f} |"
        )
    checks = {
        "(b) >= 0.9 x (a)": b["mb_s"] >= 0.9 * a["mb_s"],
        "(b) RSS does not grow with size (2x file: < +10%)": b2["peak_rss_mib"]
        < 1.1 * b["peak_rss_mib"],
    }
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
