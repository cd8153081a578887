"""Experiments cannot destroy results (issue 14, item 3), with real DVC in a temp git repo.

The repo holds the project's own `config`, `train` and `evaluate` stages (from dvc.yaml, code
deps left out: the code is installed) over synthetic windows and a tiny model:
- a bad `-S` value fails in the `config` stage, before DVC removes `models/` or `dvclive/train`;
- the train stage's outputs are all cached, so going back to a configuration trained before
  restores it from DVC's run cache: no retraining, the same bytes.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kfusion.config import default_dict
from kfusion.stages import config as config_stage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "train"))
from train_helpers import write_synthetic_windows  # noqa: E402

RESULTS = ("models/best.pt", "models/last.pt", "dvclive/train/metrics.json",
           "dvclive/train/plots/metrics/train/loss.tsv")


def tiny_params() -> dict:
    d = default_dict()
    d.update(device="cpu", seed=7)
    d["features"]["n_mels"] = 16
    d["model"].update(d_model=16, n_heads=2, ff_mult=1, lstm_hidden=8, fusion_channels=8)
    d["model"]["kan"].update(hidden=[8], grid_size=3)
    d["train"].update(epochs=2, batch_size=16, emotion_classifier_epochs=2,
                      emotion_classifier_hidden=8)
    d["evaluate"].update(qualitative_windows=1, qualitative_frames=2)
    return d


def project_stages(names: tuple[str, ...]) -> dict:
    """The project's stages as dvc.yaml declares them, with only their data deps (the code is
    installed here, not copied) and `python` the interpreter running the tests."""
    real = yaml.safe_load((REPO / "dvc.yaml").read_text())
    out = {}
    for name in names:
        st = dict(real["stages"][name])
        st["cmd"] = st["cmd"].replace("python", sys.executable, 1)
        st["deps"] = [d for d in st.get("deps", []) if d == "models" or
                      str(d).startswith(("data/config/", "data/windows"))]
        out[name] = st
    return {"stages": out, "metrics": real["metrics"], "plots": real["plots"]}


def sh(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=600)


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def digests(repo: Path) -> dict[str, str]:
    return {p: hashlib.sha256((repo / p).read_bytes()).hexdigest() for p in RESULTS}


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory) -> Path:
    """A temp git + DVC repo where `dvc repro` has trained and evaluated configuration A."""
    repo = tmp_path_factory.mktemp("exp")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    # `config` last in the file: only the deps on its outputs may order it first
    (repo / "dvc.yaml").write_text(yaml.safe_dump(project_stages(("train", "evaluate", "config")),
                                                  sort_keys=False))
    (repo / ".gitignore").write_text("/data/\n/models/\n")
    write_synthetic_windows(repo / "data/windows", n_train=48, n_val=16, n_test=16, n_mels=16)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):   # DVCLive needs a commit
        assert sh(*cmd, cwd=repo).returncode == 0
    r = dvc("repro", cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "A"]):
        assert sh(*cmd, cwd=repo).returncode == 0
    return repo


@pytest.mark.slow
def test_a_bad_set_value_fails_before_the_model_is_touched(trained_repo: Path):
    repo = trained_repo
    before = digests(repo)
    r = dvc("exp", "run", "-S", "model.fusion=transformer", cwd=repo)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "model.fusion: 'transformer' is not allowed; allowed values: 'kan', 'mlp', 'none'" in out
    assert "Running stage 'train'" not in out and "Running stage 'evaluate'" not in out
    assert digests(repo) == before                  # models/ and dvclive/train untouched
    # DVC leaves the bad value in params.yaml (docs/training.md says how to go back) ...
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["fusion"] == "transformer"
    assert sh("git", "checkout", "params.yaml", cwd=repo).returncode == 0
    # ... and once it is restored, nothing re-runs: the config files come back from the cache
    r = dvc("repro", cwd=repo)
    assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout
    assert digests(repo) == before


@pytest.mark.slow
def test_going_back_to_a_trained_configuration_restores_it_without_training(trained_repo: Path):
    repo = trained_repo
    a = digests(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["fusion"] = "mlp"                          # configuration B
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = dvc("repro", cwd=repo)
    assert r.returncode == 0 and "Running stage 'train'" in r.stdout, r.stdout + r.stderr
    assert digests(repo)["models/best.pt"] != a["models/best.pt"]
    assert sh("git", "checkout", "params.yaml", cwd=repo).returncode == 0   # back to A
    t0 = time.perf_counter()
    r = dvc("repro", "train", cwd=repo)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Stage 'train' is cached - skipping run, checking out outputs" in r.stdout
    assert "Running stage 'train'" not in r.stdout
    assert digests(repo) == a                                  # A's checkpoints and history
    print(f"\nrestore of configuration A's train stage: {seconds:.1f} s")
    assert seconds < 60


def test_config_stage_writes_one_resolved_file_per_section(tmp_path: Path, monkeypatch):
    """A change to one section rewrites that section's file only; defaults are filled in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"model": {"fusion": "mlp"}}))
    assert config_stage.main(["--params", "p.yaml"]) == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "data/config").iterdir()}
    assert sorted(first) == sorted(["run.yaml", "evaluate_sets.yaml", *(f"{k}.yaml" for k, v in default_dict().items()
                                                  if isinstance(v, dict))])
    model = yaml.safe_load(first["model.yaml"])
    assert model["fusion"] == "mlp" and model["d_model"] == default_dict()["model"]["d_model"]
    assert yaml.safe_load(first["run.yaml"]) == {"seed": 1234, "device": "auto", "preset": "ours",
                                                 "reports": "reports"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"model": {"fusion": "none"}}))
    assert config_stage.main(["--params", "p.yaml"]) == 0
    second = {p.name: p.read_bytes() for p in (tmp_path / "data/config").iterdir()}
    assert [k for k in first if first[k] != second[k]] == ["model.yaml"]


def test_config_stage_rejects_a_bad_value_with_one_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"model": {"fusion": "transformer"}}))
    assert config_stage.main(["--params", "p.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config: p.yaml: model.fusion: 'transformer' is not allowed; allowed "
                   "values: 'kan', 'mlp', 'none'"]
    assert not (tmp_path / "data/config").exists()
