"""The paper's four metrics (Eq. 13-15), a mouth-opening correlation, and the authors' code's
own definitions, labelled.

Paper (`definition: paper`), on landmarks in pixels of the 256x256 crop, shape (N, T, 68, 2):

    LD  = mean over frames t and points i of || x_{i,t} - x^_{i,t} ||_2                (Eq. 14)
    LVD = the same over velocities v_{i,t} = x_{i,t} - x_{i,t-1}, t = 1..T-1          (Eq. 13, 15)

M- takes points 48-67 (`MOUTH_INDICES`), F- all 68. Each metric is computed per window
(T = 30 frames, so LD averages 30 x P distances and LVD 29 x P) and then averaged over
windows with equal weight; every window has the same length, so this equals the mean over
all (window, frame, point) triples. Velocities are never taken across window boundaries.

Mouth-opening correlation (`mouth_r`; not in the paper): the inner-lip opening per frame
(mean distance of the facing inner-lip points, `INNER_LIP_PAIRS`), Pearson r between the
prediction's and the reference's over the 30 frames of a window, averaged over the windows
where it is defined (a window whose reference or prediction does not move has no r).

Reference (`definition: reference`): what the authors' `metrix/LM.py` computes, so a user
can see why the paper's tables are not comparable with Eq. 13-15:
  - "LD"  = mean(norm(pred - true)) with no dim: ONE Frobenius norm of the whole batch
    tensor, in min-max scaled units ((px - 56) / (243 - 56)); it grows like sqrt(batch size).
  - "LVD" = the same norm over (x[..., :1] - x[..., :-1]) on their (B, T, 2, P) layout, i.e.
    the first listed landmark minus each of the listed landmarks but the last, within one
    frame: a shape descriptor, not a velocity. F- lists the 68 points in order (anchor 0,
    67 dropped); M- lists the mouth as their code does, rotated (`AUTHORS_MOUTH`: 49..67, 48),
    so its anchor is 49 and point 48 is dropped.
  - Their loader feeds fixed-size batches (their model views every batch with its fixed
    size), so the last partial batch is dropped (`ReferenceAccumulator`), and a batch
    never mixes corpora (one accumulator per corpus).
Per-batch values are averaged over batches with equal weight (every batch has the same size;
what Lightning's `on_epoch=True` logging does); the batch size is recorded beside them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kfusion.shapes import INNER_LIP_PAIRS, MOUTH_INDICES

METRIC_NAMES = ("M-LD", "M-LVD", "F-LD", "F-LVD")
MOUTH_R = "mouth_r"
TABLE_NAMES = (*METRIC_NAMES, MOUTH_R)
REFERENCE_NAMES = tuple(f"ref {m}" for m in METRIC_NAMES)
# the authors' MOUTH_LANDMARKS (module/KFusionLM.py): the mouth points, 48 moved to the end
AUTHORS_MOUTH: tuple[int, ...] = (*MOUTH_INDICES[1:], MOUTH_INDICES[0])


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor of x; an array is copied (a memory-mapped window array is read-only, and
    torch warns on a tensor over read-only memory)."""
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))


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


