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

# A line every $KFUSION_SETUP_EVERY_S seconds (default 10) while pip runs in the background
# ($1: its pid, $2: its log): how long so far, packages collected, and pip's latest step
# (e.g. "Downloading torch-2.11.0-...whl (900 MB)"), instead of minutes of silence.
# Returns pip's exit status.
watch_install() {
  local pid="$1" log="$2" every="${KFUSION_SETUP_EVERY_S:-10}" t0=$SECONDS next
  next=$(( t0 + every ))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS >= next )) && kill -0 "$pid" 2>/dev/null; then
      local n step
      n=$(grep -c '^Collecting ' "$log" || true)
      step=$(grep -E '^ *(Collecting|Downloading|Building|Installing collected|Successfully)' "$log" \
             | tail -n 1 | sed "s/^ *//" | cut -c1-100 || true)
      echo "[setup] $(( SECONDS - t0 )) s: $n packages collected; ${step:-starting pip}" >&2
      next=$(( SECONDS + every ))
    fi
  done
  wait "$pid"
}

venv="${KFUSION_VENV:-.venv}"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.kfusion-deps" 2>/dev/null)" != "$want" ]; then
  echo "[setup] building environment in $venv (deps $want; torch is several GB, a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  log="$venv/.install.log"
  # requirements.lock pins every transitive version this project was tested with. pip's own
  # output goes to the log; watch_install prints where it is every few seconds meanwhile.
  # The `ray` extra: the per-clip stages' cluster executor (scale.executor: ray; docs/scale.md).
  { "$venv/bin/python" -m pip install --upgrade pip \
    && "$venv/bin/python" -m pip install -c requirements.lock -e '.[dev,ray]'; } >"$log" 2>&1 &
  if ! watch_install $! "$log"; then
    tail -n 30 "$log" >&2; echo "error: installing the environment failed; full log: $log" >&2; exit 1
  fi
  echo "$want" > "$venv/.kfusion-deps"
else
  # Reused environment: only (re)register this checkout's packages, no dependency work.
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || { echo "error: could not register this checkout in $venv (delete it to rebuild)" >&2; exit 1; }
fi
# The page `dvc plots show` fills (.dvc/config: plots.html_template), with Vega inlined so
# plots draw with no network; rewritten only when vl-convert-python changed (else ~0.1 s).
"$venv/bin/python" -m kfusion.plots_template .dvc/plots_offline.html \
  || { echo "error: could not write .dvc/plots_offline.html (dvc plots show needs it)" >&2; exit 1; }
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
