#!/usr/bin/env bash
# The whole test suite: lint, then pytest against the real services on
# CKAN 2.12 and CKAN 2.11 (one virtualenv each), both at once: each version
# has a database, a Redis database, a search core, folders, a bucket prefix and
# a staging bucket of its own (an ini written to
# test-artifacts/ckan-VERSION/test.ini), so neither sees the other's data. Exits non-zero on any failure.
# Extra arguments go to pytest, e.g. scripts/test.sh -k anonymous
# DCOR_CKAN_SERIES=2.12 runs one version only (its output as it comes).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_DIR"

bash scripts/services.sh
failed=()
bash scripts/venv.sh 2.12
say "Lint (ruff) and the layers' contracts (import-linter)"
.venv/bin/ruff check . || failed+=("ruff")
.venv/bin/lint-imports || failed+=("import-linter")
read -r -a all_series <<<"${DCOR_CKAN_SERIES:-2.12 2.11}"

# the ini of one version's run: test.ini, with what the versions must not share
series_ini() {
    local series=$1 db_index=$2 name=${1/./_}
    local folder=$REPO_DIR/test-artifacts/ckan-$series
    mkdir -p "$folder"
    {
        echo "# Written by scripts/test.sh: test.ini for the tests on CKAN $series"
        echo "[app:main]"
        echo "use = config:$REPO_DIR/test.ini"
        echo "sqlalchemy.url = postgresql://dcor_depot:dcor_depot@127.0.0.1/dcor_depot_test_$name"
        echo "ckan.redis.url = redis://127.0.0.1:6379/$db_index"
        echo "solr_url = http://127.0.0.1:${DCOR_SOLR_PORT:-8983}/solr/ckan-test-${series/./-}"
        echo "ckan.site_id = dcor_depot_test_$name"
        echo "ckan.storage_path = /tmp/dcor-depot-test-$series/storage"
        echo "ckanext.dcor_depot.depots_path = /tmp/dcor-depot-test-$series/depots"
        echo "ckanext.dcor_depot.tmp_dir = /tmp/dcor-depot-test-$series/tmp"
        echo "dcor_object_store.bucket_name = test-${series/./-}-circle-{organization_id}"
        echo "dcor_object_store.staging_bucket = test-${series/./-}-staging"
        echo
        # CKAN 2.11 reads the logging sections from the top file only
        sed -n '/^\[loggers\]/,$p' "$REPO_DIR/test.ini"
    } >"$folder/test.ini"
    echo "$folder/test.ini"
}

declare -A inis
index=2  # Redis database 1 is the demo's
for series in "${all_series[@]}"; do
    bash scripts/venv.sh "$series"
    venv=.venv; [ "$series" = 2.12 ] || venv=.venv-$series
    bash scripts/solr.sh core "ckan-test-${series/./-}" "$venv" memory
    inis[$series]=$(series_ini "$series" $index)
    index=$((index + 1))
    "$venv/bin/ckan" -c "${inis[$series]}" db upgrade >/dev/null
    "$venv/bin/ckan" -c "${inis[$series]}" db upgrade -p dcor_depot >/dev/null
done

run_series() {
    local series=$1; shift
    local venv=.venv; [ "$series" = 2.12 ] || venv=.venv-$series
    DCOR_TEST_INI=${inis[$series]} "$venv/bin/python" -m pytest --ckan-ini="${inis[$series]}" "$@"
}

started=$SECONDS
if [ ${#all_series[@]} -eq 1 ]; then
    say "Tests on CKAN ${all_series[0]}"
    run_series "${all_series[0]}" "$@" || failed+=("CKAN ${all_series[0]}")
else
    say "Tests on CKAN ${all_series[*]}, at the same time (output of each when it ends)"
    declare -A pids logs
    for series in "${all_series[@]}"; do
        logs[$series]=test-artifacts/ckan-$series/pytest.log
        run_series "$series" "$@" >"${logs[$series]}" 2>&1 &
        pids[$series]=$!
    done
    for series in "${all_series[@]}"; do
        status=0
        wait "${pids[$series]}" || status=$?
        say "Tests on CKAN $series (log: ${logs[$series]})"
        cat "${logs[$series]}"
        [ $status -eq 0 ] || failed+=("CKAN $series")
    done
fi
say "Tests took $((SECONDS - started)) s"

if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "All tests passed on CKAN ${all_series[*]}"
