"""A damaged head or tail is trimmed, a second face is counted, and a small face in a big photo
is found (issue 14, item 8), on real clips through the real landmarks stage.

GRID s1's lgbf8n and pbwx1s decode to 14 frames of grey MPEG garbage before the face: 76 of 90
frames have one (84%, under min_face_fraction 0.9), so they were rejected `no_face` whole.
"""
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfusion.config import LandmarksConfig, default_dict
from kfusion.pipeline.data.landmarks import detect_growing, good_span, make_backend, read_clip
from kfusion.pipeline.data.shards import iter_rows, shard_meta
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary

REPO = Path(__file__).resolve().parents[2]
GRID = REPO.parent / "shared" / "grid" / "s1"
MEAD_VIDEO = REPO.parent / "shared" / "realclips/mead/M030/video/front/sad/level_3/001.mp4"


def test_good_span_by_hand():
    f = np.array([0] * 14 + [1] * 76, bool)                   # lgbf8n's pattern
    assert good_span(f, 0.9) == (14, 90)
    # one spurious detection in the garbage does not pull the span back to it
    g = f.copy()
    g[3] = True
    assert good_span(g, 0.9) == (14, 90)
    # interior gaps count against the share: 10 faceless of 55 frames is 82%; at 90% the
    # longest span is [28, 55) (25 of 27 frames), shrunk to its first face at 30
    h = np.array([1] * 20 + [0] * 10 + [1] * 25, bool)
    assert good_span(h, 0.8) == (0, 55) and good_span(h, 0.9) == (30, 55)
    assert good_span(np.zeros(9, bool), 0.9) == (0, 0)
    assert good_span(np.array([0, 1, 0], bool), 1.0) == (1, 2)


def _ff(*args) -> None:
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", *map(str, args)], check=True)


