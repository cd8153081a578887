"""The generator's ground truth: one Parquet row per clip, sharded, and its reader.

Columns (the contract in docs/demo.md): speaker, emotion, level, clip, n_frames, fps, frame_w,
frame_h, landmarks_video_px (T*68*2 float32, (x, y) in the video's pixels), landmarks_crop_px
(the same in the generator's 256 crop), crop_box ([x0, y0, side]: crop_px = (video_px -
[x0, y0]) * 256 / side), text, phonemes (JSON), params (JSON).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.shards import plan_shards, read_table, shard_path, write_shard

CROP_PX = 256
SCHEMA = pa.schema([
    ("speaker", pa.string()), ("emotion", pa.string()), ("level", pa.int32()),
    ("clip", pa.string()), ("n_frames", pa.int32()), ("fps", pa.int32()),
    ("frame_w", pa.int32()), ("frame_h", pa.int32()),
    ("landmarks_video_px", pa.list_(pa.float32())), ("landmarks_crop_px", pa.list_(pa.float32())),
    ("crop_box", pa.list_(pa.float32())), ("text", pa.string()), ("phonemes", pa.string()),
    ("params", pa.string()),
])


def crop_box(tracks: np.ndarray, scale: float) -> np.ndarray:
    """[x0, y0, side]: a square around the clip's mean landmark box, `scale` times its size."""
    lo, hi = tracks.min(1), tracks.max(1)                 # (T, 2) each
    centre = ((lo + hi) / 2).mean(0)
    side = scale * float((hi - lo).max(1).mean())
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side], np.float32)


def to_crop(tracks: np.ndarray, box: np.ndarray, crop_px: int = CROP_PX) -> np.ndarray:
    """Video px (..., 2) -> crop px with box [x0, y0, side]."""
    return ((tracks - box[:2]) * (crop_px / box[2])).astype(np.float32)


def write_groundtruth(out_dir: str | Path, rows: list[dict[str, Any]], clips_per_shard: int) -> list[Path]:
    """Rows (sorted by speaker, emotion, level, clip) into shard-00000.parquet, ..."""
    rows = sorted(rows, key=lambda r: (r["speaker"], r["emotion"], r["level"], r["clip"]))
    paths = []
    keys = [key_of(r) for r in rows]
    for k, ids in enumerate(plan_shards(keys, clips_per_shard) or [[]]):
        part = rows[k * clips_per_shard:(k + 1) * clips_per_shard]
        path = shard_path(out_dir, k)
        write_shard(path, part, schema=SCHEMA, meta={"kind": "demo_groundtruth"}, planned_ids=ids)
        paths.append(path)
    return paths


def key_of(row: dict[str, Any]) -> str:
    """The manifest's gt_key: "speaker|emotion|level|clip"."""
    return f"{row['speaker']}|{row['emotion']}|{row['level']}|{row['clip']}"


def load_groundtruth(demo_dir: str | Path) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """{(speaker, emotion, level, clip): row} with landmarks as (T, 68, 2) float32 arrays,
    crop_box as (3,), phonemes and params parsed from JSON."""
    import json
    gt_dir = Path(demo_dir) / "groundtruth"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: no demo ground truth (run `dvc repro demo`)")
    out = {}
    for r in read_table(gt_dir).to_pylist():
        T = r["n_frames"]
        r["landmarks_video_px"] = np.asarray(r["landmarks_video_px"], np.float32).reshape(T, 68, 2)
        r["landmarks_crop_px"] = np.asarray(r["landmarks_crop_px"], np.float32).reshape(T, 68, 2)
        r["crop_box"] = np.asarray(r["crop_box"], np.float32)
        r["phonemes"] = json.loads(r["phonemes"])
        r["params"] = json.loads(r["params"])
        out[(r["speaker"], r["emotion"], int(r["level"]), r["clip"])] = r
    return out
