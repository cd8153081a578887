"""Long audio through an encoder with a bounded context: the one chunking rule, shared by the
features stage and `kfusion predict` (docs/encoders.md, "Long audio").

Every content encoder gives one frame per `per_frame` inputs (320 samples, or 2 Whisper mel
frames), so frame k of a piece that starts at input a * per_frame is frame a + k of the whole.
Audio up to `max_frames` frames goes through in one pass. Longer audio is cut into cores of
`core_frames` frames; each core is encoded with up to `context_frames` frames of input on
both sides, and the context frames are cut from its output, so the pieces join into exactly
the frames of one pass, each computed with context around it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def encode_chunked(encode: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, n_frames: int,
                   per_frame: int, max_frames: int, core_frames: int, context_frames: int,
                   tail: int = 0,
                   encode_pieces: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
                   ) -> np.ndarray:
    """(n_frames, D): `encode` over the input x (time on its last axis) in one pass, or in
    cores with context when n_frames > max_frames.

    encode(piece) -> (frames of that piece, D). tail: inputs past a frame's start that it
    still reads (wav2vec2: its 400-sample receptive field is 80 samples longer than its hop).
    encode_pieces: all the pieces in one call (an encoder that batches them), giving what
    `encode` gives for each.
    """
    if n_frames <= max_frames:
        return encode(x)[:n_frames]
    if core_frames + 2 * context_frames > max_frames:
        raise ValueError(f"a core of {core_frames} frames with {context_frames} frames of context "
                         f"either side exceeds the encoder's {max_frames} frames")
    plan = []   # (first frame of the piece, its core [f0, f1), its input span)
    for f0 in range(0, n_frames, core_frames):
        f1 = min(f0 + core_frames, n_frames)
        a, b = max(f0 - context_frames, 0), min(f1 + context_frames, n_frames)
        stop = x.shape[-1] if b == n_frames else b * per_frame + tail
        plan.append((a, f0, f1, x[..., a * per_frame:stop]))
    inputs = [piece for *_, piece in plan]
    states = encode_pieces(inputs) if encode_pieces is not None else [encode(p) for p in inputs]
    return np.concatenate([h[f0 - a:f1 - a] for (a, f0, f1, _), h in zip(plan, states)])
