"""Portable outputs and the team remote, on the whole demo DAG (tiny demo, tiny model) in real
git + DVC repositories:

- clone B, in another folder, runs `dvc repro` from scratch and records exactly the output
  hashes clone A committed in dvc.lock (no absolute paths, timings or random names inside
  any DVC-tracked output, checkpoints included);
- the team workflow: A pushes to a local-directory remote, C clones and pulls; in C `dvc status`
  is clean, `dvc repro` re-runs nothing, and `kfusion predict` uses the pulled checkpoint.

"Does not re-run" is tested where it can hold: a fresh clone has no data, so either it runs
the stages (B: and gets the same hashes) or it pulls them (C: and then runs nothing).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from scale_helpers import dvc, dvc_project, lock_hashes, run, tiny_params

pytestmark = pytest.mark.slow

TINY_MODEL = {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
              "ff_mult": 1, "lstm_hidden": 8, "fusion_channels": 8, "dropout": 0.1,
              "kan": {"hidden": [8], "grid_size": 3}}


def _params() -> dict:
    """The tiny demo (2 clips) through every stage: windows split at random (one speaker),
    a tiny model trained 2 epochs on CPU."""
    return tiny_params(device="cpu",
                       split={"by": "window", "test_fraction": 0.2, "val_fraction": 0.2},
                       model=TINY_MODEL,
                       train={"epochs": 2, "batch_size": 4, "emotion_classifier_epochs": 2,
                              "emotion_classifier_hidden": 8},
                       evaluate={"qualitative_windows": 1, "qualitative_frames": 2})


def _outs(folder: Path) -> dict[str, dict[str, str]]:
    """stage -> {out path: md5} from dvc.lock (deps left out: they are the inputs)."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    return {name: {o["path"]: o["md5"] for o in st.get("outs", [])}
            for name, st in lock["stages"].items()}


@pytest.fixture(scope="module")
def clone_a(tmp_path_factory) -> Path:
    """Project A: the DAG reproduced and dvc.lock committed."""
    a = dvc_project(tmp_path_factory.mktemp("teamA") / "kfusion", _params())
    run(dvc("repro"), a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "repro"], a)
    return a


def _clone(a: Path, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", str(a), str(where)], where.parent)
    return where


def test_a_clone_elsewhere_reproduces_the_same_output_hashes(clone_a: Path, tmp_path: Path):
    b = _clone(clone_a, tmp_path / "elsewhere" / "deeper" / "copy")
    run(dvc("repro"), b)
    a_outs, b_outs = _outs(clone_a), _outs(b)
    # every output, the metrics and stage reports included (their timings go to untracked
    # logs), and every dependency
    assert b_outs == a_outs
    assert lock_hashes(b) == lock_hashes(clone_a)
    # the checkpoint in particular (it used to differ: torch.save's archive name)
    assert (b / "models/best.pt").read_bytes() == (clone_a / "models/best.pt").read_bytes()


def test_team_remote_push_pull_then_nothing_to_do_and_predict(clone_a: Path, tmp_path: Path):
    remote = tmp_path / "team-remote"
    run(dvc("remote", "add", "-d", "team", str(remote)), clone_a)
    run(["git", "commit", "-qam", "team remote"], clone_a)
    run(dvc("push"), clone_a)
    c = _clone(clone_a, tmp_path / "teammate" / "kfusion")
    run(dvc("pull"), c)
    status = run(dvc("status", "--json"), c)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    r = run(dvc("repro"), c)
    assert "Running stage" not in r.stdout, r.stdout
    assert (c / "models/best.pt").read_bytes() == (clone_a / "models/best.pt").read_bytes()
    # predict with no --checkpoint: the pipeline's models/best.pt, the pulled one
    video = sorted((c / "data/demo/corpus").glob("*/video/front/*/level_*/*.mp4"))[0]
    rel = video.relative_to(c / "data/demo/corpus").parts
    audio = c / "data/demo/corpus" / rel[0] / "audio" / rel[3] / rel[4] / f"{video.stem}.m4a"
    run([ffmpeg_binary(), "-v", "error", "-i", str(video), "-frames:v", "1", "face.png"], c)
    r = run([sys.executable, "-m", "kfusion.cli", "predict", "--audio", str(audio),
             "--image", "face.png", "--out", "pred.mp4"], c)
    assert "checkpoint: models/best.pt (the pipeline's" in r.stdout, r.stdout
    assert (c / "pred.mp4").stat().st_size > 0
