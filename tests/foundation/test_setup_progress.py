"""scripts/setup.sh is never silent for minutes while it builds the environment (issue 14, item 7).

The real script runs with a stand-in Python (PYTHON=...): its `-m venv` makes a folder, its
`-m pip install` prints what pip prints (Collecting/Downloading lines) slowly, as a torch
download does, and every other call succeeds at once. The script must print a line every few
seconds (here every 1 s: KFUSION_SETUP_EVERY_S) naming pip's latest step, and on a failing
install exit 1 with the log's tail.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r"""#!/usr/bin/env bash
# a stand-in interpreter for scripts/setup.sh: venv, pip and everything else
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2" = "-m pip" ]; then
  case "$*" in *--upgrade*) echo "Requirement already satisfied: pip"; exit 0;; esac
  echo "Collecting torch==2.11.0"
  echo "  Downloading torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl (900.0 MB)"
  sleep 3
  echo "Collecting numpy>=1.26"
  sleep 2
  echo "ERROR: pretend failure" >&2
  exit "${FAKE_PIP_RC:-0}"
fi
exit 0
"""


def run_setup(tmp_path: Path, pip_rc: int) -> subprocess.CompletedProcess:
    fake = tmp_path / "python3.11"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "KFUSION_VENV": str(tmp_path / "venv"),
           "KFUSION_SETUP_EVERY_S": "1", "FAKE_PIP_RC": str(pip_rc)}
    return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "test"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_line_every_few_seconds_names_pips_latest_step(tmp_path: Path):
    r = run_setup(tmp_path, pip_rc=0)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if re.match(r"\[setup\] \d+ s: ", ln)]
    # 5 s of pip at one line a second: at least 3 lines, seconds increasing
    assert len(lines) >= 3, r.stderr
    seconds = [int(re.match(r"\[setup\] (\d+) s", ln).group(1)) for ln in lines]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
    assert any("1 packages collected; Downloading torch-2.11.0" in ln for ln in lines), lines
    assert "2 packages collected; Collecting numpy" in lines[-1], lines
    assert (tmp_path / "venv" / ".kfusion-deps").is_file()  # a finished build is stamped


def test_a_failed_install_exits_1_with_the_logs_tail(tmp_path: Path):
    r = run_setup(tmp_path, pip_rc=1)
    assert r.returncode == 1
    assert "ERROR: pretend failure" in r.stderr
    assert "error: installing the environment failed; full log:" in r.stderr
    assert not (tmp_path / "venv" / ".kfusion-deps").exists()
