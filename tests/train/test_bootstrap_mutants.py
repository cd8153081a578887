"""The seed summaries and the paired bootstrap against values worked out here, written to kill
the mutants `scripts/mutation.py` found surviving (defaults, the empty cases, the record's keys).
"""
import math

import numpy as np
import pytest

from kfusion.pipeline.training.bootstrap import clip_means, mean_over_seeds, mean_sd, paired_bootstrap


def test_paired_bootstrap_defaults_are_10000_resamples_seed_0_and_a_95_percent_interval():
    # irrational differences, so the bootstrap means have few ties and a percentile moves
    # when one resample more is drawn
    d = [math.sqrt(p) for p in (2, 3, 5, 7, 11, 13, 17, 19, 23)]
    a = {f"c{i}": v for i, v in enumerate(d)}
    b = {**{c: 0.0 for c in a}, "only_b": 9.0}
    # the interval written out from the definition: resample the 9 clip differences with
    # replacement 10000 times (NumPy's default generator, seed 0), 2.5th and 97.5th percentiles
    means = np.array(d)[np.random.default_rng(0).integers(0, 9, size=(10000, 9))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    r = paired_bootstrap(a, b)
    assert (r.mean, r.clips, r.level) == (pytest.approx(sum(d) / 9), 9, 0.95)
    assert (r.low, r.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert r.as_dict() == {"mean": r.mean, "ci_low": r.low, "ci_high": r.high, "clips": 9,
                           "level": 0.95, "significant": True}
    # a 50% interval: the 25th and 75th percentiles of the same resamples
    half = paired_bootstrap(a, b, level=0.5)
    assert half.level == 0.5
    assert (half.low, half.high) == tuple(pytest.approx(v, abs=1e-12)
                                          for v in np.quantile(means, [0.25, 0.75]))


def test_paired_bootstrap_with_no_common_clip_is_nan_zero_clips_and_keeps_the_level():
    r = paired_bootstrap({"x": 1.0}, {"y": 2.0}, level=0.9)
    assert math.isnan(r.mean) and math.isnan(r.low) and math.isnan(r.high)
    assert (r.clips, r.level, r.significant) == (0, 0.9, False)
    rec = r.as_dict()
    assert list(rec) == ["mean", "ci_low", "ci_high", "clips", "level", "significant"]
    assert (rec["clips"], rec["level"], rec["significant"]) == (0, 0.9, False)


def test_mean_sd_counts_only_finite_values():
    mean, sd, n = mean_sd([])
    assert math.isnan(mean) and math.isnan(sd) and n == 0
    mean, sd, n = mean_sd([2.5, None, float("nan")])
    assert mean == 2.5 and math.isnan(sd) and n == 1
    # 1 and 3: mean 2, sample sd sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2)
    assert mean_sd([1.0, None, 3.0, float("inf")]) == (2.0, pytest.approx(math.sqrt(2)), 2)


def test_mean_over_seeds_of_no_seeds_is_empty():
    assert mean_over_seeds([]) == {}


def test_clip_values_are_averaged_in_float64_whatever_dtype_they_come_in():
    # float32 inputs: the mean of their exact float64 values, not float32 arithmetic
    # (which gives 0.33333334 here, 1.2e-8 off)
    v32 = [np.float32(0.1), np.float32(0.2), np.float32(0.7)]
    exact = (float(v32[0]) + float(v32[1]) + float(v32[2])) / 3
    got = clip_means(np.array(v32, np.float32), np.array(["a", "a", "a"]))["a"]
    assert got == pytest.approx(exact, rel=1e-12)
    r = paired_bootstrap({"x": v32[0], "y": v32[2]}, {"x": 0.0, "y": 0.0}, n_boot=10)
    assert r.mean == pytest.approx((float(v32[0]) + float(v32[2])) / 2, rel=1e-12)
