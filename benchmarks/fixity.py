"""Benchmark of hashing an object in the store (a fixity audit) against boto3's download.

One random object is uploaded once, then read
  (a) with plain boto3 ``download_fileobj`` into /dev/null (its default
      TransferConfig: 10 threads, 8 MiB ranged GETs; no hash; the baseline),
  (b) the way ``hash_object`` read it before: one GET (``read_object``) and hashlib,
  (c) with this extension's ``ObjectStore.hash_object`` (parallel ranged GETs),
each in a fresh process so that its peak RSS is its own; (c) is repeated on an
object a quarter the size to show that memory does not grow with object size.
The methods take turns (``--repeat`` rounds of a, b, c, c on the quarter object).
The hashes of (b) and (c) must be the SHA-256 of the uploaded bytes.

Usage: .venv/bin/python benchmarks/fixity.py [--size-mib 2048] [--repeat 3]
Needs the services (``bash scripts/services.sh``): the S3 settings come from services.ini.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from upload import plain_client, settings_from_ini  # noqa: E402

from ckanext.dcor_depot.storage import s3  # noqa: E402
from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "a": "boto3 download_fileobj to /dev/null, no hash",
    "b": "one GET (read_object) + hashlib",
    "c": "hash_object (this layer)",
}


def read_and_hash(store: ObjectStore, method: str, bucket: str, key: str) -> str | None:
    """Read the object as ``method`` does; its SHA-256 (None for the baseline, which only reads)."""
    if method == "a":
        with open(os.devnull, "wb") as fd:
            plain_client(store.settings).download_fileobj(bucket, key, fd)
        return None
    if method == "b":
        digest = hashlib.sha256()
        for chunk in store.read_object(bucket, key):
            digest.update(chunk)
        return digest.hexdigest()
    return store.hash_object(bucket, key).sha256


def upload_random(store: ObjectStore, bucket: str, key: str, size: int) -> str:
    """Upload ``size`` random bytes (a multiple of 16 MiB) under ``key``; their SHA-256."""
    chunks = (os.urandom(16 * MiB) for _ in range(size // (16 * MiB)))
    return store.upload_stream_verified(chunks, size, bucket, key).sha256


def child(args) -> None:
    """Upload the object, or read it once with one method: wall time, SHA-256, peak RSS."""
    store = ObjectStore(settings_from_ini(args.ini))
    start = time.perf_counter()
    if args.method == "upload":
        sha256 = upload_random(store, args.bucket, args.key, args.size_mib * MiB)
    else:
        sha256 = read_and_hash(store, args.method, args.bucket, args.key)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "sha256": sha256, "peak_rss_mib": peak_mib}))


def run_child(args, method: str, bucket: str, key: str, size: int) -> dict:
    """What ``--child`` reports. The uploads run in a child too: a process starts with the
    peak RSS of its parent (ru_maxrss survives fork and exec), so the parent stays small."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--method",
            method,
            "--bucket",
            bucket,
            "--key",
            key,
            "--size-mib",
            str(size // MiB),
            "--ini",
            str(args.ini),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(method: str, size: int, runs: list[dict]) -> dict:
    """A method's median time over its runs and its highest peak RSS."""
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "method": method,
        "size_mib": size // MiB,
        "seconds": seconds,
        "mb_s": size / 1e6 / seconds,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mib",
        type=int,
        default=2048,
        help="a multiple of 64; the RSS check needs a quarter of it to exceed hash_object's window",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--ini", type=Path, default=REPO / "services.ini")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if args.size_mib <= 0 or args.size_mib % 64:
        parser.error("--size-mib must be a positive multiple of 64")

    store = ObjectStore(settings_from_ini(args.ini))
    bucket = f"dcor-bench-fixity-{uuid.uuid4()}"
    store.ensure_bucket(bucket)
    objects = {"large": args.size_mib * MiB, "quarter": args.size_mib * MiB // 4}
    # (method, object) in the order of a round; rounds, not a method's runs in a row, so
    # that the machine's drift (it is shared, its speed varies by tens of %) hits all alike
    cases = [("a", "large"), ("b", "large"), ("c", "large"), ("c", "quarter")]
    runs: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
    try:
        hashes = {
            key: run_child(args, "upload", bucket, key, size)["sha256"]
            for key, size in objects.items()
        }
        print(f"  uploaded s3://{bucket}/ (large, quarter)", file=sys.stderr)
        for number in range(1, args.repeat + 1):
            for method, key in cases:
                run = run_child(args, method, bucket, key, objects[key])
                if run["sha256"] not in (None, hashes[key]):
                    raise SystemExit(
                        f"({method}) hashed s3://{bucket}/{key} to {run['sha256']}, "
                        f"not {hashes[key]}"
                    )
                runs[method, key].append(run)
            print(f"  round {number} of {args.repeat} measured", file=sys.stderr)
    finally:
        for key in objects:
            store.delete_object(bucket, key)
        store.client.delete_bucket(Bucket=bucket)

    rows = [summary(method, objects[key], runs[method, key]) for method, key in cases]
    a, b, c, c_quarter = rows
    print(
        f"\nObject hash benchmark ({args.repeat} runs each, median; "
        f"S3: Ceph RGW on loopback, {store.settings.endpoint_url.split(':')[0]}; "
        f"{os.cpu_count()} cores; hash_object: {s3.HASH_PART // MiB} MiB parts, "
        f"{s3.HASH_CONCURRENCY} threads, window {s3.HASH_WINDOW})\n"
    )
    print("| method | object | time (s) | MB/s | vs (a) | vs (b) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| ({row['method']}) {METHODS[row['method']]} | {row['size_mib']} MiB "
            f"| {row['seconds']:.2f} | {row['mb_s']:.0f} | {row['mb_s'] / a['mb_s']:.2f} "
            f"| {row['mb_s'] / b['mb_s']:.2f} | {row['peak_rss_mib']:.0f} |"
        )
    growth = c["peak_rss_mib"] - c_quarter["peak_rss_mib"]
    checks = {
        "(c) >= 0.9 x (a)": c["mb_s"] >= 0.9 * a["mb_s"],
        "(c) RSS does not grow with size (4x object: within 30 MiB)": abs(growth) <= 30,
    }
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
