#!/usr/bin/env bash
# Create build/venv (python3 -m venv) with chdb-core, which embeds ClickHouse
# (used by scripts/clickhouse.py to run a real local server).
# Idempotent: when the venv already imports chdb._chdb it exits at once, silently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/build/venv}"
CHDB_VERSION="26.9.0"

# Fast path (~0.4 s): right version installed and the entry point imports.
# Run from a temp dir: importing chdb._chdb may change the working directory.
if [ -x "$VENV/bin/python" ] && (cd "${TMPDIR:-/tmp}" && "$VENV/bin/python" - "$CHDB_VERSION" <<'PY') >/dev/null 2>&1
import sys
from importlib.metadata import version
if version("chdb-core") != sys.argv[1]:
    sys.exit(1)
import chdb._chdb
PY
then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "ensure-venv: creating $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi

echo "ensure-venv: installing chdb-core==$CHDB_VERSION (~181 MB wheel) into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps "chdb-core==$CHDB_VERSION"

# Check that the embedded ClickHouse entry point imports (run from a temp dir:
# importing chdb._chdb changes the working directory).
(cd "${TMPDIR:-/tmp}" && "$VENV/bin/python" -c 'import chdb._chdb') || {
    echo "ensure-venv: chdb-core installed but 'import chdb._chdb' failed" >&2
    exit 1
}
echo "ensure-venv: ready ($VENV)" >&2
