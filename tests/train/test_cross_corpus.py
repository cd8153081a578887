"""Any checkpoint on any corpus: a model trained on real GRID clips (the real stages, a tiny
model) evaluated on a CREMA-D-layout fixture made from real clips (VideoFlash .flv, one with
AudioWAV/) and on ../shared/unseen (video and speech in separate files), with one command
(`kfusion evaluate`) and with one params change (evaluate.sets, through `dvc repro`), never
touching the training pipeline's outputs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests" / "data"))
from data_helpers import ffmpeg, small_grid  # noqa: E402
from test_features import tiny_wav2vec2_dir  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
TINY_MODEL = {"d_model": 16, "n_heads": 2, "ff_mult": 1, "lstm_hidden": 8, "fusion_channels": 8,
              "kan": {"hidden": [8], "grid_size": 3}}


def _need(p: Path) -> Path:
    if not p.is_dir():
        pytest.skip(f"{p} is absent")
    return p


def _env() -> dict:
    # dvc.yaml's commands run `python` from PATH: this interpreter's
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def grid_workspace(tmp_path_factory) -> Path:
    """A workspace whose pipeline ran on 6 real GRID clips (clip split, seed 3: 3 train,
    1 val, 2 test) up to a trained checkpoint and its own evaluation."""
    _need(SHARED / "grid")
    ws = tmp_path_factory.mktemp("grid_ws")
    root = small_grid(ws / "corpus", n=6)
    params = {"device": "cpu", "preprocess": {"workers": 1},
              "index": {"corpora": ["grid"], "roots": {"grid": str(root)}},
              "split": {"by": "clip", "test_fraction": 0.3, "val_fraction": 0.2, "seed": 3},
              "features": {"wav2vec2": str(tiny_wav2vec2_dir(ws / "w2v"))},
              "model": TINY_MODEL,
              "train": {"epochs": 1, "batch_size": 16, "emotion_classifier_epochs": 2}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("index", "audio", "features", "landmarks", "windows", "train", "evaluate"):
        r = subprocess.run([sys.executable, "-m", f"kfusion.stages.{stage}"], cwd=ws, env=_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{stage}: {r.stderr[-2000:]}"
    return ws


@pytest.fixture(scope="module")
def cremad_fixture(tmp_path_factory) -> Path:
    """CREMA-D's layout from real clips: FLV1 + MP3 in VideoFlash/, one clip also in AudioWAV/."""
    rc = _need(SHARED / "realclips")
    root = tmp_path_factory.mktemp("cremad")
    (root / "VideoFlash").mkdir()
    (root / "AudioWAV").mkdir()
    for name, src in {"1001_DFA_ANG_HI": "other/00001.mp4", "1001_IEO_HAP_MD": "other/bbaf2n.mpg",
                      "1002_TIE_NEU_XX": "other/lbax4n.mpg"}.items():
        ffmpeg("-i", str(rc / src), "-c:v", "flv1", "-q:v", "3", "-c:a", "libmp3lame", "-ar", "44100",
               str(root / "VideoFlash" / f"{name}.flv"))
    ffmpeg("-i", str(rc / "other/00001.mp4"), "-vn", "-ac", "1", "-ar", "16000",
           str(root / "AudioWAV" / "1001_DFA_ANG_HI.wav"))
    return root


def _kfusion_evaluate(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfusion.cli", "evaluate", "--checkpoint",
                           "models/best.pt", "--workers", "1", *args], cwd=ws, env=_env(),
                          capture_output=True, text=True, timeout=900)


