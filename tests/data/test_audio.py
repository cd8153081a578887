"""audio stage: real clips decode, and the bad ones land in rejects with the right codes."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfusion.config import AudioConfig
from kfusion.pipeline.data.audio import check_audio
from kfusion.pipeline.data.index import MANIFEST_SCHEMA
from kfusion.pipeline.media.container import probe
from kfusion.pipeline.data.shards import read_table
from kfusion.stages import audio as audio_stage
from data_helpers import realclips, write_params


def manifest_row(path, clip_id) -> dict:
    info = probe(path)
    return {"clip_id": clip_id, "corpus": "grid", "speaker": "x", "emotion": "neutral",
            "emotion_id": 0, "level": 1, "video_path": str(path), "audio_path": str(path),
            "video_duration_s": info.video_duration_s,
            "audio_duration_s": info.audio_duration_s if info.has_audio else 0.0,
            "split": "train", "gt_key": "", "text": ""}


@pytest.mark.realdata
def test_stage_on_realclips(tmp_path, monkeypatch):
    rc = realclips()
    files = {"lrs2": "other/00001.mp4", "grid_a": "other/bbaf2n.mpg", "grid_b": "other/lbax4n.mpg",
             "mute": "other/no_audio_stream.mp4", "silent": "other/silent_audio_black_tail.mp4",
             "mead": "mead/M030/video/front/sad/level_3/001.mp4"}
    rows = [manifest_row(rc / f, k) for k, f in sorted(files.items())]
    rows.append({**manifest_row(rc / files["grid_a"], "mismatch"), "video_duration_s": 1.5})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/index").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), "data/index/manifest.parquet")
    write_params(tmp_path / "p.yaml", audio={"max_reject_fraction": 1.0, "clips_per_shard": 3},
                 preprocess={"workers": 2})
    assert audio_stage.main(["--params", "p.yaml"]) == 0
    rejects = {r["clip_id"]: r["reason"] for r in pq.read_table("data/audio/rejects.parquet").to_pylist()}
    assert rejects == {"mute": "no_audio_stream", "silent": "silent", "mismatch": "av_duration_mismatch"}
    got = {r["clip_id"]: r for r in read_table("data/audio").to_pylist()}
    assert sorted(got) == ["grid_a", "grid_b", "lrs2", "mead"]
    assert len(got["lrs2"]["samples"]) == 76800 and got["lrs2"]["sample_rate_hz"] == 16000
    assert got["grid_a"]["duration_s"] == pytest.approx(2.978, abs=1e-3)
    # MEAD: 48 kHz stereo AAC, 3.69 s of audio under 3.73 s of video: kept, not trimmed
    assert got["mead"]["duration_s"] == pytest.approx(3.69, abs=0.01)
    import json
    m = json.loads((tmp_path / "reports/audio.json").read_text())
    assert (m["processed"], m["rejected"], m["shards"]) == (4, 3, 3)
    # a second run finds every shard complete and redoes none
    assert audio_stage.main(["--params", "p.yaml"]) == 0
    assert json.loads((tmp_path / "reports/audio.log.json").read_text())["shards_resumed"] == 3


def test_check_audio_rules():
    cfg = AudioConfig(min_rms=1e-3, max_av_mismatch_s=0.5, min_duration_s=1.0)
    t = np.arange(32000) / 16000
    tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)   # 2 s, RMS 0.0707
    out, problem = check_audio(tone, 1.75, cfg)
    assert problem is None and len(out) == 28000                     # trimmed to the video's 1.75 s
    assert check_audio(tone, 2.6, cfg)[1][0] == "av_duration_mismatch"
    assert check_audio(tone, 2.4, cfg)[1] is None                    # 0.4 s short: kept as is
    assert check_audio(np.zeros(32000, np.float32), 2.0, cfg)[1][0] == "silent"
    assert check_audio(tone * 0.01, 2.0, cfg)[1][0] == "silent"      # RMS 7e-4 < 1e-3
    assert check_audio(tone[:8000], 0.5, cfg)[1][0] == "too_short"
