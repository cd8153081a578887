"""Training-time augmentation (train.augment): the mirror's left/right permutation and
geometry against hand-computed points, the similarity transform, the masks, determinism per
step, and a training run with every switch on that resumes exactly."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kfusion.config import AugmentConfig, from_dict
from kfusion.pipeline.io import StageError
from kfusion.pipeline.training.augment import (MIRROR, augment_batch, enabled, mirror,
                                               settings_on, similarity, step_generator,
                                               swap_audio)
from kfusion.pipeline.training.checkpoint import load_checkpoint
from kfusion.pipeline.training.loop import train
from test_training import _Interrupt, _states_equal  # noqa: F401  (tests/train helpers)
from train_helpers import tiny_params

CROP = 256
C = (CROP - 1) / 2


def test_records_name_the_switches_that_are_on_with_their_settings():
    """provenance.augment: {} by default; each switch that is on with the settings it reads."""
    assert settings_on(AugmentConfig()) == {} and not enabled(AugmentConfig())
    for switch, value in (("mirror_p", 0.5), ("similarity_p", 0.5), ("time_masks", 1),
                          ("channel_masks", 1)):   # each alone turns augmentation on
        assert enabled(AugmentConfig(**{switch: value})), switch
    on = AugmentConfig(similarity_p=0.25, channel_masks=3, mel_band=4)
    assert settings_on(on) == {"similarity_p": 0.25, "rotate_deg": 5.0, "scale": 0.05,
                               "shift_px": 4.0, "channel_masks": 3, "mel_band": 4,
                               "encoder_fraction": 0.1}
    assert enabled(AugmentConfig(audio_p=0.5))
    assert settings_on(AugmentConfig(audio_p=0.5), ["pitch+2", "noise20"]) == \
        {"audio_p": 0.5, "audio_variants": ["pitch+2", "noise20"]}
    assert settings_on(AugmentConfig(), ["pitch+2"]) == {}   # copies made but not drawn from


def test_mirror_permutation_pairs_left_and_right():
    assert [MIRROR[i] for i in MIRROR] == list(range(68))          # an involution
    pairs = {0: 16, 7: 9, 17: 26, 21: 22, 31: 35, 36: 45, 39: 42, 40: 47, 48: 54, 50: 52,
             55: 59, 60: 64, 61: 63, 65: 67}
    for a, b in pairs.items():
        assert MIRROR[a] == b and MIRROR[b] == a
    for fixed in (8, 27, 30, 33, 51, 57, 62, 66):
        assert MIRROR[fixed] == fixed


def test_mirror_flips_x_about_the_crop_centre_and_renames_the_points():
    pts = torch.arange(136, dtype=torch.float32).reshape(68, 2)
    m = mirror(pts, C)
    assert m[36].tolist() == [2 * C - pts[45, 0].item(), pts[45, 1].item()]   # hand-computed
    assert m[8].tolist() == [2 * C - 16.0, 17.0]
    assert torch.equal(mirror(m, C), pts)


def test_similarity_rotates_scales_about_the_centre_then_shifts():
    pts = torch.tensor([[[C + 1.0, C], [C, C + 2.0]]])                   # (1, 2, 2)
    out = similarity(pts, torch.tensor([math.pi / 2]), torch.tensor([2.0]),
                     torch.tensor([[3.0, 4.0]]), C)
    # (1, 0) -> rotated 90 deg -> (0, 1) -> x2 -> (0, 2) -> + (3, 4); (0, 2) -> (-2, 0) -> (-4, 0)
    assert torch.allclose(out[0], torch.tensor([[C + 3.0, C + 6.0], [C - 1.0, C + 4.0]]), atol=1e-4)


def _batch(B: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    ident = 100 + 50 * torch.rand(B, 68, 2, generator=g)
    return {"identity": ident, "target": ident[:, None] + torch.rand(B, 30, 68, 2, generator=g),
            "mel": torch.randn(B, 100, 80, generator=g), "w2v": torch.randn(B, 49, 384, generator=g),
            "emotion": torch.zeros(B, dtype=torch.long)}


def test_geometric_switches_move_identity_and_target_together():
    b = _batch()
    out = augment_batch(b, AugmentConfig(mirror_p=1.0), CROP, 100.0, step_generator(1, 0, 0))
    assert torch.equal(out["identity"], mirror(b["identity"], C))
    assert torch.equal(out["target"], mirror(b["target"], C))
    assert torch.equal(out["mel"], b["mel"])                            # the speech is unchanged
    out = augment_batch(b, AugmentConfig(similarity_p=1.0, rotate_deg=10, scale=0.1, shift_px=5),
                        CROP, 100.0, step_generator(1, 0, 0))
    # a similarity keeps shapes: every distance of a window scales by that window's one factor,
    # the same for its identity and its target frames
    for i in range(len(out["target"])):
        d0, d1 = torch.cdist(b["target"][i, 0], b["target"][i, 0]), torch.cdist(
            out["target"][i, 0], out["target"][i, 0])
        e0, e1 = torch.cdist(b["identity"][i], b["identity"][i]), torch.cdist(
            out["identity"][i], out["identity"][i])
        ratio, ratio_id = (d1 / d0)[d0 > 1], (e1 / e0)[e0 > 1]
        assert ratio.std() < 1e-4 and abs(ratio.mean() - ratio_id.mean()) < 1e-4
        assert 0.9 - 1e-4 <= ratio.mean() <= 1.1 + 1e-4
    assert not torch.allclose(out["target"], b["target"])


def test_masks_set_spans_and_channels_to_the_window_mean():
    b = _batch()
    out = augment_batch(b, AugmentConfig(time_masks=2, time_mask_s=0.2), CROP, 100.0,
                        step_generator(1, 0, 0))
    changed = (out["mel"] != b["mel"]).any(-1)                          # (B, 100) masked frames
    assert changed.any(1).all() and changed.sum(1).max() <= 40          # <= 2 spans of 0.2 s
    m = b["mel"].mean(1, keepdim=True).expand_as(b["mel"])
    assert torch.allclose(out["mel"][changed], m[changed])
    enc_changed = (out["w2v"] != b["w2v"]).any(-1)                      # the same instants at 50 Hz
    for i in range(len(changed)):
        t_mel = torch.nonzero(changed[i]).flatten().float() / 100
        t_enc = torch.nonzero(enc_changed[i]).flatten().float() / 50
        assert t_enc.min() >= t_mel.min() - 0.02 and t_enc.max() <= t_mel.max() + 0.02
    out = augment_batch(b, AugmentConfig(channel_masks=1, mel_band=8, encoder_fraction=0.5),
                        CROP, 100.0, step_generator(1, 0, 0))
    dropped = (out["w2v"] != b["w2v"]).any(1).float().mean()            # share of channels
    assert 0.4 < dropped < 0.6 and (out["mel"] != b["mel"]).any(1).sum(1).max() <= 8


def test_draws_are_a_function_of_seed_epoch_and_step():
    b, aug = _batch(), AugmentConfig(mirror_p=0.5, similarity_p=0.5, time_masks=1)
    one = augment_batch(b, aug, CROP, 100.0, step_generator(3, 1, 2))
    two = augment_batch(b, aug, CROP, 100.0, step_generator(3, 1, 2))
    other = augment_batch(b, aug, CROP, 100.0, step_generator(3, 1, 3))
    assert all(torch.equal(one[k], two[k]) for k in ("identity", "target", "mel", "w2v"))
    assert not torch.equal(one["target"], other["target"])


AUG = {"mirror_p": 0.5, "similarity_p": 0.5, "time_masks": 1, "channel_masks": 1}


def test_training_with_augmentation_differs_and_resumes_exactly(tiny_cfg, windows: Path,
                                                                 tmp_path):
    plain = train(tiny_cfg(), windows, tmp_path / "plain")
    straight = train(tiny_cfg(augment=AUG), windows, tmp_path / "a")
    assert straight.history[0]["train/loss"] != plain.history[0]["train/loss"]
    cfg_b = tiny_cfg(augment=AUG, resume_dir=str(tmp_path / "resume_b"))
    with pytest.raises(_Interrupt):
        train(cfg_b, windows, tmp_path / "b", interrupt_after_epoch=1)
    resumed = train(cfg_b, windows, tmp_path / "b")
    assert resumed.resumed_from == 1 and resumed.history == straight.history
    assert _states_equal(load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"])
    assert np.isfinite([h["train/loss"] for h in straight.history]).all()


def _variant_reader(calls: list):
    """Variant k's (mel, w2v) of split row r: every value 1000 * (k + 1) + r, to read back."""
    def read(k: int, rows):
        calls.append((k, list(rows)))
        v = torch.tensor([1000.0 * (k + 1) + r for r in rows])
        return v[:, None, None].expand(len(rows), 100, 80), v[:, None, None].expand(len(rows), 49, 384)
    return read


