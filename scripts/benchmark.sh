#!/usr/bin/env bash
# The S3 upload benchmark (benchmarks/upload.py) against the local Ceph RGW.
# Extra arguments go to the benchmark, e.g. --size-mib 256 --repeat 1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$REPO_DIR/scripts/services.sh"
bash "$REPO_DIR/scripts/venv.sh" 2.12
exec "$REPO_DIR/.venv/bin/python" "$REPO_DIR/benchmarks/upload.py" "$@"
