"""Silence is still (issue 14, item 2): the gate's loudness against hand-computed dBFS, its
decisions on constructed audio, and predict on real speech followed by silence and inaudible
noise: the face there is the photo's, and the speech frames are the model's, untouched.
(The openings on the demo-trained checkpoint, before and after: bench/silence.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kfusion.pipeline.media.container import decode_audio
from kfusion.pipeline.predict.silence import (FLOOR_DBFS, fill_short_pauses, frame_loudness_dbfs,
                                              speech_gate)
from test_predict_api import AUDIO, face, predictor  # noqa: F401  (fixtures)

SR, FPS = 16000, 30


def tone(seconds: float, dbfs: float) -> np.ndarray:
    """A 220 Hz sine whose RMS is `dbfs` (amplitude = RMS x sqrt 2)."""
    t = np.arange(int(seconds * SR)) / SR
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def noise(seconds: float, dbfs: float) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(int(seconds * SR))
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_loudness_is_the_rms_in_dbfs_of_each_frame():
    x = np.concatenate([tone(1.0, -20.0), np.zeros(SR, np.float32), tone(1.0, -40.0)])
    loud = frame_loudness_dbfs(x, SR, FPS, 90)
    # 1/30 s of a 220 Hz sine is 7.3 periods: its RMS is within 0.3 dB of the whole sine's
    assert np.abs(loud[2:28] - (-20.0)).max() < 0.3
    assert (loud[32:58] == -200.0).all()                   # digital zero: the 1e-10 floor
    assert np.abs(loud[62:88] - (-40.0)).max() < 0.3


def test_short_pauses_are_speech_long_ones_and_edges_are_not():
    speech = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0], bool)
    got = fill_short_pauses(speech, min_frames=3)
    assert got.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_gate_is_one_in_speech_zero_in_silence_and_eases_between():
    # 1 s tone, 1 s digital zeros, 0.1 s of -80 dBFS noise between two tones, 1 s of -60 dBFS
    x = np.concatenate([tone(1.0, -25.0), np.zeros(SR, np.float32), tone(1.0, -25.0),
                        noise(0.1, -80.0), tone(1.0, -25.0), noise(1.0, -60.0)])
    T = round(len(x) / SR * FPS)
    g = speech_gate(x, SR, FPS, T)
    assert g.threshold_dbfs == FLOOR_DBFS                  # -25 - 35 = -60 < the floor
    w = g.weight
    assert (w[:27] == 1).all() and (w[34:57] == 0).all()   # speech, then silence: exact
    assert (w[63:120] == 1).all()                          # the 0.1 s pause is part of speech
    assert (w[128:] == 0).all()                            # -60 dBFS noise: silent
    ramp = w[27:34]
    assert (np.diff(ramp) <= 0).all() and 0 < ramp[1] < 1   # eases out, no snap
    loud = np.concatenate([tone(1.0, -5.0), noise(1.0, -45.0)])   # a loud recording's room noise
    g = speech_gate(loud, SR, FPS, 60)
    assert g.threshold_dbfs == pytest.approx(-40.0, abs=0.5) and (g.weight[35:] == 0).all()


@pytest.mark.realdata
def test_predict_holds_the_photo_in_silence_and_leaves_speech_alone(predictor, face,  # noqa: F811
                                                                    tmp_path: Path):
    speech = decode_audio(AUDIO)[:2 * SR]
    x = np.concatenate([speech, np.zeros(SR, np.float32), noise(1.0, -80.0), noise(1.0, -60.0)])
    wav = tmp_path / "speech_then_silence.wav"
    sf.write(wav, x, SR, subtype="FLOAT")
    still = predictor.predict(wav, face, emotion="neutral", out=tmp_path / "still.mp4")
    raw = predictor.predict(wav, face, emotion="neutral", silence="model")
    ident = still.identity.landmarks_crop
    gate = speech_gate(x, SR, FPS, len(raw.landmarks_crop))
    silent, voiced = gate.weight == 0, gate.weight == 1
    assert silent[66:].all() and silent.sum() >= 84        # the last 3 s (after the ease)
    assert np.abs(still.landmarks_crop[silent] - ident).max() < 1e-4   # the photo's face
    assert np.abs(raw.landmarks_crop[silent] - ident).max() > 1e-3     # the model alone is not
    assert voiced.sum() > 30                               # the real speech's frames ...
    assert np.abs(still.landmarks_crop[voiced] - raw.landmarks_crop[voiced]).max() < 1e-6
    assert np.allclose(np.load(tmp_path / "still.crop.npy"), still.landmarks_crop, atol=1e-3)
    record = json.loads((tmp_path / "still.json").read_text())["silence"]
    assert record["mode"] == "still" and record["silent_fraction"] == pytest.approx(
        silent.mean(), abs=1e-4)
    assert raw.silence == {"mode": "model"}


DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "best.pt"


@pytest.mark.realdata
@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(),
                    reason="models/best.pt absent: run `dvc repro` (the demo-trained checkpoint)")
def test_the_demo_trained_model_rests_in_silence(face, tmp_path: Path):  # noqa: F811
    """On the pipeline's own checkpoint (after `dvc repro`): digital zeros and -80/-60 dBFS
    noise give the photo's mouth opening within 1 px, which the model alone does not."""
    from kfusion.pipeline.predict.predictor import Predictor
    from kfusion.pipeline.training.metrics import mouth_opening
    pred = Predictor(DEMO_CHECKPOINT, device="cpu")
    for name, x in (("zeros", np.zeros(2 * SR, np.float32)), ("-80", noise(2.0, -80.0)),
                    ("-60", noise(2.0, -60.0))):
        wav = tmp_path / f"{name}.wav"
        sf.write(wav, x, SR, subtype="FLOAT")
        opening = {}
        for mode in ("still", "model"):
            r = pred.predict(wav, face, emotion="neutral", silence=mode)
            pts = np.concatenate([r.identity.landmarks_crop[None], r.landmarks_crop])
            o = mouth_opening(pts[None].astype(np.float32))[0].numpy()
            opening[mode] = np.abs(o[1:] - o[0]).mean()           # vs the photo's opening
        assert opening["still"] < 1.0, name
        assert opening["model"] > opening["still"], name
