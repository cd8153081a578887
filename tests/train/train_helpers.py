"""Shared by the training and predict tests and the benchmarks: a tiny real-model params dict
and a synthetic `data/windows` folder (imported by name: tests/train is on sys.path)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.shapes import EMOTIONS, MOUTH_INDICES, N_POINTS, SPLITS, n_content_frames

N_MELS = 16
MEL_FRAMES = 100   # one 1 s window at the defaults (kfusion.shapes.window_timing)


@lru_cache(maxsize=None)
def whisper_record() -> dict:
    """The real record of the bundled Whisper tiny.en (what the features stage writes), so a
    checkpoint trained on synthetic windows predicts with a real, fast encoder."""
    from kfusion.config import FeaturesConfig
    from kfusion.pipeline.data.encoders import build_encoder
    return dict(build_encoder("whisper", FeaturesConfig()).record)


def content_shape(encoder: dict) -> tuple[int, int]:
    """(tokens per 1 s window, width) of an encoder record's features."""
    return n_content_frames(encoder["encoder"], 16000), int(encoder["feature_dim"])


def tiny_params(tmp: Path, **train) -> dict:
    """A params dict: the real model, shrunk; paths inside tmp."""
    return {
        "seed": 7, "device": "cpu", "reports": str(tmp / "reports"),
        "features": {"n_mels": N_MELS}, "landmarks": {"out": str(tmp / "landmarks")},
        "windows": {"out": str(tmp / "windows")},
        "model": {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                  "ff_mult": 1, "lstm_hidden": 8, "fusion_channels": 8, "dropout": 0.1,
                  "kan": {"hidden": [8], "grid_size": 3}},
        "train": {"epochs": 3, "batch_size": 16, "threads": 1,
                  "resume_dir": str(tmp / "resume"), "out": str(tmp / "models"),
                  "emotion_classifier_epochs": 5, "emotion_classifier_hidden": 8, **train},
        "evaluate": {"out": str(tmp / "metrics"), "plots": str(tmp / "plots"),
                     "qualitative_windows": 2, "qualitative_frames": 3},
    }


def write_synthetic_windows(root: str | Path, *, n_train: int = 64, n_val: int = 16,
                            n_test: int = 16, n_mels: int = 16, frames: int = 30,
                            seed: int = 0, corpus: str = "demo", with_gt: bool = True,
                            encoder: dict | None = None) -> Path:
    """A tiny `data/windows`-like folder with a learnable audio -> mouth relation.

    Each window has a loudness track a(t) in [0, 1]; the mel and content (`w2v`) arrays carry
    it (plus noise), and the reference landmarks are the identity with the mouth points opened
    by 6 px * a(t) and a small emotion-dependent smile. The ground truth is the reference
    minus a fixed per-window detector jitter (when `with_gt`, demo corpus only). `encoder`:
    the content encoder record the meta names (its frame count and width shape `w2v`);
    default the bundled Whisper tiny.en's.
    """
    root = Path(root)
    encoder = encoder or whisper_record()
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, N_POINTS, endpoint=False)
    template = np.stack([128 + 50 * np.cos(theta), 128 + 60 * np.sin(theta)], -1).astype(np.float32)
    open_dir = np.zeros((N_POINTS, 2), np.float32)
    # lips part vertically with the loudness: the upper lip (outer 49-53, inner 61-63) moves
    # up, the lower lip (55-59, 65-67) down, the corners (48, 54, 60, 64) stay
    open_dir[[49, 50, 51, 52, 53, 61, 62, 63], 1] = -1.0
    open_dir[[55, 56, 57, 58, 59, 65, 66, 67], 1] = 1.0
    counts = dict(zip(SPLITS, (n_train, n_val, n_test)))
    for s, (split, n) in enumerate(counts.items()):
        arrays, emotion = _synthetic_split(rng, n, n_mels, frames, template, open_dir,
                                           content_shape(encoder), with_gt=with_gt and corpus == "demo")
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            np.save(d / f"{name}.npy", a)
        _write_table(d, split, s, emotion, corpus, encoder)
    return root


def _synthetic_split(rng: np.random.Generator, n: int, n_mels: int, frames: int,
                     template: np.ndarray, open_dir: np.ndarray, content: tuple[int, int], *,
                     with_gt: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One split's window arrays (kfusion.shapes.WINDOW_ARRAYS) and its emotion ids."""
    freq = rng.uniform(1.0, 4.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = lambda t: 0.5 + 0.5 * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])
    a_audio = amp(np.linspace(0, 1, MEL_FRAMES))
    a_video = amp(np.linspace(0, 1, frames))
    n_tokens, width = content
    a_w2v = amp(np.linspace(0, 1, n_tokens))
    emotion = rng.integers(0, len(EMOTIONS), n)
    identity = template[None] + rng.normal(0, 2.0, (n, 1, 2)).astype(np.float32)
    mel = rng.normal(0, 0.1, (n, MEL_FRAMES, n_mels)).astype(np.float32)
    mel += a_audio[:, :, None].astype(np.float32) * np.linspace(1, 0.2, n_mels, dtype=np.float32)
    mel[:, :, -1] += emotion[:, None] / len(EMOTIONS)
    w2v = rng.normal(0, 0.1, (n, n_tokens, width)).astype(np.float32)
    w2v[:, :, :8] += a_w2v[:, :, None]
    w2v[:, :, 8:16] += (emotion[:, None, None] / len(EMOTIONS))
    smile = np.zeros((len(EMOTIONS), N_POINTS, 2), np.float32)
    smile[:, [48, 54], 1] = -np.linspace(0, 2, len(EMOTIONS))[:, None]  # mouth corners rise
    landmarks = (identity[:, None] + 6.0 * a_video[:, :, None, None] * open_dir
                 + smile[emotion][:, None]).astype(np.float32)              # (n, T, 68, 2)
    jitter = rng.normal(0, 0.5, (n, 1, N_POINTS, 2)).astype(np.float32)
    gt = (landmarks - jitter) if with_gt else np.full_like(landmarks, np.nan)
    return {"landmarks": landmarks, "identity": identity.astype(np.float32), "mel": mel,
            "w2v": w2v.astype(np.float16), "emotion": emotion.astype(np.int64),
            "gt_landmarks": gt.astype(np.float32)}, emotion


def _write_table(d: Path, split: str, s: int, emotion: np.ndarray, corpus: str,
                 encoder: dict) -> None:
    """windows.parquet and meta.json as the windows stage writes them (speakers S<s>NN)."""
    n = len(emotion)
    clip = [f"{corpus}:S{s}{i // 4:02d}:{EMOTIONS[e]}:1:{i:03d}" for i, e in enumerate(emotion)]
    pq.write_table(pa.table({
        "window_id": [f"{c}@{0}" for c in clip], "clip_id": clip,
        "corpus": [corpus] * n, "speaker": [c.split(":")[1] for c in clip],
        "emotion": [EMOTIONS[e] for e in emotion], "emotion_id": emotion.astype(np.int64),
        "level": np.ones(n, np.int64), "start_frame": np.zeros(n, np.int64),
        "split": [split] * n}), d / "windows.parquet")
    (d / "meta.json").write_text(json.dumps({
        **encoder, "fps": 30, "corpora": [corpus],
        "identity": "clip", "split": "speaker", "leaky": False}))