def test_swap_audio_takes_the_drawn_variant_of_the_same_row():
    b = {**_batch(200), "index": torch.arange(500, 700)}
    calls: list = []
    out = swap_audio(b, 0.5, _variant_reader(calls), 3, step_generator(5, 0, 0))
    g = step_generator(5, 0, 0)     # the draws by hand: whether (B), then which (B)
    on, which = torch.rand(200, generator=g) < 0.5, torch.randint(3, (200,), generator=g)
    for i in range(200):
        if on[i]:
            want = 1000.0 * (int(which[i]) + 1) + 500 + i
            assert (out["mel"][i] == want).all() and (out["w2v"][i] == want).all(), i
        else:
            assert torch.equal(out["mel"][i], b["mel"][i]) and torch.equal(out["w2v"][i], b["w2v"][i])
    assert 70 < int(on.sum()) < 130 and sorted(k for k, _ in calls) == [0, 1, 2]   # one read each
    assert torch.equal(out["target"], b["target"]) and torch.equal(out["identity"], b["identity"])
    assert out["mel"] is not b["mel"] and not torch.equal(out["mel"], b["mel"])   # input kept
    none = swap_audio(b, 0.0, _variant_reader(calls := []), 3, step_generator(5, 0, 0))
    assert none is b and calls == []


