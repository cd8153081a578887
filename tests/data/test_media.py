"""probe() and decode_audio() on real clips: numbers checked against what the files hold."""
from __future__ import annotations

import numpy as np
import pytest

from kfusion.pipeline.media.container import MediaError, decode_audio, probe
from data_helpers import realclips


def test_probe_mead_clip():
    info = probe(realclips() / "mead/M030/video/front/sad/level_3/001.mp4")
    assert (info.has_video, info.has_audio) == (True, True)
    assert (info.width, info.height, info.fps) == (1920, 1080, 30.0)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.sample_rate_hz, info.channels) == (48000, 2)
    assert info.n_video_frames == 112
    assert info.video_duration_s == pytest.approx(112 / 30)
    assert info.audio_duration_s == pytest.approx(3.69, abs=0.03)


def test_probe_audio_only_and_no_audio_stream():
    m4a = probe(realclips() / "mead/M030/audio/neutral/level_1/001.m4a")
    assert (m4a.has_video, m4a.has_audio, m4a.channels) == (False, True, 2)
    assert m4a.audio_duration_s == pytest.approx(6.22, abs=0.03)
    mute = probe(realclips() / "other/no_audio_stream.mp4")
    assert (mute.has_video, mute.has_audio, mute.fps) == (True, False, 25.0)
    assert mute.video_duration_s == pytest.approx(78 / 25)


def test_stream_lengths_not_container_length():
    # the container says 6.28 s; both streams hold 4.4 s (110 frames at 25 fps)
    info = probe(realclips() / "other/silent_audio_black_tail.mp4")
    assert info.duration_s == pytest.approx(6.28)
    assert info.video_duration_s == pytest.approx(4.4)
    assert info.audio_duration_s == pytest.approx(4.41, abs=0.03)


@pytest.mark.parametrize("name,seconds", [("other/00001.mp4", 4.8), ("other/bbaf2n.mpg", 2.978),
                                          ("other/lbax4n.mpg", 2.978)])
def test_decode_audio_lrs2_and_grid(name, seconds):
    x = decode_audio(realclips() / name)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) / 16000 == pytest.approx(seconds, abs=1e-3)
    assert 0.01 < float(np.sqrt(np.mean(x ** 2))) < 0.5   # real speech, not silence


def test_decode_resamples_to_requested_rate():
    src = realclips() / "mead/M030/audio/sad/level_3/001.m4a"
    a16, a8 = decode_audio(src), decode_audio(src, sample_rate_hz=8000)
    assert len(a16) == pytest.approx(2 * len(a8), abs=2)


def test_errors_carry_reason_codes(tmp_path):
    with pytest.raises(MediaError) as e:
        decode_audio(realclips() / "other/no_audio_stream.mp4")
    assert e.value.reason == "no_audio_stream"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(MediaError) as e:
        probe(junk)
    assert e.value.reason == "unreadable"
    with pytest.raises(MediaError) as e:
        probe(tmp_path / "absent.mp4")
    assert e.value.reason == "missing_file"
