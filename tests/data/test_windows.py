"""windows: alignment arithmetic by hand, the passes on hand-made inputs, and the stage end to
end (on real GRID clips, and on synthetic landmarks with real features at two mel rates)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from kfusion.config import Config, SplitConfig, WindowsConfig
from kfusion.shapes import window_timing
from kfusion.pipeline.data.audio import AUDIO_SCHEMA
from kfusion.pipeline.data.features import read_shard
from kfusion.pipeline.data.landmarks import read_clip, rows_to_table
from kfusion.pipeline.data.shards import iter_rows, write_shard
from kfusion.pipeline.data.window_build import assign_windows
from kfusion.pipeline.data.windows import gt_in_crop, open_split, valid_starts, window_split
from data_helpers import manifest_row, small_grid, write_manifest, write_params
from test_features import tiny_wav2vec2_dir


def _timing(encoder: str = "wav2vec2", **sections):
    """window_timing of the default config with some keys of some sections replaced."""
    cfg = Config()
    for name, keys in sections.items():
        setattr(cfg, name, replace(getattr(cfg, name), **keys))
    return window_timing(cfg, encoder)


def test_window_timing_at_the_defaults_and_at_hop_320():
    t = _timing()
    assert (t.n_frames, t.n_mel, t.n_tokens, t.mel_rate_hz) == (30, 100, 49, 100.0)
    assert t.audio_starts(15) == (50, 25)     # 0.5 s: mel frame 50, wav2vec2 frame 25
    assert t.audio_starts(45) == (150, 75)
    assert t.audio_starts(7) == (23, 12)      # 0.2333 s -> round(23.3), round(11.67)
    t = _timing(features={"hop_length": 320})   # 50 mel frames/s
    assert (t.n_mel, t.n_tokens, t.mel_rate_hz) == (50, 49, 50.0)
    assert t.audio_starts(7) == (12, 12)      # round(11.67), round(11.67)
    # the content encoder's frame rule sets the tokens of 1 s (16000 samples): wav2vec2's
    # conv stack 49, Whisper ceil(100 mel frames / 2) = 50, hama's 16000 // 320 + 1 = 51;
    # all at 50 frames/s, so a window starts at the same frame for all of them
    for encoder, tokens, offset_s in (("random", 49, 0.0125), ("whisper", 50, 0.0), ("ppg", 51, 0.0)):
        t = _timing(encoder)
        assert (t.n_tokens, t.token_offset_s, t.audio_starts(7)) == (tokens, offset_s, (23, 12))
    with pytest.raises(ValueError, match="unknown content encoder"):
        _timing("auto")   # never resolved here: the features' encoder.json names the encoder


def test_valid_starts():
    T = 100
    lm = np.zeros((T, 68, 2), np.float32)
    found = np.ones(T, bool)
    t = _timing()
    # 100 frames = 3.33 s; mel 334 frames, w2v 166: every start 0, 15, ..., 60 fits
    assert valid_starts(lm, found, 334, 166, t, stride=15, max_missing=0) == [0, 15, 30, 45, 60]
    # audio ends at 2.5 s: the window at 60 (2.0-3.0 s) needs mel up to 300
    assert valid_starts(lm, found, 251, 166, t, stride=15, max_missing=0) == [0, 15, 30, 45]
    # at 50 mel frames/s the same 2.5 s are 126 frames: the window at 60 needs 150
    t50 = _timing(features={"hop_length": 320})
    assert valid_starts(lm, found, 126, 166, t50, stride=15, max_missing=0) == [0, 15, 30, 45]
    assert valid_starts(lm, found, 150, 166, t50, stride=15, max_missing=0) == [0, 15, 30, 45, 60]
    lm[40] = np.nan       # a frame with no face and no bridge kills the windows holding it
    found[70:72] = False  # two bridged frames: allowed with max_missing >= 2
    assert valid_starts(lm, found, 334, 166, t, stride=15, max_missing=1) == [0]
    assert valid_starts(lm, found, 334, 166, t, stride=15, max_missing=2) == [0, 45, 60]


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
@pytest.mark.parametrize("identity,by", [("clip", "clip"), ("window_first", "window"),
                                         ("other_clip", "clip")])
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
    m = json.loads((tmp_path / "reports/windows.json").read_text())
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
            m0, w0 = window_timing(Config(), "wav2vec2").audio_starts(s)
            assert np.array_equal(a["landmarks"][i], c["landmarks_px"][s:s + 30])
            assert np.array_equal(a["mel"][i], f["mel"][m0:m0 + 100])
            assert np.array_equal(a["w2v"][i], f["w2v"][w0:w0 + 49])
            if identity == "other_clip":   # two clips of s1: each takes the other's frame
                o = next(v for k, v in lm.items() if k != w["clip_id"])
                assert np.array_equal(a["identity"][i], o["landmarks_px"][o["identity_frame"]])
            else:
                ref = s if identity == "window_first" else c["identity_frame"]
                assert np.array_equal(a["identity"][i], c["landmarks_px"][ref])
            assert a["emotion"][i] == 0 and np.isnan(a["gt_landmarks"][i]).all()
        total += len(table)
    # GRID: 75 frames at 25 fps -> 90 at 30 fps; 2.98 s of audio: starts 0, 15, 30, 45 (60 needs 3.0 s)
    assert total == 2 * 4


def _plan(cid: str, starts: list[int], value: float, shard: str) -> dict:
    """What pass 1 (plan_shard) says of one clip; identity landmarks all `value`."""
    return {"clip_id": cid, "starts": starts, "n_frames": 60, "landmark_shard": shard,
            "identity": np.full((68, 2), value, np.float32)}


def test_assign_windows_splits_offsets_identity_and_rejects():
    manifest = {"a1": manifest_row("a1", speaker="S1", level=1),
                "a2": manifest_row("a2", speaker="S1", emotion="happy", emotion_id=5, level=2),
                "b1": manifest_row("b1", speaker="S2", emotion="happy", emotion_id=5, split="test"),
                "b2": manifest_row("b2", speaker="S2", emotion="sad", emotion_id=6, split="test")}
    plans = [_plan("a1", [0, 5], 1.0, "s0"), _plan("a2", [0], 2.0, "s0"),
             _plan("b1", [0], 3.0, "s1"), _plan("b2", [], 4.0, "s1")]
    wp = assign_windows(plans, manifest, WindowsConfig(identity="speaker_neutral", frames=30),
                        SplitConfig(by="speaker"))
    assert wp.counts == {"train": 3, "val": 0, "test": 1}
    assert [r["window_id"] for r in wp.rows["train"]] == ["a1@0", "a1@5", "a2@0"]
    assert [r["window_id"] for r in wp.rows["test"]] == ["b1@0"]
    assert list(wp.by_shard) == ["s0", "s1"]
    a1, a2 = wp.by_shard["s0"]
    (b1,) = wp.by_shard["s1"]
    assert (a1["offsets"], a2["offsets"], b1["offsets"]) == ([0, 1], [2], [0])
    # S1's neutral clip a1 gives both S1 clips their identity; S2 has none: its own, counted
    assert a2["identity"][0, 0] == 1.0 and b1["identity"][0, 0] == 3.0
    assert (wp.identity_fallbacks, wp.speakers_with_neutral, wp.clips) == (1, 1, 3)
    assert [(c, r) for c, r, _ in wp.rejects] == [("b2", "no_valid_window")]
    assert wp.clip_ids() == {"a1", "a2", "b1"}

    by_window = SplitConfig(by="window", test_fraction=0.4, val_fraction=0.3, seed=0)
    wp = assign_windows(plans, manifest, WindowsConfig(identity="clip"), by_window)
    drawn = {r["window_id"]: r["split"] for s in wp.rows.values() for r in s}
    # train clips: each window drawn on its own (sha256 of "0:<window id>", as for clips)
    assert [drawn[w] for w in ("a1@0", "a1@5", "a2@0")] == ["train", "test", "train"]
    assert all(drawn[w] == window_split(0, w, 0.4, 0.3) for w in ("a1@0", "a1@5", "a2@0"))
    assert drawn["b1@0"] == "test" != window_split(0, "b1@0", 0.4, 0.3)   # a test clip stays whole
    assert wp.counts == {"train": 2, "val": 0, "test": 2}
    assert wp.by_shard["s0"][1]["identity"][0, 0] == 2.0 and wp.identity_fallbacks == 0


def _synthetic_inputs(root, ids: list[str], n_frames: int, seconds: float) -> None:
    """A manifest, one landmark shard (random finite landmarks, every face found) and one audio
    shard (noise at 16 kHz) for `ids`: the inputs of features and windows, no detector needed."""
    rng = np.random.default_rng(0)
    write_manifest(root / "data/index", [manifest_row(c) for c in ids])
    rows = [{"clip_id": c, "fps": 30, "n_frames": n_frames,
             "landmarks_px": rng.uniform(0, 256, n_frames * 68 * 2).astype(np.float32),
             "confidence": np.ones(n_frames, np.float32), "face_found": np.ones(n_frames, bool),
             "crop_box": np.tile(np.float32([0, 0, 256]), n_frames), "src_w": 256, "src_h": 256,
             "identity_frame": 0, "identity_jpeg": b"", "frames_jpeg": []} for c in ids]
    (root / "data/landmarks").mkdir(parents=True)
    pq.write_table(rows_to_table(rows), root / "data/landmarks/shard-00000.parquet")
    n = int(seconds * 16000)
    (root / "data/audio").mkdir(parents=True)
    write_shard(root / "data/audio/shard-00000.parquet",
                [{"clip_id": c, "sample_rate_hz": 16000, "duration_s": seconds,
                  "samples": (0.1 * rng.standard_normal(n)).astype(np.float32)} for c in ids],
                schema=AUDIO_SCHEMA, meta={"fingerprint": "a"})
    (root / "data/audio/config.yaml").write_text("{}")


@pytest.mark.parametrize("hop", [160, 320])
def test_stage_aligns_mel_at_the_configured_hop(tmp_path, monkeypatch, capsys, hop):
    from kfusion.stages import features, windows
    monkeypatch.chdir(tmp_path)
    _synthetic_inputs(tmp_path, ["c0", "c1"], n_frames=90, seconds=3.0)
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1}, windows={"stride_frames": 7},
                 features={"wav2vec2": str(tiny_wav2vec2_dir(tmp_path / "w2v")), "hop_length": hop})
    assert features.main(["--params", "p.yaml"]) == 0
    assert windows.main(["--params", "p.yaml"]) == 0
    mel_rate_hz = 16000 // hop   # 100 or 50 frames/s
    feats = {f["clip_id"]: f for p in sorted((tmp_path / "data/features").glob("shard-*"))
             for f in read_shard(p)}
    assert feats["c0"]["mel"].shape == (48000 // hop + 1, 80)
    a = open_split("data/windows/train")
    table = pq.read_table("data/windows/train/windows.parquet").to_pylist()
    meta = json.loads((tmp_path / "data/windows/train/meta.json").read_text())
    assert a["mel"].shape == (18, mel_rate_hz, 80) and meta["mel_frames"] == mel_rate_hz
    # 90 frames, 30 per window, stride 7: starts 0 .. 56, all with audio (3 s) to spare
    assert [w["start_frame"] for w in table] == list(range(0, 57, 7)) * 2
    for i, w in enumerate(table):
        t0 = w["start_frame"] / 30
        m0, w0 = round(t0 * mel_rate_hz), round(t0 * 50)   # by hand: the window's first instant
        assert np.array_equal(a["mel"][i], feats[w["clip_id"]]["mel"][m0:m0 + mel_rate_hz])
        assert np.array_equal(a["w2v"][i], feats[w["clip_id"]]["w2v"][w0:w0 + 49])
    # features made with other settings than the windows stage is given: one line, exit 2
    for section, key, value, says in [("features", "n_mels", 40, "re-run the features stage"),
                                      ("landmarks", "fps", 25, "re-run the landmarks stage")]:
        p = yaml.safe_load((tmp_path / "p.yaml").read_text())
        p.setdefault(section, {})[key] = value
        (tmp_path / "q.yaml").write_text(yaml.safe_dump(p))
        capsys.readouterr()
        assert windows.main(["--params", "q.yaml"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: windows: ") and says in err[0], err



def test_stage_rejects_a_clip_with_non_finite_features(tmp_path, monkeypatch, capsys):
    """A NaN in one clip's log-mel and an inf in another's wav2vec2 (written into the real
    features stage's shard): both clips are `non_finite_features` rejects naming the frame, and
    the windows of the third clip are written as before."""
    from kfusion.pipeline.data.features import read_meta, write_features
    from kfusion.stages import features, windows
    monkeypatch.chdir(tmp_path)
    _synthetic_inputs(tmp_path, ["c0", "c1", "c2"], n_frames=90, seconds=3.0)
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1}, windows={"stride_frames": 15,
                 "max_reject_fraction": 1.0},
                 features={"wav2vec2": str(tiny_wav2vec2_dir(tmp_path / "w2v"))})
    assert features.main(["--params", "p.yaml"]) == 0
    (shard,) = sorted((tmp_path / "data/features").glob("shard-*"))
    meta, rows = read_meta(shard), {r["clip_id"]: r for r in read_shard(shard)}
    rows["c0"]["mel"][42, 3] = np.nan
    rows["c2"]["w2v"][7, :2] = np.inf
    write_features(shard, [rows[c] for c in sorted(rows)], meta, meta["planned_ids"])
    assert windows.main(["--params", "p.yaml"]) == 0
    rejects = {r["clip_id"]: r for r in pq.read_table("data/windows/rejects.parquet").to_pylist()}
    assert sorted(rejects) == ["c0", "c2"]
    assert {r["reason"] for r in rejects.values()} == {"non_finite_features"}
    assert rejects["c0"]["message"] == "log-mel: 1 of 24080 values NaN or infinite (first in " \
                                       "frame 42 of 301)"          # 301 mel frames x 80 bands
    assert rejects["c2"]["message"] == "content encoder: 2 of 114432 values NaN or infinite (first " \
                                       "in frame 7 of 149)"        # 149 frames x 768
    table = pq.read_table("data/windows/train/windows.parquet").to_pylist()
    # starts 15 .. 60: c1 has no other clip, so its identity comes from frames outside every
    # window (windows.identity: other_clip), and the window at 0 gives way
    assert {w["clip_id"] for w in table} == {"c1"} and [w["start_frame"] for w in table] == [15, 30, 45, 60]
    m = json.loads((tmp_path / "reports/windows.json").read_text())
    assert (m["rejected"], m["reject_reasons"], m["clips_missing_upstream"]) == \
        (2, {"non_finite_features": 2}, 0)
