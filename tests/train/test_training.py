"""The training loop with the real model (shrunk): resume equivalence, non-finite loss,
checkpoint contents, DVCLive logs, the dataset contract."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kfusion.pipeline.training.dataset import NonFiniteInput, WindowDataset, data_fingerprint
from kfusion.pipeline.training.emotion import pooled_windows
from kfusion.pipeline.training.checkpoint import load_checkpoint
from kfusion.pipeline.training.loop import NonFiniteLoss, _Interrupt, train
from torch.utils.data import DataLoader
from train_helpers import whisper_record


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_items_follow_the_model_api(windows: Path):
    ds = WindowDataset(windows / "train")
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["mel"].shape == (4, 100, 16) and batch["mel"].dtype == torch.float32
    # the windows' encoder (their meta: Whisper tiny.en): 50 tokens per 1 s, 384 wide
    assert batch["w2v"].shape == (4, 50, 384) and batch["w2v"].dtype == torch.float32
    assert batch["identity"].shape == (4, 68, 2)
    assert batch["emotion"].dtype == torch.long and batch["target"].shape == (4, 30, 68, 2)
    assert batch["index"].tolist() == [0, 1, 2, 3] and len(batch["clip_id"]) == 4
    raw = np.load(windows / "train" / "landmarks.npy")
    assert torch.equal(batch["target"][2], torch.from_numpy(raw[2]))


def test_training_writes_checkpoints_logs_and_emotion_head(tiny_cfg, windows: Path, tmp_path):
    cfg = tiny_cfg()
    r = train(cfg, windows, tmp_path / "models", live_dir=tmp_path / "live")
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    last, best = load_checkpoint(r.last), load_checkpoint(r.best)
    assert last["epoch"] == 3 and best["epoch"] == min(r.history, key=lambda h: h["val/loss"])["epoch"]
    assert last["encoder"] == whisper_record()   # the windows' encoder record, whole
    assert last["encoder"]["encoder_fallback"] is False and last["encoder"]["feature_dim"] == 384
    assert last["data"]["train"]["windows"] == 48
    assert last["data"] == data_fingerprint(windows)
    assert last["config"]["model"]["d_model"] == 16
    assert "emotion_classifier" in best and "state_dict" in best["emotion_classifier"]
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] == 2 and {"loss", "M-LD", "F-LD"} <= set(live["val"])
    tsv = (tmp_path / "live" / "plots" / "metrics" / "val" / "M-LD.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 3  # header + one row per epoch
    assert not (Path(cfg.train.resume_dir) / "state.pt").exists()  # a finished run cleans up


@pytest.mark.parametrize("dropout_rng", ["torch", "pcg64"])
def test_interrupted_then_resumed_equals_uninterrupted(tiny_cfg, windows: Path, tmp_path,
                                                       dropout_rng):
    cfg = tiny_cfg(dropout_rng=dropout_rng)
    straight = train(cfg, windows, tmp_path / "a", live_dir=tmp_path / "live_a")
    cfg_b = tiny_cfg(resume_dir=str(tmp_path / "resume_b"), dropout_rng=dropout_rng)
    with pytest.raises(_Interrupt):
        train(cfg_b, windows, tmp_path / "b", live_dir=tmp_path / "live_b", interrupt_after_epoch=1)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = train(cfg_b, windows, tmp_path / "b", live_dir=tmp_path / "live_b")
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    # tolerance 0 on CPU: the same floats, epoch by epoch, and the same weights
    assert resumed.history == straight.history
    a, b = load_checkpoint(straight.last), load_checkpoint(resumed.last)
    assert _states_equal(a["model"], b["model"])
    assert (tmp_path / "live_a" / "metrics.json").read_text() == \
        (tmp_path / "live_b" / "metrics.json").read_text()


def test_resume_state_for_other_settings_is_ignored(tiny_cfg, windows: Path, tmp_path):
    with pytest.raises(_Interrupt):
        train(tiny_cfg(), windows, tmp_path / "m", interrupt_after_epoch=1)
    r = train(tiny_cfg(lr=1e-3), windows, tmp_path / "m")  # another recipe: starts over
    assert r.resumed_from == 0 and len(r.history) == 3


def test_nan_in_data_stops_with_the_batch_clip_ids(tiny_cfg, windows: Path, tmp_path):
    lm = np.load(windows / "train" / "landmarks.npy")
    lm[5, 3, 10] = np.nan
    np.save(windows / "train" / "landmarks.npy", lm)
    bad = WindowDataset(windows / "train").clip_ids[5]
    # caught on the batch's inputs, before the model or the loss sees the NaN
    with pytest.raises(NonFiniteInput, match="non-finite inputs in training, epoch 1") as e:
        train(tiny_cfg(), windows, tmp_path / "models")
    assert f"{bad} (target)" in str(e.value)
    assert not (tmp_path / "models" / "last.pt").exists()


def test_nan_loss_later_keeps_the_last_good_checkpoint(tiny_cfg, windows: Path, tmp_path):
    from kfusion.model.build import build_model
    from kfusion.model.loss import landmark_loss
    calls = {"n": 0}

    def loss_that_breaks(pred, target, w, mcfg, **kw):  # finite for epoch 1 (3 steps), then NaN
        calls["n"] += 1
        loss = landmark_loss(pred, target, w, mcfg, **kw)
        return loss * float("nan") if calls["n"] > 4 else loss  # 3 train + 1 val call

    with pytest.raises(NonFiniteLoss):
        train(tiny_cfg(), windows, tmp_path / "models", builders=(build_model, loss_that_breaks))
    assert load_checkpoint(tmp_path / "models" / "last.pt")["epoch"] == 1


def test_max_windows_fits_the_emotion_head_on_those_windows(tiny_cfg, windows: Path, tmp_path):
    # train.max_windows: 10 of 48 windows; the head's features and labels are both those 10
    ds = WindowDataset(windows / "train", max_windows=10)
    x, y = pooled_windows(ds, step=4)
    assert x.shape == (10, 384 + 2 * 16) and y.tolist() == ds.arrays()["emotion"][:10].tolist()
    r = train(tiny_cfg(epochs=1, max_windows=10), windows, tmp_path / "models")
    assert r.emotion_classifier["train_windows"] == 10


def _kan_grid_steps(state: dict) -> list[torch.Tensor]:
    return [v for k, v in state["model"].items() if k.startswith("kfusion.head.") and
            k.endswith("grid_step")]


def test_kan_grid_update_refits_the_grids_and_resumes_exactly(tiny_cfg, windows: Path, tmp_path):
    cfg = tiny_cfg(kan_update_grid_every_epochs=2)
    straight = train(cfg, windows, tmp_path / "a")
    # tiny_params' KAN: grid_size 3 over [-1, 1], so every knot step starts at 2/3
    off = train(tiny_cfg(), windows, tmp_path / "off")
    assert all(torch.allclose(s, torch.full_like(s, 2 / 3)) for s in _kan_grid_steps(
        load_checkpoint(off.last)))
    steps = _kan_grid_steps(load_checkpoint(straight.last))
    assert len(steps) == 2 and not any(torch.allclose(s, torch.full_like(s, 2 / 3)) for s in steps)
    assert straight.history != off.history   # after epoch 2 the refitted head trains on
    assert straight.history[0] == off.history[0]   # epoch 1 is untouched (every 2 epochs)
    # interrupted after the refit of epoch 2, resumed: the same floats as the straight run
    cfg_b = tiny_cfg(kan_update_grid_every_epochs=2, resume_dir=str(tmp_path / "resume_b"))
    with pytest.raises(_Interrupt):
        train(cfg_b, windows, tmp_path / "b", interrupt_after_epoch=2)
    resumed = train(cfg_b, windows, tmp_path / "b")
    assert resumed.resumed_from == 2 and resumed.history == straight.history
    assert _states_equal(load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"])