def _with_variants(windows: Path, names: list[str]) -> None:
    """train/aug/<v>/{mel,w2v}.npy beside the synthetic windows (their features plus noise),
    and the train meta naming them, as the windows stage writes them."""
    import json
    d = windows / "train"
    rng = np.random.default_rng(1)
    for v in names:
        (d / "aug" / v).mkdir(parents=True)
        for a in ("mel", "w2v"):
            x = np.load(d / f"{a}.npy")
            np.save(d / "aug" / v / f"{a}.npy", (x + 0.5 * rng.standard_normal(x.shape)).astype(x.dtype))
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "audio_variants": names}))


def test_training_on_perturbed_speech_differs_and_resumes_exactly(tmp_path, windows: Path):
    def cfg(**train):
        p = tiny_params(tmp_path, augment={"audio_p": 0.5}, **train)
        p["features"]["audio_augment"] = ["pitch+2", "noise20"]
        return from_dict(p, "tiny")
    with pytest.raises(StageError, match="holds no perturbed-speech copies"):
        train(cfg(), windows, tmp_path / "none")      # no copies made: one line, not a KeyError
    _with_variants(windows, ["pitch+2", "noise20"])
    plain = train(from_dict(tiny_params(tmp_path), "tiny"), windows, tmp_path / "plain")
    straight = train(cfg(), windows, tmp_path / "a")
    assert straight.history[0]["train/loss"] != plain.history[0]["train/loss"]
    cfg_b = cfg(resume_dir=str(tmp_path / "resume_b"))
    with pytest.raises(_Interrupt):
        train(cfg_b, windows, tmp_path / "b", interrupt_after_epoch=1)
    resumed = train(cfg_b, windows, tmp_path / "b")
    assert resumed.resumed_from == 1 and resumed.history == straight.history
    assert _states_equal(load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"])
