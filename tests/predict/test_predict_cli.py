"""`kfusion predict` as a user runs it: a subprocess on real media, with a tiny checkpoint
written by the real training code (no trained model is needed in CI)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kfusion.config import from_dict
from kfusion.shapes import EMOTIONS
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.media.container import decode_audio, probe
from train_helpers import write_synthetic_windows  # tests/train, on sys.path (conftest.py)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MEAD_AUDIO = SHARED / "realclips/mead/M030/audio/sad/level_3/001.m4a"
MEAD_VIDEO = SHARED / "realclips/mead/M030/video/front/sad/level_3/001.mp4"
LRS2_VIDEO = SHARED / "realclips/other/00001.mp4"
DEMO = REPO / "data/demo/corpus"
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}


def tiny_params(tmp: Path, **model) -> dict:
    """The real model, shrunk; real feature sizes (80 mels, 384-wide Whisper tiny.en)."""
    return {"seed": 7, "device": "cpu",
            "model": {"d_model": 16, "n_heads": 2, "ff_mult": 1, "lstm_hidden": 8,
                      "fusion_channels": 8, "kan": {"hidden": [8], "grid_size": 3}, **model},
            "train": {"epochs": 1, "batch_size": 16, "threads": 1, "resume": False,
                      "resume_dir": str(tmp / "resume"), "out": str(tmp / "models"),
                      "emotion_classifier_epochs": 3, "emotion_classifier_hidden": 8}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """models/best.pt as the train stage writes it (kfusion.pipeline.training.loop.train), in seconds."""
    from kfusion.pipeline.training.loop import train
    tmp = tmp_path_factory.mktemp("ckpt")
    windows = write_synthetic_windows(tmp / "windows", n_train=32, n_val=8, n_test=8, n_mels=80)
    result = train(from_dict(tiny_params(tmp), "tiny"), windows, tmp / "models")
    return result.best


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    if not MEAD_AUDIO.is_file() or not MEAD_VIDEO.is_file():
        pytest.skip(f"real clips absent: {SHARED / 'realclips'} (the shared test media)")
    d = tmp_path_factory.mktemp("media")
    ff = ffmpeg_binary()
    face = d / "mead_frame.png"   # a real MEAD front-camera frame, 1920x1080
    subprocess.run([ff, "-v", "error", "-i", str(MEAD_VIDEO), "-frames:v", "1", str(face)], check=True)
    import skimage.data
    astro = skimage.data.astronaut()                                   # (512, 512, 3) RGB
    cv2.imwrite(str(d / "astronaut.png"), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    # two faces: the MEAD face (large, left) and the astronaut's (small, right)
    mead = cv2.resize(cv2.imread(str(face))[150:950, 560:1360], (400, 400), interpolation=cv2.INTER_AREA)
    two = np.full((400, 700, 3), 128, np.uint8)
    two[:, :400] = mead
    two[72:328, 430:686] = cv2.cvtColor(astro, cv2.COLOR_RGB2BGR)[20:276, 100:356]
    cv2.imwrite(str(d / "two_faces.png"), two)
    cv2.imwrite(str(d / "no_face.png"), np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)))
    (d / "not_audio.wav").write_text("this is not audio\n")
    import soundfile as sf
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    speech = decode_audio(MEAD_AUDIO)                                 # 16 kHz float32
    speech[16000:16003] = np.nan                                      # 3 NaN at 1.000 s
    sf.write(d / "nan.wav", speech, 16000, subtype="FLOAT")
    return {"nan": d / "nan.wav", "audio": MEAD_AUDIO, "face": face, "two": d / "two_faces.png",
            "astronaut": d / "astronaut.png", "no_face": d / "no_face.png",
            "not_audio": d / "not_audio.wav", "empty": d / "empty.wav", "dir": d}


def kfusion(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfusion.cli", "predict", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def test_a_checkpoint_of_another_encoder_exits_2(ckpt: Path, media: dict, tmp_path: Path) -> None:
    # the checkpoint says Whisper with other weights than the bundled ones: refused, one line
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["encoder"] = {**state["encoder"], "encoder_sha256": "0" * 64}
    torch.save(state, tmp_path / "other.pt")
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                "--checkpoint", tmp_path / "other.pt", "--emotion", "sad")
    assert_user_error(r, "encoder mismatch", "000000000000", "1a5afae06a4d")
    assert not (tmp_path / "o.mp4").exists()


# ----------------------------------------------------------------------------- full runs
MEAD_ARGS = ("--emotion", "auto", "--stride-frames", "7", "--device", "cpu")


@pytest.fixture(scope="module")
def mead_run(ckpt: Path, media: dict, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("mead_run") / "out.mp4"
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", out,
                "--checkpoint", ckpt, *MEAD_ARGS)
    return out, r


@pytest.mark.slow
@pytest.mark.realdata
def test_predict_mead_audio_and_face(mead_run, ckpt: Path, media: dict) -> None:
    out, r = mead_run
    tmp_path = out.parent
    assert r.returncode == 0, r.stderr
    assert f"checkpoint: {ckpt}" in r.stdout
    # the tiny checkpoint's emotion head is at chance on its held-out windows: neutral, and why
    assert "emotion: neutral (--emotion auto not used: its emotion classifier scored " in r.stdout
    assert "model: fusion kan, global_domain on, lstm on, global_input mel, target offset; " \
           "encoder whisper" in r.stdout and "random-weights fallback" not in r.stdout

    duration = len(decode_audio(media["audio"])) / 16000
    T = round(duration * 30)
    crop, image = np.load(tmp_path / "out.crop.npy"), np.load(tmp_path / "out.image.npy")
    assert crop.shape == image.shape == (T, 68, 2) and crop.dtype == np.float32
    assert np.isfinite(crop).all()
    meta = json.loads((tmp_path / "out.json").read_text())
    x0, y0, side = meta["crop_box"]
    # image px = crop px * side / 256 + (x0, y0): the landmark stage's crop rule, inverted
    np.testing.assert_allclose(image, crop * side / 256 + np.array([x0, y0]), rtol=1e-5, atol=1e-3)
    assert meta["emotion"] == "neutral" and meta["emotion_source"] == "neutral"
    assert meta["frames"] == T and meta["emotion_note"].startswith("its emotion classifier")
    assert abs(sum(meta["emotion_probabilities"].values()) - 1) < 1e-4   # in the JSON anyway
    assert meta["model"] == {"fusion": "kan", "global_domain": True, "lstm": True,
                             "global_input": "mel", "target": "offset"}
    enc = meta["encoder"]   # the content encoder's record, as the checkpoint holds it
    assert (enc["encoder"], enc["encoder_fallback"], enc["feature_dim"]) == ("whisper", False, 384)
    assert len(enc["encoder_sha256"]) == 64 and enc["encoder_version"] == "0.1.0"
    # dlib finds this face at x 704-1200, y 372-868 (496 px); the crop is 1.6 x its landmarks
    assert 850 < x0 + side / 2 < 1050 and 520 < y0 + side / 2 < 720 and 500 < side < 900
    rows = (tmp_path / "out.crop.csv").read_text().splitlines()
    assert rows[0] == "frame,point,x,y" and len(rows) == 1 + T * 68
    f, p, x, y = rows[1 + 5 * 68 + 60].split(",")                     # frame 5, point 60
    assert (int(f), int(p)) == (5, 60)
    assert abs(float(x) - crop[5, 60, 0]) < 1e-3 and abs(float(y) - crop[5, 60, 1]) < 1e-3

    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.fps == 30 and (info.width, info.height) == (256, 256)
    assert info.n_video_frames == T
    assert abs(info.video_duration_s - duration) <= 1 / 30 + 1e-6
    assert abs(info.audio_duration_s - duration) <= 1 / 30
    frames = decode_frames(out)
    assert len(frames) == T and frames[0].shape == (256, 256, 3)


@pytest.mark.slow
@pytest.mark.realdata
def test_predict_is_deterministic(mead_run, ckpt: Path, media: dict, tmp_path: Path) -> None:
    first, _ = mead_run
    out = tmp_path / "again.mp4"
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", out,
                "--checkpoint", ckpt, *MEAD_ARGS)
    assert r.returncode == 0, r.stderr
    for kind in ("crop", "image"):
        a = np.load(first.parent / f"out.{kind}.npy")
        b = np.load(tmp_path / f"again.{kind}.npy")
        assert np.array_equal(a, b)                    # bit-identical, not merely close
    assert a.std(axis=0).max() > 0                     # and the landmarks do move
    assert json.loads((tmp_path / "again.json").read_text())["emotion_probabilities"] == \
        json.loads((first.parent / "out.json").read_text())["emotion_probabilities"]
    # --silence model: the gate off, the model's own output (the same where there is speech)
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "m.mp4",
                "--checkpoint", ckpt, "--silence", "model", *MEAD_ARGS)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["silence"] == {"mode": "model"}
    assert json.loads((tmp_path / "again.json").read_text())["silence"]["mode"] == "still"


@pytest.mark.slow
@pytest.mark.realdata
def test_video_audio_track_two_faces_side_by_side(ckpt: Path, media: dict, tmp_path: Path) -> None:
    if not LRS2_VIDEO.is_file():
        pytest.skip(f"{LRS2_VIDEO} absent")
    out = tmp_path / "sbs.mp4"
    r = kfusion("--audio", LRS2_VIDEO, "--image", media["two"], "--out", out,
                "--checkpoint", ckpt, "--emotion", "happy", "--side-by-side")
    assert r.returncode == 0, r.stderr
    assert "2 faces found; using the largest" in r.stderr and "emotion: happy (given)" in r.stdout
    x0, _, side = json.loads((tmp_path / "sbs.json").read_text())["crop_box"]
    assert x0 + side / 2 < 400                # the large face on the left, not the small one
    info = probe(out)
    assert (info.width, info.height) == (512, 256)
    duration = len(decode_audio(LRS2_VIDEO)) / 16000
    assert np.load(tmp_path / "sbs.crop.npy").shape == (round(duration * 30), 68, 2)
    assert abs(info.audio_duration_s - duration) <= 1 / 30
    # right half: landmarks on the neutral canvas (light gray background, dark strokes)
    frame = decode_frames(out, max_frames=1)[0]
    right = frame[:, 256:].astype(int)
    assert np.median(right) > 200 and right.min() < 120


@pytest.mark.slow
def test_demo_corpus_pair(ckpt: Path, tmp_path: Path) -> None:
    videos = sorted(DEMO.glob("*/video/front/*/level_*/*.mp4")) if DEMO.is_dir() else []
    if not videos:
        pytest.skip("no demo corpus under data/demo (run `dvc repro demo`)")
    video = videos[0]
    rel = video.relative_to(DEMO).parts   # SPK, video, front, emotion, level, id.mp4
    audio = DEMO / rel[0] / "audio" / rel[3] / rel[4] / (video.stem + ".m4a")
    face = tmp_path / "face.png"
    try:   # copy first: the demo stage may be regenerating the corpus meanwhile
        audio = Path(shutil.copy(audio, tmp_path / "speech.m4a"))
        subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(video), "-frames:v", "1",
                        str(face)], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"demo corpus pair unreadable ({e}); regenerate with `dvc repro demo`")
    out = tmp_path / "demo.mp4"
    r = kfusion("--audio", audio, "--image", face, "--out", out, "--checkpoint", ckpt,
                "--emotion", rel[3])
    assert r.returncode == 0, r.stderr
    duration = len(decode_audio(audio)) / 16000
    assert np.load(tmp_path / "demo.image.npy").shape == (round(duration * 30), 68, 2)
    assert probe(out).fps == 30


def decode_frames(path: Path, max_frames: int | None = None) -> list[np.ndarray]:
    from kfusion.pipeline.media.video import iter_frames
    return list(iter_frames(path, pix_fmt="rgb24", max_frames=max_frames))


# ----------------------------------------------------------------------------- errors
def test_no_face(ckpt: Path, media: dict, tmp_path: Path) -> None:
    r = kfusion("--audio", media["audio"], "--image", media["no_face"], "--out",
                tmp_path / "o.mp4", "--checkpoint", ckpt)
    assert_user_error(r, "no face found", "no_face.png")
    assert not (tmp_path / "o.mp4").exists()


def test_several_faces_strict(ckpt: Path, media: dict, tmp_path: Path) -> None:
    r = kfusion("--audio", media["audio"], "--image", media["two"], "--out", tmp_path / "o.mp4",
                "--checkpoint", ckpt, "--strict")
    assert_user_error(r, "2 faces found", "--strict")


@pytest.mark.parametrize("which, needle", [("not_audio", "cannot be decoded"),
                                           ("empty", "no samples"),
                                           ("nan", "3 of 59051 samples are NaN or infinite "
                                                   "(the first is sample 16000, at 1.000 s"),
                                           ("astronaut", "has no audio stream"),
                                           ("missing", "does not exist")])
def test_bad_audio(ckpt: Path, media: dict, tmp_path: Path, which: str, needle: str) -> None:
    audio = media["dir"] / "nope.wav" if which == "missing" else media[which]
    r = kfusion("--audio", audio, "--image", media["face"], "--out", tmp_path / "o.mp4",
                "--checkpoint", ckpt)
    assert_user_error(r, f"audio {audio}", needle)


def test_checkpoint_of_another_model_configuration(ckpt: Path, media: dict, tmp_path: Path) -> None:
    # weights of the kan model under a config that says mlp: the code builds another model
    state = torch.load(ckpt, weights_only=False)
    state["config"]["model"]["fusion"] = "mlp"
    other = tmp_path / "other.pt"
    torch.save(state, other)
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                "--checkpoint", other)
    assert_user_error(r, "another model configuration", str(other))


def test_default_checkpoint_stale_against_params(ckpt: Path, media: dict, tmp_path: Path) -> None:
    # the pipeline's models/best.pt, but params.yaml now asks for another model
    (tmp_path / "models").mkdir()
    shutil.copy(ckpt, tmp_path / "models" / "best.pt")
    params = tiny_params(tmp_path, d_model=32)
    import yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                cwd=tmp_path)
    assert_user_error(r, "models/best.pt", "another model configuration", "model.d_model: 16",
                      "dvc repro")


def test_missing_default_checkpoint(media: dict, tmp_path: Path) -> None:
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                cwd=tmp_path)
    assert "checkpoint: models/best.pt (the pipeline's" in r.stdout
    assert_user_error(r, "models/best.pt", "dvc repro", "--checkpoint")


def test_output_folder_is_checked_before_the_checkpoint_loads(media: dict, tmp_path: Path) -> None:
    # no checkpoint at all: the output's error comes first, before any loading
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out",
                blocker / "out.mp4", "--checkpoint", tmp_path / "absent.pt")
    assert_user_error(r, "is not a folder", str(blocker))
    assert "checkpoint:" not in r.stdout


def test_output_cannot_be_written(ckpt: Path, media: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out",
                blocker / "out.mp4", "--checkpoint", ckpt)
    assert_user_error(r, "is not a folder", str(blocker))
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out",
                tmp_path / "out.avi", "--checkpoint", ckpt)
    assert_user_error(r, "ending in .mp4")


def test_unknown_emotion(ckpt: Path, media: dict, tmp_path: Path) -> None:
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                "--checkpoint", ckpt, "--emotion", "joyful")
    assert_user_error(r, "'joyful'", "neutral, angry")


@pytest.mark.slow
@pytest.mark.parametrize("record, source", [("trusted", "auto"), ("no_test", "neutral")])
def test_emotion_auto_follows_the_checkpoints_held_out_verdict(ckpt: Path, media: dict,
                                                              tmp_path: Path, record, source):
    """The tiny checkpoint's head, recorded as trusted (auto: its choice) or, as a checkpoint
    from before the held-out test, with no record (neutral, and why): probabilities either way."""
    state = torch.load(ckpt, weights_only=False)
    if record == "trusted":
        state["emotion_classifier"]["report"]["auto"]["usable"] = True
    else:
        del state["emotion_classifier"]["report"]["auto"]
    other = tmp_path / f"{record}.pt"
    torch.save(state, other)
    r = kfusion("--audio", media["audio"], "--image", media["face"], "--out", tmp_path / "o.mp4",
                "--checkpoint", other, "--stride-frames", "15")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "o.json").read_text())
    p = meta["emotion_probabilities"]
    top = max(p, key=p.get)
    assert meta["emotion_source"] == source
    if record == "trusted":
        assert meta["emotion"] == top and f"emotion: {top} (auto; {top} {p[top]:.2f}" in r.stdout
    else:
        assert meta["emotion"] == "neutral"
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("emotion: "))
        assert line == (f"emotion: neutral (--emotion auto not used: the checkpoint records no "
                        f"held-out test of its emotion classifier; the classifier's guess: {top} "
                        f"{p[top]:.2f}, " + line.split(f"{top} {p[top]:.2f}, ", 1)[1])
        assert line.endswith("; pass --emotion NAME to choose one)")


@pytest.mark.slow
@pytest.mark.realdata
def test_every_step_says_what_it_does(ckpt: Path, media: dict, tmp_path: Path) -> None:
    """Each step is named as it starts, and with KFUSION_PROGRESS=1 (or a terminal) the model
    and the video writing show a progress bar: 10 minutes of audio is minutes of work."""
    r = subprocess.run([sys.executable, "-m", "kfusion.cli", "predict", "--audio", str(media["audio"]),
                        "--image", str(media["face"]), "--out", str(tmp_path / "o.mp4"),
                        "--checkpoint", str(ckpt), "--emotion", "sad", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=300,
                       env={**ENV, "KFUSION_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.startswith("[predict]")]
    assert [s.split(" of ")[0].split(" on ")[0] for s in steps] == [
        "[predict] decode audio", "[predict] find the face", "[predict] features",
        "[predict] emotion", "[predict] model",
        "[predict] hold the face still where there is no speech", "[predict] write 111 frames"]
    assert "model: 100%" in r.stderr and "3/3 [" in r.stderr            # 10 windows, batches of 4
    assert "render: 100%" in r.stderr and "111/111 [" in r.stderr       # every frame
