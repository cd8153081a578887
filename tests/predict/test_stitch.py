"""Window stitching: full coverage, exact reconstruction of consistent windows, no seams."""
from __future__ import annotations

import numpy as np
import pytest

from kfusion.pipeline.predict.stitch import Stitcher, taper, window_starts


def test_window_starts_cover_and_end_flush() -> None:
    assert window_starts(30, 30, 10) == [0]
    assert window_starts(12, 30, 10) == [0]          # shorter than a window: one, padded
    assert window_starts(65, 30, 10) == [0, 10, 20, 30, 35]
    assert window_starts(60, 30, 15) == [0, 15, 30]


def test_taper_values() -> None:
    assert taper(5).tolist() == [1, 2, 3, 2, 1]
    assert taper(4).tolist() == [1, 2, 2, 1]


def test_consistent_windows_reconstruct_exactly() -> None:
    # If every window agrees with one true sequence, the blend must return that sequence.
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(77, 68, 2))
    st = Stitcher(77, 30, (68, 2))
    for s in window_starts(77, 30, 10):
        st.add(s, truth[s:s + 30])
    np.testing.assert_allclose(st.result(), truth, atol=1e-5)


def test_blend_is_weighted_average_by_hand() -> None:
    # Two windows of 4 frames, stride 2, over 6 frames; window A predicts 0, window B predicts 1.
    st = Stitcher(6, 4, ())
    st.add(0, np.zeros(4))
    st.add(2, np.ones(4))
    # weights 1,2,2,1: frame 2 = (2*0 + 1*1)/3, frame 3 = (1*0 + 2*1)/3
    np.testing.assert_allclose(st.result(), [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-6)


def test_seams_are_smaller_than_hard_cuts() -> None:
    # Windows that each carry an independent offset: hard concatenation jumps at every
    # boundary, the tapered blend spreads the change over the overlap.
    rng = np.random.default_rng(1)
    n, w, s = 120, 30, 10
    starts = window_starts(n, w, s)
    offsets = rng.normal(size=len(starts))
    st = Stitcher(n, w, ())
    for s0, o in zip(starts, offsets):
        st.add(s0, np.full(w, o))
    blended = st.result()
    max_step_blend = np.abs(np.diff(blended)).max()
    max_offset_jump = np.abs(np.diff(offsets)).max()
    assert max_step_blend < 0.5 * max_offset_jump


def test_uncovered_frames_raise() -> None:
    st = Stitcher(40, 30, ())
    st.add(0, np.zeros(30))
    with pytest.raises(ValueError):
        st.result()
