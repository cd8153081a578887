"""Audio augmentation (`features.audio_augment`): perturbed copies of each training clip's
speech, whose features the features stage caches as extra shards (data/features/aug/<name>/)
and training draws instead of the clean ones (`train.augment.audio_p`).

A variant is named by a string:

- `pitch+2`, `pitch-1.5`: the pitch moved by that many semitones, the duration kept (a phase
  vocoder with phase locking stretches time by the pitch ratio, then a resampler compresses
  it back). The ratio is the nearest fraction with a denominator up to
  kfusion.config.AUDIO_MAX_DENOMINATOR (pitch+2: 9/8, i.e. +2.04 semitones): a resampler
  between two small integers is exact and fast, where torchaudio's pitch_shift resamples
  between 16000 and 17959 Hz (24 s for 3 s of audio here).
- `noise20`: white Gaussian noise at 20 dB below the clip's mean power. The noise is drawn
  from a generator seeded by (clip id, variant), so a shard is the same on every run.

Both keep every sample where it was in time, so the landmark targets and every window's
audio span stay valid. Speed perturbation (Kaldi's 0.9/1.1) is not offered: it moves the
speech in time, and the targets would have to be re-timed with it.
"""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np

from kfusion.config import AudioVariant   # the names' grammar is the config's (it checks them)

VERSION = 1   # part of a variant shard's fingerprint: bump when a perturbation's output changes
PITCH_N_FFT, PITCH_HOP = 512, 128     # 32 ms / 8 ms at 16 kHz


def pitch_shift(samples: np.ndarray, ratio: Fraction) -> np.ndarray:
    """(n,) float32 -> (n,) float32 with every frequency times `ratio`, the duration kept:
    stretched `ratio` times longer (phase_vocoder), then resampled ratio:1 shorter."""
    import torch
    import torchaudio.functional as AF
    n = len(samples)
    slow = phase_vocoder(np.array(samples, dtype=np.float32), 1 / float(ratio))   # owned, writable
    y = AF.resample(torch.from_numpy(slow), orig_freq=ratio.numerator, new_freq=ratio.denominator)
    out = np.zeros(n, np.float32)
    out[:min(n, len(y))] = y[:n].numpy()
    return out


def phase_vocoder(x: np.ndarray, rate: float) -> np.ndarray:
    """x played `rate` times as fast, its pitch kept: (n,) -> (round(n / rate),) float32.

    A phase vocoder with identity phase locking (Laroche & Dolson, 1999): each bin takes the
    phase its nearest spectral peak accumulates, plus the bin's offset from that peak in the
    analysis frame. Without the locking (torchaudio.functional.phase_vocoder), bins drift
    apart in phase when slowing down: a 200 Hz tone stretched 9/8 came out at 24% of its
    level (tests/data/test_audio_augment.py)."""
    import torch
    window = torch.hann_window(PITCH_N_FFT)
    spec = torch.stft(torch.from_numpy(x), PITCH_N_FFT, PITCH_HOP, window=window,
                      return_complex=True).numpy()                     # (F, T)
    n_bins, n_frames = spec.shape
    omega = 2 * np.pi * PITCH_HOP * np.arange(n_bins) / PITCH_N_FFT    # expected advance per hop
    mag, phase = np.abs(spec), np.angle(spec)
    steps = np.arange(0, n_frames - 1, rate)
    out = np.empty((n_bins, len(steps)), np.complex64)
    acc = phase[:, 0].copy()                      # each bin's accumulated synthesis phase
    for j, s in enumerate(steps):
        i, frac = int(s), s - int(s)
        a = mag[:, i]
        peaks = np.flatnonzero((a >= np.r_[0.0, a[:-1]]) & (a >= np.r_[a[1:], 0.0]))
        owner = peaks[np.searchsorted((peaks[1:] + peaks[:-1]) // 2 + 1, np.arange(n_bins),
                                      side="right")]                    # each bin's peak
        out[:, j] = ((1 - frac) * a + frac * mag[:, i + 1]) * \
            np.exp(1j * (acc[owner] + phase[:, i] - phase[owner, i]))
        dev = phase[:, i + 1] - phase[:, i] - omega
        acc += omega + dev - 2 * np.pi * np.round(dev / (2 * np.pi))
    y = torch.istft(torch.from_numpy(out), PITCH_N_FFT, PITCH_HOP, window=window,
                    length=int(round(len(x) / rate)))
    return y.numpy().astype(np.float32)


def noise_seed(clip_id: str, variant: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{variant}\0{clip_id}".encode()).digest()[:8], "little")


def add_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """(n,) float32 + white Gaussian noise whose power is the clip's mean power / 10^(snr/10)."""
    x = np.asarray(samples, dtype=np.float32)
    power = float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    sd = math.sqrt(power / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).standard_normal(len(x)) * sd
    return (x + noise).astype(np.float32)


def perturb(samples: np.ndarray, variant: AudioVariant, clip_id: str) -> np.ndarray:
    """The clip's speech under `variant`, as many samples as it had."""
    if variant.kind == "pitch":
        return pitch_shift(samples, variant.ratio)
    return add_noise(samples, variant.value, noise_seed(clip_id, variant.name))
