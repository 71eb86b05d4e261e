"""Benchmark of the jobs' throughput with 1, 2 and 4 workers (issue #18).

For each worker count, in one run: that many ``ckan dcor-depot-worker``
processes (the README's worker, on all of the depot's queues) are started and
paused (SIGSTOP); ``--uploads`` files of 1 MiB are uploaded to a new dataset
through ``resource_create`` (each queues its file job); then the workers are
resumed and the time until every resource records its verified S3 object is
measured. Resources per minute, and the ratio against one worker.

Usage: .venv/bin/python benchmarks/workers.py [--uploads 200] [--workers 1,2,4]
Needs the services (``bash scripts/services.sh``); uses the benchmarks' own
database, folders and bucket prefix (``lifecycle.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifecycle import (
    CKAN,
    DB_URL,
    MiB,
    ckan_app,
    clean_database,
    create_resource,
    make_file,
    new_dataset,
    write_ini,
)


def child(ini: Path, file: Path, uploads: int, pids: list[int]) -> float:
    """Upload while the workers are paused, resume them; seconds until all is recorded."""
    import ckan.model as model
    import sqlalchemy as sa

    from ckanext.dcor_depot import config

    app = ckan_app(ini)
    with app._wsgi_app.test_request_context():
        store = config.object_store()
        org, dataset = new_dataset()
        ids = [create_resource(dataset["id"], file)["id"] for _ in range(uploads)]
        start = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        query = sa.text(
            "SELECT count(*) FROM resource WHERE package_id = :id AND state = 'active' "
            "AND extras::jsonb ->> 's3_available' = 'true'"
        )
        while True:
            done = model.Session.execute(query, {"id": dataset["id"]}).scalar()
            model.Session.rollback()
            if done == len(ids):
                seconds = time.perf_counter() - start
                break
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"only {done} of {len(ids)} recorded after 30 minutes")
            time.sleep(0.05)  # polling the database for the recorded resources
        bucket = store.circle_bucket(org["id"])
        for obj in list(store.iter_objects(bucket)):
            store.delete_object(bucket, obj.key)
        store.client.delete_bucket(Bucket=bucket)
    return seconds


def run(ini: Path, file: Path, uploads: int, count: int) -> float:
    workers = [
        subprocess.Popen(
            [CKAN, "-c", str(ini), "dcor-depot-worker"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        _wait_registered(ini, {w.pid for w in workers})
        for worker in workers:
            os.kill(worker.pid, signal.SIGSTOP)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(ini),
                str(file),
                str(uploads),
                ",".join(str(w.pid) for w in workers),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        for worker in workers:
            os.kill(worker.pid, signal.SIGCONT)
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=120)


def _wait_registered(ini: Path, pids: set[int]) -> None:
    """Until RQ lists every worker (they have loaded CKAN and wait for jobs)."""
    script = (
        "import sys, redis, rq; from ckan.cli import load_config; "
        "c = load_config(sys.argv[1]); r = redis.Redis.from_url(c['ckan.redis.url']); "
        "print(' '.join(str(w.pid) for w in rq.Worker.all(connection=r)))"
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", script, str(ini)], capture_output=True, text=True, check=True
        ).stdout.split()
        if pids <= {int(pid) for pid in out}:
            return
        time.sleep(0.5)  # polling for the workers to register
    raise SystemExit("the workers did not start within 3 minutes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4", help="worker counts (comma-separated)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ini, file, uploads, pids = args.child
        seconds = child(Path(ini), Path(file), int(uploads), [int(p) for p in pids.split(",")])
        print(json.dumps(seconds))
        return 0

    os.environ["CKAN_SQLALCHEMY_URL"] = DB_URL
    folder = Path(tempfile.mkdtemp(prefix="dcor-depot-bench-"))
    counts = [int(n) for n in args.workers.split(",")]
    try:
        ini = write_ini(folder, "dcor_depot")
        clean_database(ini)
        file = make_file(folder / "1MiB.bin", MiB)
        seconds = {}
        for count in counts:
            seconds[count] = run(ini, file, args.uploads, count)
            print(f"  {count} workers: {seconds[count]:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = args.uploads / seconds[counts[0]] * 60
    print(
        f"\nWorkers benchmark: {args.uploads} uploads of 1 MiB, queued while the workers were "
        f"paused, until every resource records its verified S3 object ({os.cpu_count()} cores)\n"
    )
    print(f"| workers | s | resources per minute | vs {counts[0]} worker |")
    print("|---|---|---|---|")
    for count in counts:
        rate = args.uploads / seconds[count] * 60
        print(f"| {count} | {seconds[count]:.1f} | {rate:.0f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
