"""Benchmark of ``import-figshare`` for one large file, against the local figshare-protocol server.

In one run, each step in its own CKAN process (the server runs in that
process too, sending the file with ``sendfile``), alternating, ``--rounds``
times (medians are reported):
  (a) the plain download of the file (requests, written to the tmp folder);
  (b) the verified upload of the same file (``ObjectStore.upload_verified``);
  (c) the import of a dataset with that one file (``ArticleImport.run``, as
      the command does it: metadata, download with MD5 check, streaming
      verified upload, resource, activation).
Target: (c) costs no more than (a) + (b). figshare's rule of one API request
per second makes (c) wait about 1 s between its two API requests; the table
shows (c) with and without that wait.

Usage: .venv/bin/python benchmarks/figshare.py [--size-mib 500] [--rounds 3]
Needs the services (``bash scripts/services.sh``); uses the benchmarks' own
database (dcor_depot_bench), folders and bucket prefix (see lifecycle.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifecycle import DB_URL, REPO, MiB, ckan_app, clean_database, make_file, write_ini

#: The local figshare-protocol server of the tests.
SERVER = REPO / "tests" / "figshare_server.py"
STEPS = ("download", "upload", "import")


def child(args) -> None:
    import requests

    from ckanext.dcor_depot import config, placement
    from ckanext.dcor_depot.operations.figshare_import import ArticleImport, ensure_organization
    from ckanext.dcor_depot.storage.figshare_api import FigshareClient

    spec = importlib.util.spec_from_file_location("figshare_server", SERVER)
    server_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server_module)

    app = ckan_app(args.ini)
    source = Path(args.file)
    server = server_module.FigshareServer().start()
    paced = [0.0]
    with app._wsgi_app.test_request_context():
        store = config.object_store()
        entry = server.file_entry(source)
        doi = server.add_article(9000 + args.round, 1, [entry])
        start, cpu = time.perf_counter(), time.process_time()
        if args.child == "download":
            target = config.tmp_dir() / "bench-download.bin"
            target.parent.mkdir(parents=True, exist_ok=True)
            with requests.get(entry["download_url"], stream=True, timeout=60) as answer:
                answer.raise_for_status()
                with open(target, "wb") as fd:
                    for chunk in answer.iter_content(MiB):
                        fd.write(chunk)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            assert target.stat().st_size == source.stat().st_size
            target.unlink()
        elif args.child == "upload":
            bucket = store.circle_bucket("benchmark")
            key = f"upload/{args.round}"
            store.upload_verified(source, bucket, key)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            store.delete_object(bucket, key)
        else:
            organization = ensure_organization()
            start, cpu = time.perf_counter(), time.process_time()

            def sleep(seconds: float) -> None:
                paced[0] += seconds
                time.sleep(seconds)

            client = FigshareClient(server.api_url, sleep=sleep)
            report = ArticleImport(client, store, organization, lambda text: None).run(doi)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            assert report.outcome == "imported" and report.bytes == source.stat().st_size
            for resource_id in _resource_ids(report.name):
                store.delete_object(
                    *placement.object_location(store, organization["id"], resource_id)
                )
    server.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "paced": paced[0], "rss_mib": rss}))


def _resource_ids(package_name: str) -> list[str]:
    import ckan.plugins.toolkit as tk

    from ckanext.dcor_depot.model import ckan_rows

    package = tk.get_action("package_show")(ckan_rows.job_context(), {"id": package_name})
    return [r["id"] for r in package["resources"]]


def ceph_cpu_seconds() -> float:
    """CPU time used so far by the Ceph daemons (RGW and OSD) of the test services."""
    ticks = 0
    for pid in subprocess.run(
        ["pgrep", "-f", "radosgw|ceph-osd"], capture_output=True, text=True
    ).stdout.split():
        with open(f"/proc/{pid}/stat") as fd:
            fields = fd.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_child(step: str, ini: Path, file: Path, round_: int) -> dict:
    ceph = ceph_cpu_seconds()
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, "--ini", str(ini), "--file", str(file)]
        + ["--round", str(round_)],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if out.returncode != 0:
        sys.exit(f"step {step} failed:\n{out.stderr[-3000:]}")
    # the child's start-up and file listing leave Ceph idle: its CPU is the step's
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "ceph": ceph_cpu_seconds() - ceph}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=500, help="size of the file")
    parser.add_argument("--rounds", type=int, default=3, help="processes per step")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--ini", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    os.environ["CKAN_SQLALCHEMY_URL"] = DB_URL
    folder = Path(tempfile.mkdtemp(prefix="dcor-depot-bench-"))
    try:
        ini = write_ini(folder, "dcor_depot")
        clean_database(ini)
        source = make_file(folder / "figshare-file.bin", args.size_mib * MiB)
        results = {step: [] for step in STEPS}
        for round_ in range(args.rounds):
            for step in STEPS:
                os.sync()  # each step starts without the previous one's writes pending
                results[step].append(run_child(step, ini, source, round_))
            print(f"  round {round_ + 1} of {args.rounds} done", file=sys.stderr)
        return report(args, results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(args, results: dict) -> int:
    def median(step: str, field: str = "seconds") -> float:
        return statistics.median(r[field] for r in results[step])

    size_mb = args.size_mib * MiB / 1e6
    download, upload, imported = median("download"), median("upload"), median("import")
    unpaced = statistics.median(r["seconds"] - r["paced"] for r in results["import"])
    baseline = download + upload
    rows = [
        ("(a) plain download", "download", download),
        ("(b) verified upload", "upload", upload),
        ("(a) + (b)", None, baseline),
        ("(c) import, whole", "import", imported),
        ("(c) import without the 1 request/s API wait", None, unpaced),
    ]
    print(
        f"\nimport-figshare, one {args.size_mib} MiB file, median of {args.rounds} rounds "
        f"(each step in its own process; CPU: seconds used by the step's process and by "
        f"Ceph's RGW and OSD, on {os.cpu_count()} cores)\n"
    )
    print("| step | wall s | MB/s | vs (a) + (b) | CPU s: process + Ceph | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, step, seconds in rows:
        cpu = f"{median(step, 'cpu'):.2f} + {median(step, 'ceph'):.2f}" if step else ""
        rss = f"{median(step, 'rss_mib'):.0f}" if step else ""
        print(
            f"| {name} | {seconds:.2f} | {size_mb / seconds:.0f} | "
            f"{seconds / baseline:.2f} | {cpu} | {rss} |"
        )
    whole = "PASS" if imported <= baseline else "FAIL"
    without = "PASS" if unpaced <= baseline else "FAIL"
    print(
        f"\nTarget (c) <= (a) + (b): whole import {whole} ({imported / baseline:.2f}); "
        f"without the API wait {without} ({unpaced / baseline:.2f})"
    )
    return 0 if without == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
