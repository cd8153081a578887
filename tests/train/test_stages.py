"""The train/evaluate stage CLIs end to end in a scratch folder, and a 2-process torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train_helpers import tiny_params  # tests/train is on sys.path (no __init__.py)

REPO = Path(__file__).resolve().parents[2]


def _params(tmp: Path, **train) -> Path:
    p = tiny_params(tmp, **train)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_train_then_evaluate_stage_cli(windows: Path, tmp_path: Path):
    params = _params(tmp_path, epochs=2)
    err = {}
    for stage in ("train", "evaluate"):
        r = subprocess.run([sys.executable, "-m", f"kfusion.stages.{stage}", "--params", str(params)],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        err[stage] = r.stderr
    assert "[train] 2 epochs (resumed after 0)" in err["train"]
    summary = json.loads((tmp_path / "models" / "train.json").read_text())
    assert summary["epochs"] == 2 and "seconds" not in summary   # timing: the untracked log
    assert json.loads((tmp_path / "reports" / "train.log.json").read_text())["seconds"] > 0
    assert (tmp_path / "dvclive" / "train" / "metrics.json").exists()
    model = json.loads((tmp_path / "metrics" / "test.json").read_text())
    report = json.loads((tmp_path / "reports" / "evaluate.json").read_text())
    assert model["windows"] == report["corpora"]["demo"]["vs_reference"]["model"]["windows"] == 16
    assert model["M-LD"] == report["systems"]["model"]["M-LD"]
    assert "[evaluate] test: 16 windows" in err["evaluate"]


def test_missing_windows_is_one_line_and_exit_2(tmp_path: Path):
    params = _params(tmp_path)
    r = subprocess.run([sys.executable, "-m", "kfusion.stages.train", "--params", str(params)],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: train:") and "windows stage" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_two_processes_gloo_loss_falls(windows: Path, tmp_path: Path):
    params = _params(tmp_path, epochs=4, lr=2e-3, emotion_classifier_epochs=0)
    # `python -m torch.distributed.run` is torchrun, found in any venv (the console script
    # is only installed beside the interpreter that pip installed torch into)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                        "kfusion.stages.train", "--params", str(params)],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt_summary = json.loads((tmp_path / "models" / "train.json").read_text())
    import torch
    state = torch.load(tmp_path / "models" / "last.pt", map_location="cpu", weights_only=False)
    assert state["world_size"] == 2
    losses = [h["train/loss"] for h in state["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert ckpt_summary["epochs"] == 4


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_uninterrupted(windows: Path, tmp_path: Path):
    import signal
    import time
    import torch
    run_dir = {}
    for name in ("straight", "killed"):
        d = tmp_path / name
        d.mkdir()
        p = tiny_params(tmp_path, epochs=4, batch_size=4, emotion_classifier_epochs=0)
        p["train"].update(out=str(d / "models"), resume_dir=str(d / "resume"))
        p["reports"] = str(d / "reports")
        (d / "params.yaml").write_text(yaml.safe_dump(p))
        run_dir[name] = d
    cmd = [sys.executable, "-m", "kfusion.stages.train", "--params", "params.yaml"]
    assert subprocess.run(cmd, cwd=run_dir["straight"], env=_env(), timeout=300,
                          capture_output=True).returncode == 0
    d = run_dir["killed"]
    proc = subprocess.Popen(cmd, cwd=d, env=_env(), stderr=subprocess.PIPE, text=True)
    state = d / "resume" / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    r = subprocess.run(cmd, cwd=d, env=_env(), timeout=300, capture_output=True, text=True)
    assert r.returncode == 0 and "resuming from" in r.stderr
    a = torch.load(run_dir["straight"] / "models" / "last.pt", weights_only=False)
    b = torch.load(d / "models" / "last.pt", weights_only=False)
    assert a["history"] == b["history"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((d / "reports" / "train.log.json").read_text())["resumed_from_epoch"] >= 1
