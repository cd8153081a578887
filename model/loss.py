"""The training loss and the coordinate normalisation the model works in.

Coordinates are min-max scaled with fixed bounds (model.coord_low_px / coord_high_px, the
authors' 56 and 243 of the 256 crop) to [-1, 1], the KAN's default grid range: a point at
the low bound maps to -1, at the high bound to +1. The loss is computed in those units,
so its size does not depend on the crop's pixel scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kfusion.config import ModelConfig
from kfusion.shapes import MOUTH_INDICES


def to_unit(px: torch.Tensor, mcfg: ModelConfig) -> torch.Tensor:
    """Crop px -> [-1, 1] between the fixed bounds."""
    half = (mcfg.coord_high_px - mcfg.coord_low_px) / 2
    return (px - (mcfg.coord_low_px + half)) / half


def from_unit(u: torch.Tensor, mcfg: ModelConfig) -> torch.Tensor:
    """[-1, 1] -> crop px (inverse of `to_unit`)."""
    half = (mcfg.coord_high_px - mcfg.coord_low_px) / 2
    return u * half + (mcfg.coord_low_px + half)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, mouth_weight: float,
                  mcfg: ModelConfig, *, velocity_weight: float = 0.0) -> torch.Tensor:
    """(1 - w) MSE(all 68 points) + w MSE(mouth points 48-67), in normalised units.

    pred, target: (B, T, 68, 2) in crop px. The authors' code uses w = 0.8.
    With velocity_weight v > 0 (`train.velocity_weight`; not in the paper) it adds
    v * [(1 - w) VD(all) + w VD(mouth)], VD = mean Euclidean distance between predicted and
    target frame-to-frame velocities: the paper's LVD (Eq. 15) in normalised units. Position
    MSE alone leaves frame-to-frame jitter unpenalised, and LVD is what it then loses.
    """
    p, t = to_unit(pred.float(), mcfg), to_unit(target.float(), mcfg)
    mouth = list(MOUTH_INDICES)
    loss = ((1 - mouth_weight) * F.mse_loss(p, t)
            + mouth_weight * F.mse_loss(p[:, :, mouth], t[:, :, mouth]))
    if velocity_weight:
        d = torch.linalg.vector_norm(p.diff(dim=1) - t.diff(dim=1), dim=-1)  # (B, T-1, 68)
        loss = loss + velocity_weight * ((1 - mouth_weight) * d.mean()
                                         + mouth_weight * d[:, :, mouth].mean())
    return loss
