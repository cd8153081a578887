"""The `kfusion` console command: --version, --help per subcommand, clean config errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kfusion import __version__
from kfusion.cli import build_parser


def _kfusion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfusion.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_version() -> None:
    r = _kfusion("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"kfusion {__version__}"


@pytest.mark.parametrize("sub", ["config", "report", "stage", "predict"])
def test_each_subcommand_has_help(sub: str) -> None:
    r = _kfusion(sub, "--help")
    assert r.returncode == 0 and f"usage: kfusion {sub}" in r.stdout


def test_subcommands_are_the_documented_ones() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"config", "report", "stage", "predict"}


def test_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("model:\n  fusion: kann\n")
    r = _kfusion("config", "--params", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model.fusion" in r.stderr and "Traceback" not in r.stderr


def test_report_formats_model_and_baselines(tmp_path: Path) -> None:
    import json
    m = {"units": "px", "encoder": "w2v", "encoder_fallback": True, "checkpoint": "models/best.pt",
         "corpora": {"demo": {"vs_reference": {
             "model": {"windows": 3, "M-LD": 1.5, "M-LVD": 0.25, "F-LD": 2.0, "F-LVD": 0.125},
             "identity": {"windows": 3, "M-LD": 4.0, "M-LVD": 1.0, "F-LD": 3.0, "F-LVD": 0.5}}}}}
    (tmp_path / "e.json").write_text(json.dumps(m))
    r = _kfusion("report", "--metrics", str(tmp_path / "e.json"))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[1] == "model: not recorded"   # no `trained` section in these metrics
    assert "fallback: True" in lines[2]
    assert lines[4].split() == ["demo", "reference", "model", "3", "1.500", "0.250", "2.000", "0.125"]
    assert lines[5].split()[2:] == ["identity", "3", "4.000", "1.000", "3.000", "0.500"]
    r = _kfusion("report", "--metrics", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "run `dvc repro`" in r.stderr
