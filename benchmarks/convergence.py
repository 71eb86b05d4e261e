"""Benchmark of the convergence of datasets on the real services.

In one run it measures
  1. the time from the commit of a private switch (``package_patch``
     returned) until an anonymous GET of the dataset's object is refused, over
     ``--switches`` switches, with one worker on dcor-converge and one on
     dcor-short/dcor-normal that uploads ``--upload-gib`` GiB files meanwhile
     (the normal queue is kept busy for the whole measurement);
  2. moving a dataset with one ``--move-gib`` GiB file to another circle
     against a plain server-side copy of the same object (one CopyObject),
     alternating, median of ``--rounds``: the move job after the dataset's
     circle changed (copy checked against the record, recorded, tags, old
     copy deleted, the resource's s3_url updated) and
     ``dcor-move-dataset-to-circle`` (the circle change included; also with
     ``--verify-checksum``); and a server-side copy of the bytes part by part
     (UploadPartCopy), for a store whose CopyObject copies data.

Usage: .venv/bin/python benchmarks/convergence.py [--switches 50] [--upload-gib 2] [--move-gib 1]
                                                  [--only switches|move]
Needs the services (``bash scripts/services.sh``); uses its own database
(dcor_depot_bench), folders and bucket prefix (see lifecycle.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifecycle import CKAN, DB_URL, MiB, ckan_app, clean_database, make_file, write_ini

GiB = 1024 * MiB


def child_switches(args) -> None:
    """Switch a public dataset private (and back) while big uploads keep dcor-normal busy."""
    import ckan.model as model
    import ckan.plugins.toolkit as tk
    import requests
    from ckan.lib.jobs import get_queue

    from ckanext.dcor_depot import config, placement
    from ckanext.dcor_depot.model import ckan_rows, depot_files
    from ckanext.dcor_depot.operations.append import append_resource

    app = ckan_app(args.ini)
    with app._wsgi_app.test_request_context():
        from lifecycle import create_resource, new_dataset

        store = config.object_store()
        context = ckan_rows.job_context
        _, dataset = new_dataset(private=False)
        small = Path(args.file).with_name("small.bin")
        resource = append_resource(store, small, dataset["id"], dc_check=False).resource
        url = store.object_url(*placement.file_of(store, dataset["id"], resource["id"]).recorded)
        # the uploads that keep the other queue busy: hard links of one big file
        _, busy = new_dataset(private=True)
        for _ in range(args.uploads):
            created = create_resource(busy["id"], small)  # its jobs wait for the workers
            path = placement.ckan_path(created["id"])
            path.unlink()
            os.link(args.file, path)
        model.Session.remove()
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the orchestrator has started the workers

        normal = get_queue("dcor-normal")

        def status() -> int:
            verify = store.settings.ssl_verify  # an anonymous user's client trusts the store's CA
            with requests.get(url, stream=True, timeout=30, verify=verify) as answer:
                return answer.status_code

        def wait_for(code: int) -> float:
            start = time.perf_counter()
            while status() != code:
                if time.perf_counter() - start > 120:
                    raise SystemExit(f"the anonymous GET did not become {code} within 120 s")
            return time.perf_counter() - start

        def free_space() -> None:
            """Delete the busy uploads that are done (RGW reclaims them after 30 s)."""
            for row in depot_files.file_records(package_ids=[busy["id"]]):
                if row.bucket and store.object_info(row.bucket, row.key):
                    store.delete_object(row.bucket, row.key)

        latencies, busy_during = [], 0
        wait_for(200)
        for _ in range(args.switches):
            tk.get_action("package_patch")(context(), {"id": dataset["id"], "private": True})
            latencies.append(wait_for(403))
            busy_during += normal.started_job_registry.count > 0
            tk.get_action("package_patch")(context(), {"id": dataset["id"], "private": False})
            wait_for(200)
            free_space()
    print(json.dumps({"latencies": latencies, "busy": busy_during}))


def child_move(args) -> None:
    """Alternate: a plain CopyObject of the object, a data copy (part by part) of it, the move
    job after the dataset's circle changed, and the move command (back and forth)."""
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot import config, placement
    from ckanext.dcor_depot.jobs import move
    from ckanext.dcor_depot.model import ckan_rows
    from ckanext.dcor_depot.operations.append import append_resource
    from ckanext.dcor_depot.operations.circle_move import move_to_circle
    from ckanext.dcor_depot.storage.s3 import ObjectStore

    app = ckan_app(args.ini)
    rows = []
    with app._wsgi_app.test_request_context():
        from lifecycle import new_dataset

        store = config.object_store()
        # the same store, copying every object part by part (a copy of its bytes)
        by_parts = ObjectStore(dataclasses.replace(store.settings, copy_object_max=0))
        org_a, dataset = new_dataset(private=False)
        org_b = tk.get_action("organization_create")(
            ckan_rows.job_context(), {"name": f"{org_a['name']}-b"}
        )
        circles = [org_b, org_a]
        resource = append_resource(store, Path(args.file), dataset["id"], dc_check=False).resource
        scratch = store.circle_bucket(f"{org_a['id'][:8]}-copy")
        for bucket in (scratch, *(store.circle_bucket(c["id"]) for c in circles)):
            store.ensure_bucket(bucket)  # created beforehand for every variant

        def timed(fn, *args, **kwargs) -> float:
            start = time.perf_counter()
            fn(*args, **kwargs)
            return time.perf_counter() - start

        for turn in range(args.rounds * 3):
            placed = placement.file_of(store, dataset["id"], resource["id"])
            source = placed.recorded
            copy_source = {"Bucket": source.bucket, "Key": source.key}
            row = {
                "plain": timed(
                    store.client.copy_object, Bucket=scratch, Key=source.key, CopySource=copy_source
                )
            }
            store.delete_object(scratch, source.key)
            recorded = (placed.sha256, placed.size, placed.etag)
            row["data copy"] = timed(
                by_parts.copy_verified, source.bucket, source.key, scratch, *recorded
            )
            store.delete_object(scratch, source.key)
            target = circles[turn % 2]["id"]
            variant = ("job", "command", "command --verify-checksum")[turn // args.rounds]
            if variant == "job":
                tk.get_action("package_patch")(
                    ckan_rows.job_context(), {"id": dataset["id"], "owner_org": target}
                )
                row[variant] = timed(move.move_objects, store, dataset["id"])
            else:
                rehash = variant.endswith("checksum")
                row[variant] = timed(move_to_circle, store, dataset["id"], target, rehash=rehash)
            assert store.object_info(*source) is None  # the old copy is gone
            rows.append(row)
        store.client.delete_bucket(Bucket=scratch)
    print(json.dumps(rows))


def run_child(args, mode: str, ini: Path, file: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", mode, "--ini", str(ini), "--file", str(file)]
    for name in ("switches", "uploads", "rounds"):
        command += [f"--{name}", str(getattr(args, name))]
    return subprocess.Popen(command, text=True, env=os.environ, **popen)


def measure_switches(args, folder: Path, ini: Path) -> dict:
    clean_database(ini)
    big = make_file(folder / "big.bin", args.upload_gib * GiB)
    make_file(folder / "small.bin", 3000)
    child = run_child(args, "switches", ini, big, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert json.loads(child.stdout.readline())["ready"]
    workers = [
        subprocess.Popen(
            [CKAN, "-c", str(ini), "dcor-depot-worker", *queues], stderr=subprocess.DEVNULL
        )
        for queues in (["dcor-converge"], ["dcor-short", "dcor-normal"])
    ]
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        switches = json.loads(child.stdout.read().strip().splitlines()[-1])
        assert child.wait() == 0
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait()
        big.unlink()
    return switches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=50, help="private switches timed")
    parser.add_argument("--upload-gib", type=int, default=2, help="size of the busy uploads")
    parser.add_argument("--uploads", type=int, default=12, help="busy uploads queued")
    parser.add_argument("--move-gib", type=int, default=1, help="size of the moved file")
    parser.add_argument("--rounds", type=int, default=3, help="moves per variant")
    parser.add_argument("--only", choices=["switches", "move"], help="run one part only")
    parser.add_argument("--child", choices=["switches", "move"], help=argparse.SUPPRESS)
    parser.add_argument("--ini", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "switches":
        child_switches(args)
        return 0
    if args.child == "move":
        child_move(args)
        return 0

    os.environ["CKAN_SQLALCHEMY_URL"] = DB_URL
    folder = Path(tempfile.mkdtemp(prefix="dcor-depot-bench-"))
    switches = moves = None
    try:
        ini = write_ini(folder, "dcor_depot")
        if args.only != "move":
            switches = measure_switches(args, folder, ini)
            print("  measured the private switches", file=sys.stderr)
        if args.only != "switches":
            clean_database(ini)
            moved_file = make_file(folder / "moved.bin", args.move_gib * GiB)
            child = run_child(args, "move", ini, moved_file, stdout=subprocess.PIPE)
            moves = json.loads(child.communicate()[0].strip().splitlines()[-1])
            assert child.returncode == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(args, switches, moves)


def report(args, switches: dict | None, moves: list[dict] | None) -> int:
    print(f"\nConvergence benchmark ({os.cpu_count()} cores; Ceph RGW)\n")
    checks: dict[str, bool] = {}
    if switches is not None:
        checks.update(report_switches(args, switches))
    if moves is not None:
        checks.update(report_moves(args, moves))
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


def report_switches(args, switches: dict) -> dict[str, bool]:
    latencies = sorted(switches["latencies"])
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(
        f"Private switch -> anonymous GET refused, {len(latencies)} switches; a worker of its own "
        f"on dcor-converge; {args.upload_gib} GiB uploads on dcor-normal during "
        f"{switches['busy']} of them\n"
    )
    print("| p50 (s) | p95 (s) | max (s) |")
    print("|---|---|---|")
    print(f"| {p50:.2f} | {p95:.2f} | {latencies[-1]:.2f} |")
    return {
        "p95 of a private switch under 2 s while uploads run": p95 < 2.0,
        "the uploads ran during the switches": switches["busy"] >= len(latencies) // 2,
    }


def report_moves(args, moves: list[dict]) -> dict[str, bool]:
    def median(name: str) -> float:
        return statistics.median(r[name] for r in moves if name in r)

    plain = median("plain")
    print(
        f"\nMoving a dataset with one {args.move_gib} GiB file to another circle "
        f"(median of {args.rounds}; the copies alternate with the moves)\n"
    )
    print("| variant | s | vs plain copy |")
    print("|---|---|---|")
    labels = {
        "plain": "plain server-side copy (one CopyObject; shallow on RGW)",
        "data copy": "server-side copy of the bytes (UploadPartCopy, part by part)",
        "job": "move job, after the dataset's circle changed",
        "command": "dcor-move-dataset-to-circle (circle change included)",
        "command --verify-checksum": "dcor-move-dataset-to-circle --verify-checksum",
    }
    for name, label in labels.items():
        print(f"| {label} | {median(name):.2f} | {median(name) / plain:.2f} |")
    return {
        "a move (job) costs at most 1.2x a plain server-side copy": median("job") / plain <= 1.2
    }


if __name__ == "__main__":
    sys.exit(main())
