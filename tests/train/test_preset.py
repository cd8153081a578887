"""preset: paper (every departure from the paper off, the authors' KAN [68, 512, 68]) builds,
trains a few steps and evaluates, and says so in its records."""
import math

import torch

from kfusion.config import from_dict
from kfusion.pipeline.training.evaluation import EvalOutputs, evaluate
from kfusion.pipeline.training.loop import train
from train_helpers import tiny_params, write_synthetic_windows


def test_paper_preset_builds_trains_and_evaluates(tmp_path):
    windows = write_synthetic_windows(tmp_path / "windows", n_train=16, n_val=8, n_test=8, n_mels=16)
    cfg = from_dict({**tiny_params(tmp_path, epochs=1, emotion_classifier_epochs=0),
                     "preset": "paper"})
    result = train(cfg, windows, tmp_path / "models")
    state = torch.load(result.best, weights_only=False)
    assert state["config"]["preset"] == "paper" and state["config"]["model"]["kan"]["hidden"] == [512]
    head = {k: v.shape for k, v in state["model"].items() if k.startswith("kfusion.head.layers.0.")}
    assert head["kfusion.head.layers.0.base_weight"] == (512, 68)      # the authors' KAN
    r = evaluate(cfg, windows, result.best, outputs=EvalOutputs.under(tmp_path / "eval"))
    assert r["provenance"]["preset"] == "paper" and r["provenance"]["differs_from_paper"] == {}
    assert math.isfinite(r["systems"]["model"]["M-LD"])


def test_the_trainer_uses_velocity_weight(tmp_path):
    """The logged training loss carries the velocity term: same seed and data, a large weight
    raises it; a trainer that ignored train.velocity_weight would log the same loss."""
    windows = write_synthetic_windows(tmp_path / "windows", n_train=16, n_val=8, n_test=8, n_mels=16)
    loss = {}
    for v in (0.0, 50.0):
        cfg = from_dict(tiny_params(tmp_path / f"v{v}", epochs=1, emotion_classifier_epochs=0,
                                    velocity_weight=v))
        loss[v] = train(cfg, windows, tmp_path / f"v{v}" / "models").history[0]["train/loss"]
    assert loss[50.0] > 3 * loss[0.0]
