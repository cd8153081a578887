"""Decoding in process (PyAV) gives the frames of ffmpeg's pipe, byte for byte, or says it
cannot; the landmarks stage relies on both (kfusion.pipeline.media.video.decode_in_process)."""
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import dlib
import numpy as np
import pytest

from kfusion.config import LandmarksConfig
from kfusion.pipeline.data.landmarks import (PREDICTOR_FILE, DlibBackend, dlib_model_path,
                                             process_clip, read_clip, same_pixels, shape_points,
                                             shape_predictor)
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.media.video import (NotInProcess, decode_in_process, pipe_frames,
                                          rescale_near)

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "realclips"
TESTSRC = ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate={rate}", "-t", "1.5"]


def _encode(path: Path, *args: str, rate: str = "30") -> Path:
    """A synthetic clip (moving test pattern, so no two frames are alike) made by ffmpeg."""
    cmd = [ffmpeg_binary(), "-v", "error", "-y"]
    cmd += [a.format(rate=rate) for a in args] if args else \
        [a.format(rate=rate) for a in TESTSRC] + ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run(cmd + [str(path)], check=True)
    return path


def _assert_same_frames(path: Path) -> list:
    """Every gray frame equal to the pipe's, and the colour too where given in process."""
    pipe, ours = list(pipe_frames(path)), list(decode_in_process(path))
    assert len(ours) == len(pipe), (len(ours), len(pipe))
    for t, (a, b) in enumerate(zip(pipe, ours)):
        assert b.gray.shape == a.gray.shape and np.array_equal(b.gray, a.gray), t
        rgb = b.colour()
        assert rgb is None or np.array_equal(rgb, a.colour()), t
    return ours


def test_rescale_near_rounds_halves_away_from_zero():
    # 25 fps frames on the 30 fps grid: 1.2 -> 1, 2.4 -> 2, 3.6 -> 4, 4.8 -> 5
    assert [rescale_near(k, Fraction(1, 25), Fraction(1, 30)) for k in range(6)] == [0, 1, 2, 4, 5, 6]
    assert rescale_near(1, Fraction(1, 2), Fraction(1)) == 1        # 0.5 -> 1
    assert rescale_near(-1, Fraction(1, 2), Fraction(1)) == -1      # -0.5 -> -1
    assert rescale_near(3, Fraction(1, 2), Fraction(1)) == 2        # 1.5 -> 2
    # the VFR clip's first frame: 507 / 15360 s = 0.99 ticks of 1/30 s
    assert rescale_near(507, Fraction(1, 15360), Fraction(1, 30)) == 1
    # a start time of 1 s (microseconds) in a 1/15360 time base
    assert rescale_near(1_000_000, Fraction(1, 1_000_000), Fraction(1, 15360)) == 15360


@pytest.mark.parametrize("rate,frames,repeats", [
    ("30", 45, 0),              # on the grid: every frame once
    ("25", 46, 8),              # every 5th source frame shown twice (ticks 3, 9, ...)
    ("60", 45, 0),              # every other frame dropped
    ("30000/1001", 45, 0),      # 29.97 fps: within the grid for 1.5 s
])
def test_frame_rates_come_out_as_the_pipe_gives_them(tmp_path, rate, frames, repeats):
    ours = _assert_same_frames(_encode(tmp_path / "clip.mp4", rate=rate))
    assert len(ours) == frames
    assert sum(a is b for a, b in zip(ours, ours[1:])) == repeats   # repeats are the same Frame


