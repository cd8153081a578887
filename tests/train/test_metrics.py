"""Eq. 13-15 and the authors' reference definitions against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from kfusion.shapes import MOUTH_INDICES
from kfusion.pipeline.training.metrics import (AUTHORS_MOUTH, MetricTable, ReferenceAccumulator,
                                               landmark_distance, landmark_velocity_difference,
                                               mouth_opening, mouth_opening_correlation,
                                               paper_metrics, reference_ld, reference_lvd,
                                               reference_metrics, scale_reference, velocity)


def test_tiny_three_frame_two_point_example():
    # reference: point A still at (0,0); point B moves (0,0) -> (3,0) -> (3,4)
    ref = torch.tensor([[[[0, 0], [0, 0]], [[0, 0], [3, 0]], [[0, 0], [3, 4]]]], dtype=torch.float64)
    pred = torch.zeros_like(ref)
    pred[0, 1, 0] = torch.tensor([0.0, 1.0])  # A jitters up by 1 at t=1
    # distances per (t, point): t0: 0, 0; t1: 1, 3; t2: 0, 5 -> LD = 9 / 6
    assert float(landmark_distance(pred, ref)[0]) == pytest.approx(9 / 6)
    # velocities, ref: A (0,0),(0,0); B (3,0),(0,4). pred: A (0,1),(0,-1); B (0,0),(0,0)
    # |v - v^|: A: 1, 1; B: 3, 4 -> LVD = 9 / 4
    assert float(landmark_velocity_difference(pred, ref)[0]) == pytest.approx(9 / 4)
    assert velocity(ref).shape == (1, 2, 2, 2)


def test_constant_offset_has_ld_but_zero_lvd():
    rng = np.random.default_rng(0)
    ref = torch.from_numpy(rng.normal(128, 10, (3, 30, 68, 2)))
    pred = ref + torch.tensor([3.0, 4.0])  # every point shifted by a 5 px vector
    m = paper_metrics(pred, ref)
    for k in ("M-LD", "F-LD"):
        assert torch.allclose(m[k], torch.full((3,), 5.0, dtype=torch.float64))
    for k in ("M-LVD", "F-LVD"):
        assert torch.allclose(m[k], torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_mouth_subset_only_sees_points_48_to_67():
    ref = torch.zeros(1, 30, 68, 2, dtype=torch.float64)
    pred = ref.clone()
    pred[:, :, 0:48, 0] = 10.0   # only non-mouth points are wrong, by 10 px
    m = paper_metrics(pred, ref)
    assert float(m["M-LD"][0]) == 0.0
    assert float(m["F-LD"][0]) == pytest.approx(10.0 * 48 / 68)
    pred2 = ref.clone()
    pred2[:, 1::2, list(MOUTH_INDICES), 1] = 2.0  # mouth flickers 0,2,0,2...: |dv| = 2 each step
    m2 = paper_metrics(pred2, ref)
    assert float(m2["M-LVD"][0]) == pytest.approx(2.0)
    assert float(m2["F-LVD"][0]) == pytest.approx(2.0 * 20 / 68)
    assert float(m2["M-LD"][0]) == pytest.approx(1.0)  # 15 of 30 frames off by 2


def test_windows_are_averaged_with_equal_weight():
    ref = torch.zeros(2, 30, 68, 2, dtype=torch.float64)
    pred = ref.clone()
    pred[0] += torch.tensor([0.0, 2.0])
    t = MetricTable()
    t.add(pred[:1], ref[:1], corpus=np.array(["a"]), emotion=np.array(["happy"]))
    t.add(pred[1:], ref[1:], corpus=np.array(["b"]), emotion=np.array(["sad"]))
    s = t.summary()
    assert s["windows"] == 2 and s["F-LD"] == pytest.approx(1.0)
    assert t.by("corpus")["a"]["F-LD"] == pytest.approx(2.0)
    assert t.by("emotion")["sad"]["M-LD"] == 0.0


def test_windows_without_ground_truth_are_skipped():
    ref = torch.zeros(2, 30, 68, 2)
    ref[1] = float("nan")
    t = MetricTable()
    t.add(ref + 1.0, ref, corpus=np.array(["demo", "mead"]))
    assert t.count == 1 and t.summary()["F-LD"] == pytest.approx(math.sqrt(2))
    assert list(t.by("corpus")) == ["demo"]


def test_reference_ld_is_one_frobenius_norm_growing_with_batch():
    # every coordinate off by d: one window's Frobenius norm is d * sqrt(30*68*2)
    d = 0.01
    one = torch.zeros(1, 30, 68, 2, dtype=torch.float64)
    for b in (1, 4, 16):
        x = one.expand(b, -1, -1, -1)
        assert float(reference_ld(x + d, x)) == pytest.approx(d * math.sqrt(b * 30 * 68 * 2))
    # the same per-window error, batch 16 vs 1: 4x larger "LD"; Eq. 14 does not change
    x16 = one.expand(16, -1, -1, -1)
    r16 = reference_metrics(x16 + 1.87, x16)["ref F-LD"]
    r1 = reference_metrics(one + 1.87, one)["ref F-LD"]
    assert r16 / r1 == pytest.approx(4.0)
    assert float(landmark_distance(x16 + 1.87, x16).mean()) == pytest.approx(
        float(landmark_distance(one + 1.87, one).mean()))


def test_reference_scaling_and_lvd_is_within_frame():
    # 1.87 px = 0.01 scaled unit with bounds 56..243
    one = torch.zeros(1, 30, 68, 2, dtype=torch.float64)
    assert reference_metrics(one + 1.87, one)["ref F-LD"] == pytest.approx(0.01 * math.sqrt(4080))
    # a constant shift changes no within-frame difference: reference "LVD" is 0 ...
    assert float(reference_lvd(one + 5.0, one)) == 0.0
    # ... while a still prediction of a moving target has zero reference "LVD" if the shape
    # is rigid, though Eq. 15 sees the motion
    ref = torch.zeros(1, 30, 68, 2, dtype=torch.float64)
    ref += torch.arange(30, dtype=torch.float64)[None, :, None, None]  # whole face translates
    still = ref[:, :1].expand_as(ref)
    assert float(reference_lvd(still, ref)) == 0.0
    assert float(landmark_velocity_difference(still, ref)[0]) == pytest.approx(math.sqrt(2))
    # hand value: one point 1 moved by +2 in x at one frame -> within-frame diff changes by 2
    # for the pair (0, 1) only: norm = 2
    p = torch.zeros(1, 1, 3, 2, dtype=torch.float64)
    q = p.clone()
    q[0, 0, 1, 0] = 2.0
    assert float(reference_lvd(q, p)) == pytest.approx(2.0)


def test_reference_accumulator_fixed_batches_drop_the_last_partial_one():
    acc = ReferenceAccumulator(batch_size=4)
    z = torch.zeros(1, 30, 68, 2, dtype=torch.float64)
    v = 0.01 * math.sqrt(4 * 4080)           # 4 windows off by 1.87 px = 0.01 scaled units
    acc.add((z + 1.87).expand(3, -1, -1, -1), z.expand(3, -1, -1, -1))
    assert acc.summary()["windows_used"] == 0 and math.isnan(acc.summary()["ref F-LD"])
    acc.add((z + 1.87).expand(2, -1, -1, -1), z.expand(2, -1, -1, -1))   # batch 1: 3 + 1
    acc.add((z + 3.74).expand(4, -1, -1, -1), z.expand(4, -1, -1, -1))   # 1 + 3 ...
    s = acc.summary()
    # batches [1.87 x4] -> v, [1.87, 3.74 x3] -> 0.01 sqrt(4080 (1 + 3 * 4)); 1 window left
    b2 = 0.01 * math.sqrt(4080 * (1 + 3 * 4))
    assert s["ref F-LD"] == pytest.approx((v + b2) / 2)
    assert s["windows_used"] == 8 and s["windows_dropped"] == 1


def test_authors_mouth_order_decides_their_lvd():
    """Their M-LVD anchors at the first point of their mouth list, 49, and drops its last, 48."""
    assert AUTHORS_MOUTH == (*range(49, 68), 48)
    true = torch.zeros(8, 30, 68, 2, dtype=torch.float64) + 128.0
    # point 48 off by 6 px: invisible to their M-LVD (48 is dropped), seen in natural order
    p48 = true.clone()
    p48[:, :, 48, 0] += 6.0
    assert reference_metrics(p48, true)["ref M-LVD"] == 0.0
    d = 6.0 / 187.0                             # 6 px in their scaled units
    m = list(MOUTH_INDICES)
    natural = float(reference_lvd(scale_reference(p48[:, :, m]), scale_reference(true[:, :, m])))
    # natural order: 48 is the anchor, each of the other 18 kept points sees it move by d
    assert natural == pytest.approx(d * math.sqrt(8 * 30 * 18))
    # point 49 off by 6 px: their anchor, so each of their 18 other kept points sees it
    p49 = true.clone()
    p49[:, :, 49, 1] -= 6.0
    assert reference_metrics(p49, true)["ref M-LVD"] == pytest.approx(d * math.sqrt(8 * 30 * 18))
    # and 67, the last in natural order but kept in theirs: one pair per frame
    p67 = true.clone()
    p67[:, :, 67, 0] += 6.0
    assert reference_metrics(p67, true)["ref M-LVD"] == pytest.approx(d * math.sqrt(8 * 30))
    # the full face keeps the natural order: anchor 0, 67 dropped
    assert reference_metrics(p67, true)["ref F-LVD"] == 0.0


def test_mouth_opening_and_its_correlation_by_hand():
    x = torch.zeros(2, 3, 68, 2, dtype=torch.float64)
    for up, lo, gap in ((61, 67, 1.0), (62, 66, 2.0), (63, 65, 3.0)):
        x[:, :, lo, 1] = gap                       # upper at 0, lower at the gap: opening 2
    x[:, 1, [65, 66, 67], 1] *= 2                 # frame 1 opens twice as wide: 4
    x[1, 2, [61, 62, 63], 0] = 3.0                # window 1, frame 2: pairs also 3 px apart in x
    op = mouth_opening(x)
    assert op[0].tolist() == pytest.approx([2.0, 4.0, 2.0])
    expect = np.mean([math.hypot(3, g) for g in (1.0, 2.0, 3.0)])
    assert op[1].tolist() == pytest.approx([2.0, 4.0, expect])
    ref = x[:1].expand(2, -1, -1, -1)
    r = mouth_opening_correlation(x, ref)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(np.corrcoef([2, 4, expect], [2, 4, 2])[0, 1])
    still = x[:, :1].expand(-1, 3, -1, -1)     # a still mouth: no correlation
    assert torch.isnan(mouth_opening_correlation(still, ref)).all()


def test_table_mouth_r_averages_only_defined_windows():
    ref = torch.zeros(2, 3, 68, 2, dtype=torch.float64)
    ref[:, :, 67, 1] = torch.tensor([1.0, 2.0, 4.0])
    pred = ref.clone()
    pred[1] = ref[1, :1]                          # window 1 predicted still: r undefined
    t = MetricTable()
    t.add(pred, ref, corpus=np.array(["a", "b"]))
    s = t.summary()
    assert s["mouth_r"] == pytest.approx(1.0) and s["windows"] == 2
    assert t.by("corpus")["b"]["mouth_r"] is None
