"""The ablation runner: seeds, mean ± sd, a paired bootstrap over test clips, the table; and
end to end on a tiny DVC project (real train and evaluate stages, 2 rows x 2 seeds)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kfusion.pipeline.training.bootstrap import clip_means, mean_over_seeds, paired_bootstrap

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("ablations", REPO / "scripts" / "ablations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_bootstrap_constant_shift_and_pairing():
    a = {"c1": 3.0, "c2": 5.0, "c3": 4.0}
    d = paired_bootstrap(a, {c: v - 0.5 for c, v in a.items()})
    assert (d.mean, d.low, d.high, d.clips, d.significant) == (0.5, 0.5, 0.5, 3, True)
    # clip-to-clip spread is paired away: a per-clip offset common to both changes nothing
    rng = np.random.default_rng(1)
    base = {f"c{i}": float(v) for i, v in enumerate(rng.normal(0, 1, 50))}
    other = {c: v + float(rng.normal(0.1, 0.05)) for c, v in base.items()}
    shifted = {c: v + 100.0 * i for i, (c, v) in enumerate(base.items())}
    shifted_other = {c: other[c] + 100.0 * i for i, c in enumerate(base)}
    p1, p2 = paired_bootstrap(other, base), paired_bootstrap(shifted_other, shifted)
    assert (p1.low, p1.high) == pytest.approx((p2.low, p2.high), abs=1e-9)
    assert p1.significant and 0.07 < p1.low < 0.1 < p1.high < 0.13
    # only the clips both have; none in common: NaN, never significant
    assert paired_bootstrap({"x": 1.0, "y": 2.0}, {"y": 1.0, "z": 0.0}).clips == 1
    assert not paired_bootstrap({"x": 1.0}, {"y": 1.0}).significant


def test_paired_bootstrap_interval_width_matches_the_normal_theory():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, 400)
    a = {f"c{i}": float(v) for i, v in enumerate(d)}
    r = paired_bootstrap(a, {c: 0.0 for c in a}, n_boot=4000)
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert r.mean == pytest.approx(d.mean())
    assert r.high - r.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert r.low < 0.3 < r.high


def test_clip_means_and_seed_means():
    m = clip_means(np.array([1.0, 3.0, np.nan, 4.0]), np.array(["a", "a", "b", "c"]))
    assert m == {"a": 2.0, "c": 4.0}
    assert mean_over_seeds([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}


def _report(seed: int, clips: dict[str, float], swap: float) -> dict:
    """An evaluation report as evaluate() writes it, the model's M-LD per clip given."""
    ids = sorted(clips)
    per = {m: [clips[c] + (0.1 if m != "M-LD" else 0.0) for c in ids]
           for m in ("M-LD", "M-LVD", "F-LD", "F-LVD", "mouth_r")}
    model = {m: float(np.mean(v)) for m, v in per.items()}
    return {"provenance": {"seed": seed, "differs_from_paper": {"model.mel_norm": "window"}},
            "systems": {"model": {"windows": 8, **model},
                        "audio_swap": {"windows": 8, **{m: v + swap for m, v in model.items()}},
                        "identity": {"windows": 8, "M-LD": 9.0, "M-LVD": 1.0, "F-LD": 5.0,
                                     "F-LVD": 1.0, "mouth_r": None}},
            "per_clip": {"clip_ids": ids, "model": per}}