def test_video_starting_after_the_audio_repeats_its_first_frame(tmp_path):
    # video 0.05 s late (tick 1.5 -> 2): the pipe shows frame 0 at ticks 0, 1 and 2
    path = _encode(tmp_path / "late.mp4", "-itsoffset", "0.05", *TESTSRC,
                   "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1.5",
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    ours = _assert_same_frames(path)
    assert len(ours) == 45 and ours[0] is ours[1] is ours[2] and ours[3] is not ours[2]


def test_odd_sizes_are_cropped_even_and_other_yuv_layouts_give_gray_only(tmp_path):
    odd = _encode(tmp_path / "odd.mkv", "-f", "lavfi", "-i", "testsrc2=size=97x65:rate=30",
                  "-t", "1", "-c:v", "ffv1", "-pix_fmt", "yuv420p")
    ours = _assert_same_frames(odd)
    assert ours[0].gray.shape == (64, 96) and ours[0].colour().shape == (64, 96, 3)
    for fmt in ("yuv444p", "yuvj420p"):   # ffmpeg converts the chroma: colour from the pipe only
        ours = _assert_same_frames(_encode(tmp_path / f"{fmt}.mp4", *TESTSRC, "-c:v", "libx264",
                                           "-pix_fmt", fmt))
        assert ours[0].colour() is None


def test_sources_it_cannot_match_raise_not_in_process(tmp_path):
    clip = _encode(tmp_path / "clip.mp4")
    rotated = tmp_path / "rotated.mp4"      # the pipe turns it upright; in process it would not
    subprocess.run([ffmpeg_binary(), "-v", "error", "-display_rotation", "90", "-i", str(clip),
                    "-c", "copy", str(rotated)], check=True)
    ten_bit = _encode(tmp_path / "ten.mp4", *TESTSRC, "-c:v", "libx264", "-pix_fmt", "yuv420p10le")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    audio = _encode(tmp_path / "audio.m4a", "-f", "lavfi", "-i", "sine=sample_rate=16000", "-t", "1")
    for path, why in ((rotated, "rotated 90"), (ten_bit, "yuv420p10le"), (text, "notes.mp4"),
                      (audio, "no video stream")):
        with pytest.raises(NotInProcess, match=why):
            next(iter(decode_in_process(path)))
    assert next(iter(pipe_frames(rotated))).gray.shape == (96, 64)   # the pipe's upright frame


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent (real test clips)")
@pytest.mark.parametrize("name", ["other/vfr_talking_head.mp4", "other/bbaf2n.mpg",
                                  "other/00001.mp4", "mead/M030/video/front/sad/level_3/001.mp4"])
def test_real_clips_decode_as_the_pipe_does(name):
    # variable frame rate (starting one tick late), MPEG-1 at 25 fps, MPEG-4 part 2, and
    # MEAD's 1080p yuvj444p (gray in process, colour from the pipe)
    _assert_same_frames(REAL / name)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent (real test clips)")
def test_a_rotated_clip_takes_the_pipe_in_the_stage(tmp_path):
    # GRID 360x288, turned 90 degrees by metadata: the stage's frames must be the pipe's
    # upright 288x360 ones, with the face found as in the original
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(REAL / "other/bbaf2n.mpg"),
                    "-vf", "transpose=2", "-c:v", "libx264", "-crf", "12", "-an",
                    str(tmp_path / "sideways.mp4")], check=True)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-display_rotation", "-90", "-i",
                    str(tmp_path / "sideways.mp4"), "-c", "copy", str(rotated)], check=True)
    r = process_clip("r", str(rotated), DlibBackend("hog"), LandmarksConfig())
    assert (r.row["src_w"], r.row["src_h"]) == (360, 288)
    assert read_clip(r.row)["face_found"].mean() >= 0.95


def test_shape_points_reads_dlib_text_including_negative_coordinates():
    pts = [dlib.point(-3 + i, 200 - 7 * i) for i in range(68)]
    shape = dlib.full_object_detection(dlib.rectangle(-10, 0, 100, 110), dlib.points(pts))
    out = shape_points(shape)
    assert out.dtype == np.float32 and out.shape == (68, 2)
    assert out.tolist() == [[-3 + i, 200 - 7 * i] for i in range(68)]


def test_same_pixels_compares_whole_frames():
    a = np.arange(12 * 8, dtype=np.uint8).reshape(12, 8)
    assert same_pixels(a, a) and same_pixels(a, a.copy())
    last_row, mid_row = a.copy(), a.copy()
    last_row[-1, -1] += 1          # the middle row equal: the whole frame decides
    mid_row[6, 0] += 1
    assert not same_pixels(a, last_row) and not same_pixels(a, mid_row)
    assert not same_pixels(a, a[:10])


def test_stage_workers_start_with_the_shape_predictor_loaded(tmp_path):
    # Fresh processes (each starts its own fork server): with the stage's preload the worker's
    # predictor cache already holds the model, read once in the fork server; without, empty.
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from kfusion.pipeline.data.executor import map_shards\n"
        "from kfusion.pipeline.data.landmark_shards import PRELOAD\n"
        "from kfusion.pipeline.data.landmarks import shape_predictor\n"
        "def cached(_):\n"
        "    info = shape_predictor.cache_info()\n"
        "    return info.currsize, info.misses\n"
        "if __name__ == '__main__':\n"
        "    [info] = map_shards(cached, [0], workers=1,\n"
        "                        preload=PRELOAD if sys.argv[1] == 'yes' else ())\n"
        "    print(*info)\n")
    got = {flag: subprocess.run([sys.executable, str(script), flag], capture_output=True, text=True,
                                check=True).stdout.split() for flag in ("yes", "no")}
    assert got == {"yes": ["1", "1"], "no": ["0", "0"]}


def test_backends_in_one_process_share_one_predictor():
    path = str(dlib_model_path(PREDICTOR_FILE))
    assert DlibBackend().predictor is DlibBackend("hog", 1).predictor is shape_predictor(path)
