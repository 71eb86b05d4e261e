#!/usr/bin/env bash
# The main job: the services, RQ workers on the depot's queues and CKAN
# with the dcor_depot plugin on http://127.0.0.1:5000; then the walkthrough
# (scripts/demo_walkthrough.py): a sysadmin uploads a generated .rtdc file into
# a new private dataset through CKAN's web form in headless Chromium, and it
# prints where the file went (depot, symlink, S3, checksums, anonymous access
# before and after the dataset is made public).
# Usage: scripts/demo.sh [--once]   the site stays up for browsing; --once
#                                   stops the web server and worker at the end
#        scripts/demo.sh stop       stops the web server, worker, Ceph, Solr
# DCOR_DEMO_HOST=0.0.0.0: the web server listens on every address (default 127.0.0.1).
# Idempotent: a second start restarts the web server and worker with the
# current code and walks a new dataset through; the sysadmin and data are kept.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_DIR=$STATE_DIR/demo
INI=$DEMO_DIR/ckan.ini
WEB_PID=$DEMO_DIR/ckan-web.pid
WORKER_PID=$DEMO_DIR/ckan-worker.pid
CONVERGE_PID=$DEMO_DIR/ckan-converge-worker.pid
URL=http://127.0.0.1:5000
# the web server's address: 0.0.0.0 in a VM whose port 5000 is forwarded (Vagrantfile)
HOST=${DCOR_DEMO_HOST:-127.0.0.1}
ADMIN=dcor-admin

# stop_pid PIDFILE WHAT: stop the process group started with setsid
stop_pid() {
    if [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; then
        kill -- "-$(cat "$1")" 2>/dev/null || kill "$(cat "$1")"
        wait_for 30 "stopping the $2" sh -c "! kill -0 $(cat "$1") 2>/dev/null"
        say "The $2 stopped"
    fi
    rm -f "$1"
}

mode=${1:-start}
case "$mode" in
    start | --once | stop) ;;
    *) die "unknown argument '$mode'; usage: scripts/demo.sh [--once|stop]" ;;
esac

if [ "$mode" = stop ]; then
    stop_pid "$WEB_PID" "CKAN web server"
    stop_pid "$WORKER_PID" "RQ worker"
    stop_pid "$CONVERGE_PID" "RQ worker of dcor-converge"
    bash "$REPO_DIR/scripts/ceph-rgw.sh" stop
    bash "$REPO_DIR/scripts/solr.sh" stop
    say "Stopped. PostgreSQL and Redis are left running."
    exit 0
fi

bash "$REPO_DIR/scripts/services.sh"
bash "$REPO_DIR/scripts/venv.sh" 2.12
bash "$REPO_DIR/scripts/solr.sh" core ckan "$REPO_DIR/.venv"
CKAN="$REPO_DIR/.venv/bin/ckan"
mkdir -p "$DEMO_DIR"/{storage,depots,tmp,backup}

cat >"$INI" <<INI
# Written by scripts/demo.sh: a local demo site. Production: see ckan.ini.example.
[app:main]
use = config:$REPO_DIR/services.ini
ckan.site_url = $URL
ckan.site_id = dcor_depot_demo
ckan.site_title = DCOR depot demo
SECRET_KEY = $(cat "$DEMO_DIR/secret" 2>/dev/null || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' | tee "$DEMO_DIR/secret"))
ckan.plugins = dcor_depot dcor_depot_dcoraid
ckan.storage_path = $DEMO_DIR/storage
ckan.max_resource_size = 4096
ckanext.dcor_depot.depots_path = $DEMO_DIR/depots
ckanext.dcor_depot.tmp_dir = $DEMO_DIR/tmp
dcor_object_store.local_backup_location = $DEMO_DIR/backup

[loggers]
keys = root, ckanext, jobs

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_ckanext]
qualname = ckanext
handlers =
level = INFO

[logger_jobs]
qualname = ckan.lib.jobs
handlers =
level = INFO

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s] %(message)s
INI

say "Database"
"$CKAN" -c "$INI" db upgrade >/dev/null 2>&1 || "$CKAN" -c "$INI" db init >/dev/null
"$CKAN" -c "$INI" db upgrade -p dcor_depot >/dev/null
"$CKAN" -c "$INI" dcor-check-object-store

