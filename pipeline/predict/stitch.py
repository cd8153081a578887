"""Predicting a landmark sequence of any length from overlapping fixed-length windows.

The model sees 1 s windows (30 frames). For a longer input we slide windows with a stride
shorter than the window, and blend overlapping predictions with a tapered weight (largest in
the middle of a window, small at its edges), so the seams between windows do not show: at every
frame the output is a convex combination of the windows covering it.
"""
from __future__ import annotations

import numpy as np


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Start frames covering [0, n_frames): regular strides plus one window flush with the end."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def taper(window: int) -> np.ndarray:
    """Triangular weights 1, 2, ..., peak, ..., 2, 1 (never 0: edge frames of the sequence count)."""
    i = np.arange(window)
    return np.minimum(i + 1, window - i).astype(np.float64)


class Stitcher:
    """Accumulate window predictions (window, ...) into a (n_frames, ...) weighted average."""

    def __init__(self, n_frames: int, window: int, item_shape: tuple[int, ...]):
        self.n, self.window = n_frames, window
        self.acc = np.zeros((max(n_frames, window), *item_shape))
        self.wsum = np.zeros(max(n_frames, window))
        self.w = taper(window)

    def add(self, start: int, pred: np.ndarray) -> None:
        sl = slice(start, start + self.window)
        self.acc[sl] += pred * self.w.reshape(-1, *([1] * (pred.ndim - 1)))
        self.wsum[sl] += self.w

    def result(self) -> np.ndarray:
        if (self.wsum[:self.n] == 0).any():
            raise ValueError("some frames are covered by no window")
        out = self.acc / self.wsum.reshape(-1, *([1] * (self.acc.ndim - 1)))
        return out[:self.n].astype(np.float32)
