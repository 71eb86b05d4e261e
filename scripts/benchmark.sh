#!/usr/bin/env bash
# The benchmarks against the local services: benchmarks/upload.py (the verified
# S3 upload), benchmarks/lifecycle.py (resource_create and the jobs),
# benchmarks/migrate.py (ckan dcor-migrate-resources-to-object-store) and
# benchmarks/figshare.py (ckan import-figshare of one large file) and
# benchmarks/convergence.py (private switches under load, moving a dataset) and
# benchmarks/client.py (the README's direct-to-S3 client against boto3) and
# benchmarks/recording.py (a job's recording at the 1st and the 300th resource) and
# benchmarks/workers.py (200 uploads of 1 MiB with 1, 2 and 4 workers) and
# benchmarks/fixity.py (hashing an object in parallel ranged GETs against boto3's download) and
# benchmarks/registration.py (registering a staged 10 GiB file against a plain server-side copy).
# Usage: scripts/benchmark.sh [upload|lifecycle|migrate|figshare|convergence|client|recording|workers|fixity|registration|all] [arguments for the benchmark]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
which=${1:-all}
case "$which" in
    upload|lifecycle|migrate|figshare|convergence|client|recording|workers|fixity|registration) shift ;;
    all) [ $# -gt 0 ] && shift; [ $# -gt 0 ] && die "arguments go with one benchmark: upload, lifecycle, migrate, figshare, convergence, client, recording, workers, fixity or registration" ;;
    *) die "unknown benchmark '$which': use upload, lifecycle, migrate, figshare, convergence, client, recording, workers, fixity, registration or all" ;;
esac
bash "$REPO_DIR/scripts/services.sh"
bash "$REPO_DIR/scripts/venv.sh" 2.12
bash "$REPO_DIR/scripts/solr.sh" core ckan "$REPO_DIR/.venv"
status=0
for name in upload lifecycle migrate figshare convergence client recording workers fixity registration; do
    if [ "$which" = all ] || [ "$which" = "$name" ]; then
        say "Benchmark: $name"
        "$REPO_DIR/.venv/bin/python" "$REPO_DIR/benchmarks/$name.py" "$@" || status=1
    fi
done
say "Removing what the benchmarks left on the object store"
"$REPO_DIR/.venv/bin/python" "$REPO_DIR/benchmarks/cleanup.py" || status=1
exit $status
