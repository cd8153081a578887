"""The generator's ground truth: one Parquet row per clip, sharded (schema and reader in
kfusion.pipeline.data.groundtruth, where data preparation reads it), and the contact sheet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kfusion.pipeline.data.groundtruth import SCHEMA, key_of
from kfusion.pipeline.data.shards import plan_shards, shard_path, write_shard

CROP_PX = 256


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


# ----------------------------------------------------------------------------- contact sheet
def decode_frames(video: str | Path, ffmpeg: str, frame_px: int) -> np.ndarray:
    """All frames of a demo video as (T, F, F, 3) uint8 RGB, decoded by ffmpeg."""
    import subprocess
    r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(video),
                        "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, frame_px, frame_px, 3)


def contact_sheet(tiles: list[tuple[str, str, np.ndarray, np.ndarray]], strip: list[np.ndarray],
                  strip_tracks: list[np.ndarray], strip_label: str, tile_px: int = 160) -> np.ndarray:
    """A labelled grid: rows = speakers, columns = emotions, each tile the decoded frame with the
    widest-open mouth and its ground-truth landmarks; below, a strip of consecutive frames of
    one clip (mouth opening and closing). tiles: (speaker, emotion, frame, (68, 2) video px)."""
    import cv2

    from kfusion.pipeline.media.draw import draw_landmarks
    speakers = sorted({t[0] for t in tiles})
    emotions = list(dict.fromkeys(t[1] for t in tiles))
    label_w, head_h, pad = 44, 20, 2
    cols = max(len(emotions), len(strip))
    W = label_w + cols * (tile_px + pad)
    H = head_h + len(speakers) * (tile_px + pad) + (head_h + tile_px + pad if strip else 0)
    sheet = np.full((H, W, 3), 255, np.uint8)

    def put(img, tracks, y, x):
        s = tile_px / img.shape[0]
        small = cv2.resize(img, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
        sheet[y:y + tile_px, x:x + tile_px] = draw_landmarks(small, tracks * s + (s - 1) / 2,
                                                             (0, 255, 64), radius=1)

    text = lambda s, x, y: cv2.putText(sheet, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42,  # noqa: E731
                                       (0, 0, 0), 1, cv2.LINE_AA)
    for j, e in enumerate(emotions):
        text(e, label_w + j * (tile_px + pad) + 4, head_h - 6)
    for i, spk in enumerate(speakers):
        y = head_h + i * (tile_px + pad)
        text(spk, 4, y + tile_px // 2)
        for sp, e, frame, tracks in tiles:
            if sp == spk:
                put(frame, tracks, y, label_w + emotions.index(e) * (tile_px + pad))
    if strip:
        y = head_h + len(speakers) * (tile_px + pad)
        text(strip_label, label_w + 4, y + head_h - 6)
        for j, (frame, tracks) in enumerate(zip(strip, strip_tracks)):
            put(frame, tracks, y + head_h, label_w + j * (tile_px + pad))
    return sheet
