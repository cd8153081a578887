"""Ground-truth landmark tracks of a corpus that has them (the demo corpus): schema and reader.

The demo generator (kfusion.pipeline.demo) writes these shards; data preparation reads them
to measure the landmark stage against them and to store them beside each window. One Parquet
row per clip, sharded under <demo.out>/groundtruth/. Columns (the contract in docs/demo.md):
speaker, emotion, level, clip, n_frames, fps, frame_w, frame_h, landmarks_video_px (T*68*2
float32, (x, y) in the video's pixels), landmarks_crop_px (the same in the generator's 256
crop), crop_box ([x0, y0, side]: crop_px = (video_px - [x0, y0]) * 256 / side), text,
phonemes (JSON), params (JSON). A manifest row names its clip's row by `gt_key`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kfusion.shapes import N_POINTS
from kfusion.pipeline.data.shards import read_table

SCHEMA = pa.schema([
    ("speaker", pa.string()), ("emotion", pa.string()), ("level", pa.int32()),
    ("clip", pa.string()), ("n_frames", pa.int32()), ("fps", pa.int32()),
    ("frame_w", pa.int32()), ("frame_h", pa.int32()),
    ("landmarks_video_px", pa.list_(pa.float32())), ("landmarks_crop_px", pa.list_(pa.float32())),
    ("crop_box", pa.list_(pa.float32())), ("text", pa.string()), ("phonemes", pa.string()),
    ("params", pa.string()),
])


def key_of(row: dict[str, Any]) -> str:
    """The manifest's gt_key: "speaker|emotion|level|clip"."""
    return f"{row['speaker']}|{row['emotion']}|{row['level']}|{row['clip']}"


def load_groundtruth(demo_dir: str | Path) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """{(speaker, emotion, level, clip): row} with landmarks as (T, 68, 2) float32 arrays,
    crop_box as (3,), phonemes and params parsed from JSON."""
    gt_dir = Path(demo_dir) / "groundtruth"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: no demo ground truth (run `dvc repro demo`)")
    out = {}
    for r in read_table(gt_dir).to_pylist():
        T = r["n_frames"]
        r["landmarks_video_px"] = np.asarray(r["landmarks_video_px"], np.float32).reshape(T, N_POINTS, 2)
        r["landmarks_crop_px"] = np.asarray(r["landmarks_crop_px"], np.float32).reshape(T, N_POINTS, 2)
        r["crop_box"] = np.asarray(r["crop_box"], np.float32)
        r["phonemes"] = json.loads(r["phonemes"])
        r["params"] = json.loads(r["params"])
        out[(r["speaker"], r["emotion"], int(r["level"]), r["clip"])] = r
    return out


def groundtruth_by_clip(manifest: dict[str, dict], demo_dir: str | Path,
                        clip_ids: set[str] | None = None) -> dict[str, np.ndarray]:
    """clip id -> (T, 68, 2) ground-truth landmarks in video px, for the manifest's clips (of
    `clip_ids`, if given) whose gt_key names a ground-truth row; {} without reading anything
    when none has a gt_key (corpora without ground truth)."""
    keyed = {m["gt_key"]: cid for cid, m in manifest.items()
             if m.get("gt_key") and (clip_ids is None or cid in clip_ids)}
    if not keyed:
        return {}
    out = {}
    for row in load_groundtruth(demo_dir).values():
        cid = keyed.get(key_of(row))
        if cid is not None:
            out[cid] = row["landmarks_video_px"]
    return out
