#!/usr/bin/env bash
# Create (or update) a virtualenv with CKAN of one version, the test tools and
# this extension installed in development mode.
# Usage: scripts/venv.sh 2.12|2.11 [DIR]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

series=${1:?usage: venv.sh 2.12|2.11 [DIR]}
case "$series" in
    2.12) ckan=2.12.0; tests="pytest==9.1.1 pytest-factoryboy==2.8.1 factory-boy==3.3.3 Faker==40.28.1 selenium==4.51.0 dcoraid==1.1.3" ;;
    # newer selenium needs a typing-extensions newer than CKAN 2.11 pins
    2.11) ckan=2.11.6; tests="pytest==8.3.4 pytest-factoryboy==2.7.0 factory-boy==3.3.0 Faker==26.0.0 selenium==4.32.0 dcoraid==1.1.3" ;;
    *) die "unknown CKAN series '$series'; expected 2.12 or 2.11" ;;
esac
default_dir=$REPO_DIR/.venv; [ "$series" = 2.12 ] || default_dir=$REPO_DIR/.venv-$series
venv=${2:-$default_dir}

# psycopg2 builds from source; python-magic (CKAN) loads libmagic; the browser tests
# and the demo drive Debian's Chromium
apt_install python3-venv python3-dev gcc libpq-dev libmagic1 chromium chromium-driver libnss3-tools
if [ ! -x "$venv/bin/python" ]; then
    say "Creating $venv"
    python3 -m venv "$venv"
fi
# pip install, without the warnings about package index folders that do not exist here
pip_quiet() {
    local venv=$1; shift
    "$venv/bin/pip" install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
RUFF_VERSION=0.17.5
# the layers' contracts (pyproject.toml, [tool.importlinter]), checked by scripts/test.sh
# with the 2.12 virtualenv (CKAN 2.11 pins a click that import-linter does not take)
LINTER=""; [ "$series" != 2.12 ] || LINTER="import-linter==2.17"
stamp="$venv/.dcor-depot-installed"
wanted="ckan=$ckan $tests ruff==$RUFF_VERSION $LINTER $(sha256sum "$REPO_DIR/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "Installing CKAN $ckan and the extension into $venv"
    # shellcheck disable=SC2086
    pip_quiet "$venv" "ckan[requirements]==$ckan" $tests "ruff==$RUFF_VERSION" $LINTER
    pip_quiet "$venv" -e "$REPO_DIR"
    echo "$wanted" >"$stamp"
fi
"$venv/bin/python" -c "import ckan, ckanext.dcor_depot; print('CKAN', ckan.__version__, 'in $venv')"
