"""Global Domain (paper Sec. 3.2, Eq. 3-6): audio -> Transformer encoder E -> Conv ->
two Transformer decoders guided by the identity landmarks, one for the whole face (gb,
F = 136 wide) and one for the mouth points 48-67 (gb_m, M = 40 wide).

Time is the token axis everywhere (batch_first=True: attention runs over time, not over
the batch as in the authors' code). The decoders' queries are the identity landmarks
lifted to `n_tokens` tokens (the authors lift them with a Conv1d(1 -> 49)); each query
token sits at the time of one content encoder frame (50 frames/s, the first at
`token_offset_s`: 12.5 ms for wav2vec2, 0 for Whisper and the PPG), so gb and gb_m come out
on the same token time axis as the Content Domain whatever the Global Domain's input rate
(100 mel frames/s or 50 wav2vec2 frames/s). Sinusoidal encodings of time *in seconds* on both sides, and a
fixed locality bias on the cross-attention scores (`local_bias`: head h prefers memory
frames within about sigma_h of its query's instant), let the cross-attention find the
audio around each query's instant from the first step (docs/model.md: without the bias it
learnt to attend nearly uniformly and gb carried no timing).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from kfusion.shapes import CONTENT_RATE_HZ


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


def token_times(n_tokens: int, offset_s: float, device=None) -> torch.Tensor:
    """Times (s) of the content encoder's frames of a window: the common token axis."""
    return torch.arange(n_tokens, device=device) / CONTENT_RATE_HZ + offset_s


def local_bias(query_s: torch.Tensor, memory_s: torch.Tensor, sigmas_s: list[float]) -> torch.Tensor:
    """Additive cross-attention bias -(t_q - t_k)^2 / (2 sigma_h^2), one sigma per head
    -> (H, L, S). Content scores still add to it, so a head can look elsewhere when the
    audio says so; the bias only gives the "audio around this instant" prior."""
    d2 = (query_s[:, None] - memory_s[None, :]).float() ** 2  # (L, S)
    s = torch.tensor(sigmas_s, device=d2.device, dtype=d2.dtype)[:, None, None]
    return -0.5 * d2[None] / s ** 2  # (H, L, S)


class AudioEncoder(nn.Module):
    """E then Conv of Eq. 5-6: (B, T, in_dim) at `rate_hz` -> memory (B, T, d_model)."""

    def __init__(self, *, in_dim: int, rate_hz: float, offset_s: float, d_model: int,
                 n_heads: int, layers: int, ff_mult: int, dropout: float,
                 normalise: bool = False):
        super().__init__()
        self.rate_hz, self.offset_s, self.d_model = rate_hz, offset_s, d_model
        self.normalise = normalise
        self.proj = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        # "Conv" of Eq. 5: adapts encoder features to the decoders' cross-attention;
        # kernel 3 over time also smooths the 10-20 ms frames a little
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1)

    def times(self, n: int, device=None) -> torch.Tensor:
        """Times (s) of the n input (= memory) frames."""
        return torch.arange(n, device=device, dtype=torch.float32) / self.rate_hz + self.offset_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:  # per-window standardisation (model.mel_norm: window): raw log-mel
            # is ~ -4 +- 4.5 with a large constant part; keep spectral shape and loudness contour
            x = (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-5)
        x = self.proj(x) + time_encoding(self.times(x.shape[1], x.device), self.d_model).to(x.dtype)
        x = self.norm(self.encoder(x))  # (B, T, d)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d)


class IdentityDecoder(nn.Module):
    """D of Eq. 5/6: identity landmarks (B, n_points*2) as queries over the audio memory
    -> (B, n_tokens, out_dim)."""

    def __init__(self, *, identity_dim: int, out_dim: int, n_tokens: int, token_offset_s: float,
                 d_model: int, n_heads: int, layers: int, ff_mult: int, dropout: float,
                 local_attention_s: float = 0.0):
        super().__init__()
        self.n_tokens, self.token_offset_s, self.d_model = n_tokens, token_offset_s, d_model
        # head h: sigma = local_attention_s * 2^h (multi-scale: 20, 40, 80, 160 ms by default)
        self.sigmas_s = [local_attention_s * 2 ** h for h in range(n_heads)] \
            if local_attention_s > 0 else None
        self.lift = nn.Linear(identity_dim, d_model)
        self.token = nn.Parameter(torch.zeros(n_tokens, d_model))  # per-token offset, like
        # the bias of the authors' Conv1d(1 -> 49) lift
        layer = nn.TransformerDecoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, out_dim)

    def forward(self, identity: torch.Tensor, memory: torch.Tensor,
                memory_s: torch.Tensor) -> torch.Tensor:
        """memory (B, S, d) at times memory_s (S,) seconds."""
        tq = token_times(self.n_tokens, self.token_offset_s, memory.device).float()
        q = self.lift(identity)[:, None] + (self.token + time_encoding(tq, self.d_model)).to(
            memory.dtype)  # (B, n_tok, d)
        mask = None
        if self.sigmas_s is not None:  # (B * H, n_tok, S), batch-major as attention expects
            mask = local_bias(tq, memory_s, self.sigmas_s).repeat(memory.shape[0], 1, 1)
            mask = mask.to(memory.dtype)
        return self.out(self.norm(self.decoder(q, memory, memory_mask=mask)))  # (B, n_tok, out)


class GlobalDomain(nn.Module):
    """Eq. 3-6. forward(audio (B, T, in_dim), v (B, 136), v_m (B, 40)) -> gb, gb_m."""

    def __init__(self, *, in_dim: int, rate_hz: float, offset_s: float, n_tokens: int,
                 token_offset_s: float, n_points: int, n_mouth: int, d_model: int, n_heads: int,
                 encoder_layers: int, decoder_layers: int, ff_mult: int, dropout: float,
                 normalise: bool = False, local_attention_s: float = 0.0):
        super().__init__()
        sizes = dict(d_model=d_model, n_heads=n_heads, ff_mult=ff_mult, dropout=dropout)
        self.encoder = AudioEncoder(in_dim=in_dim, rate_hz=rate_hz, offset_s=offset_s,
                                    layers=encoder_layers, normalise=normalise, **sizes)
        tokens = dict(n_tokens=n_tokens, token_offset_s=token_offset_s, layers=decoder_layers,
                      local_attention_s=local_attention_s)
        self.face = IdentityDecoder(identity_dim=2 * n_points, out_dim=2 * n_points, **tokens, **sizes)
        self.mouth = IdentityDecoder(identity_dim=2 * n_mouth, out_dim=2 * n_mouth, **tokens, **sizes)

    def forward(self, audio: torch.Tensor, v: torch.Tensor, v_m: torch.Tensor):
        memory = self.encoder(audio)  # (B, T, d), shared by both decoders (E(x) in Eq. 5-6)
        t = self.encoder.times(memory.shape[1], memory.device)
        return self.face(v, memory, t), self.mouth(v_m, memory, t)  # (B, n_tok, F), (B, n_tok, M)
