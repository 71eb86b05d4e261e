"""Benchmark of ``ckan dcor-migrate-resources-to-object-store`` on the real services.

In one run, with ``--resources`` small files on block storage (``--per-dataset``
resources in each public dataset of one circle, ``--size-kib`` each), it times
the real command, each in its own process:
  1. the start-up baseline: the same command while no resource exists;
  2. the migration with ``--jobs 1`` (the baseline of the ratios);
  3. the same command again, a no-op: every resource records its object
     (target: under 5 ms per resource, i.e. no per-resource queries);
  4. after a reset (new datasets, files and bucket), the migration with ``--jobs 4``.
Per resource: (wall time - start-up) / resources. Each run's exit code and
summary line are checked.

Usage: .venv/bin/python benchmarks/migrate.py [--resources 2000] [--per-dataset 20] [--size-kib 16]
Needs the services (``bash scripts/services.sh``); uses its own database
(dcor_depot_bench), site id, storage folders and bucket prefix, like lifecycle.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lifecycle import CKAN, DB_URL, ckan_app, clean_database, site_user, write_ini

COMMAND = "dcor-migrate-resources-to-object-store"
#: The no-op run may take this long per resource (the issue's target).
NOOP_TARGET_MS = 5.0
#: Runs of the start-up baseline and of the no-op (their median is reported).
REPEATS = 3


# --- child processes: a loaded CKAN ------------------------------------------------------


def child_populate(args) -> None:
    """One circle, public datasets with uploaded resources inline, a file at each CKAN path.

    package_create queues no jobs (no after_resource_create), so the files stay
    on block storage only, as before a migration.
    """
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot import placement

    app = ckan_app(args.ini)
    size = args.size_kib * 1024
    created = 0
    with app._wsgi_app.test_request_context():
        context = {"ignore_auth": True, "user": site_user()}
        org = tk.get_action("organization_create")(
            context.copy(), {"name": f"b-{uuid.uuid4().hex}"}
        )
        while created < args.resources:
            count = min(args.per_dataset, args.resources - created)
            names = [f"f{created + i:05d}.bin" for i in range(count)]
            dataset = tk.get_action("package_create")(
                context.copy(),
                {
                    "name": f"b-{uuid.uuid4().hex}",
                    "owner_org": org["id"],
                    "private": False,
                    "resources": [
                        {"name": name, "url": name, "url_type": "upload", "size": size}
                        for name in names
                    ],
                },
            )
            for resource in dataset["resources"]:
                path = placement.ckan_path(resource["id"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(size))
            created += count
    print(json.dumps(created))


def child_remove_buckets(args) -> None:
    """Remove the benchmark's circle buckets (prefix bench-circle-) with their objects."""
    from ckanext.dcor_depot import config
    from ckanext.dcor_depot.storage.s3 import circle_bucket_prefix

    app = ckan_app(args.ini)
    removed = 0
    with app._wsgi_app.test_request_context():
        store = config.object_store()
        client = store.client
        for bucket in store.list_buckets(circle_bucket_prefix(store.settings.bucket_name_template)):
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            keys = [{"Key": obj.key} for obj in store.iter_objects(bucket)]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 at the most
                client.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
                )
            client.delete_bucket(Bucket=bucket)
            removed += 1
    print(json.dumps(removed))


CHILDREN = {"populate": child_populate, "remove-buckets": child_remove_buckets}


# --- the orchestrating process -------------------------------------------------------------


def run_child(mode: str, ini: Path):
    """Run a child mode of this script (with this run's options); its last line is JSON."""
    command = [sys.executable, __file__, *sys.argv[1:], "--child", mode, "--ini", str(ini)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def reset(folder: Path, ini: Path, bare_ini: Path) -> None:
    """An empty database and search index, no files, no buckets of the benchmark."""
    clean_database(bare_ini, ["search-index", "clear"])
    shutil.rmtree(folder / "storage", ignore_errors=True)
    run_child("remove-buckets", ini)


def timed_migration(ini: Path, jobs: int, expect: str) -> float:
    """Wall time of the command in its own process; exits when it fails or says otherwise."""
    start = time.perf_counter()
    proc = subprocess.run(
        [CKAN, "-c", str(ini), COMMAND, "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0 or expect not in proc.stdout:
        raise SystemExit(
            f"`ckan {COMMAND} --jobs {jobs}` exited {proc.returncode}; expected {expect!r} in:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=2000, help="resources to migrate")
    parser.add_argument("--per-dataset", type=int, default=20, help="resources per dataset")
    parser.add_argument("--size-kib", type=int, default=16, help="size of each file")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--ini", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](args)
        return 0

    n = args.resources
    migrated = f"{n} resources: {n} objects uploaded, 0 uploaded again after a failed check"
    noop = f"{n} resources: 0 objects uploaded, 0 uploaded again after a failed check, {n} already"
    os.environ["CKAN_SQLALCHEMY_URL"] = DB_URL
    folder = Path(tempfile.mkdtemp(prefix="dcor-depot-bench-"))
    walls: dict[str, float] = {}
    try:
        ini = write_ini(folder, "dcor_depot")
        bare_ini = write_ini(folder, "")
        reset(folder, ini, bare_ini)
        walls["startup"] = statistics.median(
            timed_migration(ini, 1, "0 resources: 0 objects uploaded") for _ in range(REPEATS)
        )
        print(f"  start-up: {walls['startup']:.2f} s", file=sys.stderr)

        start = time.perf_counter()
        run_child("populate", ini)
        print(f"  created {n} resources in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        walls["jobs1"] = timed_migration(ini, 1, migrated)
        print(f"  --jobs 1: {walls['jobs1']:.2f} s", file=sys.stderr)
        walls["noop"] = statistics.median(timed_migration(ini, 1, noop) for _ in range(REPEATS))
        print(f"  no-op: {walls['noop']:.2f} s", file=sys.stderr)

        reset(folder, ini, bare_ini)
        run_child("populate", ini)
        walls["jobs4"] = timed_migration(ini, 4, migrated)
        print(f"  --jobs 4: {walls['jobs4']:.2f} s", file=sys.stderr)
        reset(folder, ini, bare_ini)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(args, walls)


def report(args, walls: dict[str, float]) -> int:
    n = args.resources
    startup = walls["startup"]

    def per_resource(wall: float) -> float:
        return (wall - startup) / n * 1000

    print(
        f"\nMigration benchmark: `ckan {COMMAND}`, {n} resources of {args.size_kib} KiB "
        f"({args.per_dataset} per public dataset, one circle); {os.cpu_count()} cores; Ceph RGW\n"
    )
    print("| run | resources | wall s | ms/resource | vs --jobs 1 |")
    print("|---|---|---|---|---|")
    print(f"| start-up baseline (no resources; median of {REPEATS}) | 0 | {startup:.2f} | | |")
    rows = (
        ("--jobs 1", walls["jobs1"]),
        ("--jobs 4", walls["jobs4"]),
        (f"no-op (second run; median of {REPEATS})", walls["noop"]),
    )
    for name, wall in rows:
        print(
            f"| {name} | {n} | {wall:.2f} | {per_resource(wall):.2f} "
            f"| {wall / walls['jobs1']:.2f} |"
        )
    print("\nms/resource = (wall - start-up baseline) / resources; wall includes the start-up.")
    noop_ms = per_resource(walls["noop"])
    ok = noop_ms < NOOP_TARGET_MS
    print(
        f"\n{'PASS' if ok else 'FAIL'}  no-op run under {NOOP_TARGET_MS:g} ms per resource "
        f"({noop_ms:.2f} ms)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
