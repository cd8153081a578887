"""Small pieces of the demo generator against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from kfusion.pipeline.demo import sync, visemes
from kfusion.pipeline.media import warp
from kfusion.pipeline.demo.groundtruth import crop_box, to_crop


def test_normalise_strips_stress_and_variants():
    assert visemes.normalise("'3:") == "3:"
    assert visemes.normalise("@2") == "@"
    assert visemes.normalise(",eI") == "eI"
    assert visemes.normalise("_:") == "_"
    assert visemes.viseme_of("m").close == 1.0
    assert isinstance(visemes.viseme_of("'aI"), tuple)       # diphthong: two targets


def test_timeline_adds_lead_in_rest_and_ends_at_last_sample():
    tl = visemes.timeline([("p", 0), ("a", 2205)], n_samples=6615, sample_rate_hz=22050,
                          pad_samples=2205)
    assert tl == [("_", 0.0, 0.1), ("p", 0.1, 0.2), ("a", 0.2, 0.3)]


def test_articulation_closes_on_bilabial_and_opens_on_vowel():
    tl = [("_", 0.0, 0.2), ("a", 0.2, 0.4), ("m", 0.4, 0.48), ("a", 0.48, 0.7), ("_", 0.7, 1.0)]
    t = np.array([0.05, 0.3, 0.44, 0.6])
    art = visemes.articulation(tl, t, lead_s=0.0)
    opening, close = art[:, 0], art[:, 3]
    assert opening[0] < 0.05 and opening[1] > 0.7 and opening[3] > 0.7
    assert close[2] > 0.6   # enough to seal the lips (mouth() seals at 0.6)
    rest = np.zeros((68, 2))
    rest[48], rest[54] = (100, 150), (150, 150)
    gap = visemes.inner_gap(visemes.mouth(rest, art))
    assert gap[2] == 0.0 and gap[1] > 10.0


def test_visual_lead_shifts_tracks_earlier():
    tl = [("_", 0.0, 0.3), ("a", 0.3, 0.6), ("_", 0.6, 1.0)]
    t = np.arange(30) / 30
    a0 = visemes.articulation(tl, t, lead_s=0.0)[:, 0]
    a1 = visemes.articulation(tl, t, lead_s=0.1)[:, 0]
    # the led track at t equals the unled one at t + 0.1 s (3 frames)
    assert np.allclose(a1[:-3], a0[3:], atol=1e-6)


def test_energy_envelope_of_constant_signal():
    x = np.full(22050, 1000, np.int16)
    e = visemes.energy_envelope(x, 22050, 30, 30)
    assert np.allclose(e, 1000.0)


def test_crop_box_and_mapping():
    tracks = np.zeros((2, 68, 2), np.float32)
    tracks[:, :, 0] = np.linspace(100, 150, 68)   # box 50 wide, 20 high
    tracks[:, :, 1] = np.linspace(60, 80, 68)
    box = crop_box(tracks, 1.6)
    assert np.allclose(box, [125 - 40, 70 - 40, 80])
    crop = to_crop(tracks, box)
    assert np.allclose(crop[0, 0], [(100 - 85) * 256 / 80, (60 - 30) * 256 / 80])


def test_warper_identity_reproduces_photo():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    pts = np.concatenate([rng.uniform(10, 54, (12, 2)), warp.border_points(64)])
    out = warp.Warper(img, pts, pts).frame(pts)
    assert np.array_equal(out, img)


def test_warper_moves_texture_with_points():
    img = np.zeros((64, 64, 3), np.uint8)
    img[30:34, 30:34] = 255                                   # a bright square at (31.5, 31.5)
    border = warp.border_points(64)
    src = np.concatenate([[[31.5, 31.5], [20, 20], [44, 20], [44, 44], [20, 44]], border])
    dst = src.copy()
    dst[:5] += [4.0, 0.0]                                     # move the inner points 4 px right
    out = warp.Warper(img, src, src).frame(dst)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert xs.mean() == pytest.approx(35.5, abs=0.6) and ys.mean() == pytest.approx(31.5, abs=0.6)


def test_lagged_correlation_finds_known_lead():
    rng = np.random.default_rng(1)
    e = np.convolve(rng.normal(size=400), np.ones(5) / 5, mode="same")
    mouth = np.roll(e, -2)                                     # mouth leads energy by 2 frames
    energy_db = 20 * np.log10(np.exp(e))                       # monotone in e
    corr = sync.lagged_correlation([mouth[:-5]], [energy_db[:-5]])
    assert sync.peak_lag(corr)[0] == 2 and corr[2] > 0.99
