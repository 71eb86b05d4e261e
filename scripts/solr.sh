#!/usr/bin/env bash
# Apache Solr for the development stack, the tests, the demo and the benchmarks:
# Solr 9 (pinned in scripts/solr/pom.xml) from Maven Central, run by its own
# embedded Jetty runner (scripts/solr/DevSolr.java) on 127.0.0.1, with CKAN's
# schema.xml in each core.
#
# Usage: scripts/solr.sh start               install what is missing (OpenJDK and Maven
#                                             from Debian, Solr's jars), start Solr if
#                                             it does not answer, wait until it does
#        scripts/solr.sh core NAME VENV [memory]
#                                             make sure the core NAME exists with the
#                                             schema.xml of the CKAN installed in VENV
#                                             (reloaded when that schema changed);
#                                             "memory": its index in memory, no update
#                                             log (the tests' cores)
#        scripts/solr.sh stop|status
#
# Environment: DCOR_DEV_STATE (everything lives in $DCOR_DEV_STATE/solr),
# DCOR_SOLR_PORT (default 8983), DCOR_SOLR_HEAP (default 512m).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOLR_STATE=$STATE_DIR/solr
SOLR_HOME=$SOLR_STATE/home
SOLR_LIB=$SOLR_STATE/lib
SOLR_PORT=${DCOR_SOLR_PORT:-8983}
SOLR_URL=http://127.0.0.1:$SOLR_PORT/solr
PID_FILE=$SOLR_STATE/pid
SOURCE=$REPO_DIR/scripts/solr

solr_up() { curl -sf "$SOLR_URL/admin/info/system?wt=json" >/dev/null; }

install_solr() {
    apt_install openjdk-17-jdk-headless maven curl
    # the jars of the pinned version, copied again when the pom changes
    local stamp
    stamp=$(sha256sum "$SOURCE/pom.xml" | cut -c1-16)
    if [ "$(cat "$SOLR_LIB/.pom" 2>/dev/null)" != "$stamp" ]; then
        say "Fetching Apache Solr's jars from Maven Central (scripts/solr/pom.xml)"
        rm -rf "$SOLR_LIB"
        mvn -B -q -f "$SOURCE/pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="$SOLR_LIB" -DincludeScope=runtime >"$SOLR_STATE/mvn.log" 2>&1 ||
            die "Maven could not fetch Solr's jars (log: $SOLR_STATE/mvn.log)"
        echo "$stamp" >"$SOLR_LIB/.pom"
    fi
}

start() {
    mkdir -p "$SOLR_HOME"
    if solr_up; then
        say "Solr already running"
        return
    fi
    install_solr
    cp "$SOURCE/solr.xml" "$SOLR_HOME/solr.xml"
    # a Solr killed hard leaves its cores' index locks behind
    find "$SOLR_HOME" -name write.lock -path '*/data/*' -delete 2>/dev/null || true
    local java
    java=$(readlink -f "$(command -v java)")
    # bounded memory for a 2-core machine that also runs CKAN, Ceph and the workers
    setsid nohup "$java" -Xms128m -Xmx"${DCOR_SOLR_HEAP:-512m}" -XX:+UseSerialGC \
        -Dsolr.log.dir="$SOLR_STATE/logs" -Dsolr.install.dir="$SOLR_STATE" \
        -cp "$SOLR_LIB/*" "$SOURCE/DevSolr.java" "$SOLR_HOME" "$SOLR_PORT" \
        >>"$SOLR_STATE/solr.log" 2>&1 &
    echo $! >"$PID_FILE"
    wait_for 120 "Solr (log: $SOLR_STATE/solr.log)" solr_up
    say "Solr $(solr_version) started on 127.0.0.1:$SOLR_PORT"
}

solr_version() {
    curl -sf "$SOLR_URL/admin/info/system?wt=json" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["lucene"]["solr-spec-version"])'
}

# core NAME VENV [memory]
core() {
    local name=$1 venv=$2 kind=${3:-disk}
    [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "core name '$name': letters, digits, - and _ only"
    local schema
    schema=$("$venv/bin/python" -c \
        'import ckan, os; print(os.path.join(os.path.dirname(ckan.__file__), "config/solr/schema.xml"))')
    [ -f "$schema" ] || die "no CKAN schema.xml in $venv ($schema)"
    local dir=$SOLR_HOME/$name
    mkdir -p "$dir/conf"
    local changed=0
    for file in "$SOURCE"/conf/* "$schema"; do
        if ! cmp -s "$file" "$dir/conf/$(basename "$file")"; then
            cp "$file" "$dir/conf/"
            changed=1
        fi
    done
    # the core's properties (solrconfig.xml reads them), given to Solr when it creates the
    # core; Solr writes core.properties itself
    local properties=()
    if [ "$kind" = memory ]; then
        properties=(dcor.directoryFactory=solr.ByteBuffersDirectoryFactory dcor.updateLog=false
            dcor.lockType=single)
    fi
    local status
    status=$(curl -sf "$SOLR_URL/admin/cores?action=STATUS&core=$name&wt=json") ||
        die "Solr does not answer on $SOLR_URL (bash scripts/solr.sh start)"
    if grep -q '"instanceDir"' <<<"$status" &&
        [ "$(cat "$dir/.dcor-properties" 2>/dev/null)" != "${properties[*]}" ]; then
        # other properties (memory or disk): the core is made again, its index dropped
        curl -sf "$SOLR_URL/admin/cores?action=UNLOAD&core=$name&deleteDataDir=true&wt=json" \
            >/dev/null || die "Solr did not unload the core $name (log: $SOLR_STATE/solr.log)"
        status=""
    fi
    if ! grep -q '"instanceDir"' <<<"$status"; then
        rm -f "$dir/core.properties"
        local query="action=CREATE&name=$name&instanceDir=$name&wt=json" property
        for property in "${properties[@]}"; do
            query+="&property.$property"
        done
        curl -sf "$SOLR_URL/admin/cores?$query" >/dev/null ||
            die "Solr did not create the core $name (log: $SOLR_STATE/solr.log)"
        printf '%s' "${properties[*]}" >"$dir/.dcor-properties"
        say "Solr core $name created ($(grep -o -m1 '<schema name="[^"]*"' "$schema" | cut -d'"' -f2) schema${properties:+, index in memory})"
    elif [ $changed = 1 ]; then
        curl -sf "$SOLR_URL/admin/cores?action=RELOAD&core=$name&wt=json" >/dev/null ||
            die "Solr did not reload the core $name (log: $SOLR_STATE/solr.log)"
        say "Solr core $name reloaded with its new configuration"
    fi
}

stop() {
    if [ -f "$PID_FILE" ] && kill "$(cat "$PID_FILE")" 2>/dev/null; then
        for _ in $(seq 1 60); do
            kill -0 "$(cat "$PID_FILE")" 2>/dev/null || break
            sleep 0.5
        done
        say "Solr stopped"
    fi
    rm -f "$PID_FILE"
}

case "${1:-start}" in
    start) start ;;
    core) shift; core "$@" ;;
    stop) stop ;;
    status) solr_up && echo "Solr $(solr_version) answers on $SOLR_URL" ;;
    *) die "usage: scripts/solr.sh start|core NAME VENV [memory]|stop|status" ;;
esac