def mouth_opening(x) -> torch.Tensor:
    """Inner-lip opening per frame: mean distance of the facing inner-lip points.
    (N, T, 68, 2) -> (N, T), in the input's units."""
    x = _as_tensor(x).double()
    upper, lower = zip(*INNER_LIP_PAIRS)
    return torch.linalg.vector_norm(x[:, :, list(upper)] - x[:, :, list(lower)], dim=-1).mean(-1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each row of a and b, (N, T) -> (N,); NaN where either row is constant."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    r = (a * b).sum(-1) / den
    return torch.where(den > 1e-12, r, torch.full_like(r, float("nan")))


def mouth_opening_correlation(pred, ref) -> torch.Tensor:
    """Per window: Pearson r between predicted and reference mouth opening over time. -> (N,)"""
    return pearson(mouth_opening(pred), mouth_opening(ref))


# ----------------------------------------------------------------------------- reference
def scale_reference(x: torch.Tensor, low_px: float = 56.0, high_px: float = 243.0) -> torch.Tensor:
    """The authors' min-max scaling with fixed crop bounds."""
    return (x - low_px) / (high_px - low_px)


def reference_ld(pred, true) -> torch.Tensor:
    """The authors' "LD": mean(norm(pred - true)) = one Frobenius norm of the whole batch."""
    pred, true = _as_tensor(pred).double(), _as_tensor(true).double()
    return torch.mean(torch.norm(pred - true))


def reference_lvd(pred, true) -> torch.Tensor:
    """The authors' "LVD" on (B, T, P, 2), points in the order given: the first point minus
    each point but the last, within a frame."""
    pred, true = _as_tensor(pred).double(), _as_tensor(true).double()
    p, t = pred.transpose(-1, -2), true.transpose(-1, -2)  # (B, T, 2, P), their layout
    return torch.mean(torch.norm((p[..., :1] - p[..., :-1]) - (t[..., :1] - t[..., :-1])))


def reference_metrics(pred, true, low_px: float = 56.0, high_px: float = 243.0) -> dict[str, float]:
    """The authors' four numbers for one batch (scaled units), M- on their mouth order."""
    p = scale_reference(_as_tensor(pred).double(), low_px, high_px)
    t = scale_reference(_as_tensor(true).double(), low_px, high_px)
    m = list(AUTHORS_MOUTH)
    return {"ref M-LD": float(reference_ld(p[:, :, m], t[:, :, m])),
            "ref M-LVD": float(reference_lvd(p[:, :, m], t[:, :, m])),
            "ref F-LD": float(reference_ld(p, t)),
            "ref F-LVD": float(reference_lvd(p, t))}


# ----------------------------------------------------------------------------- accumulate
@dataclass
class MetricTable:
    """Per-window metrics (Eq. 13-15 and mouth_r) with group labels; summaries overall and
    per group."""
    values: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in TABLE_NAMES})
    groups: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, pred, ref, **groups: np.ndarray) -> None:
        """Add a batch; rows whose reference has any NaN (no ground truth) are skipped."""
        pred, ref = _as_tensor(pred), _as_tensor(ref)
        keep = ~torch.isnan(ref.reshape(ref.shape[0], -1)).any(dim=1)
        if not bool(keep.any()):
            return
        per_window = {**paper_metrics(pred[keep], ref[keep]),
                      MOUTH_R: mouth_opening_correlation(pred[keep], ref[keep])}
        for k, v in per_window.items():
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

    def summary(self, select: np.ndarray | None = None) -> dict[str, float | int | None]:
        """Mean over windows (equal weight per window; mouth_r over the windows that have
        one, None when none does), of all windows or of those `select` marks."""
        vals, _ = self.per_window()
        return summarise(vals, select)

    def by(self, group: str) -> dict[str, dict[str, float | int | None]]:
        vals, grps = self.per_window()
        if group not in grps:
            return {}
        return {str(g): summarise(vals, grps[group] == g)
                for g in sorted(set(grps[group].tolist()), key=str)}


def summarise(vals: dict[str, np.ndarray], select: np.ndarray | None = None
              ) -> dict[str, float | int | None]:
    """{windows, M-LD, M-LVD, F-LD, F-LVD, mouth_r}: means over the selected windows."""
    if select is not None:
        vals = {k: v[select] for k, v in vals.items()}
    n = len(vals["F-LD"])
    out: dict[str, float | int | None] = {"windows": n}
    out.update({k: float(vals[k].mean()) if n else float("nan") for k in METRIC_NAMES})
    r = vals[MOUTH_R][np.isfinite(vals[MOUTH_R])]
    out[MOUTH_R] = float(r.mean()) if len(r) else None
    return out


@dataclass
class ReferenceAccumulator:
    """The authors' per-batch numbers over fixed-size batches of one corpus, in the order the
    windows come; the last partial batch is dropped (as their loader's fixed batch size does)."""
    batch_size: int = 32
    low_px: float = 56.0
    high_px: float = 243.0
    sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in REFERENCE_NAMES})
    batches: int = 0
    pending: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    n_pending: int = 0

    def add(self, pred, true) -> None:
        """Queue windows; every full batch of `batch_size` is scored as it completes."""
        pred, true = _as_tensor(pred), _as_tensor(true)
        self.pending.append((pred, true))
        self.n_pending += len(pred)
        while self.n_pending >= self.batch_size:
            p, t = (torch.cat(x) for x in zip(*self.pending))
            self._score(p[:self.batch_size], t[:self.batch_size])
            self.pending = [(p[self.batch_size:], t[self.batch_size:])]
            self.n_pending -= self.batch_size

    def _score(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        for k, v in reference_metrics(pred, true, self.low_px, self.high_px).items():
            self.sums[k] += v
        self.batches += 1

    def summary(self) -> dict[str, float | int]:
        """Mean over full batches of each number (NaN with no full batch), the windows used
        and the windows dropped with the last partial batch."""
        means = {k: (s / self.batches if self.batches else float("nan")) for k, s in self.sums.items()}
        return {**means, "windows_used": self.batches * self.batch_size,
                "windows_dropped": self.n_pending}
