# Sourced by scripts/*: a project virtualenv in .venv with the package and its dev tools installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
# The compiled hot path (streams/_native.py): rebuilt only when a compiled module's source changed (~45 s).
native() { .venv/bin/python -c 'import sys; from streams._native import main; sys.exit(main(sys.argv[1:]))' "$@"; }
if [ -z "${STREAMS_NO_BUILD:-}" ]; then
  native build --quiet
fi
