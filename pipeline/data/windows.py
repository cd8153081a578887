"""Windows stage library: 1 s windows of landmarks with the audio features aligned to them.

A window starts at video frame s (30 fps) and holds frames s .. s+29. Its audio spans start
at the same instant t0 = s / fps: mel frames round(t0 * 100) .. +100 (100 frames/s, centred
on k * 10 ms) and wav2vec2 frames round(t0 * 50) .. +49 (wav2vec2 gives 49 frames for 1 s
of audio). A window is kept when both spans lie inside the clip's features, its landmarks
are finite, and at most `windows.max_missing_frames` of its frames are bridged dropouts.

Identity landmarks (`windows.identity`): `clip` = the clip's reference frame (the frame the
landmark stage stored as the identity image); `speaker_neutral` = that of the speaker's
first neutral clip (falls back to `clip` where a speaker has none, counted);
`window_first` = the window's own first frame (the authors' code; leaks the pose, labelled).

Split (`split.by`): the manifest's speaker- or clip-disjoint split, or `window`: windows
drawn at random into train/val/test with the seeded fractions (the authors' code; leaky:
neighbouring, overlapping windows of one clip land on both sides; labelled).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.pipeline.data.features import n_w2v_frames

SPLITS = ("train", "val", "test")
N_POINTS = 68
MEL_RATE_HZ = 100
W2V_RATE_HZ = 50
WINDOWS_SCHEMA = pa.schema([
    ("window_id", pa.string()), ("clip_id", pa.string()), ("corpus", pa.string()),
    ("speaker", pa.string()), ("emotion", pa.string()), ("emotion_id", pa.int64()),
    ("level", pa.int64()), ("start_frame", pa.int64()), ("split", pa.string()),
])


def spans(frames: int, fps: float) -> tuple[int, int]:
    """(mel frames, wav2vec2 frames) per window: (100, 49) for 30 frames at 30 fps."""
    seconds = frames / fps
    return int(round(seconds * MEL_RATE_HZ)), n_w2v_frames(int(round(seconds * 16000)))


def audio_starts(start_frame: int, fps: float) -> tuple[int, int]:
    """First mel frame and first wav2vec2 frame of the window starting at `start_frame`."""
    t0 = start_frame / fps
    return int(round(t0 * MEL_RATE_HZ)), int(round(t0 * W2V_RATE_HZ))


def valid_starts(landmarks: np.ndarray, face_found: np.ndarray, n_mel: int, n_w2v: int, *,
                 frames: int, stride: int, fps: float, max_missing: int) -> list[int]:
    """Start frames of the usable windows of one clip. landmarks: (T, 68, 2) crop px."""
    T = len(landmarks)
    mel_len, w2v_len = spans(frames, fps)
    finite = np.isfinite(landmarks).all(axis=(1, 2))           # (T,)
    out = []
    for s in range(0, T - frames + 1, stride):
        m0, w0 = audio_starts(s, fps)
        if m0 + mel_len > n_mel or w0 + w2v_len > n_w2v:
            break   # audio ended (later windows cannot fit either)
        if not finite[s:s + frames].all():
            continue
        if int((~face_found[s:s + frames]).sum()) > max_missing:
            continue
        out.append(s)
    return out


def to_crop_px(video_px: np.ndarray, crop_box: np.ndarray, crop_px: int) -> np.ndarray:
    """(T, 68, 2) video px -> crop px with per-frame boxes (T, 3) = x0, y0, side."""
    return ((video_px - crop_box[:, None, :2]) * (crop_px / crop_box[:, None, 2:3])).astype(np.float32)


def gt_in_crop(gt_video_px: np.ndarray, crop_box: np.ndarray, crop_px: int) -> np.ndarray:
    """Ground truth mapped into the landmark stage's crops; NaN past the shorter of the two."""
    T = len(crop_box)
    out = np.full((T, N_POINTS, 2), np.nan, np.float32)
    n = min(T, len(gt_video_px))
    out[:n] = to_crop_px(gt_video_px[:n], crop_box[:n], crop_px)
    return out


def window_split(seed: int, window_id: str, test_fraction: float, val_fraction: float) -> str:
    """The authors' random split of windows (seeded, stable per window id). Leaky."""
    h = hashlib.sha256(f"{seed}:{window_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0 ** 64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def reference_frame(landmarks: np.ndarray, preferred: int) -> int:
    """`preferred` if its landmarks are finite, else the first finite frame (-1: none)."""
    finite = np.flatnonzero(np.isfinite(landmarks).all(axis=(1, 2)))
    if 0 <= preferred < len(landmarks) and np.isfinite(landmarks[preferred]).all():
        return preferred
    return int(finite[0]) if len(finite) else -1


@dataclass
class ClipPlan:
    """Pass 1's verdict on one clip: which windows it gives, and its identity landmarks."""
    clip_id: str
    row: dict                       # manifest row
    starts: list[int]
    identity: np.ndarray            # (68, 2) crop px of the reference frame
    splits: list[str] = field(default_factory=list)   # per start


def iter_landmark_shards(landmarks_dir: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    for p in sorted(landmarks_dir.glob("shard-*.parquet")):
        yield pq.read_table(p, columns=columns)


def landmark_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows of a landmark shard with arrays in their shapes (T, 68, 2), (T,), (T, 3)."""
    cols = table.column_names
    for i in range(table.num_rows):
        r = {c: table.column(c)[i] for c in cols}
        T = r["n_frames"].as_py()
        out = {"clip_id": r["clip_id"].as_py(), "n_frames": T,
               "fps": float(r["fps"].as_py()) if "fps" in r else 30.0}
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
    return {k: np.load(d / f"{k}.npy", mmap_mode="r")
            for k in ("landmarks", "identity", "mel", "w2v", "emotion", "gt_landmarks")}
