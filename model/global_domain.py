"""Global Domain (paper Sec. 3.2, Eq. 3-6): audio -> Transformer encoder E -> Conv ->
two Transformer decoders guided by the identity landmarks, one for the whole face (gb,
F = 136 wide) and one for the mouth points 48-67 (gb_m, M = 40 wide).

Time is the token axis everywhere (batch_first=True: attention runs over time, not over
the batch as in the authors' code). The decoders' queries are the identity landmarks
lifted to `n_tokens` tokens (the authors lift them with a Conv1d(1 -> 49)); each query
token sits at the time of one wav2vec2 frame, so gb and gb_m come out on the same 49-token
time axis as the Content Domain whatever the encoder's input rate (100 mel frames/s or
50 wav2vec2 frames/s). Sinusoidal encodings of time *in seconds* on both sides let the
cross-attention find the audio around each query's instant.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

W2V_HOP_S = 0.02  # wav2vec2: one frame per 320 samples at 16 kHz ...
W2V_OFFSET_S = 0.0125  # ... centred 200 samples into its 400-sample receptive field


def time_encoding(times_s: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of absolute times (seconds) -> (T, dim). Positions are in
    centiseconds so that 100 Hz mel frames land on integers, as in the usual encoding."""
    pos = times_s[:, None] * 100.0
    freq = torch.exp(torch.arange(0, dim, 2, device=times_s.device, dtype=times_s.dtype)
                     * (-math.log(10000.0) / dim))
    enc = torch.zeros(len(times_s), dim, device=times_s.device, dtype=times_s.dtype)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc


def token_times(n_tokens: int, device=None) -> torch.Tensor:
    """Times (s) of the wav2vec2 frames of a window: the common token axis."""
    return torch.arange(n_tokens, device=device) * W2V_HOP_S + W2V_OFFSET_S


class AudioEncoder(nn.Module):
    """E then Conv of Eq. 5-6: (B, T, in_dim) at `rate_hz` -> memory (B, T, d_model)."""

    def __init__(self, *, in_dim: int, rate_hz: float, offset_s: float, d_model: int,
                 n_heads: int, layers: int, ff_mult: int, dropout: float):
        super().__init__()
        self.rate_hz, self.offset_s, self.d_model = rate_hz, offset_s, d_model
        self.proj = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        # "Conv" of Eq. 5: adapts encoder features to the decoders' cross-attention;
        # kernel 3 over time also smooths the 10-20 ms frames a little
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device, dtype=torch.float32) / self.rate_hz
        x = self.proj(x) + time_encoding(t + self.offset_s, self.d_model).to(x.dtype)
        x = self.norm(self.encoder(x))  # (B, T, d)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d)


class IdentityDecoder(nn.Module):
    """D of Eq. 5/6: identity landmarks (B, n_points*2) as queries over the audio memory
    -> (B, n_tokens, out_dim)."""

    def __init__(self, *, identity_dim: int, out_dim: int, n_tokens: int, d_model: int,
                 n_heads: int, layers: int, ff_mult: int, dropout: float):
        super().__init__()
        self.n_tokens, self.d_model = n_tokens, d_model
        self.lift = nn.Linear(identity_dim, d_model)
        self.token = nn.Parameter(torch.zeros(n_tokens, d_model))  # per-token offset, like
        # the bias of the authors' Conv1d(1 -> 49) lift
        layer = nn.TransformerDecoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, out_dim)

    def forward(self, identity: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        pos = time_encoding(token_times(self.n_tokens, memory.device).float(), self.d_model)
        q = self.lift(identity)[:, None] + (self.token + pos).to(memory.dtype)  # (B, n_tok, d)
        return self.out(self.norm(self.decoder(q, memory)))  # (B, n_tok, out_dim)


class GlobalDomain(nn.Module):
    """Eq. 3-6. forward(audio (B, T, in_dim), v (B, 136), v_m (B, 40)) -> gb, gb_m."""

    def __init__(self, *, in_dim: int, rate_hz: float, offset_s: float, n_tokens: int,
                 n_points: int, n_mouth: int, d_model: int, n_heads: int, encoder_layers: int,
                 decoder_layers: int, ff_mult: int, dropout: float):
        super().__init__()
        sizes = dict(d_model=d_model, n_heads=n_heads, ff_mult=ff_mult, dropout=dropout)
        self.encoder = AudioEncoder(in_dim=in_dim, rate_hz=rate_hz, offset_s=offset_s,
                                    layers=encoder_layers, **sizes)
        self.face = IdentityDecoder(identity_dim=2 * n_points, out_dim=2 * n_points,
                                    n_tokens=n_tokens, layers=decoder_layers, **sizes)
        self.mouth = IdentityDecoder(identity_dim=2 * n_mouth, out_dim=2 * n_mouth,
                                     n_tokens=n_tokens, layers=decoder_layers, **sizes)

    def forward(self, audio: torch.Tensor, v: torch.Tensor, v_m: torch.Tensor):
        memory = self.encoder(audio)  # (B, T, d), shared by both decoders (E(x) in Eq. 5-6)
        return self.face(v, memory), self.mouth(v_m, memory)  # (B, n_tok, F), (B, n_tok, M)
