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


@pytest.mark.parametrize("sub", ["config", "stage", "predict"])
def test_each_subcommand_has_help(sub: str) -> None:
    r = _kfusion(sub, "--help")
    assert r.returncode == 0 and f"usage: kfusion {sub}" in r.stdout


def test_subcommands_are_the_documented_ones() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"config", "stage", "predict"}


def test_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("model:\n  fusion: kann\n")
    r = _kfusion("config", "--params", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model.fusion" in r.stderr and "Traceback" not in r.stderr
