"""Benchmark of the registration of a file uploaded straight to S3 (the least-privilege route).

In each round a file of ``--size-gib`` GiB is granted (``dcor_depot_upload_urls``),
sent to the staging bucket with the README's client (``send_to_s3``, the presigned URLs
of the grant; the extension's own identity may not write there), then registered with
``resource_create`` as the README's client does, timed: one HEAD of the staged object,
its server-side copy into the circle bucket checked by the ETag the copy answers, and
the resource's rows. Against it, a plain server-side copy of the same staged object
(one CopyObject) into another bucket, timed after the registration. A round's objects
are deleted before the next one (the store holds one round's bytes, and those of the
round before until RGW reclaims them). Nothing runs the registration's jobs (no worker).

Everything the benchmark put on the store is deleted at its end, also when it failed
(a full OSD has hung a run before): the staged objects, the copies and their buckets.

Usage: .venv/bin/python benchmarks/registration.py [--size-gib 10] [--rounds 2]
Needs the services (``bash scripts/services.sh``); uses the lifecycle benchmark's
database, site id and bucket prefix; needs the file's size free on the local disk and
twice that on the store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).parent))
from cleanup import empty  # noqa: E402
from client import readme_client  # noqa: E402
from lifecycle import (  # noqa: E402
    DB_URL,
    ckan_app,
    clean_database,
    make_file,
    new_dataset,
    site_user,
    write_ini,
)

GiB = 1024**3
#: Registering a staged file reads none of its bytes: it costs at most this much more
#: than a plain server-side copy of it, whatever its size (seconds).
TARGET_EXTRA = 0.1


def measure(args, ini: Path, path: Path) -> list[dict]:
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot import config
    from ckanext.dcor_depot.model import grants

    app = ckan_app(ini)
    rows = []
    with app._wsgi_app.test_request_context():
        store = config.object_store()
        if isinstance(store.settings.ssl_verify, str):  # the README client trusts the CA
            os.environ["REQUESTS_CA_BUNDLE"] = store.settings.ssl_verify
        send_to_s3 = readme_client()["send_to_s3"]
        org, dataset = new_dataset()
        circle = store.circle_bucket(org["id"])
        scratch = store.circle_bucket(f"{org['id'][:8]}-copy")
        staging = store.settings.staging_bucket
        staged_keys: list[str] = []
        try:
            for bucket in (scratch, circle):
                store.ensure_bucket(bucket)
            for turn in range(args.rounds):
                context = {"ignore_auth": True, "user": site_user()}
                request = {
                    "package_id": dataset["id"],
                    "name": path.name,
                    "size": path.stat().st_size,
                }
                grant = tk.get_action("dcor_depot_upload_urls")(context.copy(), request)
                key = grants.get(grant["resource_id"]).key
                staged_keys.append(key)
                start = time.perf_counter()
                send_to_s3(grant["upload"], str(path))
                sent = time.perf_counter() - start
                start = time.perf_counter()
                tk.get_action("resource_create")(context.copy(), grant["register"]["data"])
                registered = time.perf_counter() - start
                start = time.perf_counter()
                store.client.copy_object(
                    Bucket=scratch, Key=key, CopySource={"Bucket": staging, "Key": key}
                )
                plain = time.perf_counter() - start
                rows.append({"sent": sent, "registered": registered, "plain": plain})
                print(f"  round {turn + 1}: {rows[-1]}", file=sys.stderr, flush=True)
                # one round's bytes on the store at a time (RGW reclaims them within a minute)
                for bucket, prefix in ((staging, key), (scratch, ""), (circle, "")):
                    empty(store.client, bucket, prefix)
        finally:
            for key in staged_keys:
                empty(store.client, staging, key)
            for bucket in (scratch, circle):
                try:
                    empty(store.client, bucket)
                    store.client.delete_bucket(Bucket=bucket)
                except ClientError as exc:  # never made (a failure before): nothing to remove
                    if exc.response["Error"]["Code"] != "NoSuchBucket":
                        raise
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    size = args.size_gib * GiB
    free = shutil.disk_usage(args.tmp).free
    if free < size + GiB:
        print(
            f"{args.tmp} has {free / GiB:.1f} GiB free, the file needs {args.size_gib} GiB "
            "and 1 GiB to spare: free space or give --tmp on another disk",
            file=sys.stderr,
        )
        return 1
    os.environ["CKAN_SQLALCHEMY_URL"] = DB_URL
    folder = Path(tempfile.mkdtemp(prefix="dcor-depot-bench-", dir=args.tmp))
    try:
        ini = write_ini(folder, "dcor_depot")
        clean_database(write_ini(folder, ""))
        path = make_file(folder / f"staged-{args.size_gib}GiB.bin", size)
        rows = measure(args, ini, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def median(name: str) -> float:
        return statistics.median(r[name] for r in rows)

    plain, registered = median("plain"), median("registered")
    print(
        f"\nRegistration of a staged {args.size_gib} GiB file (median of {args.rounds}; "
        f"{os.cpu_count()} cores; Ceph RGW)\n"
    )
    print("| step | s | vs plain copy |")
    print("|---|---|---|")
    print(f"| the README client sends the file to the staging bucket | {median('sent'):.2f} | |")
    print(f"| plain server-side copy of the staged object (one CopyObject) | {plain:.2f} | 1.00 |")
    print(
        f"| registration (`resource_create`: HEAD, copy into the circle bucket, rows) "
        f"| {registered:.2f} | {registered / plain:.2f} |"
    )
    ok = registered - plain <= TARGET_EXTRA
    print(
        f"\n{'PASS' if ok else 'FAIL'}  registration at most {TARGET_EXTRA} s more than a plain "
        f"copy of the staged file ({registered - plain:.3f} s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
