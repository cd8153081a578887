"""Ground-truth tracks as data preparation reads them: schema, reader, lookup by manifest clip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kfusion.pipeline.data.groundtruth import SCHEMA, groundtruth_by_clip, key_of, load_groundtruth
from kfusion.pipeline.data.shards import write_shard
from data_helpers import manifest_row


def _gt_row(speaker: str, emotion: str, level: int, clip: str, value: float, n_frames: int = 3) -> dict:
    pts = np.full(n_frames * 68 * 2, value, np.float32)
    return {"speaker": speaker, "emotion": emotion, "level": level, "clip": clip,
            "n_frames": n_frames, "fps": 30, "frame_w": 256, "frame_h": 256,
            "landmarks_video_px": pts, "landmarks_crop_px": pts / 2,
            "crop_box": np.float32([1, 2, 3]), "text": "a", "phonemes": "[]",
            "params": json.dumps({"k": 1})}


def test_reader_shapes_and_lookup_by_gt_key(tmp_path):
    rows = [_gt_row("D01", "neutral", 1, "001", 1.0), _gt_row("D02", "sad", 3, "002", 2.0, n_frames=4)]
    write_shard(tmp_path / "demo/groundtruth/shard-00000.parquet", rows, schema=SCHEMA,
                planned_ids=[key_of(r) for r in rows])
    gt = load_groundtruth(tmp_path / "demo")
    r = gt[("D02", "sad", 3, "002")]
    assert r["landmarks_video_px"].shape == (4, 68, 2) and r["params"] == {"k": 1}
    manifest = {"a": manifest_row("a", gt_key="D02|sad|3|002"),
                "b": manifest_row("b", gt_key="D01|neutral|1|001"),
                "c": manifest_row("c", gt_key="D09|sad|3|009"),   # no such ground-truth row
                "d": manifest_row("d")}                            # a corpus without ground truth
    got = groundtruth_by_clip(manifest, tmp_path / "demo")
    assert sorted(got) == ["a", "b"]
    assert got["a"].shape == (4, 68, 2) and float(got["a"][0, 0, 0]) == 2.0
    assert sorted(groundtruth_by_clip(manifest, tmp_path / "demo", clip_ids={"b", "d"})) == ["b"]


def test_no_gt_key_reads_nothing_and_a_missing_folder_says_what_to_run(tmp_path):
    assert groundtruth_by_clip({"d": manifest_row("d")}, tmp_path / "nowhere") == {}
    with pytest.raises(FileNotFoundError, match="dvc repro demo"):
        groundtruth_by_clip({"a": manifest_row("a", gt_key="D01|neutral|1|001")}, tmp_path / "nowhere")
