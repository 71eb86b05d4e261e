#!/usr/bin/env bash
# The whole test suite: lint, then pytest against the real services on
# CKAN 2.12 and then 2.11 (one virtualenv each). Exits non-zero on any failure.
# Extra arguments go to pytest, e.g. scripts/test.sh -k anonymous
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_DIR"

bash scripts/services.sh
failed=()
bash scripts/venv.sh 2.12
say "Lint (ruff)"
.venv/bin/ruff check . || failed+=("ruff")
for series in ${DCOR_CKAN_SERIES:-2.12 2.11}; do
    bash scripts/venv.sh "$series"
    venv=.venv; [ "$series" = 2.12 ] || venv=.venv-$series
    export CKAN_SQLALCHEMY_URL="postgresql://dcor_depot:dcor_depot@127.0.0.1/dcor_depot_test_${series/./_}"
    "$venv/bin/ckan" -c test.ini db upgrade >/dev/null
    "$venv/bin/ckan" -c test.ini db upgrade -p dcor_depot >/dev/null
    say "Tests on CKAN $series"
    "$venv/bin/python" -m pytest "$@" || failed+=("CKAN $series")
done

if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "All tests passed on CKAN ${DCOR_CKAN_SERIES:-2.12 2.11}"
