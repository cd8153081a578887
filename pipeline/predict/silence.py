"""Silence is still: where the audio holds no speech, predict shows the identity's own face.

Why a gate and not the model alone: the training windows are 1 s cut from clips that are
speech from end to end (the demo's 0.25 s lead-in is the only silence), so the model never
saw a silent second. On the demo-trained checkpoint, 4 s of digital silence or of -60/-80 dBFS
noise held the mouth open at or beyond its opening in real speech (bench/silence.py,
docs/predict.md). Whatever the encoder makes of silence, the model's answer to it is not
learnt; the gate replaces it by the one answer that is right, the still face.

The gate, per video frame (30 fps):
1. loudness: the RMS in dBFS of the audio around the frame (1/fps s, centred);
2. speech where loudness >= max(FLOOR_DBFS, the clip's speech level - BELOW_SPEECH_DB), the
   speech level being its 95th percentile. The absolute floor makes digital silence and
   inaudible noise silent in any clip; the relative threshold makes room noise between
   sentences silent in a loud recording;
3. pauses shorter than MIN_PAUSE_S stay speech: closures inside words (stops, /m/) are the
   model's to draw;
4. weight w: the speech mask smoothed by a Hann window of RAMP_S, so the mouth eases into and
   out of rest instead of snapping; w is exactly 0 inside a long pause and 1 inside speech.

landmarks = identity + w * (model - identity). In speech (w = 1) the model's output is
untouched; in silence (w = 0) it is the identity photo's landmarks exactly.
`kfusion predict --silence model` turns the gate off (the model's own output everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_DBFS = -50.0       # below this RMS a frame is silent in any clip (-60 dBFS is inaudible
                         # at normal listening levels; quiet speech is -40 dBFS and above)
BELOW_SPEECH_DB = 35.0   # ... and so is a frame this far below the clip's own speech level
SPEECH_PERCENTILE = 95.0
MIN_PAUSE_S = 0.2        # shorter pauses are part of speech
RAMP_S = 0.2             # Hann smoothing of the gate: ~100 ms either side of a boundary
MODES = ("still", "model")


@dataclass(frozen=True)
class Gate:
    weight: np.ndarray        # (T,) 1 = speech (the model's landmarks), 0 = still face
    loudness_dbfs: np.ndarray  # (T,) per video frame
    threshold_dbfs: float

    @property
    def silent_fraction(self) -> float:
        return float(np.mean(self.weight == 0.0)) if len(self.weight) else 0.0

    def record(self) -> dict:
        """What the JSON of a prediction says about the gate."""
        return {"mode": "still", "threshold_dbfs": round(self.threshold_dbfs, 2),
                "floor_dbfs": FLOOR_DBFS, "below_speech_db": BELOW_SPEECH_DB,
                "min_pause_s": MIN_PAUSE_S, "ramp_s": RAMP_S,
                "silent_fraction": round(self.silent_fraction, 4),
                "gated_fraction": round(float(np.mean(self.weight < 1.0)) if len(self.weight)
                                        else 0.0, 4)}


def frame_loudness_dbfs(samples: np.ndarray, sample_rate_hz: int, fps: int, T: int) -> np.ndarray:
    """(T,) RMS in dBFS of the 1/fps s of audio centred on each frame (silence past the end)."""
    hop = sample_rate_hz / fps
    half = int(round(hop / 2))
    x = np.concatenate([np.zeros(half, np.float64), samples.astype(np.float64),
                        np.zeros(int(np.ceil(hop)) + half, np.float64)])
    power = np.concatenate([[0.0], np.cumsum(x * x)])          # prefix sums: no per-frame loop
    centre = np.round(np.arange(T) * hop + hop / 2).astype(np.int64) + half
    lo, hi = centre - half, centre + half
    rms = np.sqrt(np.maximum(power[hi] - power[lo], 0.0) / np.maximum(hi - lo, 1))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))              # digital zero -> -200 dBFS


def fill_short_pauses(speech: np.ndarray, min_frames: int) -> np.ndarray:
    """Silent runs shorter than min_frames, with speech on both sides, become speech."""
    out = speech.copy()
    idx = np.flatnonzero(np.diff(np.concatenate([[1], speech.astype(np.int8), [1]])))
    for start, stop in zip(idx[::2], idx[1::2]):                # each silent run [start, stop)
        if stop - start < min_frames and start > 0 and stop < len(speech):
            out[start:stop] = True
    return out


def smooth(mask: np.ndarray, frames: int) -> np.ndarray:
    """The 0/1 mask convolved with a normalised Hann window of `frames` (odd) frames, edges
    extended; exact 0 and 1 away from boundaries."""
    if frames < 3:
        return mask.astype(np.float64)
    k = np.hanning(frames + 2)[1:-1]
    k /= k.sum()
    pad = frames // 2
    m = np.pad(mask.astype(np.float64), pad, mode="edge")
    w = np.convolve(m, k, mode="valid")
    w[mask & (w > 1 - 1e-9)] = 1.0
    w[~mask & (w < 1e-9)] = 0.0
    return np.clip(w, 0.0, 1.0)


def speech_gate(samples: np.ndarray, sample_rate_hz: int, fps: int, T: int) -> Gate:
    """The per-frame weight of the model's landmarks (module docstring)."""
    loud = frame_loudness_dbfs(samples, sample_rate_hz, fps, T)
    level = float(np.percentile(loud, SPEECH_PERCENTILE)) if T else FLOOR_DBFS
    threshold = max(FLOOR_DBFS, level - BELOW_SPEECH_DB)
    speech = fill_short_pauses(loud >= threshold, int(round(MIN_PAUSE_S * fps)))
    ramp = int(round(RAMP_S * fps)) | 1                         # odd: centred on the boundary
    return Gate(weight=smooth(speech, ramp), loudness_dbfs=loud, threshold_dbfs=threshold)


def apply_gate(landmarks: np.ndarray, identity: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(T, 68, 2): identity + w * (landmarks - identity), w per frame."""
    ident = np.asarray(identity, np.float64)[None]
    return ident + weight[:, None, None] * (np.asarray(landmarks, np.float64) - ident)