def test_summary_mean_sd_over_seeds_and_proposed_minus_row(tmp_path, monkeypatch):
    ab = _load()
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "metrics/ablations/demo"
    runs = {("proposed", 1): {"a": 2.0, "b": 3.0, "c": 4.0}, ("proposed", 2): {"a": 2.2, "b": 3.2, "c": 4.2},
            ("wo-lstm", 1): {"a": 2.5, "b": 3.5, "c": 4.5}, ("wo-lstm", 2): {"a": 2.7, "b": 3.7, "c": 4.7},
            ("repl-mlp", 1): {"a": 1.0, "b": 4.0, "c": 4.0}}
    for (slug, seed), clips in runs.items():
        d = root / slug / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "test.json").write_text(json.dumps(_report(seed, clips, swap=0.5)))
    text = ab.write_summary("demo")
    s = json.loads((root / "summary.json").read_text())
    wo = s["rows"]["wo-lstm"]["test"]
    assert wo["seeds"] == [1, 2]
    assert wo["model"]["M-LD"]["mean"] == pytest.approx(3.6)
    assert wo["model"]["M-LD"]["sd"] == pytest.approx(statistics.stdev([3.5, 3.7]))
    # Proposed is 0.5 px better on every clip, in both seeds: the interval is [-0.5, -0.5]
    diff = wo["proposed_minus_row"]["M-LD"]
    assert (diff["mean"], diff["ci_low"], diff["ci_high"], diff["significant"]) == \
        pytest.approx((-0.5, -0.5, -0.5, True))
    # repl MLP: per clip +1.1, -0.9, +0.1 (seed-averaged Proposed minus it): not significant
    mlp = s["rows"]["repl-mlp"]["test"]["proposed_minus_row"]["M-LD"]
    assert mlp["mean"] == pytest.approx(0.1) and not mlp["significant"]
    assert mlp["ci_low"] < 0 < mlp["ci_high"]
    assert "proposed_minus_row" not in s["rows"]["proposed"]["test"]
    lines = text.splitlines()
    assert "| w/o LSTM | 3.600 ± 0.141 |" in text and "| -0.500 [-0.500, -0.500] * |" in text
    assert "| repl MLP | 3.000 |" in text                      # one seed: no sd
    assert any(ln.startswith("| baseline: identity held still | 9.000 ± 0.000 |") for ln in lines)
    assert "`model.mel_norm=window`" in text and "not in the paper" in text


def test_seed_order_runs_the_base_seed_last():
    assert _load().seed_order(1234, 3) == [1235, 1236, 1234]


@pytest.mark.slow
def test_runner_end_to_end_two_rows_two_seeds(tmp_path, windows):
    """A DVC project with the repository's train and evaluate stages on synthetic windows."""
    from train_helpers import tiny_params
    from kfusion.config import from_dict, to_dict
    repo = tmp_path / "proj"
    repo.mkdir()
    shutil.copytree(windows, repo / "data/windows")
    params = tiny_params(Path("."), epochs=1, emotion_classifier_epochs=0)
    params.update(reports="reports", evaluate={"out": "metrics/evaluate", "plots": "plots/evaluate",
                                               "qualitative_windows": 1, "qualitative_frames": 2})
    params["windows"]["out"] = "data/windows"
    (repo / "params.yaml").write_text(yaml.safe_dump(to_dict(from_dict(params))))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    keep = {k: stages[k] for k in ("train", "evaluate")}
    for st in keep.values():   # the code is the installed package's; data/landmarks is absent
        st["deps"] = [d for d in st["deps"] if d.startswith(("data/windows", "models"))]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": keep}, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, str(REPO / "scripts/ablations.py"), "--rows", "wo-lstm,proposed",
                        "--seeds", "2"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    root = repo / "metrics/ablations/demo"
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/seed-*/*.json")) == [
        "proposed/seed-7/test.json", "proposed/seed-8/test.json",
        "wo-lstm/seed-7/test.json", "wo-lstm/seed-8/test.json"]
    runs = {p.parent.parent.name + p.parent.name: json.loads(p.read_text())["provenance"]
            for p in root.glob("*/seed-*/test.json")}
    assert runs["wo-lstmseed-8"]["lstm"] is False and runs["proposedseed-8"]["lstm"] is True
    assert {v["seed"] for v in runs.values()} == {7, 8}
    s = json.loads((root / "summary.json").read_text())
    assert s["rows"]["wo-lstm"]["test"]["model"]["M-LD"]["n"] == 2
    assert "proposed_minus_row" in s["rows"]["wo-lstm"]["test"]
    # the workspace ends at the default params, with the base seed's Proposed results in place
    assert yaml.safe_load((repo / "params.yaml").read_text())["seed"] == 7
    assert json.loads((repo / "reports/evaluate.json").read_text())["provenance"]["seed"] == 7
