"""`dvc exp run -S key=value` reaches the stage through the typed config (a real DVC run)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STAGE = """stages:
  resolve:
    cmd: {py} -m kfusion.cli config --params params.yaml > resolved.yaml
    params:
      - model
      - train.epochs
    outs:
      - resolved.yaml:
          cache: false
"""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def dvc_repo(tmp_path: Path, repo_root: Path) -> Path:
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(STAGE.format(py=sys.executable))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        r = _run(cmd, tmp_path)
        assert r.returncode == 0, r.stderr
    return tmp_path


def test_set_param_reaches_stage_and_repro_is_idempotent(dvc_repo: Path) -> None:
    dvc = [sys.executable, "-m", "dvc"]
    r = _run([*dvc, "exp", "run", "-S", "model.fusion=mlp", "-S", "train.epochs=7"], dvc_repo)
    assert r.returncode == 0, r.stdout + r.stderr
    resolved = yaml.safe_load((dvc_repo / "resolved.yaml").read_text())
    assert resolved["model"]["fusion"] == "mlp" and resolved["train"]["epochs"] == 7

    r = _run([*dvc, "repro"], dvc_repo)
    assert r.returncode == 0, r.stderr
    r = _run([*dvc, "repro"], dvc_repo)
    assert r.returncode == 0 and "didn't change" in r.stdout + r.stderr


def test_invalid_set_param_fails_naming_key(dvc_repo: Path) -> None:
    r = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "model.fusion=bogus"], dvc_repo)
    assert r.returncode != 0
    assert "model.fusion: 'bogus' is not allowed" in r.stdout + r.stderr
