"""The index stage on a user's own recordings (`folder`: ../shared/unseen as it is, and a
labels CSV) and on CREMA-D from VideoFlash/*.flv alone, the audio taken from the .flv."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_helpers import SHARED, ffmpeg, realclips
from test_index import run_index

pytestmark = pytest.mark.realdata


def unseen_root() -> Path:
    p = SHARED / "unseen"
    if not p.is_dir():
        pytest.skip(f"{p} is absent (five real speakers, video and speech in separate files)")
    return p


def test_folder_layout_pairs_video_with_its_same_stem_wav(tmp_path, monkeypatch):
    root = unseen_root()
    rows, rejects = run_index(tmp_path, monkeypatch, {"folder": str(root)})
    assert not rejects
    videos = sorted(root.glob("*/*.mp4"))
    assert len(rows) == len(videos) == 10
    by_id = {r["clip_id"]: r for r in rows}
    r = by_id["folder:obama:neutral:1:Obama_clip2"]
    # portable: relative to the corpus root named in params (read_manifest joins them back)
    assert (r["video_path"], r["audio_path"]) == ("obama/Obama_clip2.mp4", "obama/Obama_clip2.wav")
    assert r["audio_duration_s"] == pytest.approx(r["video_duration_s"], abs=0.07)
    assert {x["speaker"] for x in rows} == {"li", "ng", "noem", "obama", "reagan"}
    # a folder corpus is as any other: train unless split says; as a test set it is all test
    assert {x["emotion"] for x in rows} == {"neutral"} and {x["split"] for x in rows} == {"train"}


def test_folder_layout_audio_from_the_video_labels_from_csv(tmp_path, monkeypatch):
    rc = realclips()
    root = tmp_path / "mine"
    (root / "ann").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "ann" / "take1.mpg").symlink_to(rc / "other/bbaf2n.mpg")       # audio inside
    (root / "ann" / "take2.mp4").symlink_to(rc / "other/00001.mp4")
    ffmpeg("-i", str(rc / "other/00001.mp4"), "-vn", "-c:a", "libmp3lame", str(root / "ann/take2.mp3"))
    (root / "bob" / "hi.mp4").symlink_to(rc / "other/00002.mp4")
    (root / "bob" / "notes.txt").write_text("not a clip")
    (root / "labels.csv").write_text("clip,emotion,level\nann/take2,happy,2\nbob/hi,joyful,1\n")
    (tmp_path / "w").mkdir()
    rows, rejects = run_index(tmp_path / "w", monkeypatch, {"folder": str(root)})
    got = {r["clip_id"]: r for r in rows}
    take1, take2 = got["folder:ann:neutral:1:take1"], got["folder:ann:happy:2:take2"]
    assert take1["audio_path"] == take1["video_path"]                      # the mpg's own track
    assert take2["audio_path"].endswith("take2.mp3") and take2["emotion_id"] == 5
    assert [(x["clip_id"], x["reason"]) for x in rejects] == [("folder:bob:joyful:1:hi", "unknown_emotion")]


def test_cremad_from_videoflash_alone_takes_the_flv_audio(tmp_path, monkeypatch):
    rc = realclips()
    root = tmp_path / "cremad"
    (root / "VideoFlash").mkdir(parents=True)
    for name, src in {"1001_DFA_ANG_HI": rc / "other/00001.mp4",
                      "1002_TIE_NEU_XX": rc / "other/bbaf2n.mpg"}.items():
        # CREMA-D's VideoFlash: FLV1 video with MP3 audio in one file
        ffmpeg("-i", str(src), "-t", "1.5", "-c:v", "flv1", "-c:a", "libmp3lame", "-ar", "44100",
               str(root / "VideoFlash" / f"{name}.flv"))
    rows, rejects = run_index(tmp_path, monkeypatch, {"cremad": str(root)})
    assert not rejects
    assert {r["clip_id"] for r in rows} == {"cremad:1001:angry:3:DFA", "cremad:1002:neutral:0:TIE"}
    for r in rows:
        assert r["audio_path"] == r["video_path"] and r["video_path"].endswith(".flv")
        assert r["audio_duration_s"] == pytest.approx(1.5, abs=0.06) and r["split"] == "test"
