"""Benchmark of recording a job's result on a resource, at the 1st and the 300th resource.

In one run, one dataset gets ``--resources`` link resources (one package_create),
then the fields a job records (SHA-256, size, ETag, S3 URL) are written
  (a) on the 1st resource with ``index.patch_resource`` (the baseline),
  (b) on the last resource the same way,
  (c) on the last resource through ``package_update`` of the whole dataset (how the
      jobs recorded before: read, validate and index the whole dataset),
each ``--repeat`` times with new values (median). Target: (b) at most 1.5 x (a).

Usage: .venv/bin/python benchmarks/recording.py [--resources 300] [--repeat 20]
Needs the services (``bash scripts/services.sh``); uses its own database like lifecycle.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lifecycle import ckan_app, clean_database, site_user, write_ini


def fields(n: int) -> dict:
    return {"sha256": f"{n:064x}", "size": n, "etag": f"{n:032x}", "s3_url": f"http://s3/{n}"}


def timed(fn, repeat: int) -> float:
    runs = []
    for n in range(repeat):
        start = time.perf_counter()
        fn(n + 1)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ini = write_ini(Path(folder), "dcor_depot")
        clean_database(ini)
        app = ckan_app(ini)
        with app._wsgi_app.test_request_context():
            import ckan.plugins.toolkit as tk

            from ckanext.dcor_depot.jobs import index
            from ckanext.dcor_depot.model import ckan_rows

            context = {"ignore_auth": True, "user": site_user()}
            org = tk.get_action("organization_create")(
                dict(context), {"name": f"b-{uuid.uuid4().hex}"}
            )
            links = [
                {"url": f"https://example.org/{n}", "name": f"r{n}"} for n in range(args.resources)
            ]
            dataset = tk.get_action("package_create")(
                dict(context),
                {"name": f"b-{uuid.uuid4().hex}", "owner_org": org["id"], "resources": links},
            )
            first, last = dataset["resources"][0]["id"], dataset["resources"][-1]["id"]

            def the_old_way(n: int) -> None:
                package = ckan_rows.show_package(dataset["id"], fresh=True)
                package["resources"][-1].update(fields(n))
                ckan_rows.write_action("package_update", package)

            a = timed(lambda n: index.patch_resource(first, fields(n)), args.repeat)
            b = timed(lambda n: index.patch_resource(last, fields(n + 1000)), args.repeat)
            c = timed(the_old_way, args.repeat)
    print(
        f"\nRecording benchmark (one dataset of {args.resources} resources, "
        f"median of {args.repeat})\n"
    )
    print("| recording | ms | vs (a) |")
    print("|---|---|---|")
    for label, value in (
        ("(a) patch_resource, 1st resource", a),
        (f"(b) patch_resource, resource {args.resources}", b),
        (f"(c) package_update of the dataset, resource {args.resources}", c),
    ):
        print(f"| {label} | {value * 1000:.1f} | {value / a:.2f} |")
    ok = b <= 1.5 * a
    print(f"\n{'PASS' if ok else 'FAIL'}  (b) <= 1.5 x (a)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
