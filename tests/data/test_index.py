"""index stage on real clips laid out as MEAD (tree and tars), CREMA-D and GRID."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kfusion.config import SplitConfig
from kfusion.pipeline.data.index import assign_split, read_grid_alignment, read_manifest
from kfusion.stages import index as index_stage
from data_helpers import ffmpeg, realclips, small_grid, write_params

pytestmark = pytest.mark.realdata


def run_index(tmp: Path, monkeypatch, corpora: dict, **extra) -> tuple[list[dict], list[dict]]:
    monkeypatch.chdir(tmp)
    write_params(tmp / "p.yaml", index={"corpora": list(corpora), "roots": corpora,
                                        "max_reject_fraction": 1.0},
                 preprocess={"workers": 1}, **extra)
    assert index_stage.main(["--params", "p.yaml"]) == 0
    return (pq.read_table(tmp / "data/index/manifest.parquet").to_pylist(),
            pq.read_table(tmp / "data/index/rejects.parquet").to_pylist())


def test_mead_tree_pairs_and_rejects_unpaired_audio(tmp_path, monkeypatch):
    rows, rejects = run_index(tmp_path, monkeypatch, {"mead": str(realclips() / "mead")})
    assert len(rows) == 1
    r = rows[0]
    assert r["clip_id"] == "mead:M030:sad:3:001"
    assert (r["emotion"], r["emotion_id"], r["level"], r["split"]) == ("sad", 6, 3, "test")
    assert r["audio_path"].endswith("M030/audio/sad/level_3/001.m4a")
    assert r["video_duration_s"] == pytest.approx(112 / 30)
    assert r["audio_duration_s"] == pytest.approx(3.69, abs=0.03)
    assert [(x["clip_id"], x["reason"]) for x in rejects] == [("mead:M030:neutral:1:001", "unpaired_audio")]


def test_mead_tar_layout_indexes_like_the_tree(tmp_path, monkeypatch):
    spk = realclips() / "mead/M030"
    root = tmp_path / "mead_tars" / "M030"
    root.mkdir(parents=True)
    with tarfile.open(root / "video.tar", "w") as tf:   # as MEAD ships it: all views in one tar
        tf.add(spk / "video/front/sad/level_3/001.mp4", "video/front/sad/level_3/001.mp4")
        tf.add(spk / "video/front/sad/level_3/001.mp4", "video/left_30/sad/level_3/001.mp4")
    with tarfile.open(root / "audio.tar", "w") as tf:
        for p in sorted((spk / "audio").rglob("*.m4a")):
            tf.add(p, str(p.relative_to(spk)))
    (tmp_path / "tree").mkdir()
    tree_rows, tree_rej = run_index(tmp_path / "tree", monkeypatch, {"mead": str(realclips() / "mead")})
    tar_rows, tar_rej = run_index(tmp_path, monkeypatch, {"mead": str(tmp_path / "mead_tars")})
    # paths are relative to the corpus root (or the tar cache): the manifests' rows are equal
    assert tar_rows == tree_rows
    assert tar_rows[0]["video_path"] == "M030/video/front/sad/level_3/001.mp4"
    assert [(r["clip_id"], r["reason"]) for r in tar_rej] == [(r["clip_id"], r["reason"]) for r in tree_rej]
    # members were extracted into the cache under the stage output, byte-identical, and the
    # manifest reader finds them there
    (r,) = read_manifest(tmp_path / "data/index")
    v = Path(r["video_path"])
    assert v == Path("data/index/extracted/mead/M030/video/front/sad/level_3/001.mp4")
    assert v.read_bytes() == (spk / "video/front/sad/level_3/001.mp4").read_bytes()
    (r,) = read_manifest(tmp_path / "tree/data/index")
    assert r["video_path"] == str(realclips() / "mead/M030/video/front/sad/level_3/001.mp4")


def test_cremad_layout_maps_emotions_levels_and_is_test_only(tmp_path, monkeypatch):
    rc = realclips()
    root = tmp_path / "cremad"
    (root / "AudioWAV").mkdir(parents=True)
    (root / "VideoFlash").mkdir()
    clips = {"1001_DFA_ANG_HI": rc / "other/00001.mp4", "1001_IEO_SAD_LO": rc / "other/00002.mp4",
             "1002_TIE_NEU_XX": rc / "other/bbaf2n.mpg"}
    for name, src in clips.items():   # CREMA-D: 16 kHz mono wav + flv (FLV1 video, mp3 audio)
        ffmpeg("-i", str(src), "-t", "1.2", "-vn", "-ac", "1", "-ar", "16000", str(root / "AudioWAV" / f"{name}.wav"))
        ffmpeg("-i", str(src), "-t", "1.2", "-c:v", "flv1", "-an", str(root / "VideoFlash" / f"{name}.flv"))
    ffmpeg("-i", str(rc / "other/00001.mp4"), "-t", "1", "-vn", str(root / "AudioWAV/1003_ITS_XYZ_HI.wav"))
    ffmpeg("-i", str(rc / "other/00001.mp4"), "-t", "1", "-vn", str(root / "AudioWAV/1003_WSI_HAP_MD.wav"))
    rows, rejects = run_index(tmp_path, monkeypatch, {"cremad": str(root)})
    got = {r["clip_id"]: (r["emotion"], r["emotion_id"], r["level"], r["split"], r["text"]) for r in rows}
    assert got == {
        "cremad:1001:angry:3:DFA": ("angry", 1, 3, "test", "Don't forget a jacket"),
        "cremad:1001:sad:1:IEO": ("sad", 6, 1, "test", "It's eleven o'clock"),
        "cremad:1002:neutral:0:TIE": ("neutral", 0, 0, "test", "That is exactly what happened"),
    }
    assert all(r["video_path"].endswith(".flv") and r["audio_path"].endswith(".wav") for r in rows)
    assert all(r["video_duration_s"] == pytest.approx(1.2, abs=0.05) for r in rows)
    assert {r["reason"] for r in rejects} == {"unknown_emotion", "unpaired_audio"}


def test_grid_layout_with_alignments(tmp_path, monkeypatch):
    root = small_grid(tmp_path / "grid", n=3)
    rows, rejects = run_index(tmp_path, monkeypatch, {"grid": str(root)},
                              split={"by": "clip", "test_fraction": 0.0, "val_fraction": 0.0})
    assert not rejects and len(rows) == 3
    r = rows[0]
    assert (r["corpus"], r["speaker"], r["emotion"], r["level"], r["split"]) == ("grid", "s1", "neutral", 1, "train")
    assert r["audio_path"] == r["video_path"] and r["video_duration_s"] == pytest.approx(3.0)
    assert r["text"] == read_grid_alignment(root / "alignments/s1" / f"{r['clip_id'].rsplit(':', 1)[1]}.align")
    assert len(r["text"].split()) == 6   # GRID sentences are six words


def test_assign_split_rules():
    cfg = SplitConfig(test_speakers=["M003", "grid:s2"], val_speakers=["W011"])
    row = lambda corpus, spk, cid="x": {"corpus": corpus, "speaker": spk, "clip_id": cid}
    assert assign_split(row("mead", "M003"), cfg) == "test"
    assert assign_split(row("grid", "s2"), cfg) == "test"      # corpus-qualified name
    assert assign_split(row("mead", "W011"), cfg) == "val"
    assert assign_split(row("mead", "M005"), cfg) == "train"
    assert assign_split(row("cremad", "1001"), cfg) == "test"   # test-only corpus
    clip = SplitConfig(by="clip", test_fraction=0.2, val_fraction=0.3, seed=3)
    splits = [assign_split(row("grid", "s1", f"c{i}"), clip) for i in range(4000)]
    assert splits.count("test") / 4000 == pytest.approx(0.2, abs=0.03)
    assert splits.count("val") / 4000 == pytest.approx(0.3, abs=0.03)
    assert splits == [assign_split(row("grid", "s1", f"c{i}"), clip) for i in range(4000)]  # stable
    assert assign_split(row("mead", "M003"), SplitConfig(by="window", test_only_corpora=[])) == "train"
