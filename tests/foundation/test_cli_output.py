"""What `kfusion report` prints: the model's configuration, and a quiet end when its reader
goes away (`kfusion report | head`), instead of a BrokenPipeError traceback (issue 14)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kfusion.cli import format_report

METRICS = {"units": "px",
           "provenance": {"set": "test", "encoder": "facebook/wav2vec2-base-960h",
                          "encoder_fallback": True, "checkpoint": "models/best.pt", "seed": 1,
                          "epochs": 20, "best_epoch": 13, "fusion": "mlp",
                          "global_domain": False, "lstm": True, "global_input": "mel",
                          "target": "offset"},
           "corpora": {"demo": {"vs_reference": {"model": {"windows": 8, "M-LD": 2.5}}}}}


def test_report_names_the_model_configuration():
    lines = format_report(METRICS, "m.json").splitlines()
    assert lines[3] == ("model: fusion mlp, global_domain off, lstm on, global_input mel, "
                        "target offset")


def test_report_into_a_closed_pipe_ends_quietly(tmp_path: Path):
    # many corpora, so the report is longer than any pipe buffer
    m = {**METRICS, "corpora": {f"c{i:05d}": METRICS["corpora"]["demo"] for i in range(3000)}}
    (tmp_path / "evaluate.json").write_text(json.dumps(m))
    read, write = os.pipe()
    os.close(read)                       # the reader is gone before the first line
    try:
        r = subprocess.run([sys.executable, "-m", "kfusion.cli", "report", "--report",
                            str(tmp_path / "evaluate.json")], stdout=write, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    finally:
        os.close(write)
    assert r.stderr == "" and r.returncode == 141   # 128 + SIGPIPE, as `yes | head` ends
