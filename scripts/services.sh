#!/usr/bin/env bash
# Start the services the extension needs, installing what is missing:
# PostgreSQL, Redis, Ceph RADOS Gateway (S3) and Apache Solr.
# Idempotent: starts only what is down, then writes services.ini with the
# connection settings (and S3 credentials, mode 600) for test.ini and demo.ini.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_USER=dcor_depot
PG_PASSWORD=dcor_depot
PG_DATABASES=(dcor_depot_test_2_12 dcor_depot_test_2_11 dcor_depot_demo dcor_depot_bench)
SOLR_PORT=${DCOR_SOLR_PORT:-8983}
mkdir -p "$STATE_DIR"

# PostgreSQL
apt_install postgresql curl ca-certificates procps python3
if ! pg_isready -q -h 127.0.0.1; then
    cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
    [ -n "$cluster" ] || die "no PostgreSQL cluster found (pg_lsclusters)"
    # shellcheck disable=SC2086
    pg_ctlcluster --skip-systemctl-redirect $cluster start
    wait_for 60 PostgreSQL pg_isready -h 127.0.0.1
    say "PostgreSQL started"
else
    say "PostgreSQL already running"
fi
sql() { (cd / && runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtAX -c "$1"); }
if [ "$(sql "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]; then
    sql "CREATE ROLE $PG_USER LOGIN"
fi
# set on every run: the role may exist from elsewhere with another password
sql "ALTER ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
for db in "${PG_DATABASES[@]}"; do
    if [ "$(sql "SELECT 1 FROM pg_database WHERE datname='$db'")" != 1 ]; then
        sql "CREATE DATABASE $db OWNER $PG_USER ENCODING 'UTF8' TEMPLATE template0"
    fi
done
# the tests' databases are thrown away: a commit need not wait for the disk
for db in dcor_depot_test_2_12 dcor_depot_test_2_11; do
    sql "ALTER DATABASE $db SET synchronous_commit TO off"
done

# Redis
apt_install redis-server
if ! redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile "$STATE_DIR/redis.log"
    wait_for 30 Redis sh -c 'redis-cli -h 127.0.0.1 ping | grep -q PONG'
    say "Redis started"
else
    say "Redis already running"
fi

# S3: Ceph RADOS Gateway
bash "$REPO_DIR/scripts/ceph-rgw.sh" start
# shellcheck disable=SC1091
source "$STATE_DIR/ceph/s3.env"

# Apache Solr 9 with CKAN's schema (scripts/solr.sh; the cores are made by the scripts that
# install CKAN's versions: test.sh, demo.sh, benchmark.sh)
bash "$REPO_DIR/scripts/solr.sh" start
solr_url="http://127.0.0.1:$SOLR_PORT/solr/ckan"

umask 077
cat >"$REPO_DIR/services.ini" <<INI
# Written by scripts/services.sh for this machine's local services; do not commit.
[app:main]
use = egg:ckan
sqlalchemy.url = postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1/dcor_depot_demo
ckan.redis.url = redis://127.0.0.1:6379/1
solr_url = $solr_url
dcor_object_store.endpoint_url = $DCOR_S3_ENDPOINT_URL
dcor_object_store.access_key_id = $DCOR_S3_ACCESS_KEY_ID
dcor_object_store.secret_access_key = $DCOR_S3_SECRET_ACCESS_KEY
dcor_object_store.ssl_verify = $DCOR_S3_CA_BUNDLE
# the upload identity, which signs the upload URLs users get (scripts/ceph-rgw.sh)
dcor_object_store.upload_access_key_id = $DCOR_S3_UPLOAD_ACCESS_KEY_ID
dcor_object_store.upload_secret_access_key = $DCOR_S3_UPLOAD_SECRET_ACCESS_KEY
# the same gateway over plain http (a test keeps it working)
dcor_depot_dev.s3_http_endpoint_url = $DCOR_S3_HTTP_ENDPOINT_URL
INI
say "Services ready; settings in $REPO_DIR/services.ini"
