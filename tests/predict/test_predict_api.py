"""The Python API: stitching against the model called by hand, short audio, output files.
(Chunked encoding of long audio, shared with the features stage: tests/data/test_encoders.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kfusion.config import from_dict
from kfusion.shapes import EMOTIONS, window_timing
from kfusion.pipeline.media.container import decode_audio
from kfusion.pipeline.predict.predictor import (Predictor, PredictError, landmarks_csv, output_paths, predict,
                              write_csv)
from train_helpers import write_synthetic_windows  # tests/train, on sys.path (conftest.py)

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO.parent / "shared/realclips/other/00001.mp4"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    if not AUDIO.is_file():
        pytest.skip(f"{AUDIO} absent (the shared real clips)")
    from kfusion.pipeline.training.loop import train
    from test_predict_cli import tiny_params
    tmp = tmp_path_factory.mktemp("api")
    windows = write_synthetic_windows(tmp / "windows", n_train=32, n_val=8, n_test=8, n_mels=80)
    best = train(from_dict(tiny_params(tmp), "tiny"), windows, tmp / "models").best
    return Predictor(best, device="cpu")


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    import cv2
    import skimage.data
    p = tmp_path_factory.mktemp("face") / "astronaut.png"
    cv2.imwrite(str(p), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return p


@pytest.mark.slow
def test_short_audio_is_one_window_called_by_hand(predictor: Predictor, face: Path,
                                                  tmp_path: Path) -> None:
    # 0.5 s of real speech: T = 15 frames from one zero-padded 1 s window, cut to 15
    x = decode_audio(AUDIO)[8000:16000]
    wav = tmp_path / "half.wav"
    sf.write(wav, x, 16000, subtype="FLOAT")
    r = predictor.predict(wav, face, emotion="fear")
    assert r.landmarks_crop.shape == (15, 68, 2) and r.n_windows == 1
    assert r.emotion == "fear" and r.emotion_probabilities is None and r.paths == {}

    from kfusion.pipeline.predict.predictor import clip_features
    mel, w2v = clip_features(x, predictor.cfg, predictor.encoder())
    assert predictor.encoder_info["encoder"] == "whisper"   # the synthetic windows' encoder
    batch = {"mel": torch.from_numpy(mel[None, :100]),
             "w2v": torch.from_numpy(w2v[None, :50].astype(np.float32)),   # 50 Whisper frames
             "identity": torch.from_numpy(r.identity.landmarks_crop[None]),
             "emotion": torch.tensor([EMOTIONS.index("fear")])}
    with torch.no_grad():
        by_hand = predictor.model(batch)[0, :15].numpy()
    np.testing.assert_allclose(r.landmarks_crop, by_hand, atol=1e-4)


@pytest.mark.slow
def test_stitched_windows_use_the_windows_stage_spans(predictor: Predictor, face: Path) -> None:
    r = predictor.predict(AUDIO, face, emotion="auto", stride_frames=10)
    T = len(r.landmarks_crop)
    assert T == round(len(decode_audio(AUDIO)) / 16000 * 30)
    assert abs(sum(r.emotion_probabilities.values()) - 1) < 1e-5
    # the tiny head did not beat chance on its held-out windows: auto falls back to neutral
    assert (r.emotion, r.emotion_source) == ("neutral", "neutral") and "held-out" in r.emotion_note
    # window at frame 20 covers mel frames 67..166 and Whisper frames 33..82 (t0 = 0.667 s)
    t = window_timing(predictor.cfg, "whisper")
    assert (t.audio_starts(20), t.n_tokens) == ((67, 33), 50)
    # stride 30 (no overlap) vs 10: both are blends of the same model; where only one window
    # covers a frame (the first 10 frames) they agree exactly
    r30 = predictor.predict(AUDIO, face, emotion=r.emotion, stride_frames=30)
    np.testing.assert_allclose(r30.landmarks_crop[:10], r.landmarks_crop[:10], atol=1e-4)


def test_output_names_and_csv(tmp_path: Path) -> None:
    p = output_paths("some/dir/talk.mp4")
    assert p["crop_npy"] == Path("some/dir/talk.crop.npy")
    assert p["image_csv"] == Path("some/dir/talk.image.csv") and p["json"] == Path("some/dir/talk.json")
    pts = np.arange(3 * 68 * 2, dtype=np.float32).reshape(3, 68, 2)
    rows = landmarks_csv(pts[:2]).splitlines()
    assert len(rows) == 136 and rows[0] == "0,0,0.000,1.000" and rows[-1] == "1,67,270.000,271.000"
    write_csv(tmp_path / "a.csv", pts, frames_per_block=2)     # blocks of 2 frames: 2 + 1
    rows = (tmp_path / "a.csv").read_text().splitlines()
    assert rows[0] == "frame,point,x,y" and len(rows) == 1 + 3 * 68
    assert rows[1 + 2 * 68] == "2,0,272.000,273.000"
    with pytest.raises(PredictError, match="ending in .mp4"):
        output_paths("talk.gif")


def test_missing_checkpoint_message(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match=r"dvc repro.*--checkpoint"):
        predict("a.wav", "b.png", checkpoint=tmp_path / "none.pt")
