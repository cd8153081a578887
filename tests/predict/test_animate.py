"""`kfusion predict --animate`: the identity photo warped to the predicted landmarks (issue 14,
item 9). The mouth region of the animated frames moves with the speech and is still in silence.

The landmark tracks here are built from a real speech envelope (the lower lip drops with the
loudness), so the test is about the animation, whatever model made the landmarks; the model's
own stillness in silence is issue 14's item 2.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import Config
from kfusion.pipeline.media.container import decode_audio
from kfusion.pipeline.media.warp import TalkingHead
from kfusion.pipeline.predict.predictor import find_identity
from test_predict_cli import MEAD_AUDIO, kfusion, media  # noqa: F401  (fixture)
from test_predict_cli import ckpt  # noqa: F401  (fixture)

LIPS = list(range(48, 68))


def speech_then_silence_tracks(identity: np.ndarray, samples: np.ndarray, fps: int = 30,
                               sr: int = 16000, open_px: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 2) tracks and (T,) openings in px: 1 s of digital silence, then the speech; the
    lower lip and the chin drop by open_px x the frame's RMS / the loudest frame's."""
    x = np.concatenate([np.zeros(sr, np.float32), samples])
    hop = sr // fps
    rms = np.sqrt([np.mean(x[i * hop:(i + 1) * hop] ** 2) for i in range(len(x) // hop)])
    opening = open_px * rms / rms.max()                                   # (T,)
    tracks = np.repeat(identity[None].astype(np.float64), len(opening), 0)
    tracks[:, [55, 56, 57, 58, 59, 65, 66, 67], 1] += opening[:, None]
    tracks[:, 5:12, 1] += 0.5 * opening[:, None]
    return tracks, opening


@pytest.mark.realdata
def test_the_mouth_moves_with_speech_and_is_still_in_silence(media):  # noqa: F811
    ident, _ = find_identity(media["face"], Config())
    speech = decode_audio(MEAD_AUDIO)[:2 * 16000]
    tracks, opening = speech_then_silence_tracks(ident.landmarks_crop, speech)
    head = TalkingHead(ident.crop_rgb, ident.landmarks_crop)
    frames = np.stack([head.frame(p) for p in tracks]).astype(np.int16)   # (T, 256, 256, 3)
    lo = np.floor(tracks[:, LIPS].min((0, 1))).astype(int) - 4
    hi = np.ceil(tracks[:, LIPS].max((0, 1))).astype(int) + 4
    mouth = np.abs(frames - ident.crop_rgb)[:, lo[1]:hi[1], lo[0]:hi[0]].mean((1, 2, 3))   # (T,)
    eyes = np.abs(frames - ident.crop_rgb)[:, :int(ident.landmarks_crop[36:48, 1].max()) + 4]
    silent = slice(0, 30)                                                 # the first second
    assert np.abs(frames[silent] - ident.crop_rgb).max() == 0           # the photo, unchanged
    loud = opening > 0.5 * opening.max()
    assert mouth[loud].mean() > 8 * max(mouth[silent].mean(), 0.5)      # grey levels: it opens
    assert np.corrcoef(mouth[30:], opening[30:])[0, 1] > 0.9            # ... with the loudness
    assert eyes.mean(axis=(1, 2, 3)).max() < 1.0                         # and the eyes stay put


@pytest.mark.slow
@pytest.mark.realdata
def test_predict_animate_writes_the_talking_head_beside_the_landmarks(ckpt, media,  # noqa: F811
                                                                      tmp_path: Path):
    out = tmp_path / "talk.mp4"
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", out,
                "--checkpoint", ckpt, "--emotion", "sad", "--animate", "--side-by-side",
                "--stride-frames", "15")
    assert r.returncode == 0, r.stderr
    from kfusion.pipeline.media.container import probe
    from kfusion.pipeline.media.video import iter_frames
    info = probe(out)
    T = len(np.load(tmp_path / "talk.crop.npy"))
    assert (info.width, info.height, info.n_video_frames) == (768, 256, T)
    # the third panel is the photo warped to the predicted landmarks (up to H.264's error)
    ident, _ = find_identity(media["face"], Config())
    head = TalkingHead(ident.crop_rgb, ident.landmarks_crop)
    pts = np.load(tmp_path / "talk.crop.npy")
    for t, frame in enumerate(iter_frames(out, pix_fmt="rgb24", max_frames=T)):
        if t % 25:
            continue
        want = head.frame(pts[t]).astype(int)
        assert np.abs(frame[:, 512:].astype(int) - want).mean() < 3.0, t
    assert json.loads((tmp_path / "talk.json").read_text())["frames"] == T
    assert "[predict] write" in r.stderr and "(animated face)" in r.stderr
