#!/usr/bin/env bash
# One entry point for a fresh machine: create (or reuse) the environment, then run a job.
#
#   bash scripts/setup.sh repro   # env + `dvc repro` on the demo corpus + the metrics table
#   bash scripts/setup.sh test    # env + the test suite (pytest)
#
# The environment lives in $KFUSION_VENV (default: .venv in the checkout). It is rebuilt only
# when the dependency files change: their hash is stamped inside it, so CI can keep one
# cached outside the clone and a fresh machine still builds its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

job="${1:-}"; shift || true
case "$job" in repro|test) ;; *) echo "usage: bash scripts/setup.sh repro|test [args]" >&2; exit 2;; esac

py="${PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

venv="${KFUSION_VENV:-.venv}"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.kfusion-deps" 2>/dev/null)" != "$want" ]; then
  echo "[setup] building environment in $venv (deps $want; torch is several GB, a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  log="$venv/.install.log"
  # requirements.lock pins every transitive version this project was tested with.
  if ! { "$venv/bin/python" -m pip install --upgrade pip \
         && "$venv/bin/python" -m pip install -c requirements.lock -e '.[dev,ray]'; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2; echo "error: installing the environment failed; full log: $log" >&2; exit 1
  fi
  echo "$want" > "$venv/.kfusion-deps"
else
  # Reused environment: only (re)register this checkout's packages, no dependency work.
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || { echo "error: could not register this checkout in $venv (delete it to rebuild)" >&2; exit 1; }
fi
export PATH="$(cd "$venv" && pwd)/bin:$PATH"

case "$job" in
  repro)
    dvc repro "$@"
    kfusion report          # model and baselines, M-LD/M-LVD/F-LD/F-LVD (all of it: dvc metrics show)
    ;;
  test)
    # pytest exits 5 when it collects no test: that fails this script (set -e), on purpose.
    python -m pytest "$@"
    ;;
esac
