"""The fast paths of `kfusion predict` (issue 16) give what the straightforward code gave: the
same pixels, the same text, the same numbers. Each test holds the plain version as its
reference (what the code did before), on real media where it matters."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kfusion.config import Config
from kfusion.pipeline.data.encoders.chunking import encode_chunked
from kfusion.pipeline.media.container import decode_audio, probe
from kfusion.pipeline.media.draw import PARTS, draw_landmarks
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.media.mp4 import write_mp4
from kfusion.pipeline.media.video import iter_frames
from kfusion.pipeline.predict.predictor import (PredictError, RememberedDetections, decode_image,
                                                find_identity, landmarks_csv)
from test_predict_api import AUDIO, face, predictor  # noqa: F401  (fixtures)
from test_predict_cli import assert_user_error, ckpt, kfusion, media  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- drawing
def draw_by_part_and_point(img, pts, color, thickness, radius):
    """draw_landmarks as it was: one polylines call per part, one circle call per point."""
    out = np.ascontiguousarray(img.copy())
    p = np.round(pts * 16).astype(np.int32)
    for a, b, closed in PARTS:
        cv2.polylines(out, [p[a:b + 1]], closed, color, thickness, cv2.LINE_AA, shift=4)
    for x, y in p:
        cv2.circle(out, (int(x), int(y)), radius * 16, color, -1, cv2.LINE_AA, shift=4)
    return out


def test_drawing_in_three_calls_gives_the_pixels_of_one_call_per_part_and_point():
    import skimage.data
    img = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    for trial in range(40):
        pts = rng.uniform(-10, 266, (68, 2)).astype(np.float32)   # some off the image
        pts[60:68] = pts[48:56] + rng.normal(0, 0.7, (8, 2))          # inner lips on the outer
        thickness, radius = (1, 1) if trial % 2 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        np.testing.assert_array_equal(
            draw_landmarks(img, pts, color, thickness=thickness, radius=radius),
            draw_by_part_and_point(img, pts, color, thickness, radius), err_msg=str(trial))
    pts[3, 0] = np.nan                                                # no face: the image as is
    np.testing.assert_array_equal(draw_landmarks(img, pts), img)


# ----------------------------------------------------------------------------- CSV
def csv_by_value(points, start_frame=0):
    """landmarks_csv as it was: one f-string per row."""
    T = len(points)
    frame = np.repeat(np.arange(start_frame, start_frame + T), 68)
    point = np.tile(np.arange(68), T)
    xy = points.reshape(-1, 2).tolist()
    return "".join(f"{f},{p},{x:.3f},{y:.3f}\n" for f, p, (x, y) in zip(frame, point, xy))


def test_csv_in_one_format_call_is_the_text_of_one_per_value():
    pts = np.random.default_rng(1).uniform(-300, 2000, (41, 68, 2)).astype(np.float32)
    pts[0, :6, 0] = [-0.0, -0.0004, 0.0005, 2.0005, 1e9, -1e-9]      # signs, ties, sizes
    pts[1, 0] = [np.nan, np.inf]
    for start in (0, 1800):
        assert landmarks_csv(pts, start) == csv_by_value(pts, start)
    assert landmarks_csv(pts[:0]) == ""


# ----------------------------------------------------------------------------- image decode
def test_one_ffmpeg_run_decodes_the_gray_and_rgb_pixels_of_two(tmp_path: Path):
    import skimage.data
    astro = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    images = {"odd.png": (astro[:301, :333], []), "rgba.png": (cv2.cvtColor(astro, cv2.COLOR_BGR2BGRA), []),
              "gray.png": (cv2.cvtColor(astro, cv2.COLOR_BGR2GRAY), []),
              "420.jpg": (astro[:301, :333], [cv2.IMWRITE_JPEG_QUALITY, 85]),
              "444.jpg": (astro, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])}
    for name, (img, flags) in images.items():
        cv2.imwrite(str(tmp_path / name), img, flags)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(tmp_path / "odd.png"),
                    "-pix_fmt", "yuv422p", str(tmp_path / "422.jpg")], check=True)
    for path in sorted(tmp_path.iterdir()):
        gray, rgb = decode_image(path, 30)
        np.testing.assert_array_equal(gray, next(iter_frames(path, pix_fmt="gray")), path.name)
        np.testing.assert_array_equal(rgb, next(iter_frames(path, pix_fmt="rgb24")), path.name)
    (tmp_path / "text.png").write_text("not a picture\n")
    with pytest.raises(PredictError, match=r"image .*text.png: cannot be decoded \("):
        decode_image(tmp_path / "text.png", 30)


class CountingBackend:
    def __init__(self, backend):
        self.backend, self.detections = backend, 0

    def detect(self, image, upsample=None):
        self.detections += 1
        return self.backend.detect(image, upsample)

    def predict(self, image, box):
        return self.backend.predict(image, box)


@pytest.mark.realdata
def test_a_detection_on_the_same_pixels_is_made_once(media):  # noqa: F811
    import dataclasses
    from kfusion.pipeline.data.landmarks import detect_growing, make_backend, postprocess, track_clip
    cfg = Config()
    dlib = make_backend(cfg.landmarks)
    counting = CountingBackend(dlib)
    ident, _ = find_identity(media["face"], cfg, backend=counting)
    # detect_growing found it at the stage's size; the tracker's first frame asked again
    assert counting.detections == 1
    # the plain way, every detection made: the same face
    gray = next(iter_frames(media["face"], pix_fmt="gray"))
    _, px, up = detect_growing(dlib, gray, cfg.landmarks)
    found_at = dataclasses.replace(cfg.landmarks, detect_max_px=px, detect_upsample=up)
    plain = postprocess(track_clip([gray], dlib, found_at), cfg.landmarks)
    np.testing.assert_array_equal(ident.landmarks_crop, plain.landmarks_px[0])
    np.testing.assert_array_equal(ident.crop_box, plain.crop_box[0].astype(np.float32))
    # other pixels of the same size are other detections
    remembered = RememberedDetections(counting)
    before = counting.detections
    faces = remembered.detect(gray[::4, ::4].copy(), 0)
    assert remembered.detect(np.zeros_like(gray[::4, ::4]), 0) == [] and len(faces) == 1
    assert remembered.detect(gray[::4, ::4].copy(), 0) == faces and counting.detections == before + 2


# ----------------------------------------------------------------------------- encoder
def test_chunked_encoding_hands_all_pieces_to_encode_pieces_at_once():
    x = np.random.default_rng(2).standard_normal(320 * 97 + 150).astype(np.float32)
    local = lambda piece: np.stack([piece[320 * k:320 * k + 400].mean(keepdims=True)   # noqa: E731
                                    for k in range(len(piece) // 320 + 1)])
    calls = []

    def pieces(ps):
        calls.append([len(p) for p in ps])
        return [local(p) for p in ps]
    one = encode_chunked(local, x, n_frames=98, per_frame=320, max_frames=40, core_frames=20,
                         context_frames=5, tail=80)
    got = encode_chunked(local, x, n_frames=98, per_frame=320, max_frames=40, core_frames=20,
                         context_frames=5, tail=80, encode_pieces=pieces)
    np.testing.assert_array_equal(got, one)
    assert len(calls) == 1 and len(calls[0]) == 5          # cores of 20 frames: 0, 20, ..., 80


@pytest.mark.slow
@pytest.mark.realdata
def test_whisper_chunks_side_by_side_are_the_chunks_one_by_one():
    from kfusion.pipeline.data.encoders import whisper as W
    speech = decode_audio(AUDIO)
    x = np.tile(speech, -(-70 * 16000 // len(speech)))[:70 * 16000]   # real speech, repeated
    # 3500 states: chunks of 1250, 1500, 1500 and 750
    path = W.model_dir("")
    kw = dict(device="cpu", compute_type="int8", threads=2, half=False)
    one = W.WhisperEncoder(path, {}, **kw).encode(x)
    two = W.WhisperEncoder(path, {}, piece_threads=2, **kw).encode(x)
    np.testing.assert_array_equal(two, one)                 # CTranslate2: two threads, 1 core each
    mel = W.log_mel(x)
    pieces = [mel[:, :2500], mel[:, 1500:4500], mel[:, 3500:6500], mel[:, 5500:]]
    torch_one = W.WhisperEncoder(path, {}, runtime="torch", **kw)
    torch_two = W.WhisperEncoder(path, {}, runtime="torch", piece_threads=2, **kw)
    for a, b in zip(torch_two.encode_pieces(pieces), [torch_one.encode_mel(m) for m in pieces]):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3    # the 30 s pieces: one batch


# ----------------------------------------------------------------------------- model
@pytest.mark.slow
def test_model_workers_side_by_side_give_the_landmarks_of_one(predictor):  # noqa: F811
    from kfusion.pipeline.predict.predictor import clip_features, window_starts_for
    x = decode_audio(AUDIO)
    mel, w2v = clip_features(x, predictor.cfg, predictor.encoder(), predictor.mel_transform())
    T = round(len(x) / 16000 * 30)
    starts = window_starts_for(T, 30, 7)
    ident = np.random.default_rng(3).uniform(60, 200, (68, 2)).astype(np.float32)
    one = predictor._landmarks(mel, w2v, starts, ident, 2, T, 4, workers=1)
    three = predictor._landmarks(mel, w2v, starts, ident, 2, T, 4, workers=3)
    assert len(starts) > 12 and one.shape == (T, 68, 2)     # several rounds of 3 batches of 4
    np.testing.assert_array_equal(three, one)


# ----------------------------------------------------------------------------- video
def test_mp4_from_i420_frames_and_blocks(tmp_path: Path):
    import skimage.data
    base = cv2.resize(skimage.data.astronaut(), (128, 96), interpolation=cv2.INTER_AREA)
    rgb = np.stack([np.roll(base, 3 * t, axis=1) for t in range(20)])            # (20, 96, 128, 3)
    i420 = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420) for f in rgb])        # (20, 144, 128)
    out = tmp_path / "v.mp4"
    write_mp4(out, [i420[:7], i420[7], i420[8:]], fps=30, size_wh=(128, 96), pix_fmt="yuv420p")
    write_mp4(tmp_path / "rgb.mp4", rgb, fps=30, size_wh=(128, 96))   # ffmpeg converts
    decoded = np.stack(list(iter_frames(out, pix_fmt="rgb24"))).astype(int)
    via_ffmpeg = np.stack(list(iter_frames(tmp_path / "rgb.mp4", pix_fmt="rgb24"))).astype(int)
    assert decoded.shape == rgb.shape and probe(out).n_video_frames == 20
    # H.264 and 4:2:0 lose ~5 grey levels on this detailed picture either way (4.9 vs 4.8)
    assert np.abs(decoded - rgb).mean() < np.abs(via_ffmpeg - rgb).mean() + 0.5 < 6
    with pytest.raises(ValueError, match=r"expected \(144, 128\) uint8 \(yuv420p\)"):
        write_mp4(tmp_path / "w.mp4", [rgb[0]], fps=30, size_wh=(128, 96), pix_fmt="yuv420p")


# ----------------------------------------------------------------------------- predict
def test_an_audio_problem_is_reported_before_a_face_problem(ckpt, media, tmp_path):  # noqa: F811
    # the two are looked at side by side; the audio's error is the one the user sees first,
    # as when they ran in turn
    r = kfusion("--audio", media["not_audio"], "--image", media["no_face"], "--out",
                tmp_path / "o.mp4", "--checkpoint", ckpt)
    assert_user_error(r, f"audio {media['not_audio']}", "cannot be decoded")
    r = kfusion("--audio", media["audio"], "--image", media["no_face"], "--out",
                tmp_path / "o.mp4", "--checkpoint", ckpt)
    assert_user_error(r, "no face found", "no_face.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_second_predict_reuses_what_the_first_loaded(predictor, face, tmp_path):  # noqa: F811
    predictor.wait_loaded()
    encoder, backend, loads = predictor.encoder(), predictor.backend(), dict(predictor.load_seconds)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)      # predict runs torch on one thread, then gives them back
    a = predictor.predict(AUDIO, face, emotion="sad", out=tmp_path / "a.mp4")
    b = predictor.predict(AUDIO, face, emotion="sad")
    assert predictor.encoder() is encoder and predictor.backend() is backend
    assert predictor.load_seconds == loads and torch.get_num_threads() == 3
    torch.set_num_threads(threads)
    np.testing.assert_array_equal(a.landmarks_crop, b.landmarks_crop)
    steps = {"decode_audio", "face", "features", "log_mel", "emotion", "model", "silence"}
    assert steps | {"render_mp4", "write_landmarks"} == set(a.timings_s) and steps == set(b.timings_s)
    assert 0 < b.wall_s and max(a.timings_s.values()) <= a.wall_s
