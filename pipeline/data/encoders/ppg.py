"""Phoneme posteriorgram (PPG): the log-probabilities of hama's CTC phoneme recogniser
(`hama` wheel, its weights inside: `hama/assets/asr_waveform.hama`; a native engine, CPU only,
single-threaded).

- Output: (n // 320 + 1, 191) float32 log-probabilities at 50 frames/s over `symbols()`:
  hama's 189 decoder tokens (IPA, a few specials), then <wb> (word boundary, id 189) and
  <blank> (CTC blank, id 190). Raw model output: no temperature or blank bias (hama applies
  those only in its own best-path decode). hama.ASRModel returns only the best symbol per
  frame; the log-probabilities come from its `session` (pinned: hama==1.7.0).
- hama caps its output at 1500 frames (30 s) silently: longer input goes in 20 s cores
  with 2 s of context either side (chunking.py), cut on 320-sample boundaries.
- Its frames run late (~30 ms on the demo corpus, docs/encoders.md): `shift_frames` moves
  them earlier by `features.ppg_shift_ms`, so frame k describes the audio at 20 k ms.
"""
from __future__ import annotations

from functools import partial
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from kfusion.shapes import CONTENT_HOP_SAMPLES, CONTENT_RATE_HZ, n_content_frames
from kfusion.pipeline.data.encoders.chunking import encode_chunked
from kfusion.pipeline.data.encoders.whisper import file_sha256

MAX_FRAMES = 1500                        # hama's engine returns at most this many
CHUNK_FRAMES, CONTEXT_FRAMES = 1000, 100   # 20 s cores, 2 s context either side


def weights_path() -> Path:
    return Path(str(resources.files("hama.assets").joinpath("asr_waveform.hama")))


def load_hama():
    from hama import ASRModel
    return ASRModel(model_path=weights_path())


def symbols(model) -> list[str]:
    """The 191 symbols of the PPG's columns."""
    return list(model.decoder_tokens)


def logprobs_one_pass(model, samples: np.ndarray) -> np.ndarray:
    """(n // 320 + 1, 191) float32 for at most 1500 frames of audio."""
    wav = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)[None]
    log_probs, lengths = model.session.run(
        ["log_probs", "out_lengths"], {"waveform": wav, "waveform_lengths": np.array([wav.shape[1]])})
    return np.ascontiguousarray(log_probs[0, :int(lengths[0])], np.float32)


def shift_frames(frames: np.ndarray, shift_ms: float) -> np.ndarray:
    """Frame k of the result = the input at k + shift_ms / 20 ms (linear interpolation, the
    last frame held): features that run late by shift_ms, moved back in time."""
    pos = np.arange(len(frames)) + shift_ms / 1000 * CONTENT_RATE_HZ
    pos = np.clip(pos, 0, len(frames) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(frames) - 1)
    frac = (pos - i0)[:, None].astype(np.float32)
    return (1 - frac) * frames[i0] + frac * frames[i1]


def best_path(model, log_probs: np.ndarray) -> list[str]:
    """Greedy CTC decode: argmax per frame, repeats collapsed, blanks dropped; "|" = <wb>."""
    syms = symbols(model)
    ids = log_probs.argmax(axis=1)
    keep = np.r_[True, ids[1:] != ids[:-1]] & (ids != syms.index("<blank>"))
    return ["|" if syms[i] == "<wb>" else syms[i] for i in ids[keep]]


class PPGEncoder:
    """encode_many(clips) -> [(frames, 191) float16 log-probabilities, shifted]."""

    def __init__(self, record: dict[str, Any], *, shift_ms: float):
        self.record, self.shift_ms = record, shift_ms
        self.model = load_hama()
        self.record["encoder_runtime"] = "hama engine, CPU, one thread"

    def logprobs(self, samples: np.ndarray) -> np.ndarray:
        """Unshifted log-probabilities of one clip, chunked past 30 s."""
        return encode_chunked(partial(logprobs_one_pass, self.model), samples, n_frames=n_content_frames("ppg", len(samples)),
                              per_frame=CONTENT_HOP_SAMPLES, max_frames=MAX_FRAMES,
                              core_frames=CHUNK_FRAMES, context_frames=CONTEXT_FRAMES)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        return shift_frames(self.logprobs(samples), self.shift_ms).astype(np.float16)

    def encode_many(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        return [self.encode(c) for c in clips]


def ppg_record(shift_ms: float) -> dict[str, Any]:
    return {"encoder": "ppg", "encoder_source": "hama (asr_waveform.hama)", "encoder_package": "hama",
            "encoder_version": metadata.version("hama"), "encoder_sha256": file_sha256(weights_path()),
            "encoder_fallback": False, "ppg_shift_ms": shift_ms}
