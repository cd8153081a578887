"""windows: alignment arithmetic by hand, and the stage end to end on real GRID clips."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from kfusion.pipeline.data.features import read_shard
from kfusion.pipeline.data.landmarks import read_clip
from kfusion.pipeline.data.shards import iter_rows
from kfusion.pipeline.data.windows import (audio_starts, gt_in_crop, open_split, spans, valid_starts,
                              window_split)
from data_helpers import small_grid, write_params
from test_features import tiny_wav2vec2_dir


def test_spans_and_alignment():
    assert spans(30, 30.0) == (100, 49)
    assert audio_starts(15, 30.0) == (50, 25)     # 0.5 s: mel frame 50, wav2vec2 frame 25
    assert audio_starts(45, 30.0) == (150, 75)
    assert audio_starts(7, 30.0) == (23, 12)      # 0.2333 s -> round(23.3), round(11.67)


def test_valid_starts():
    T = 100
    lm = np.zeros((T, 68, 2), np.float32)
    found = np.ones(T, bool)
    # 100 frames = 3.33 s; mel 334 frames, w2v 166: every start 0, 15, ..., 60 fits
    assert valid_starts(lm, found, 334, 166, frames=30, stride=15, fps=30.0, max_missing=0) == [0, 15, 30, 45, 60]
    # audio ends at 2.5 s: the window at 60 (2.0-3.0 s) needs mel up to 300
    assert valid_starts(lm, found, 251, 166, frames=30, stride=15, fps=30.0, max_missing=0) == [0, 15, 30, 45]
    lm[40] = np.nan       # a frame with no face and no bridge kills the windows holding it
    found[70:72] = False  # two bridged frames: allowed with max_missing >= 2
    assert valid_starts(lm, found, 334, 166, frames=30, stride=15, fps=30.0, max_missing=1) == [0]
    assert valid_starts(lm, found, 334, 166, frames=30, stride=15, fps=30.0, max_missing=2) == [0, 45, 60]


def test_gt_in_crop():
    gt = np.array([[[110.0, 220.0]] * 68, [[150.0, 100.0]] * 68], np.float32)   # (2, 68, 2) video px
    boxes = np.array([[100, 200, 512], [50, 0, 128], [0, 0, 256]], np.float32)   # (3, 3)
    out = gt_in_crop(gt, boxes, 256)
    assert out[0, 0].tolist() == [5.0, 10.0]        # (110-100, 220-200) * 256/512
    assert out[1, 0].tolist() == [200.0, 200.0]     # (150-50, 100-0) * 2
    assert np.isnan(out[2]).all()                   # ground truth is one frame shorter


def test_window_split_fractions():
    s = [window_split(0, f"c@{i}", 0.1, 0.2) for i in range(5000)]
    assert s.count("test") / 5000 == pytest.approx(0.1, abs=0.02)
    assert s.count("val") / 5000 == pytest.approx(0.2, abs=0.02)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("identity,by", [("clip", "clip"), ("window_first", "window")])
def test_stage_end_to_end_on_grid(tmp_path, monkeypatch, identity, by):
    from kfusion.stages import audio, features, index, landmarks, windows
    root = small_grid(tmp_path / "grid", n=2)
    monkeypatch.chdir(tmp_path)
    w2v = tiny_wav2vec2_dir(tmp_path / "w2v")
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1},
                 index={"corpora": ["grid"], "roots": {"grid": str(root)}},
                 split={"by": by, "test_fraction": 0.5 if by == "clip" else 0.3,
                        "val_fraction": 0.0 if by == "clip" else 0.3},
                 features={"wav2vec2": str(w2v)},
                 windows={"identity": identity, "stride_frames": 15})  # the count below is by hand
    for stage in (index, audio, features, landmarks, windows):
        assert stage.main(["--params", "p.yaml"]) == 0, stage.__name__
    m = json.loads((tmp_path / "metrics/windows.json").read_text())
    assert (m["processed"], m["rejected"]) == (2, 0)
    lm = {r["clip_id"]: read_clip(r) for r in iter_rows("data/landmarks")}
    feats = {f["clip_id"]: f for p in sorted((tmp_path / "data/features").glob("shard-*")) for f in read_shard(p)}
    total = 0
    for split in ("train", "val", "test"):
        a = open_split(f"data/windows/{split}")
        table = pq.read_table(f"data/windows/{split}/windows.parquet").to_pylist()
        meta = json.loads((tmp_path / f"data/windows/{split}/meta.json").read_text())
        assert isinstance(a["mel"], np.memmap) and a["w2v"].dtype == np.float16
        assert meta["split_leaky"] == (by == "window") and meta["identity_leaky"] == (identity == "window_first")
        assert len(table) == len(a["landmarks"]) == meta["n_windows"]
        for i, w in enumerate(table):
            c, f, s = lm[w["clip_id"]], feats[w["clip_id"]], w["start_frame"]
            m0, w0 = audio_starts(s, 30.0)
            assert np.array_equal(a["landmarks"][i], c["landmarks_px"][s:s + 30])
            assert np.array_equal(a["mel"][i], f["mel"][m0:m0 + 100])
            assert np.array_equal(a["w2v"][i], f["w2v"][w0:w0 + 49])
            ref = s if identity == "window_first" else c["identity_frame"]
            assert np.array_equal(a["identity"][i], c["landmarks_px"][ref])
            assert a["emotion"][i] == 0 and np.isnan(a["gt_landmarks"][i]).all()
        total += len(table)
    # GRID: 75 frames at 25 fps -> 90 at 30 fps; 2.98 s of audio: starts 0, 15, 30, 45 (60 needs 3.0 s)
    assert total == 2 * 4
