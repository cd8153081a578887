"""wav2vec2 (the paper's content encoder) and its random-weights stand-in.

- `wav2vec2`: the last hidden state of a frozen `Wav2Vec2Model`, loaded with
  `local_files_only=True` from a hub id (the local Hugging Face cache) or a directory:
  nothing downloads. 768 wide at 50 frames/s (frame k reads samples 320 k .. 320 k + 400).
- `random`: the same architecture (`Wav2Vec2Config()` defaults = wav2vec2-base) with random
  weights drawn from `features.random_seed` alone (never the training seed). Used only when
  asked for (`features.encoder: random`) and recorded as `encoder_fallback: true`.
- Batches: clips sorted by length, at most `batch_samples` of padded audio and at most
  `max_pad_fraction` padding per batch, attention masked over the padding. wav2vec2-base
  still normalises its first conv layer over the padded length (group norm), so padding
  shifts every frame a little (2.5% padding: mean |diff| 1.5% of mean |h|, corr 0.9997,
  tested); near-equal lengths keep that small.
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Any

import numpy as np

from kfusion.shapes import CONTENT_HOP_SAMPLES, W2V_RECEPTIVE_SAMPLES, n_w2v_frames
from kfusion.pipeline.data.encoders.chunking import encode_chunked

ONE_PASS_FRAMES = 1500        # 30 s: longer audio goes in chunks (attention is quadratic)
# 26 s cores with 2 s of context either side: every piece fits the 30 s one pass
CHUNK_FRAMES, CONTEXT_FRAMES = 1300, 100
RANDOM_ARCHITECTURE = "transformers.Wav2Vec2Config() defaults (wav2vec2-base)"


class EncoderLoadError(FileNotFoundError):
    """An encoder whose weights cannot be loaded here (one line; a stage exits 2)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message   # the short why, without the advice


def load_wav2vec2(name_or_dir: str):
    """The pretrained model in eval mode, or EncoderLoadError saying why not (offline)."""
    from transformers import Wav2Vec2Model
    try:
        return Wav2Vec2Model.from_pretrained(name_or_dir, local_files_only=True).eval()
    except Exception as e:   # missing from the cache, no such folder, corrupt weights
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        reason = f"wav2vec2 {name_or_dir!r} cannot be loaded offline ({why})"
        raise EncoderLoadError(f"{reason}; put the model in the Hugging Face cache or a local "
                               f"folder (features.wav2vec2), or choose another features.encoder",
                               reason) from None


def random_wav2vec2(seed: int):
    """wav2vec2-base's architecture with random weights that are a function of `seed` only,
    in eval mode (the global RNG is left as it was)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Wav2Vec2Model(Wav2Vec2Config()).eval()   # 12 layers, 768 wide


def state_sha256(model) -> str:
    """SHA-256 over the model's tensors (names and float32 bytes, in state_dict order): the
    identity of the weights actually loaded, whatever file or seed they came from."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(t.detach().float().cpu().numpy()).tobytes())
    return h.hexdigest()


def normalise(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip: what Wav2Vec2FeatureExtractor(do_normalize) does."""
    x = samples.astype(np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def plan_batches(lengths: list[int], batch_samples: int, max_pad_fraction: float) -> list[list[int]]:
    """Indices grouped into batches of near-equal length (sorted), <= batch_samples padded."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            b = batches[-1]
            longest, shortest = lengths[i], lengths[b[0]]
            if (len(b) + 1) * longest <= batch_samples and \
                    longest - shortest <= max_pad_fraction * longest:
                b.append(i)
                continue
        batches.append([i])
    return batches


def wav2vec2_features(model, clips: list[np.ndarray], *, device: str = "cpu", half: bool = False,
                      batch_samples: int = 960_000, max_pad_fraction: float = 0.05) -> list[np.ndarray]:
    """Last hidden states per clip, in one pass each: list of (n_w2v_frames(n), 768) float16."""
    import torch
    dtype = torch.float16 if (half and device.startswith("cuda")) else torch.float32
    out: list[np.ndarray | None] = [None] * len(clips)
    lengths = [len(c) for c in clips]
    for batch in plan_batches(lengths, batch_samples, max_pad_fraction):
        longest = max(lengths[i] for i in batch)
        x = np.zeros((len(batch), longest), np.float32)   # (B, n)
        mask = np.zeros((len(batch), longest), np.int64)  # attention masked over the padding
        for j, i in enumerate(batch):
            x[j, :lengths[i]] = normalise(clips[i])
            mask[j, :lengths[i]] = 1
        with torch.no_grad():
            xt = torch.from_numpy(x).to(device=device, dtype=dtype)
            h = model(xt, attention_mask=torch.from_numpy(mask).to(device)).last_hidden_state
        h = h.float().cpu().numpy()                       # (B, T, 768)
        for j, i in enumerate(batch):
            out[i] = h[j, :n_w2v_frames(lengths[i])].astype(np.float16)
    return out  # type: ignore[return-value]


class Wav2Vec2Encoder:
    """`wav2vec2` or `random`: encode_many(clips) -> [(frames, 768) float16]."""

    def __init__(self, model, record: dict[str, Any], *, device: str, half: bool,
                 batch_samples: int, max_pad_fraction: float):
        self.record, self.device, self.half = record, device, half
        self.batch_samples, self.max_pad_fraction = batch_samples, max_pad_fraction
        self.model = model.to(device)
        if half and device.startswith("cuda"):
            self.model = self.model.half()
        self.record["encoder_runtime"] = f"torch, {'float16' if half and device.startswith('cuda') else 'float32'}"

    def one_pass(self, samples: np.ndarray) -> np.ndarray:
        return wav2vec2_features(self.model, [samples], device=self.device, half=self.half)[0]

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """One clip, chunked past 30 s (each chunk normalised on its own, like a clip)."""
        return encode_chunked(self.one_pass, samples, n_frames=n_w2v_frames(len(samples)),
                              per_frame=CONTENT_HOP_SAMPLES, max_frames=ONE_PASS_FRAMES,
                              core_frames=CHUNK_FRAMES, context_frames=CONTEXT_FRAMES,
                              tail=W2V_RECEPTIVE_SAMPLES - CONTENT_HOP_SAMPLES)

    def encode_many(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Clips up to 30 s batched by length; longer ones one by one, in chunks."""
        short = [i for i, c in enumerate(clips) if n_w2v_frames(len(c)) <= ONE_PASS_FRAMES]
        out: list[np.ndarray | None] = [None] * len(clips)
        batched = wav2vec2_features(self.model, [clips[i] for i in short], device=self.device,
                                    half=self.half, batch_samples=self.batch_samples,
                                    max_pad_fraction=self.max_pad_fraction)
        for i, h in zip(short, batched):
            out[i] = h
        for i, c in enumerate(clips):
            if out[i] is None:
                out[i] = self.encode(c)
        return out  # type: ignore[return-value]


def wav2vec2_record(name_or_dir: str, model) -> dict[str, Any]:
    return {"encoder": "wav2vec2", "encoder_source": name_or_dir, "encoder_package": "transformers",
            "encoder_version": metadata.version("transformers"),
            "encoder_sha256": state_sha256(model), "encoder_fallback": False}


def random_record(seed: int, model) -> dict[str, Any]:
    return {"encoder": "random", "encoder_source": RANDOM_ARCHITECTURE,
            "encoder_package": "transformers", "encoder_version": metadata.version("transformers"),
            "encoder_sha256": state_sha256(model), "encoder_fallback": True, "random_seed": seed}