def test_grid_checkpoint_on_cremad_with_one_command(grid_workspace: Path, cremad_fixture: Path):
    ws = grid_workspace
    before = {d: _tree_digest(ws / d) for d in ("metrics", "reports", "models", "dvclive")}
    r = _kfusion_evaluate(ws, "--corpus", "cremad", "--root", str(cremad_fixture))
    assert r.returncode == 0, r.stderr[-3000:]
    out = ws / "eval" / "cremad"
    report = json.loads((out / "report.json").read_text())
    assert report["provenance"]["set"] == "cremad" and report["provenance"]["corpora"] == ["cremad"]
    systems = report["systems"]
    assert set(systems) == {"model", "audio_swap", "identity", "mean_motion"}
    assert systems["model"]["windows"] > 0
    emotions = set(report["corpora"]["cremad"]["per_emotion"])
    assert emotions == {"angry", "happy", "neutral"}          # CREMA-D's codes, mapped
    m = json.loads((out / "metrics.json").read_text())
    assert m["M-LD"] == systems["model"]["M-LD"] and m["swap_M-LD"] == systems["audio_swap"]["M-LD"]
    # the training pipeline's outputs are untouched
    assert {d: _tree_digest(ws / d) for d in before} == before
    # a second evaluation reuses the preprocessed corpus and gives the same numbers
    r2 = _kfusion_evaluate(ws, "--corpus", "cremad", "--root", str(cremad_fixture), "--out", "eval/again")
    assert r2.returncode == 0 and "reused" in r2.stderr
    assert json.loads((ws / "eval/again/report.json").read_text())["systems"] == systems


def test_grid_checkpoint_on_unseen_speakers(grid_workspace: Path, tmp_path: Path):
    unseen = _need(SHARED / "unseen")
    root = tmp_path / "unseen"      # two of the five speakers keep the test short
    for spk in ("li", "noem"):
        shutil.copytree(unseen / spk, root / spk)
    r = _kfusion_evaluate(grid_workspace, "--corpus", "folder", "--root", str(root), "--name",
                          "unseen2", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["systems"]["model"]["windows"] > 50
    assert report["provenance"]["identity"] == "other_clip"
    cache = next((grid_workspace / "data/cache/evaluate").glob("unseen2-*"))
    w = json.loads((cache / "reports/sets/unseen2/windows.json").read_text())
    # noem has one clip: its identity is a frame outside its windows; li's come from li's other clips
    assert w["identity_fallbacks"] == 1 and w["processed"] == 4
    assert "differs from the paper:" in r.stdout and "audio_swap" in r.stdout


def test_one_params_change_adds_a_test_set_to_the_dag(grid_workspace: Path, cremad_fixture: Path,
                                                     tmp_path: Path):
    """evaluate.sets in params.yaml: `dvc repro` runs the set's stages (dvc.yaml's foreach)."""
    ws = tmp_path / "repo"
    shutil.copytree(grid_workspace, ws, ignore=shutil.ignore_patterns("eval", "cache"))
    for code in ("stages", "pipeline", "model", "kfusion"):
        shutil.copytree(REPO / code, ws / code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")
    from kfusion.config import load, to_dict
    params = to_dict(load(ws / "params.yaml"))   # every key, as the repository's params.yaml
    params["evaluate"]["sets"] = {"cremad": {"corpus": "cremad", "root": str(cremad_fixture)}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    before = _tree_digest(ws / "metrics")
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=ws, check=True)
    # the config stage (every stage's resolved section) and the set's chain alone: the
    # training pipeline is already in place
    stages = ["config", *(f"{s}_set@cremad" for s in ("index", "landmarks", "audio", "features",
                                                       "windows", "evaluate"))]
    for st in stages:
        r = subprocess.run([*dvc, "repro", "--single-item", st], cwd=ws, env=_env(),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{st}: {r.stdout[-1500:]}{r.stderr[-1500:]}"
    m = json.loads((ws / "metrics/evaluate/cremad.json").read_text())
    assert m["windows"] > 0
    assert json.loads((ws / "reports/sets/cremad/evaluate.json").read_text())["provenance"]["set"] == "cremad"
    after = _tree_digest(ws / "metrics")
    assert {k: v for k, v in after.items() if k != "evaluate/cremad.json"} == before
