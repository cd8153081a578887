"""Dropout with cheaper random masks, for training on CPU (`train.dropout_rng: pcg64`).

torch draws a CPU dropout mask one element at a time from its Mersenne Twister, on one
thread, however many threads the step has: for this model about 7 M draws per batch of 32
(60% of them for the attention weights), a quarter of a 2-thread training step. Here each
mask comes from numpy's PCG64DXSM instead, 32 bits per element, seeded by one draw from
torch's global generator: runs stay reproducible from `seed`, and a resumed run (which
restores torch's RNG state) draws the same masks as an uninterrupted one.

The maths is dropout's: every element kept with probability 1 - p (to 2^-32) and scaled by
1 / (1 - p). Only the random stream differs from torch's, so a `pcg64` run's weights differ
from a `torch` run's as two seeds' do. `use_pcg64_dropout(model)` switches every dropout
of a model (the Transformer layers' own and their attention weights') to these masks; in
eval mode nothing changes (no dropout; attention runs torch's own kernel).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask (bool, CPU) from a PCG64DXSM stream whose seed is one
    draw from torch's global generator."""
    seed = int(torch.randint(0, 2**62, ()))
    n = math.prod(shape)
    words = np.random.Generator(np.random.PCG64DXSM(seed)).bit_generator.random_raw((n + 1) // 2)
    drop_below = np.uint32(min(round(p * 2**32), 2**32 - 1))   # P(u32 < t) = t / 2^32
    return torch.from_numpy(words.view(np.uint32)[:n] >= drop_below).view(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout's result with a `keep_mask`: x * mask / (1 - p); torch's own off CPU."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p).to(x.dtype).div_(1 - p)


class PCG64Dropout(nn.Dropout):
    """nn.Dropout drawing its mask with `keep_mask` (no state of its own: checkpoints are
    unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class PCG64Attention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose attention-weight dropout draws `keep_mask`es: in training
    on CPU, softmax(q k^T / sqrt(d) + mask) -> dropout -> @ v, as torch's math kernel
    computes it (batch_first, float masks; anything else, GPUs included, goes to torch's own
    forward and its fused kernels)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        ours = (self.training and self.dropout > 0 and query.device.type == "cpu"
                and self.batch_first and not need_weights and key_padding_mask is None
                and not is_causal and self.in_proj_weight is not None
                and (attn_mask is None or attn_mask.is_floating_point()))
        if not ours:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights, is_causal=is_causal)
        heads = self.num_heads
        (b, n_q, width), n_k = query.shape, key.shape[1]

        def project(x: torch.Tensor, i: int) -> torch.Tensor:   # (B, T, E) -> (B, H, T, E/H)
            rows = slice(i * width, (i + 1) * width)
            bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
            return F.linear(x, self.in_proj_weight[rows], bias).unflatten(-1, (heads, -1)) \
                .transpose(1, 2)

        q, k, v = project(query, 0), project(key, 1), project(value, 2)
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5            # (B, H, Lq, Lk)
        if attn_mask is not None:   # (Lq, Lk), or (B * H, Lq, Lk) batch-major
            scores = scores + (attn_mask if attn_mask.dim() == 2 else
                               attn_mask.view(b, heads, n_q, n_k))
        weights = dropout(scores.softmax(-1), self.dropout)
        out = (weights @ v).transpose(1, 2).reshape(b, n_q, width)       # (B, Lq, E)
        return self.out_proj(out), None


def use_pcg64_dropout(model: nn.Module) -> nn.Module:
    """Switch every nn.Dropout and nn.MultiheadAttention of `model` to the PCG64 masks, in
    place. The modules keep their parameters and state_dict keys (only their class changes:
    rebuilding them would draw new initial weights)."""
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = PCG64Dropout
        elif type(module) is nn.MultiheadAttention:
            module.__class__ = PCG64Attention
    return model
