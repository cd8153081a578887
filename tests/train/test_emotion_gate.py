"""`--emotion auto` is allowed only when the emotion head beat chance on held-out windows by
AUTO_MARGIN; the train stage decides and records it in the checkpoint (issue 14, item 6)."""
from pathlib import Path

import numpy as np
import torch

from kfusion.pipeline.training.checkpoint import load_checkpoint
from kfusion.pipeline.training.emotion import AUTO_MARGIN, auto_gate, auto_verdict
from kfusion.pipeline.training.loop import train


def test_gate_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4])         # chance: always "neutral", 4/8
    assert AUTO_MARGIN == 0.10
    no = auto_gate(0.55, labels)["auto"]
    assert (no["chance"], no["held_out_windows"], no["usable"]) == (0.5, 8, False)
    assert auto_gate(0.625, labels)["auto"]["usable"] is True   # 0.625 >= 0.5 + 0.1
    empty = auto_gate(None, torch.zeros(0, dtype=torch.long))["auto"]
    assert empty["usable"] is False and empty["held_out_windows"] == 0
    ok, why = auto_verdict({"report": {"auto": no}})
    assert not ok and why == ("its emotion classifier scored 55.0% on 8 held-out val windows, "
                              "where chance is 50.0% and auto needs 60.0%")
    assert auto_verdict(None)[0] is False and "no emotion classifier" in auto_verdict(None)[1]
    assert "records no held-out test" in auto_verdict({"report": {}})[1]


def _gate(tiny_cfg, windows: Path, out: Path) -> dict:
    r = train(tiny_cfg(epochs=1, emotion_classifier_epochs=100, emotion_classifier_hidden=0),
              windows, out)
    return load_checkpoint(r.best)["emotion_classifier"]["report"]["auto"]


def _emotion_in_w2v(windows: Path) -> None:
    """Every split's content encoder frames carry the window's emotion one-hot in dims 0-7 (plus noise)
    and nothing else carries anything: a head can learn that on the training speakers and keep it on val."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        e = np.load(windows / split / "emotion.npy")
        n_tokens, width = np.load(windows / split / "w2v.npy", mmap_mode="r").shape[1:]
        w2v = np.zeros((len(e), n_tokens, width), np.float32)
        w2v[:, :, :8] = np.eye(8)[e][:, None] + rng.normal(0, 0.05, (len(e), n_tokens, 8))
        np.save(windows / split / "w2v.npy", w2v.astype(np.float16))
        # the log-mel says nothing (its pooled noise would let a 48-window head overfit)
        mel = np.load(windows / split / "mel.npy")
        np.save(windows / split / "mel.npy", np.zeros_like(mel))


def test_a_head_that_learned_the_emotions_is_trusted(tiny_cfg, windows: Path, tmp_path):
    _emotion_in_w2v(windows)
    gate = _gate(tiny_cfg, windows, tmp_path / "m")
    assert gate["held_out_split"] == "val" and gate["held_out_windows"] == 16
    assert gate["usable"] and gate["held_out_accuracy"] >= gate["chance"] + AUTO_MARGIN


def test_a_head_at_chance_is_not_trusted(tiny_cfg, windows: Path, tmp_path):
    # the same windows, the training labels shuffled: nothing holds on the val speakers
    _emotion_in_w2v(windows)
    y = np.load(windows / "train" / "emotion.npy")
    np.save(windows / "train" / "emotion.npy", np.random.default_rng(3).permutation(y))
    gate = _gate(tiny_cfg, windows, tmp_path / "m")
    assert not gate["usable"] and gate["held_out_accuracy"] < gate["chance"] + AUTO_MARGIN
