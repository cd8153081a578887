"""Windows: 1 s windows of landmarks with the audio features aligned to them (arithmetic).

A window starts at video frame s and holds frames s .. s + frames - 1. Its audio spans start
at the same instant t0 = s / fps (kfusion.shapes.WindowTiming, from the config): mel frames
round(t0 * mel_rate_hz) .. + n_mel (mel_rate_hz = audio.sample_rate_hz / features.hop_length:
100 frames/s at the defaults, frame k centred on k * 10 ms) and wav2vec2 frames round(t0 * 50)
.. + n_tokens (49 for 1 s of audio). A window is kept when both spans lie inside the clip's
features, its landmarks are finite, and at most `windows.max_missing_frames` of its frames
are bridged dropouts. The stage's two passes over the shards are in window_build.py.

Identity landmarks (`windows.identity`): `other_clip` (default) = the reference frame of
another clip of the same speaker (a neutral one first: lowest level, then clip id; else the
first other clip by id), so no window contains its own identity frame; a speaker with one
clip gets a frame of that clip outside every one of its windows (`outside_frame`: a free
frame when there is one, else the reference frame with the windows holding it dropped),
counted. `clip` = the clip's reference frame (the frame the landmark stage stored as the
identity image: the most confident of its first second, so inside some of its own windows);
`speaker_neutral` = that of the speaker's first neutral clip (falls back to `clip` where a
speaker has none, counted); `window_first` = the window's own first frame (the authors'
code; leaks the pose, labelled).

Split (`split.by`): the manifest's speaker- or clip-disjoint split, or `window`: windows
drawn at random into train/val/test with the seeded fractions (the authors' code; leaky:
neighbouring, overlapping windows of one clip land on both sides; labelled).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from kfusion.shapes import N_POINTS, WINDOW_ARRAYS, WindowTiming
from kfusion.pipeline.data.index import seeded_split
from kfusion.pipeline.data.landmarks import to_crop_px

WINDOWS_SCHEMA = pa.schema([
    ("window_id", pa.string()), ("clip_id", pa.string()), ("corpus", pa.string()),
    ("speaker", pa.string()), ("emotion", pa.string()), ("emotion_id", pa.int64()),
    ("level", pa.int64()), ("start_frame", pa.int64()), ("split", pa.string()),
])


def valid_starts(landmarks: np.ndarray, face_found: np.ndarray, n_mel: int, n_w2v: int,
                 timing: WindowTiming, *, stride: int, max_missing: int) -> list[int]:
    """Start frames of the usable windows of one clip with n_mel mel and n_w2v wav2vec2 frames.
    landmarks: (T, 68, 2) crop px."""
    T, frames = len(landmarks), timing.n_frames
    finite = np.isfinite(landmarks).all(axis=(1, 2))           # (T,)
    out = []
    for s in range(0, T - frames + 1, stride):
        m0, w0 = timing.audio_starts(s)
        if m0 + timing.n_mel > n_mel or w0 + timing.n_tokens > n_w2v:
            break   # audio ended (later windows cannot fit either)
        if not finite[s:s + frames].all():
            continue
        if int((~face_found[s:s + frames]).sum()) > max_missing:
            continue
        out.append(s)
    return out


def gt_in_crop(gt_video_px: np.ndarray, crop_box: np.ndarray, crop_px: int) -> np.ndarray:
    """Ground truth mapped into the landmark stage's crops; NaN past the shorter of the two."""
    T = len(crop_box)
    out = np.full((T, N_POINTS, 2), np.nan, np.float32)
    n = min(T, len(gt_video_px))
    out[:n] = to_crop_px(gt_video_px[:n], crop_box[:n], crop_px)
    return out


def window_split(seed: int, window_id: str, test_fraction: float, val_fraction: float) -> str:
    """The authors' random split of windows (seeded, stable per window id). Leaky."""
    return seeded_split(seed, window_id, test_fraction, val_fraction)


def reference_frame(landmarks: np.ndarray, preferred: int) -> int:
    """`preferred` if its landmarks are finite, else the first finite frame (-1: none)."""
    finite = np.flatnonzero(np.isfinite(landmarks).all(axis=(1, 2)))
    if 0 <= preferred < len(landmarks) and np.isfinite(landmarks[preferred]).all():
        return preferred
    return int(finite[0]) if len(finite) else -1


def outside_frame(landmarks: np.ndarray, starts: list[int], frames: int,
                  preferred: int) -> tuple[int, list[int]]:
    """An identity frame outside every window of the clip: (frame, the starts kept).

    The finite frame no window covers that lies nearest `preferred`; when every finite frame
    is covered, the reference frame, with the windows that hold it dropped. (-1, starts): no
    finite frame."""
    covered = np.zeros(len(landmarks), bool)
    for s in starts:
        covered[s:s + frames] = True
    finite = np.isfinite(landmarks).all(axis=(1, 2))
    free = np.flatnonzero(finite & ~covered)
    if len(free):
        return int(free[np.argmin(np.abs(free - preferred))]), list(starts)
    f = reference_frame(landmarks, preferred)
    return f, [s for s in starts if not s <= f < s + frames]


def landmark_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows of a landmark shard with arrays in their shapes (T, 68, 2), (T,), (T, 3)."""
    cols = table.column_names
    for i in range(table.num_rows):
        r = {c: table.column(c)[i] for c in cols}
        T = r["n_frames"].as_py()
        out = {"clip_id": r["clip_id"].as_py(), "n_frames": T}
        if "fps" in r:
            out["fps"] = float(r["fps"].as_py())
        if "landmarks_px" in r:
            out["landmarks_px"] = r["landmarks_px"].values.to_numpy(zero_copy_only=False) \
                .astype(np.float32).reshape(T, N_POINTS, 2)
        if "face_found" in r:
            out["face_found"] = np.asarray(r["face_found"].values.to_numpy(zero_copy_only=False), bool)
        if "crop_box" in r:
            out["crop_box"] = r["crop_box"].values.to_numpy(zero_copy_only=False) \
                .astype(np.float32).reshape(T, 3)
        if "identity_frame" in r:
            out["identity_frame"] = r["identity_frame"].as_py()
        yield out


def open_split(split_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one split, memory-mapped read-only (nothing read until indexed)."""
    d = Path(split_dir)
    return {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in WINDOW_ARRAYS}
