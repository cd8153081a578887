"""The authors' reference numbers and the metric table's edge cases against values worked out
here, written to kill the mutants `scripts/mutation.py` found surviving (a scaling whose shift
cancelled in every test, crop bounds that were only ever the defaults, a within-frame
difference whose sign no test could see)."""
import math

import numpy as np
import pytest
import torch

from kfusion.pipeline.training.metrics import (MetricTable, ReferenceAccumulator, pearson,
                                               reference_lvd, reference_metrics,
                                               scale_reference, summarise)


def test_scale_reference_maps_the_bounds_to_0_and_1():
    x = torch.tensor([56.0, 243.0, 149.5, 0.0], dtype=torch.float64)
    assert scale_reference(x).tolist() == pytest.approx([0.0, 1.0, 0.5, -56 / 187])
    assert scale_reference(x, 0.0, 100.0).tolist() == pytest.approx([0.56, 2.43, 1.495, 0.0])


def test_reference_lvd_one_frame_three_points_by_hand():
    # their layout: anchor (point 0) minus each point but the last, per coordinate
    pred = torch.tensor([[[[0.0, 0.0], [3.0, 4.0], [100.0, 100.0]]]], dtype=torch.float64)
    true = torch.tensor([[[[0.0, 0.0], [0.0, 4.0], [7.0, -7.0]]]], dtype=torch.float64)
    # pred: p0 - p1 = (-3, -4); true: t0 - t1 = (0, -4); (p0 - p0) - (t0 - t0) = 0;
    # difference (-3, 0): norm 3. The last point (100, 100) / (7, -7) is never used.
    assert float(reference_lvd(pred, true)) == pytest.approx(3.0)


def test_reference_metrics_use_the_given_crop_bounds():
    # every point at (50, 50), predicted 10 px off in x, 1 window, 1 frame; bounds 0..100:
    # 0.1 scaled units per point (both arrays scaled with the same bounds)
    true = torch.full((1, 1, 68, 2), 50.0, dtype=torch.float64)
    pred = true.clone()
    pred[..., 0] = 60.0
    m = reference_metrics(pred, true, 0.0, 100.0)
    assert m["ref F-LD"] == pytest.approx(0.1 * math.sqrt(68))
    assert m["ref M-LD"] == pytest.approx(0.1 * math.sqrt(20))
    assert m["ref F-LVD"] == 0.0 and m["ref M-LVD"] == 0.0     # a rigid shift
    acc = ReferenceAccumulator(batch_size=1, low_px=0.0, high_px=100.0)
    acc.add(pred.expand(3, -1, -1, -1), true.expand(3, -1, -1, -1))
    s = acc.summary()
    assert s["ref F-LD"] == pytest.approx(0.1 * math.sqrt(68))   # the mean of 3 equal batches
    assert (s["windows_used"], s["windows_dropped"]) == (3, 0)


def test_pearson_by_hand_and_nan_for_a_constant_row():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 4.0, 5.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    # row 0: a - 2 = (-1, 0, 1), b - 11/3 = (-5/3, 1/3, 4/3);
    # r = (5/3 + 4/3) / sqrt(2 * (25 + 1 + 16) / 9) = 3 / sqrt(84 / 9) = 9 / sqrt(84)
    r = pearson(a, b)
    assert float(r[0]) == pytest.approx(9 / math.sqrt(84))
    assert math.isnan(float(r[1]))


def test_summarise_of_no_windows_and_of_a_selection():
    vals = {k: np.array([1.0, 3.0, 8.0]) for k in ("M-LD", "M-LVD", "F-LD", "F-LVD")}
    vals["mouth_r"] = np.array([0.5, np.nan, 0.1])
    none = summarise(vals, np.array([False, False, False]))
    assert none["windows"] == 0 and none["mouth_r"] is None
    assert all(math.isnan(none[k]) for k in ("M-LD", "M-LVD", "F-LD", "F-LVD"))
    some = summarise(vals, np.array([True, True, False]))
    assert some == {"windows": 2, "M-LD": 2.0, "M-LVD": 2.0, "F-LD": 2.0, "F-LVD": 2.0,
                    "mouth_r": 0.5}                                     # NaN r left out


def test_table_skips_a_batch_without_any_ground_truth_and_unknown_groups():
    ref = torch.full((2, 3, 68, 2), float("nan"), dtype=torch.float64)
    t = MetricTable()
    t.add(ref, ref, corpus=np.array(["a", "b"]))
    assert t.count == 0 and t.groups == {} and t.by("corpus") == {}
    ok = torch.zeros(1, 3, 68, 2, dtype=torch.float64)
    t.add(ok + 2.0, ok, corpus=np.array(["a"]))
    assert t.by("speaker") == {}
    assert t.by("corpus") == {"a": {"windows": 1, "M-LD": pytest.approx(2 * math.sqrt(2)),
                                    "M-LVD": 0.0, "F-LD": pytest.approx(2 * math.sqrt(2)),
                                    "F-LVD": 0.0, "mouth_r": None}}
