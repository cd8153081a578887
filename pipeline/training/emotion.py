"""A small audio -> emotion head, for `kfusion predict --emotion auto`.

Input: the window's wav2vec2 features mean-pooled over time (768) and its log-mel mean and
standard deviation over time (2 x n_mels), standardised with the training windows' mean and
std (stored with the head). Output: logits over `EMOTIONS`. A linear layer when `hidden` is
0, else Linear -> GELU -> Linear. Trained in the train stage, saved inside the checkpoint
under "emotion_classifier"; its test accuracy is reported by the evaluate stage.

Whether `predict --emotion auto` may use it is decided at train time (`auto_gate`): on the
held-out validation windows (speaker-disjoint with split.by: speaker, never seen by the head's
fit), its accuracy must beat chance, the share of the most frequent emotion there, by at least
AUTO_MARGIN. The split, the accuracy, chance, the margin and the verdict are recorded in the
checkpoint with the head; predict falls back to `neutral` and says why when the verdict is no.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kfusion.shapes import EMOTIONS

# Accuracy points above chance, on held-out windows, before `--emotion auto` trusts the head.
# 0.10 is 3 standard errors of a chance-level accuracy (1/8) over 100 independent windows;
# overlapping windows of one clip are not independent, so the margin stays well above that.
AUTO_MARGIN = 0.10

if TYPE_CHECKING:
    from kfusion.config import Config
    from kfusion.pipeline.training.dataset import WindowDataset


def pooled_features(mel: torch.Tensor, w2v: torch.Tensor) -> torch.Tensor:
    """(B, 100, n_mels), (B, 49, 768) -> (B, 768 + 2 n_mels)."""
    mel, w2v = mel.float(), w2v.float()
    return torch.cat([w2v.mean(1), mel.mean(1), mel.std(1)], dim=-1)


class EmotionClassifier(nn.Module):
    def __init__(self, *, in_features: int, hidden: int = 64, n_classes: int = len(EMOTIONS)):
        super().__init__()
        self.in_features, self.hidden, self.n_classes = in_features, hidden, n_classes
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.head = (nn.Linear(in_features, n_classes) if hidden == 0 else
                     nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(),
                                   nn.Linear(hidden, n_classes)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head((feats - self.feature_mean) / self.feature_std)  # (B, n_classes)

    @torch.no_grad()
    def predict(self, mel: torch.Tensor, w2v: torch.Tensor) -> torch.Tensor:
        return self(pooled_features(mel, w2v)).argmax(-1)  # (B,) emotion ids

    def export(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "hidden": self.hidden,
                "n_classes": self.n_classes, "labels": list(EMOTIONS),
                "state_dict": {k: v.cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_export(cls, d: dict[str, Any]) -> "EmotionClassifier":
        m = cls(in_features=d["in_features"], hidden=d["hidden"], n_classes=d["n_classes"])
        m.load_state_dict(d["state_dict"])
        return m.eval()


def fit_emotion_classifier(train_feats: torch.Tensor, train_labels: torch.Tensor, *,
                           hidden: int, epochs: int, seed: int, lr: float = 1e-3,
                           batch_size: int = 256, val_feats: torch.Tensor | None = None,
                           val_labels: torch.Tensor | None = None) -> tuple[EmotionClassifier, dict]:
    """Full-data Adam training on pooled features (small: seconds on CPU)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = EmotionClassifier(in_features=train_feats.shape[1], hidden=hidden)
    clf.feature_mean.copy_(train_feats.mean(0))
    clf.feature_std.copy_(train_feats.std(0).clamp_min(1e-6) if len(train_feats) > 1
                          else torch.ones(train_feats.shape[1]))
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=1e-4)
    n = len(train_feats)
    for _ in range(epochs):
        clf.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(clf(train_feats[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    report = {"train_accuracy": accuracy(clf, train_feats, train_labels), "train_windows": n}
    if val_feats is not None and len(val_feats):
        report.update(val_accuracy=accuracy(clf, val_feats, val_labels), val_windows=len(val_feats))
    return clf, report


@torch.no_grad()
def accuracy(clf: EmotionClassifier, feats: torch.Tensor, labels: torch.Tensor) -> float:
    if len(feats) == 0:
        return float("nan")
    return float((clf(feats).argmax(-1) == labels).float().mean())


def pooled_windows(ds: "WindowDataset | None", step: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, 768 + 2 n_mels) and emotion ids (N,) of a split, `step` windows
    at a time (the memory-mapped arrays are never read whole)."""
    if ds is None or len(ds) == 0:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    a, n = ds.arrays(), len(ds)   # n < the arrays' rows under train.max_windows
    feats = [pooled_features(torch.from_numpy(np.array(a["mel"][i:min(i + step, n)], np.float32)),
                             torch.from_numpy(np.array(a["w2v"][i:min(i + step, n)], np.float32)))
             for i in range(0, n, step)]
    return torch.cat(feats), torch.from_numpy(np.array(a["emotion"][:n], np.int64))


def fit_emotion_head(cfg: "Config", train_ds: "WindowDataset",
                     val_ds: "WindowDataset | None") -> tuple[EmotionClassifier, dict]:
    """The head for `cfg.train` (emotion_classifier_hidden / _epochs), fitted on the training
    windows; its report has the validation accuracy when there are validation windows, and
    the held-out verdict for `--emotion auto` (auto_gate)."""
    xf, yf = pooled_windows(train_ds)
    xv, yv = pooled_windows(val_ds)
    clf, report = fit_emotion_classifier(xf, yf, hidden=cfg.train.emotion_classifier_hidden,
                                         epochs=cfg.train.emotion_classifier_epochs, seed=cfg.seed,
                                         val_feats=xv if len(xv) else None,
                                         val_labels=yv if len(yv) else None)
    return clf, {**report, **auto_gate(report.get("val_accuracy"), yv)}


def auto_gate(accuracy: float | None, labels: torch.Tensor, split: str = "val",
              margin: float = AUTO_MARGIN) -> dict[str, Any]:
    """Whether the head beat chance on the held-out `labels` by `margin`: chance is the share
    of their most frequent emotion (what always answering it would score)."""
    n = len(labels)
    chance = float(torch.bincount(labels, minlength=len(EMOTIONS)).max()) / n if n else float("nan")
    ok = bool(n) and accuracy is not None and accuracy >= chance + margin
    return {"auto": {"held_out_split": split, "held_out_windows": n,
                     "held_out_accuracy": accuracy if n else None,
                     "chance": chance if n else None, "margin": margin, "usable": ok}}


def auto_verdict(head: dict[str, Any] | None) -> tuple[bool, str]:
    """(may `--emotion auto` use this checkpoint's head?, why not, in words) from the
    checkpoint's `emotion_classifier` entry."""
    if not head:
        return False, "the checkpoint has no emotion classifier (train.emotion_classifier_epochs: 0)"
    gate = (head.get("report") or {}).get("auto")
    if not gate:
        return False, "the checkpoint records no held-out test of its emotion classifier"
    if gate["usable"]:
        return True, ""
    if not gate["held_out_windows"]:
        return False, (f"its emotion classifier could not be tested: no {gate['held_out_split']} "
                       f"windows were held out at train time")
    return False, (f"its emotion classifier scored {gate['held_out_accuracy']:.1%} on "
                   f"{gate['held_out_windows']} held-out {gate['held_out_split']} windows, where "
                   f"chance is {gate['chance']:.1%} and auto needs "
                   f"{gate['chance'] + gate['margin']:.1%}")
