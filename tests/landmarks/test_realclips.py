"""Real clips through the real decoder and dlib: frame rates, face share, tracking, dropouts."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import LandmarksConfig
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.data.landmarks import DlibBackend, LandmarkError, fan_weights_path, process_clip, read_clip
from kfusion.pipeline.media.container import MediaError, probe
from kfusion.pipeline.media.video import iter_frames

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "realclips"
MEAD = REAL / "mead/M030/video/front/sad/level_3/001.mp4"


@pytest.fixture(scope="module")
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (real test clips; see the README there)")
    return REAL


@pytest.fixture(scope="module")
def backend():
    return DlibBackend("hog")


def test_vfr_clip_comes_out_at_constant_30_fps(real):
    path = real / "other/vfr_talking_head.mp4"
    info = probe(path)
    n = sum(1 for _ in iter_frames(path, fps=30))
    assert abs(n - info.video_duration_s * 30) <= 1, (n, info.video_duration_s)
    assert info.fps < 25          # really variable / ~22 fps at the source


def test_no_video_stream_is_a_media_error(real):
    with pytest.raises(MediaError) as e:
        list(iter_frames(real / "mead/M030/audio/sad/level_3/001.m4a"))
    assert e.value.reason == "no_video_stream"


@pytest.mark.slow
def test_mead_1080p_clip_face_in_95_percent_at_30_fps(real, backend):
    cfg = LandmarksConfig()
    r = process_clip("mead", str(MEAD), backend, cfg)
    c = read_clip(r.row)
    assert r.row["fps"] == 30 and c["n_frames"] == 112          # 3.733 s x 30
    assert c["face_found"].mean() >= 0.95
    assert r.detections <= c["n_frames"] / 10                    # detect sparsely, then track
    assert (r.row["src_w"], r.row["src_h"]) == (1920, 1080)
    lm = c["landmarks_px"]
    assert np.isfinite(lm).all() and lm.min() > 0 and lm.max() < 256   # inside the 256 crop
    assert (c["crop_box"] == c["crop_box"][0]).all()             # still head: one crop per clip
    assert c["crop_box"][0, 2] > 500                             # a 1080p face, not the thumbnail


@pytest.mark.parametrize("name,frames", [("other/bbaf2n.mpg", 90), ("other/00001.mp4", 144)])
def test_grid_and_lrs2_decode_and_yield_landmarks(real, backend, name, frames):
    r = process_clip(name, str(real / name), backend, LandmarksConfig())
    c = read_clip(r.row)
    assert c["n_frames"] == frames and c["face_found"].mean() >= 0.95
    assert c["confidence"][c["face_found"]].min() > 0.6
    # the identity JPEG is the 256 crop
    import cv2
    img = cv2.imdecode(np.frombuffer(r.row["identity_jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (256, 256, 3)


def test_blacked_out_frames_are_bridged_and_marked(real, backend, tmp_path):
    # Frames 30-33 (30 fps) of a GRID clip painted black: tracking confidence must collapse
    # there, the frames count as no face, and the 4-frame gap is interpolated.
    src = real / "other/bbaf2n.mpg"
    dst = tmp_path / "dropout.mp4"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(src), "-vf",
                    "fps=30,drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(n,30,33)'",
                    "-an", "-c:v", "libx264", "-crf", "10", str(dst)], check=True)
    # smoothing off: this checks the bridging itself (smoothing would average across it)
    cfg = LandmarksConfig(max_gap_frames=5, min_face_fraction=0.5, smoothing=0)
    c = read_clip(process_clip("d", str(dst), backend, cfg).row)
    assert not c["face_found"][30:34].any() and c["face_found"][:30].all() and c["face_found"][35:].all()
    assert (c["confidence"][30:34] == 0).all()
    lm = c["landmarks_px"]
    assert np.isfinite(lm[30:34]).all()
    # linear: frame 31 lies 2/5 of the way from frame 29 to frame 34
    assert np.allclose(lm[31], lm[29] + 0.4 * (lm[34] - lm[29]), atol=1e-3)
    # with bridging off, those frames carry no landmarks
    c0 = read_clip(process_clip("d", str(dst), backend, LandmarksConfig(max_gap_frames=0,
                                                                         min_face_fraction=0.5,
                                                                         smoothing=0)).row)
    assert np.isnan(c0["landmarks_px"][30:34]).all()


def test_fan_without_weights_names_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torch
    monkeypatch.setattr(torch.hub, "_hub_dir", None)   # honour TORCH_HOME for this test
    with pytest.raises(LandmarkError, match=r"2DFAN4-11f355bf06\.pth\.tar.*fan_weights_dir"):
        fan_weights_path(str(tmp_path / "fan"))