def _run_stage(tmp: Path, videos: dict[str, Path], **landmarks) -> dict:
    rows = [dict(clip_id=f"grid:s1:neutral:1:{k}", corpus="grid", speaker="s1", emotion="neutral",
                 emotion_id=0, level=1, video_path=str(p), audio_path=str(p), video_duration_s=3.0,
                 audio_duration_s=3.0, split="train", gt_key="", text="")
            for k, p in sorted(videos.items())]
    (tmp / "data/index").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp / "data/index/manifest.parquet")
    d = default_dict()
    d["landmarks"].update(max_reject_fraction=1.0, **landmarks)
    (tmp / "params.yaml").write_text(yaml.safe_dump(d))
    from kfusion.stages.landmarks import main
    assert main(["--params", str(tmp / "params.yaml")]) == 0
    out = tmp / "data/landmarks"
    return {"rows": {r["clip_id"].rsplit(":", 1)[1]: read_clip(r) for r in iter_rows(out)},
            "stats": {s["clip_id"].rsplit(":", 1)[1]: s for p in sorted(out.glob("shard-*"))
                      for s in shard_meta(p)["stats"]},
            "rejects": {r["clip_id"].rsplit(":", 1)[1]: r
                        for r in pq.read_table(out / "rejects.parquet").to_pylist()},
            "metrics": json.loads((tmp / "reports/landmarks.json").read_text())}


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    if not GRID.is_dir():
        pytest.skip(f"{GRID} is absent (real GRID clips of speaker s1)")
    tmp = tmp_path_factory.mktemp("trim")
    # a short one: lgbf8n's 14 garbage frames + 0.8 s of face (under min_duration_s = 1 s)
    _ff("-i", GRID / "lgbf8n.mpg", "-t", "1.267", "-c:v", "libx264", "-preset", "ultrafast",
        tmp / "short.mp4")
    # two faces in every frame: the clip beside itself
    _ff("-i", GRID / "bbaf2n.mpg", "-filter_complex", "[0:v][0:v]hstack", "-an", "-c:v",
        "libx264", "-preset", "ultrafast", tmp / "two.mp4")
    videos = {"lgbf8n": GRID / "lgbf8n.mpg", "pbwx1s": GRID / "pbwx1s.mpg",
              "bbaf2n": GRID / "bbaf2n.mpg", "short": tmp / "short.mp4", "two": tmp / "two.mp4"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        return _run_stage(tmp, videos)


@pytest.mark.slow
@pytest.mark.realdata
def test_garbage_head_is_trimmed_not_rejected(grid_run):
    for clip in ("lgbf8n", "pbwx1s"):
        r, s = grid_run["rows"][clip], grid_run["stats"][clip]
        assert s["kept_frames"] == [14, 90] and r["n_frames"] == 90      # the trim, recorded
        assert np.isnan(r["landmarks_px"][:14]).all() and not r["face_found"][:14].any()
        assert np.isfinite(r["landmarks_px"][14:]).all() and r["face_found"][14:].all()
        assert r["identity_frame"] >= 14                                 # a frame with the face
    assert grid_run["stats"]["bbaf2n"]["kept_frames"] == [0, 90]           # a clean clip: all
    m = grid_run["metrics"]
    assert (m["clips_trimmed"], m["frames_trimmed"]) == (2, 28)


@pytest.mark.slow
@pytest.mark.realdata
def test_a_good_span_under_min_duration_is_rejected(grid_run):
    r = grid_run["rejects"]["short"]
    assert r["reason"] == "no_face"
    # 38 frames: 14 of garbage, then 24 with the face (0.80 s, under 1 s)
    assert "(the longest: frames 14-38, 0.80 s)" in r["message"], r["message"]


@pytest.mark.slow
@pytest.mark.realdata
def test_a_second_face_is_counted_and_rejected_above_the_limit(grid_run):
    r = grid_run["rejects"]["two"]
    assert r["reason"] == "multiple_faces"
    assert "more than one face in 3 of the 3 frames the detector ran on (100%), above " \
           "landmarks.max_multi_face_fraction=0.5" in r["message"], r["message"]
    assert grid_run["stats"]["bbaf2n"]["multi_face_detections"] == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_a_second_face_is_recorded_when_allowed(tmp_path, monkeypatch):
    if not GRID.is_dir():
        pytest.skip(f"{GRID} is absent")
    _ff("-i", GRID / "bbaf2n.mpg", "-filter_complex", "[0:v][0:v]hstack", "-an", "-c:v",
        "libx264", "-preset", "ultrafast", tmp_path / "two.mp4")
    monkeypatch.chdir(tmp_path)
    run = _run_stage(tmp_path, {"two": tmp_path / "two.mp4"}, max_multi_face_fraction=1.0)
    assert run["stats"]["two"]["multi_face_detections"] == run["stats"]["two"]["detections"] == 3
    assert run["metrics"]["clips_with_multiple_faces"] == 1


@pytest.mark.realdata
def test_a_60px_face_in_a_6000x4000_photo_is_found(tmp_path):
    """The real MEAD face shrunk to 60 px (its dlib box: 496 px in the 1080p frame) on a
    6000x4000 canvas: 5 px at detect_max_px 480, found at the full resolution."""
    if not MEAD_VIDEO.is_file():
        pytest.skip(f"{MEAD_VIDEO} is absent")
    _ff("-i", MEAD_VIDEO, "-frames:v", "1", tmp_path / "frame.png")
    frame = cv2.imread(str(tmp_path / "frame.png"), cv2.IMREAD_GRAYSCALE)
    s = 60 / 496
    small = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    big = np.full((4000, 6000), 140, np.uint8)
    big[2500:2500 + small.shape[0], 4100:4100 + small.shape[1]] = small
    cfg = LandmarksConfig()
    faces, px, up = detect_growing(make_backend(cfg), big, cfg)
    assert len(faces) == 1 and (px, up) == (0, 0)            # full resolution, no upsampling
    (x0, y0, x1, y1), _ = faces[0]
    face_x, face_y = 4100 + 704 * s, 2500 + 372 * s           # the face box's corner, scaled
    assert abs(x0 - face_x) < 15 and abs(y0 - face_y) < 15 and 50 < x1 - x0 < 90
