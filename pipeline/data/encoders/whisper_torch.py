"""Whisper's audio encoder in plain PyTorch, its weights read from a CTranslate2 `model.bin`.

Why: CTranslate2's wheel is built against CUDA 12 (it dlopens libcublas.so.12) while this
project's torch brings CUDA 13, so on a GPU the Whisper encoder runs here instead, from the
same weight file (the same SHA-256, the same identity). Any input length up to 3000 mel
frames (transformers' WhisperEncoder insists on exactly 3000). The maths of openai-whisper's
AudioEncoder: conv(k3, p1) - GELU - conv(k3, s2, p1) - GELU, + sinusoidal positions, pre-LN
blocks (self-attention with fused q,k,v; GELU MLP), final LayerNorm. tests/data/
test_encoders.py checks it against CTranslate2's float32 output.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# dtype ids of CTranslate2's ModelSpec._serialize (binary version 6)
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 model.bin: the inverse of
    ctranslate2.specs.model_spec.ModelSpec._serialize (the Python API has no reader)."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = buf[pos:pos + n - 1].decode("utf-8")   # n counts the trailing NUL
        pos += n
        return s

    if (version := take("I")) != 6:
        raise ValueError(f"{path}: CTranslate2 model.bin version {version}; this reader knows 6")
    spec, _revision = string(), take("I")
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype, nbytes = _DTYPES[take("B")], take("I")
        if dtype == "bfloat16":   # the top half of a float32
            raw = np.frombuffer(buf, np.uint16, nbytes // 2, pos).astype(np.uint32) << 16
            variables[name] = raw.view(np.float32).reshape(shape)
        else:
            size = nbytes // np.dtype(dtype).itemsize
            variables[name] = np.frombuffer(buf, dtype, size, pos).reshape(shape).copy()
        pos += nbytes
    return spec, variables


class WhisperTorchEncoder(nn.Module):
    """forward(mel (B, n_mels, n <= 3000)) -> (B, ceil(n / 2), d) encoder states."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__()
        enc = {k.removeprefix("encoder/"): v for k, v in variables.items() if k.startswith("encoder/")}
        self.n_heads = int(enc.pop("num_heads"))
        self.w = nn.ParameterDict({k.replace("/", "__"): nn.Parameter(
            torch.from_numpy(np.asarray(v, np.float32)), requires_grad=False) for k, v in enc.items()})
        self.n_layers = sum(k.endswith("self_attention__linear_0__weight") for k in self.w)

    @classmethod
    def from_model_bin(cls, path: str | Path) -> "WhisperTorchEncoder":
        spec, variables = read_model_bin(path)
        if spec != "WhisperSpec":
            raise ValueError(f"{path}: a CTranslate2 {spec}, not a Whisper model")
        return cls(variables).eval()

    def p(self, name: str) -> torch.Tensor:
        return self.w[name.replace("/", "__")]

    def block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """One pre-LN Transformer block: x (B, T, d) -> (B, T, d)."""
        B, T, D = x.shape
        at, ff = f"layer_{i}/self_attention/", f"layer_{i}/ffn/"
        h = F.layer_norm(x, (D,), self.p(at + "layer_norm/gamma"), self.p(at + "layer_norm/beta"))
        qkv = F.linear(h, self.p(at + "linear_0/weight"), self.p(at + "linear_0/bias"))
        q, k, v = qkv.view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(a, self.p(at + "linear_1/weight"), self.p(at + "linear_1/bias"))
        h = F.layer_norm(x, (D,), self.p(ff + "layer_norm/gamma"), self.p(ff + "layer_norm/beta"))
        h = F.gelu(F.linear(h, self.p(ff + "linear_0/weight"), self.p(ff + "linear_0/bias")))
        return x + F.linear(h, self.p(ff + "linear_1/weight"), self.p(ff + "linear_1/bias"))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(F.conv1d(mel, self.p("conv1/weight"), self.p("conv1/bias"), padding=1))
        x = F.gelu(F.conv1d(x, self.p("conv2/weight"), self.p("conv2/bias"), stride=2, padding=1))
        x = x.transpose(1, 2)                                          # (B, T, d)
        x = x + self.p("position_encodings/encodings")[: x.shape[1]]   # absolute positions
        for i in range(self.n_layers):
            x = self.block(x, i)
        D = x.shape[-1]
        return F.layer_norm(x, (D,), self.p("layer_norm/gamma"), self.p("layer_norm/beta"))
