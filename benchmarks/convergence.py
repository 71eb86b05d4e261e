"""Benchmark of the convergence of datasets on the real services.

In one run it measures
  1. the time from the commit of a private switch (``package_patch``
     returned) until an anonymous GET of the dataset's object is refused, over
     ``--switches`` switches of one user, with ``--converge-workers`` workers on
     dcor-converge and dcor-index (2, as the README deploys them) and one on
     dcor-short/dcor-normal that uploads ``--upload-gib``
     GiB files meanwhile (the normal queue is kept busy for the whole
     measurement), while a second user of another circle switches ``--others``
     datasets of ``--files`` files each back and forth; for the slowest switches
     when the circle's turn that converged it was queued, started and ended, and
     which jobs its worker ran before it;
  2. moving a dataset with one ``--move-gib`` GiB file to another circle
     against a plain server-side copy of the same object (one CopyObject),
     alternating, median of ``--rounds``: the move job after the dataset's
     circle changed (copy checked against the record, recorded, tags, old
     copy deleted, the resource's s3_url updated) and
     ``dcor-move-dataset-to-circle`` (the circle change included; also with
     ``--verify-checksum``); and a server-side copy of the bytes part by part
     (UploadPartCopy), for a store whose CopyObject copies data.

Usage: .venv/bin/python benchmarks/convergence.py [--switches 200] [--others 50] [--files 20]
                                   [--upload-gib 2] [--converge-workers 2] [--move-gib 1]
                                   [--only switches|move]
Needs the services (``bash scripts/services.sh``); uses its own database
(dcor_depot_bench), folders and bucket prefix (see lifecycle.py).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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

from lifecycle import CKAN, DB_URL, MiB, ckan_app, clean_database, make_file, write_ini

GiB = 1024 * MiB


def child_switches(args) -> None:
    """The first user switches a public dataset private (and back) ``--switches`` times,
    while big uploads keep dcor-normal busy and a second user of another circle switches
    ``--others`` datasets of ``--files`` files each back and forth (``churn``)."""
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
        url = placement.s3_url(
            store, placement.file_of(store, dataset["id"], resource["id"]).recorded
        )
        # the second user's circle: datasets of many files, switched back and forth
        other_org, first = new_dataset(private=False)
        others = [first] + [
            tk.get_action("package_create")(
                context(), {"name": f"b-{uuid.uuid4().hex}", "owner_org": other_org["id"]}
            )
            for _ in range(args.others - 1)
        ]
        files = []
        for n in range(args.files):
            files.append(small.with_name(f"other-{n}.bin"))
            files[-1].write_bytes(os.urandom(1000))
        for other in others:
            for path in files:
                append_resource(store, path, other["id"], dc_check=False)
        # the uploads that keep the other queue busy: hard links of one big file
        _, busy = new_dataset(private=True)
        for _ in range(args.uploads):
            created = create_resource(busy["id"], small)  # its jobs wait for the workers
            path = placement.ckan_path(created["id"])
            path.unlink()
            os.link(args.file, path)
        model.Session.remove()
        print(json.dumps({"ready": True, "others": [o["id"] for o in others]}), flush=True)
        sys.stdin.readline()  # the orchestrator has started the workers and the churn

        normal = get_queue("dcor-normal")
        verify = store.settings.ssl_verify  # an anonymous user's client trusts the store's CA
        http = requests.Session()

        def status() -> int:
            with http.get(url, stream=True, timeout=30, verify=verify) as answer:
                return answer.status_code

        def wait_for(code: int) -> float:
            start = time.perf_counter()
            while status() != code:
                if time.perf_counter() - start > 120:
                    raise SystemExit(f"the anonymous GET did not become {code} within 120 s")
                time.sleep(0.01)  # polling the store, gently
            return time.perf_counter() - start

        def free_space() -> None:
            """Delete the busy uploads that are done (RGW reclaims them after 30 s)."""
            for row in depot_files.file_records(package_ids=[busy["id"]]):
                if row.bucket and store.object_info(row.bucket, row.key):
                    store.delete_object(row.bucket, row.key)

        def workers_ready() -> None:
            """The converging workers run and have done what the set-up queued: the first
            switch is not timed while they start."""
            from rq import Worker

            converge = get_queue("dcor-converge")
            deadline = time.monotonic() + 120
            while len(Worker.all(queue=converge)) < args.converge_workers or converge.count:
                if time.monotonic() > deadline:
                    raise SystemExit("the converging workers did not start within 120 s")
                time.sleep(0.1)  # polling for the workers to start

        switches, busy_during = [], 0
        workers_ready()
        wait_for(200)
        for _ in range(args.switches):
            committed = time.time()
            tk.get_action("package_patch")(context(), {"id": dataset["id"], "private": True})
            committed = (committed + time.time()) / 2
            latency = wait_for(403)
            busy_during += normal.started_job_registry.count > 0
            switches.append({"latency": latency, **timeline(dataset["id"], committed)})
            tk.get_action("package_patch")(context(), {"id": dataset["id"], "private": False})
            wait_for(200)
            free_space()
    print(json.dumps({"switches": switches, "busy": busy_during}))


def _epoch(moment) -> float:
    import datetime

    if moment.tzinfo is None:  # RQ 1.16 (CKAN 2.11): naive UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def timeline(package_id: str, committed: float) -> dict:
    """When the turn that converged the switch was queued, started and ended (seconds
    after the commit), and the jobs its worker ran between the commit and its start."""
    from ckan.lib.jobs import get_queue
    from ckan.lib.redis import connect_to_redis
    from rq.defaults import DEFAULT_RESULT_TTL
    from rq.job import Job

    redis = connect_to_redis()
    deadline = time.monotonic() + 30
    while True:
        ran = []
        for name in ("dcor-converge", "dcor-index"):
            registry = get_queue(name).finished_job_registry
            ids = redis.zrangebyscore(registry.key, committed + DEFAULT_RESULT_TTL - 60, "+inf")
            ids = [i.decode().split(":")[0] for i in ids]
            ran += [job for job in Job.fetch_many(ids, connection=redis) if job is not None]
        mine = [
            job
            for job in ran
            if job.meta.get("dataset") == package_id and _epoch(job.started_at) >= committed
        ]
        if mine:
            break
        if time.monotonic() > deadline:
            return {"job": None, "queued": None, "started": None, "ended": None, "before": []}
        time.sleep(0.05)  # the turn's end is recorded just after the store answered
    turn = min(mine, key=lambda job: _epoch(job.started_at))
    start = _epoch(turn.started_at)
    before = [
        job.meta.get("title", job.func_name).removeprefix("dcor_depot ")
        for job in ran
        if _epoch(job.ended_at) > committed and _epoch(job.started_at) < start
    ]
    return {
        "job": turn.id,
        "queued": _epoch(turn.enqueued_at) - committed,
        "started": start - committed,
        "ended": _epoch(turn.ended_at) - committed,
        "before": before,
        # a turn the worker's scheduler queued: created long before it entered the queue
        "scheduled": _epoch(turn.enqueued_at) - _epoch(turn.created_at) > 0.5,
    }


def child_churn(args) -> None:
    """The second user: switch each of their datasets private and public, over and over,
    until stdin closes."""
    import threading

    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot.model import ckan_rows

    others = json.loads(sys.stdin.readline())
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    app = ckan_app(args.ini)
    count, private = 0, True
    with app._wsgi_app.test_request_context():
        while not stop.is_set():
            for package_id in others:
                tk.get_action("package_patch")(
                    ckan_rows.job_context(), {"id": package_id, "private": private}
                )
                count += 1
                if stop.is_set():
                    break
            private = not private
    print(json.dumps({"churn": count}), flush=True)


def child_move(args) -> None:
    """Alternate: a plain CopyObject of the object, a data copy (part by part) of it, the move
    job after the dataset's circle changed, and the move command (back and forth)."""
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot import config, placement
    from ckanext.dcor_depot.jobs import converge, move
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
                # as on a site: the convergence the change asks for runs first, and queues
                # the move job (left in its queue here), which is timed alone
                converge.converge_dataset(dataset["id"])
                row[variant] = timed(move.move_objects, store, dataset["id"])
            else:
                rehash = variant.endswith("checksum")
                row[variant] = timed(move_to_circle, store, dataset["id"], target, rehash=rehash)
            assert store.object_info(*source) is None  # the old copy is gone
            rows.append(row)
        store.client.delete_bucket(Bucket=scratch)
        from ckan.lib.jobs import get_queue

        from ckanext.dcor_depot.jobs.queue import QUEUES

        for name in QUEUES:  # the move and convergence jobs nobody runs here
            get_queue(name).empty()
    print(json.dumps(rows))


