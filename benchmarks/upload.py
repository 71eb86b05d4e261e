"""Benchmark of the verified upload against the real object store.

In one run, the same file is uploaded
  (a) with plain boto3 ``upload_file`` and no verification (the baseline),
  (b) the way the existing DCOR tools verify: hash the file, upload it, then
      re-download the object in 1 MiB ranged GETs and hash it,
  (c) with this extension's ``ObjectStore.upload_verified``,
each in a fresh process so that its peak RSS is its own; (c) is repeated with a
file twice as large to show that memory does not grow with file size.

Usage: .venv/bin/python benchmarks/upload.py [--size-mib 1024] [--repeat 3]
Needs the services (``bash scripts/services.sh``): the S3 settings come from services.ini.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from ckanext.dcor_depot.storage.s3 import MiB, ObjectStore, S3Settings, sha256_of_file

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "a": "boto3 upload_file, no verification",
    "b": "hash, upload, ranged re-download",
    "c": "upload_verified (this layer)",
}


def ssl_verify(value: str) -> bool | str:
    """true, false or a CA bundle's path, as CKAN's validator reads it (CKAN is not imported:
    it would add some 60 MiB to the peak RSS this benchmark measures)."""
    text = value.strip()
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    if text.startswith("/") and os.path.isfile(text):
        return text
    raise SystemExit(
        f"dcor_object_store.ssl_verify: expected true, false or a CA bundle, got {value!r}"
    )


def settings_from_ini(path: Path) -> S3Settings:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    section = parser["app:main"]
    bucket = section.get("dcor_object_store.staging_bucket")
    staging = {"staging_bucket": bucket} if bucket else {}
    return S3Settings(
        endpoint_url=section["dcor_object_store.endpoint_url"],
        access_key_id=section["dcor_object_store.access_key_id"],
        secret_access_key=section["dcor_object_store.secret_access_key"],
        ssl_verify=ssl_verify(section.get("dcor_object_store.ssl_verify", "true")),
        upload_access_key_id=section.get("dcor_object_store.upload_access_key_id") or None,
        upload_secret_access_key=section.get("dcor_object_store.upload_secret_access_key") or None,
        **staging,
    )


def plain_client(settings: S3Settings):
    """boto3 as a user would set it up for Ceph RGW (FACTS: path style, checksums when required)."""
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        verify=settings.ssl_verify,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def run_method(method: str, store: ObjectStore, path: Path, bucket: str, key: str) -> None:
    client = plain_client(store.settings)
    if method == "a":
        client.upload_file(str(path), bucket, key)
    elif method == "b":
        local = sha256_of_file(path)
        client.upload_file(str(path), bucket, key)
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        remote = hashlib.sha256()
        for start in range(0, size, MiB):
            end = min(start + MiB, size) - 1
            body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
            remote.update(body.read())
        if remote.hexdigest() != local:
            raise SystemExit("verification failed")
    else:
        store.upload_verified(path, bucket, key, overwrite=True)


def child(args) -> None:
    """Run one method once and report its wall time and this process's peak RSS."""
    store = ObjectStore(settings_from_ini(args.ini))
    start = time.perf_counter()
    run_method(args.method, store, Path(args.file), args.bucket, args.key)
    seconds = time.perf_counter() - start
    store.client.delete_object(Bucket=args.bucket, Key=args.key)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib}))


def measure(args, method: str, path: Path, bucket: str, script: str = __file__) -> dict:
    """Run ``script --child`` for a method ``args.repeat`` times: median time, peak RSS."""
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run(
            [
                sys.executable,
                script,
                "--child",
                "--method",
                method,
                "--file",
                str(path),
                "--bucket",
                bucket,
                "--key",
                f"bench/{uuid.uuid4()}",
                "--ini",
                str(args.ini),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in runs)
    size = path.stat().st_size
    return {
        "method": method,
        "size_mib": size // MiB,
        "seconds": seconds,
        "mb_s": size / 1e6 / seconds,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }


def make_file(folder: Path, size: int) -> Path:
    path = folder / f"bench-{size // MiB}MiB.bin"
    with open(path, "wb") as fd:
        for _ in range(size // (16 * MiB)):
            fd.write(os.urandom(16 * MiB))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
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
        small = make_file(Path(folder), args.size_mib * MiB)
        for method in "abc":
            rows.append(measure(args, method, small, bucket))
            print(f"  measured ({method}) {METHODS[method]}", file=sys.stderr)
        small.unlink()
        large = make_file(Path(folder), 2 * args.size_mib * MiB)
        rows.append(measure(args, "c", large, bucket))
    store.client.delete_bucket(Bucket=bucket)

    a, b, c, c2 = rows
    print(
        f"\nVerified upload benchmark ({args.repeat} runs each, median; "
        f"S3: Ceph RGW on loopback, {store.settings.endpoint_url.split(':')[0]}; "
        f"{os.cpu_count()} cores)\n"
    )
    print("| method | file | time (s) | MB/s | vs (a) | vs (b) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| ({row['method']}) {METHODS[row['method']]} | {row['size_mib']} MiB "
            f"| {row['seconds']:.2f} | {row['mb_s']:.0f} | {row['mb_s'] / a['mb_s']:.2f} "
            f"| {row['mb_s'] / b['mb_s']:.2f} | {row['peak_rss_mib']:.0f} |"
        )
    checks = {
        "(c) >= 0.85 x (a)": c["mb_s"] >= 0.85 * a["mb_s"],
        "(c) >= 2 x (b)": c["mb_s"] >= 2 * b["mb_s"],
        "(c) peak RSS < 200 MB": max(c["peak_rss_mib"], c2["peak_rss_mib"]) * MiB < 200e6,
        "(c) RSS does not grow with size (2x file: < +10%)": c2["peak_rss_mib"]
        < 1.1 * c["peak_rss_mib"],
    }
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
