"""How late an encoder's frames run against known acoustic events (docs/encoders.md,
"Alignment"): the measurement behind `features.ppg_shift_ms` and the frame offsets in
kfusion.shapes.CONTENT_FRAME_OFFSET_S.

Convention: frame j of a curve with period `period_s` is stamped at j * period_s + stamp_s;
a feature "runs late by D ms" when an event at time t shows in it at t + D.

Method (event-triggered average): a centred change curve of the features (how much frame
j+1 differs from frame j-1, so a step at j peaks at j with no half-frame bias), z-scored per
clip, read by linear interpolation at onset + lag for lags -200..+200 ms, summed over every
onset of every clip; D is the lag of the average's peak, refined by a parabola through its
neighbours. On the demo corpus the onsets are the synthesiser's own phoneme starts, exact to
the sample after AAC (checked against a re-synthesis). The log-mel's D (a few ms from 0:
the method's own bias) is the reference an aligned encoder should match.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

LAGS_MS = np.arange(-200, 201, 2)


def change_curve(frames: np.ndarray) -> np.ndarray:
    """(n, D) -> (n,) ||f[j+1] - f[j-1]||, edges padded."""
    f = np.pad(np.asarray(frames, np.float32), ((1, 1), (0, 0)), mode="edge")
    return np.linalg.norm(f[2:] - f[:-2], axis=1)


def triggered_sum(curve: np.ndarray, period_s: float, stamp_s: float,
                  events_s: np.ndarray) -> tuple[np.ndarray, int]:
    """Sum over events of the z-scored curve at event + lag (LAGS_MS), and how many events
    had every lag inside the clip."""
    z = (curve - curve.mean()) / (curve.std() + 1e-12)
    pos = (np.asarray(events_s)[:, None] + LAGS_MS[None, :] / 1000.0 - stamp_s) / period_s
    ok = (pos.min(1) >= 0) & (pos.max(1) <= len(z) - 1)
    return np.interp(pos[ok], np.arange(len(z)), z).sum(0), int(ok.sum())


def peak_ms(avg: np.ndarray) -> float:
    """The lag (ms) of the average's peak, refined by a parabola through its neighbours."""
    k = int(np.argmax(avg))
    if 0 < k < len(avg) - 1:
        a, b, c = avg[k - 1], avg[k], avg[k + 1]
        return float(LAGS_MS[k] + 0.5 * (a - c) / (a - 2 * b + c + 1e-12) * (LAGS_MS[1] - LAGS_MS[0]))
    return float(LAGS_MS[k])


def onset_offset_ms(clips: Iterable[tuple[np.ndarray, float, float, np.ndarray]],
                    n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """clips: (features (n, D), period_s, stamp_s, onsets_s) per clip -> {"offset_ms": D,
    "boot_sd_ms": its sd over clips resampled with replacement, "events": onsets used}."""
    sums, counts = [], []
    for frames, period_s, stamp_s, onsets in clips:
        s, n = triggered_sum(change_curve(frames), period_s, stamp_s, onsets)
        sums.append(s)
        counts.append(n)
    sums_a, counts_a = np.stack(sums), np.asarray(counts)
    rng = np.random.default_rng(seed)
    boot = [peak_ms(sums_a[i].sum(0) / max(counts_a[i].sum(), 1))
            for i in rng.integers(0, len(sums), (n_boot, len(sums)))]
    return {"offset_ms": round(peak_ms(sums_a.sum(0) / counts_a.sum()), 1),
            "boot_sd_ms": round(float(np.std(boot)), 1), "events": int(counts_a.sum())}


def phoneme_onsets(phonemes: list) -> np.ndarray:
    """Onset times (s) of the spoken phonemes of a demo clip's ground truth ("_" = silence)."""
    return np.array([t0 for name, t0, _ in phonemes if name != "_"])


def demo_clips(demo_dir, limit: int = 0):
    """(clip key, 16 kHz samples, phoneme onsets s) of a demo corpus's clips (its ground
    truth names every phoneme's start sample)."""
    from pathlib import Path

    from kfusion.pipeline.data.groundtruth import load_groundtruth
    from kfusion.pipeline.media.container import decode_audio
    rows = sorted(load_groundtruth(demo_dir).items())
    for (speaker, emotion, level, clip), row in rows[:limit or None]:
        path = Path(demo_dir) / "corpus" / speaker / "audio" / emotion / f"level_{level}" / f"{clip}.m4a"
        yield f"{speaker}/{emotion}/{level}/{clip}", decode_audio(path), phoneme_onsets(row["phonemes"])


def measure(clips, features: dict) -> dict[str, dict[str, float]]:
    """features: name -> (fn(samples) -> (n, D), period_s, stamp_s). Each one's offset on
    the same clips (onset_offset_ms)."""
    per: dict[str, list] = {name: [] for name in features}
    for _, x, onsets in clips:
        for name, (fn, period_s, stamp_s) in features.items():
            per[name].append((np.asarray(fn(x), np.float32), period_s, stamp_s, onsets))
    return {name: onset_offset_ms(items) for name, items in per.items()}
