"""NaN or inf in the windows that train and evaluate read: the stage stops with one line naming
the clips (exit 2), never a traceback (issue 14, item 1: one NaN window made the KAN raise
`index -9223372036854775807 is out of bounds`, naming no clip)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kfusion.pipeline.training.dataset import WindowDataset
from train_helpers import tiny_params  # tests/train is on sys.path (no __init__.py)

REPO = Path(__file__).resolve().parents[2]


def _stage(name: str, tmp: Path) -> subprocess.CompletedProcess:
    params = tmp / "params.yaml"
    if not params.exists():
        params.write_text(yaml.safe_dump(tiny_params(tmp, epochs=1)))
    return subprocess.run([sys.executable, "-m", f"kfusion.stages.{name}", "--params", str(params)],
                          cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def _poison(split_dir: Path, array: str, row: int, value: float) -> str:
    a = np.load(split_dir / f"{array}.npy")
    a[row].flat[17] = value
    np.save(split_dir / f"{array}.npy", a)
    return WindowDataset(split_dir).clip_ids[row]


@pytest.mark.slow
@pytest.mark.parametrize("array,value", [("mel", np.nan), ("w2v", np.inf)])
def test_train_stops_with_one_line_naming_the_clip(windows: Path, tmp_path: Path, array, value):
    bad = _poison(windows / "train", array, 5, value)
    r = _stage("train", tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and err[-1].startswith(
        "error: train: non-finite inputs in training, epoch 1, step ")
    assert f"1 clip(s) with NaN or infinite values: {bad} ({array})." in err[-1]
    assert not (tmp_path / "models" / "last.pt").exists()


@pytest.mark.slow
def test_validation_stops_with_one_line_naming_the_clip(windows: Path, tmp_path: Path):
    bad = _poison(windows / "val", "identity", 3, np.nan)
    r = _stage("train", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"error: train: non-finite inputs in validation, step 0: 1 clip(s) with NaN or infinite "
        f"values: {bad} (identity).")


@pytest.mark.slow
def test_evaluate_stops_with_one_line_naming_the_clips(windows: Path, tmp_path: Path):
    assert _stage("train", tmp_path).returncode == 0
    bad = sorted({_poison(windows / "test", "w2v", 2, np.nan),
                  _poison(windows / "test", "mel", 9, -np.inf)})
    r = _stage("evaluate", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: evaluate: non-finite inputs in evaluation of "
                           f"{tmp_path / 'windows' / 'test'}, batch 0: 2 clip(s)")
    assert all(c in line for c in bad)
    assert not (tmp_path / "metrics" / "evaluate.json").exists()
