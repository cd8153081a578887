"""The paper's four metrics (Eq. 13-15), and the authors' code's own definitions, labelled.

Paper (`definition: paper`), on landmarks in pixels of the 256x256 crop, shape (N, T, 68, 2):

    LD  = mean over frames t and points i of || x_{i,t} - x^_{i,t} ||_2                (Eq. 14)
    LVD = the same over velocities v_{i,t} = x_{i,t} - x_{i,t-1}, t = 1..T-1          (Eq. 13, 15)

M- takes points 48-67 (`MOUTH_INDICES`), F- all 68. Each metric is computed per window
(T = 30 frames, so LD averages 30 x P distances and LVD 29 x P) and then averaged over
windows with equal weight; every window has the same length, so this equals the mean over
all (window, frame, point) triples. Velocities are never taken across window boundaries.

Reference (`definition: reference`): what the authors' `metrix/LM.py` computes, so a user
can see why the paper's tables are not comparable with Eq. 13-15:
  - "LD"  = mean(norm(pred - true)) with no dim: ONE Frobenius norm of the whole batch
    tensor, in min-max scaled units ((px - 56) / (243 - 56)); it grows like sqrt(batch size).
  - "LVD" = the same norm over (x[..., :1] - x[..., :-1]) on their (B, T, 2, P) layout, i.e.
    landmark 0 minus each of landmarks 0..P-2 within one frame: a shape descriptor, not a
    velocity; M- applies both to the mouth points only, as their validation step does.
Per-batch values are averaged over batches weighted by batch size (what Lightning's
`on_epoch=True` logging does); the batch size is recorded beside the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kfusion.shapes import MOUTH_INDICES

METRIC_NAMES = ("M-LD", "M-LVD", "F-LD", "F-LVD")
REFERENCE_NAMES = tuple(f"ref {m}" for m in METRIC_NAMES)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def velocity(x: torch.Tensor) -> torch.Tensor:
    """Eq. 13: v_t = x_t - x_{t-1} along the frame axis. (N, T, P, 2) -> (N, T-1, P, 2)."""
    return x[:, 1:] - x[:, :-1]


def landmark_distance(pred, ref, points=None) -> torch.Tensor:
    """Eq. 14 per window: mean over frames and points of the Euclidean distance. -> (N,)."""
    pred, ref = _as_tensor(pred).double(), _as_tensor(ref).double()
    if points is not None:
        pred, ref = pred[:, :, list(points)], ref[:, :, list(points)]
    return torch.linalg.vector_norm(pred - ref, dim=-1).mean(dim=(1, 2))  # (N,)


def landmark_velocity_difference(pred, ref, points=None) -> torch.Tensor:
    """Eq. 15 per window: LD of the velocities. -> (N,)."""
    return landmark_distance(velocity(_as_tensor(pred)), velocity(_as_tensor(ref)), points)


def paper_metrics(pred, ref) -> dict[str, torch.Tensor]:
    """The four metrics per window, each (N,), in the units of the inputs (crop px)."""
    return {"M-LD": landmark_distance(pred, ref, MOUTH_INDICES),
            "M-LVD": landmark_velocity_difference(pred, ref, MOUTH_INDICES),
            "F-LD": landmark_distance(pred, ref),
            "F-LVD": landmark_velocity_difference(pred, ref)}


# ----------------------------------------------------------------------------- reference
def scale_reference(x: torch.Tensor, low_px: float = 56.0, high_px: float = 243.0) -> torch.Tensor:
    """The authors' min-max scaling with fixed crop bounds."""
    return (x - low_px) / (high_px - low_px)


def reference_ld(pred, true) -> torch.Tensor:
    """The authors' "LD": mean(norm(pred - true)) = one Frobenius norm of the whole batch."""
    pred, true = _as_tensor(pred).double(), _as_tensor(true).double()
    return torch.mean(torch.norm(pred - true))


def reference_lvd(pred, true) -> torch.Tensor:
    """The authors' "LVD" on (B, T, P, 2): within-frame differences to landmark 0."""
    pred, true = _as_tensor(pred).double(), _as_tensor(true).double()
    p, t = pred.transpose(-1, -2), true.transpose(-1, -2)  # (B, T, 2, P), their layout
    return torch.mean(torch.norm((p[..., :1] - p[..., :-1]) - (t[..., :1] - t[..., :-1])))


def reference_metrics(pred, true, low_px: float = 56.0, high_px: float = 243.0) -> dict[str, float]:
    """The authors' four numbers for one batch (scaled units)."""
    p = scale_reference(_as_tensor(pred).double(), low_px, high_px)
    t = scale_reference(_as_tensor(true).double(), low_px, high_px)
    m = list(MOUTH_INDICES)
    return {"ref M-LD": float(reference_ld(p[:, :, m], t[:, :, m])),
            "ref M-LVD": float(reference_lvd(p[:, :, m], t[:, :, m])),
            "ref F-LD": float(reference_ld(p, t)),
            "ref F-LVD": float(reference_lvd(p, t))}


# ----------------------------------------------------------------------------- accumulate
@dataclass
class MetricTable:
    """Per-window paper metrics with group labels; summaries overall and per group."""
    values: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in METRIC_NAMES})
    groups: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, pred, ref, **groups: np.ndarray) -> None:
        """Add a batch; rows whose reference has any NaN (no ground truth) are skipped."""
        pred, ref = _as_tensor(pred), _as_tensor(ref)
        keep = ~torch.isnan(ref.reshape(ref.shape[0], -1)).any(dim=1)
        if not bool(keep.any()):
            return
        for k, v in paper_metrics(pred[keep], ref[keep]).items():
            self.values[k].append(v.numpy())
        mask = keep.numpy()
        for name, g in groups.items():
            self.groups.setdefault(name, []).append(np.asarray(g)[mask])

    @property
    def count(self) -> int:
        return int(sum(len(v) for v in self.values["F-LD"]))

    def per_window(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every window's metrics ({name: (N,)}) and group labels ({group: (N,)}), in the
        order the windows were added."""
        vals = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.values.items()}
        grps = {k: np.concatenate(v) for k, v in self.groups.items()}
        return vals, grps

    def summary(self) -> dict[str, float | int]:
        """Mean over windows of each per-window metric (equal weight per window)."""
        vals, _ = self.per_window()
        n = len(vals["F-LD"])
        return {"windows": n, **{k: (float(v.mean()) if n else float("nan")) for k, v in vals.items()}}

    def by(self, group: str) -> dict[str, dict[str, float | int]]:
        vals, grps = self.per_window()
        if group not in grps:
            return {}
        out = {}
        for g in sorted(set(grps[group].tolist()), key=str):
            sel = grps[group] == g
            out[str(g)] = {"windows": int(sel.sum()),
                           **{k: float(v[sel].mean()) for k, v in vals.items()}}
        return out


@dataclass
class ReferenceAccumulator:
    """The authors' per-batch numbers, averaged over batches weighted by batch size."""
    low_px: float = 56.0
    high_px: float = 243.0
    sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in REFERENCE_NAMES})
    n: int = 0

    def add(self, pred, true) -> None:
        b = int(_as_tensor(pred).shape[0])
        for k, v in reference_metrics(pred, true, self.low_px, self.high_px).items():
            self.sums[k] += v * b
        self.n += b

    def summary(self) -> dict[str, float]:
        return {k: (s / self.n if self.n else float("nan")) for k, s in self.sums.items()}
