"""Seeds and confidence: summaries over training seeds and a paired bootstrap over test clips.

Windows of one clip overlap and share a speaker, a sentence and a face track, so they are not
independent samples; the clip is the unit a confidence interval resamples. For two systems
evaluated on the same test clips (two ablation rows, each averaged over its seeds first):

    d_c = mean over windows of clip c of (metric_a - metric_b)
    CI  = the 2.5th and 97.5th percentiles, over `n_boot` resamples of the clips with
          replacement, of the mean of d_c

A difference is marked significant when its 95% interval excludes 0.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np


def clip_means(values: np.ndarray, clip_ids: np.ndarray) -> dict[str, float]:
    """Mean of the per-window values of each clip (windows without a value, NaN, left out)."""
    out: dict[str, float] = {}
    values, clip_ids = np.asarray(values, np.float64), np.asarray(clip_ids)
    for c in sorted(set(clip_ids.tolist())):
        v = values[clip_ids == c]
        v = v[np.isfinite(v)]
        if len(v):
            out[str(c)] = float(v.mean())
    return out


def mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Per clip, the mean over the seeds that have the clip (each seed is one training run
    evaluated on the same clips)."""
    clips = sorted(set().union(*per_seed)) if per_seed else []
    return {c: float(np.mean([s[c] for s in per_seed if c in s])) for c in clips}


def mean_sd(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the finite values; sd is NaN for fewer than two."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan"), 0
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan"), len(v)


@dataclass(frozen=True)
class PairedDifference:
    """a - b over the clips both have: the mean difference and its bootstrap interval."""
    mean: float
    low: float
    high: float
    clips: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        return self.clips > 1 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "clips": self.clips,
                "level": self.level, "significant": self.significant}


def paired_bootstrap(a: dict[str, float], b: dict[str, float], *, n_boot: int = 10000,
                     seed: int = 0, level: float = 0.95) -> PairedDifference:
    """The difference a - b of two systems' per-clip values, with a percentile bootstrap
    interval over the clips both have (resampled with replacement, `n_boot` times)."""
    clips = sorted(set(a) & set(b))
    if not clips:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0, level)
    d = np.array([a[c] - b[c] for c in clips], np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)   # (n_boot,)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(float(d.mean()), float(low), float(high), len(d), level)
