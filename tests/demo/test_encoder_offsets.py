"""Each content encoder's frames against the tiny demo corpus's phoneme onsets (exact to the
sample): Whisper is aligned, the PPG runs late and the features stage's shift moves it back
(docs/encoders.md, "Alignment"; the full-corpus figures: bench/encoder_offsets.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kfusion.config import FeaturesConfig
from kfusion.pipeline.data.encoders import build_encoder
from kfusion.pipeline.data.encoders import whisper as W
from kfusion.pipeline.data.encoders.offsets import demo_clips, measure
from kfusion.shapes import CONTENT_FRAME_OFFSET_S as STAMP


@pytest.mark.slow
def test_encoder_frames_line_up_with_the_phoneme_onsets(tiny_run: Path):
    whisper = build_encoder("whisper", FeaturesConfig())
    shift = FeaturesConfig().ppg_shift_ms
    ppg = build_encoder("ppg", FeaturesConfig())                  # shifted, as the stage stores it
    assert ppg.record["ppg_shift_ms"] == shift == 40.0
    raw = lambda x: ppg.logprobs(x)                               # noqa: E731 (hama's own frames)
    clips = list(demo_clips(tiny_run / "demo"))
    assert len(clips) == 4 and sum(len(on) for _, _, on in clips) > 80
    d = measure(clips, {"logmel": (lambda x: W.log_mel(x).T, 0.01, 0.0),
                        "whisper": (whisper.encode, 0.02, STAMP["whisper"]),
                        "ppg raw": (raw, 0.02, STAMP["ppg"]),
                        "ppg": (ppg.encode, 0.02, STAMP["ppg"]),
                        "ppg raw p": (lambda x: np.exp(raw(x)), 0.02, STAMP["ppg"]),
                        "ppg p": (lambda x: np.exp(ppg.encode(x).astype(np.float32)), 0.02, STAMP["ppg"])})
    ms = {k: v["offset_ms"] for k, v in d.items()}
    ref = ms["logmel"]   # the method's own bias: the log-mel cannot run late
    assert abs(ref) < 8, ms
    assert abs(ms["whisper"] - ref) < 10, ms                    # aligned: no compensation
    for suffix in ("", " p"):                                    # log-probabilities, probabilities
        assert ms[f"ppg raw{suffix}"] - ref > 20, ms             # hama's frames run late
        assert ms[f"ppg{suffix}"] == pytest.approx(ms[f"ppg raw{suffix}"] - shift, abs=3), ms
        assert abs(ms[f"ppg{suffix}"] - ref) < 25, ms            # the shift brings them back
