"""`dvc repro` trains with 2 processes (torchrun, gloo on CPU) when train.nproc_per_node is 2:
the loss falls, a run killed mid-way resumes, and the checkpoint is byte for byte the one a
2-process torchrun started by hand with the same params writes."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from kfusion.config import default_dict
from scale_helpers import REPO, dvc, dvc_project, run, write_params

sys.path.insert(0, str(REPO / "tests" / "train"))
from train_helpers import tiny_params, write_synthetic_windows  # noqa: E402

pytestmark = pytest.mark.slow


def _params() -> dict:
    """Tiny model, 4 epochs, 2 processes; every path relative, as in the real project."""
    p = tiny_params(Path("."), epochs=4, lr=2e-3, batch_size=8, emotion_classifier_epochs=3,
                    nproc_per_node=2)
    p["windows"]["out"] = "data/windows"
    p["train"].update(out="models", resume_dir="data/.resume/train")
    del p["evaluate"]
    p["preset"] = default_dict()["preset"]   # a param of the train stage in dvc.yaml
    return p


def _windows(folder: Path) -> None:
    write_synthetic_windows(folder / "data/windows", n_train=192, n_val=16, n_test=16,
                            n_mels=_params()["features"]["n_mels"])


def _kill_after_first_epoch(folder: Path) -> None:
    """`dvc repro` started and SIGKILLed with every process under it (torchrun starts each
    training process in its own session, so a process group is not enough) once the first
    epoch's resume state exists: what a crashed machine leaves."""
    proc = subprocess.Popen(dvc("repro"), cwd=folder, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    state, deadline = folder / "data/.resume/train/state.pt", time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "the run ended before its first epoch was saved"


def test_dvc_repro_trains_two_processes_resumes_and_matches_a_hand_run(tmp_path: Path):
    repo = dvc_project(tmp_path / "repo", _params(), stages=("config", "train"))   # train after config
    _windows(repo)
    _kill_after_first_epoch(repo)
    r = run(dvc("repro"), repo)
    assert "resuming from" in r.stderr + r.stdout, r.stderr[-3000:]
    print(next(ln for ln in r.stderr.splitlines() if "resuming from" in ln))

    hand = tmp_path / "hand"
    hand.mkdir()
    write_params(hand, _params())
    _windows(hand)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "kfusion.stages.train", "--params", "params.yaml"], hand)

    state = torch.load(repo / "models/best.pt", map_location="cpu", weights_only=False)
    losses = [h["train/loss"] for h in state["history"]]
    assert state["world_size"] == 2 and len(losses) == 4 and losses[-1] < losses[0], losses
    for name in ("best.pt", "last.pt"):
        assert (repo / "models" / name).read_bytes() == (hand / "models" / name).read_bytes(), name
    # train.json: the same bytes; that this run was resumed is in the untracked run log
    assert (repo / "models/train.json").read_bytes() == (hand / "models/train.json").read_bytes()
    logs = [json.loads((f / "reports/train.log.json").read_text()) for f in (repo, hand)]
    assert [log["resumed_from_epoch"] for log in logs] == [1, 0]
    assert "didn't change" in run(dvc("repro"), repo).stdout   # recorded: nothing to re-run
