"""KFusion (paper Sec. 3.4, Eq. 8-12), laid out as the authors' code settles it.

Branch outputs are stacked on the TIME axis (Eq. 8-9): 3 x 49 = 147 face tokens
(f, gb, ct) and 2 x 49 = 98 mouth tokens (m, gb_m). Each token's F = 136 features are
viewed as a (2, 68) grid (row 0: x, row 1: y; M = 40 as (2, 20)), so the Conv2d blocks
take tokens as channels and map 147 / 98 channels to the 30 video frames, with their 3x3
kernels mixing neighbouring points and the two coordinates. Then

    x'_f = B(x_f) * Conv1x1(x_f)         (Eq. 10, the gated branch)
    x'_f[..., L_m] <- B(x_m)              (Eq. 11)
    y' = KAN(x'_f)                        (Eq. 12, over the 68-point axis, per frame and
                                           coordinate: 30 x 2 rows per window)

B is Conv(k=1) -> Conv(k=3) -> Conv(k=1) as the text says (the code has 3-1-3).

With `token_to_frame: interpolate` (default) each branch's 49 tokens are first resampled
linearly to the 30 frame times, so the stacks are 3 x 30 / 2 x 30 channels, channel c of
branch b already *is* frame c, and the gate starts time-aligned (frame o reads frame o of
every branch). With `conv` the 1x1 convs must learn the 49 -> 30 alignment from scratch,
which they did not on the demo corpus (docs/model.md). The head's last layer starts
small (`head_init_scale`), so the model starts near the still identity instead of adding
random per-frame jitter it then has to unlearn.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kfusion.model.kan import KAN, MLP, matched_mlp_widths


class Bottleneck(nn.Sequential):
    """B of Eq. 10-11: Conv(k=1) -> Conv(k=3) -> Conv(k=1), channels = tokens -> frames."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, out_channels, 1))


def to_frames(tokens: list[torch.Tensor], n_frames: int) -> list[torch.Tensor]:
    """[(B, T, C)] -> [(B, n_frames, C)], linear interpolation in time (token and frame
    centres both spread evenly over the window)."""
    return [F.interpolate(x.transpose(1, 2), size=n_frames, mode="linear",
                          align_corners=False).transpose(1, 2) for x in tokens]


def scale_last_layer_(head: nn.Module, scale: float) -> None:
    """Multiply the head's output layer weights by `scale` (KAN: base and spline weights
    of its last KANLinear; MLP: its last Linear)."""
    last = head.layers[-1] if hasattr(head, "layers") else head.net[-1]
    with torch.no_grad():
        for name, p in last.named_parameters():
            if name in ("base_weight", "spline_weight", "weight", "bias"):
                p.mul_(scale)


def as_grid(tokens: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 8/9: [(B, T, 2P)] * n -> (B, n*T, 2, P), stacked on time."""
    x = torch.cat(tokens, dim=1)
    return x.view(x.shape[0], x.shape[1], 2, -1)


class KFusion(nn.Module):
    """forward(face [(B, T, 136)], mouth [(B, T, 40)]) -> (B, n_frames, 68, 2)."""

    def __init__(self, *, face_branches: int, mouth_branches: int, n_tokens: int,
                 n_frames: int, channels: int, mouth_indices: list[int], head: str,
                 kan_widths: list[int], kan_kwargs: dict, interpolate: bool = True,
                 head_init_scale: float = 1.0):
        super().__init__()
        n_points = kan_widths[0]
        self.n_frames, self.interpolate = n_frames, interpolate
        if interpolate:
            n_tokens = n_frames  # branches are resampled to the frames first
        self.register_buffer("mouth_indices", torch.tensor(mouth_indices), persistent=False)
        self.face_bottleneck = Bottleneck(face_branches * n_tokens, channels, n_frames)
        self.face_gate = nn.Conv2d(face_branches * n_tokens, n_frames, 1)  # Conv of Eq. 10
        if interpolate:  # start time-aligned: frame o = mean over branches of their frame o
            with torch.no_grad():
                eye = torch.eye(n_frames) / face_branches
                for b in range(face_branches):
                    self.face_gate.weight[:, b * n_frames:(b + 1) * n_frames, 0, 0] += eye
        # without both mouth branches (w/o LSTM and w/o Global) there is no x_m: the mouth
        # points keep what the face path gives them
        self.mouth_bottleneck = (Bottleneck(mouth_branches * n_tokens, channels, n_frames)
                                 if mouth_branches else None)
        if head == "kan":
            self.head = KAN(kan_widths, **kan_kwargs)
        elif head == "mlp":
            self.head = MLP(matched_mlp_widths(kan_widths, kan_kwargs["grid_size"],
                                               kan_kwargs["spline_order"]))
        else:
            raise ValueError(f"KFusion head must be 'kan' or 'mlp', got {head!r}")
        scale_last_layer_(self.head, head_init_scale)
        assert kan_widths[-1] == n_points

    def fuse(self, face: list[torch.Tensor], mouth: list[torch.Tensor]) -> torch.Tensor:
        """Eq. 8-11 -> x'_f (B, n_frames, 2, 68), what the head reads."""
        if self.interpolate:
            face, mouth = to_frames(face, self.n_frames), to_frames(mouth, self.n_frames)
        x_f = as_grid(face)  # (B, 3T, 2, 68), T = n_frames when interpolating
        x = self.face_bottleneck(x_f) * self.face_gate(x_f)  # Eq. 10, (B, n_frames, 2, 68)
        if self.mouth_bottleneck is not None:
            x_m = self.mouth_bottleneck(as_grid(mouth))  # (B, n_frames, 2, 20)
            x = x.index_copy(-1, self.mouth_indices, x_m)  # Eq. 11 (out of place)
        return x

    def forward(self, face: list[torch.Tensor], mouth: list[torch.Tensor]) -> torch.Tensor:
        y = self.head(self.fuse(face, mouth))  # Eq. 12, over the point axis
        return y.transpose(-1, -2)  # (B, n_frames, 68, 2)


class ConcatLinear(nn.Module):
    """`fusion: none` ("w/o KFusion"): all branch outputs concatenated per token and mapped
    linearly to the 136 coordinates, then linearly from the 49 tokens to the 30 frames.
    No bottleneck, no gate, no mouth insertion, no KAN, no non-linearity."""

    def __init__(self, *, in_dim: int, out_dim: int, n_tokens: int, n_frames: int):
        super().__init__()
        self.features = nn.Linear(in_dim, out_dim)
        self.time = nn.Linear(n_tokens, n_frames)

    def forward(self, face: list[torch.Tensor], mouth: list[torch.Tensor]) -> torch.Tensor:
        x = self.features(torch.cat(face + mouth, dim=-1))  # (B, T, 136)
        x = self.time(x.transpose(1, 2))  # (B, 136, n_frames)
        return x.view(x.shape[0], 2, -1, x.shape[-1]).permute(0, 3, 2, 1)  # (B, n_fr, 68, 2)
