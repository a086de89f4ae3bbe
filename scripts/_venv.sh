# Sourced by scripts/run and scripts/test: makes .venv and installs the given requirements
# file into it, again only when that file (or what it includes) changed.
set -euo pipefail

ensure_venv() {
    local requirements="$1"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "OffChat needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)." >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "Creating .venv with $("$python" --version)"
        "$python" -m venv .venv
    fi
    local stamp=".venv/.installed-${requirements//\//-}"
    local digest
    digest=$(cat requirements.txt "$requirements" | "$python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
        echo "Installing $requirements into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$digest" > "$stamp"
    fi
}