password_file=$DEMO_DIR/sysadmin-password
new_password=
if [ ! -s "$password_file" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$password_file")
    new_password=1
fi
# the password goes to ckan's prompt on stdin, never on a command line (/proc/*/cmdline)
password_twice() { local pw; pw=$(<"$password_file"); printf '%s\n%s\n' "$pw" "$pw"; }
if ! "$CKAN" -c "$INI" user show "$ADMIN" 2>/dev/null | grep -q "name=$ADMIN"; then
    password_twice | "$CKAN" -c "$INI" user add "$ADMIN" email=admin@dcor.invalid >/dev/null
    say "Created user $ADMIN"
elif [ -n "$new_password" ]; then
    password_twice | "$CKAN" -c "$INI" user setpass "$ADMIN" >/dev/null
fi
"$CKAN" -c "$INI" sysadmin add "$ADMIN" >/dev/null

stop_pid "$WEB_PID" "CKAN web server"
stop_pid "$WORKER_PID" "RQ worker"
stop_pid "$CONVERGE_PID" "RQ worker of dcor-converge"
say "Starting the RQ workers: one on dcor-converge and dcor-index, one on dcor-short and dcor-normal"
: >"$DEMO_DIR/ckan-worker.log"
: >"$DEMO_DIR/ckan-converge-worker.log"
setsid nohup "$CKAN" -c "$INI" dcor-depot-worker dcor-converge dcor-index \
    >>"$DEMO_DIR/ckan-converge-worker.log" 2>&1 &
echo $! >"$CONVERGE_PID"
setsid nohup "$CKAN" -c "$INI" dcor-depot-worker dcor-short dcor-normal \
    >>"$DEMO_DIR/ckan-worker.log" 2>&1 &
echo $! >"$WORKER_PID"
wait_for 60 "the RQ worker (log: $DEMO_DIR/ckan-worker.log)" \
    grep -q "has started on queue" "$DEMO_DIR/ckan-worker.log"
wait_for 60 "the RQ worker of dcor-converge (log: $DEMO_DIR/ckan-converge-worker.log)" \
    grep -q "has started on queue" "$DEMO_DIR/ckan-converge-worker.log"
say "Starting CKAN on $URL"
setsid nohup "$CKAN" -c "$INI" run --host "$HOST" --port 5000 --disable-reloader --threaded \
    >>"$DEMO_DIR/ckan-web.log" 2>&1 &
echo $! >"$WEB_PID"
wait_for 120 "CKAN on $URL (log: $DEMO_DIR/ckan-web.log)" curl -sf "$URL/api/3/action/status_show"
kill -0 "$(cat "$WEB_PID")" 2>/dev/null \
    || die "CKAN did not start (is port 5000 taken by another program?); see $DEMO_DIR/ckan-web.log"

say "Walkthrough: one .rtdc file through the depot (headless Chromium)"
if ! "$REPO_DIR/.venv/bin/python" "$REPO_DIR/scripts/demo_walkthrough.py" --ini "$INI" \
        --url "$URL" --user "$ADMIN" --password-file "$password_file" --out "$DEMO_DIR/walkthrough"; then
    say "The walkthrough failed (above); the site is left running. Logs: $DEMO_DIR/ckan-web.log, $DEMO_DIR/ckan-worker.log"
    exit 1
fi

if [ "$mode" = --once ]; then
    stop_pid "$WEB_PID" "CKAN web server"
    stop_pid "$WORKER_PID" "RQ worker"
    stop_pid "$CONVERGE_PID" "RQ worker of dcor-converge"
    say "Done (--once). The services (PostgreSQL, Redis, Ceph, Solr) are left running; bash scripts/demo.sh stop stops Ceph and Solr"
    exit 0
fi

cat <<MSG

  CKAN with the dcor_depot plugin runs on $URL
  Sysadmin:  $ADMIN
  Password:  cat $password_file
  Config:    $INI
  Log:       $DEMO_DIR/ckan-web.log
  Worker:    $DEMO_DIR/ckan-worker.log (uploaded files go to $DEMO_DIR/depots and S3)
  Stop with: bash scripts/demo.sh stop

MSG
