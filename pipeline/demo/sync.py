"""Is the audio-visual relation real? Energy/mouth correlation by lag, and lip closure on p/b/m.

Energy: per video frame, the RMS of the decoded audio in a one-frame window centred on the
frame's time, in dB, floored 60 dB below the clip's peak (silence would otherwise dominate).
Mouth opening: the ground truth's inner-lip gap (px). Both are z-scored per clip, then pooled.
A positive lag L pairs the mouth at frame k with the energy at frame k + L: the mouth leads.
"""
from __future__ import annotations

import numpy as np

FLOOR_DB = 60.0


def floored_db(energy_db: np.ndarray, floor_db: float = FLOOR_DB) -> np.ndarray:
    return np.maximum(energy_db, energy_db.max() - floor_db)


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def _pairs(mouth: np.ndarray, energy: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    if lag >= 0:
        return mouth[:len(mouth) - lag], energy[lag:]
    return mouth[-lag:], energy[:lag]


def lagged_correlation(mouths: list[np.ndarray], energies: list[np.ndarray],
                       lags: range = range(-5, 6)) -> dict[int, float]:
    """Pooled Pearson r between per-clip z-scored mouth opening and energy, per lag."""
    out = {}
    for lag in lags:
        a, b = zip(*(_pairs(_z(m), _z(floored_db(e)), lag) for m, e in zip(mouths, energies)))
        out[lag] = float(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])
    return out


def peak_lag(corr: dict[int, float]) -> tuple[int, float]:
    """Integer lag of the maximum and a parabolic sub-frame refinement of it."""
    lags = sorted(corr)
    k = max(lags, key=corr.get)
    if k - 1 in corr and k + 1 in corr:
        y0, y1, y2 = corr[k - 1], corr[k], corr[k + 1]
        den = y0 - 2 * y1 + y2
        return k, float(k + (0.5 * (y0 - y2) / den if den else 0.0))
    return k, float(k)


def per_clip_correlation(mouth: np.ndarray, energy_db: np.ndarray, lag: int) -> float:
    a, b = _pairs(mouth, floored_db(energy_db), lag)
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