def run_child(args, mode: str, ini: Path, file: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", mode, "--ini", str(ini), "--file", str(file)]
    for name in ("switches", "uploads", "rounds", "others", "files"):
        command += [f"--{name}", str(getattr(args, name))]
    return subprocess.Popen(command, text=True, env=os.environ, **popen)


def measure_switches(args, folder: Path, ini: Path) -> dict:
    clean_database(ini)
    big = make_file(folder / "big.bin", args.upload_gib * GiB)
    make_file(folder / "small.bin", 3000)
    child = run_child(args, "switches", ini, big, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready = json.loads(child.stdout.readline())
    converging = [["dcor-converge", "dcor-index"]] * args.converge_workers
    workers = [
        subprocess.Popen(
            [CKAN, "-c", str(ini), "dcor-depot-worker", *queues],
            stderr=open(folder / f"worker-{queues[0]}-{n}.log", "w"),  # noqa: SIM115
        )
        for n, queues in enumerate([*converging, ["dcor-short", "dcor-normal"]])
    ]
    churn = run_child(args, "churn", ini, big, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        churn.stdin.write(json.dumps(ready["others"]) + "\n")
        churn.stdin.flush()
        child.stdin.write("go\n")
        child.stdin.flush()
        switches = json.loads(child.stdout.read().strip().splitlines()[-1])
        assert child.wait() == 0
        churn.stdin.close()
        switches.update(json.loads(churn.stdout.read().strip().splitlines()[-1]))
        assert churn.wait() == 0
    finally:
        for process in (*workers, churn):
            process.terminate()
            process.wait()
        big.unlink()
    return switches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=200, help="private switches timed")
    parser.add_argument("--others", type=int, default=50, help="datasets of the second user")
    parser.add_argument("--files", type=int, default=20, help="files in each of them")
    parser.add_argument("--upload-gib", type=int, default=2, help="size of the busy uploads")
    parser.add_argument("--uploads", type=int, default=60, help="busy uploads queued")
    parser.add_argument(
        "--converge-workers",
        type=int,
        default=2,
        help="workers on dcor-converge and dcor-index (the README's deployment: 2)",
    )
    parser.add_argument("--move-gib", type=int, default=1, help="size of the moved file")
    parser.add_argument("--rounds", type=int, default=3, help="moves per variant")
    parser.add_argument("--only", choices=["switches", "move"], help="run one part only")
    parser.add_argument("--child", choices=["switches", "churn", "move"], help=argparse.SUPPRESS)
    parser.add_argument("--ini", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "switches":
        child_switches(args)
        return 0
    if args.child == "churn":
        child_churn(args)
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
        if os.environ.get("DCOR_BENCH_KEEP"):  # the workers' logs, to look into
            print(f"  kept {folder}", file=sys.stderr)
        else:
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
    rows = switches["switches"]
    latencies = sorted(row["latency"] for row in rows)
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(
        f"Private switch -> anonymous GET refused, {len(latencies)} switches of one user; "
        f"{args.converge_workers} worker(s) of their own on dcor-converge and dcor-index; "
        f"{args.upload_gib} GiB uploads on "
        f"dcor-normal during {switches['busy']} of them; meanwhile a second user of another "
        f"circle switched {args.others} datasets of {args.files} files each back and forth "
        f"({switches['churn']} switches)\n"
    )
    print("| p50 (s) | p95 (s) | max (s) |")
    print("|---|---|---|")
    print(f"| {p50:.2f} | {p95:.2f} | {latencies[-1]:.2f} |")
    print(
        "\nThe slowest switches: when the turn that converged it was queued, started and "
        "ended (s after the commit), and the jobs its worker ran before it\n"
    )
    print("| refused after (s) | queued | started | ended | jobs before it | turn |")
    print("|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: -r["latency"])[:5]:
        times = [row[k] for k in ("queued", "started", "ended")]
        shown = " | ".join("-" if t is None else f"{t:.2f}" for t in times)
        kinds = collections.Counter(row["before"])
        before = ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "none"
        scheduled = "scheduled" if row.get("scheduled") else "queued"
        print(f"| {row['latency']:.2f} | {shown} | {before} | {scheduled} |")
    return {
        "p95 of a private switch under 1 s under load": p95 < 1.0,
        "every private switch refused within 5 s under load": latencies[-1] < 5.0,
        "the uploads ran during the switches": switches["busy"] >= len(latencies) // 2,
        "the second user switched all along": switches["churn"] >= len(latencies),
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
        "a move (job) costs at most 1.15x a plain server-side copy": median("job") / plain <= 1.15
    }


if __name__ == "__main__":
    sys.exit(main())
