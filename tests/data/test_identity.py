"""windows.identity: other_clip (the default) never lets a clip's identity frame inside one of
its own windows: another clip of the speaker (a neutral one first), else a frame outside every
window of the clip."""
from __future__ import annotations

import numpy as np

from kfusion.config import SplitConfig, WindowsConfig
from kfusion.pipeline.data.window_build import assign_windows, identity_donors
from kfusion.pipeline.data.windows import outside_frame
from data_helpers import manifest_row


def _plan(cid: str, starts: list[int], value: float, outside: tuple[float, list[int]]) -> dict:
    return {"clip_id": cid, "starts": starts, "n_frames": 60, "landmark_shard": "s0",
            "identity": np.full((68, 2), value, np.float32),
            "outside": {"identity": np.full((68, 2), outside[0], np.float32), "starts": outside[1]}}


def test_other_clip_prefers_a_neutral_clip_then_any_other_then_a_free_frame():
    manifest = {"a_happy": manifest_row("a_happy", speaker="A", emotion="happy", emotion_id=5, level=1),
                "a_neu2": manifest_row("a_neu2", speaker="A", level=3),
                "a_neu1": manifest_row("a_neu1", speaker="A", level=2),
                "b_sad": manifest_row("b_sad", speaker="B", emotion="sad", emotion_id=6),
                "b_fear": manifest_row("b_fear", speaker="B", emotion="fear", emotion_id=4),
                "c_only": manifest_row("c_only", speaker="C", split="test")}
    plans = [_plan("a_happy", [0], 1.0, (0, [])), _plan("a_neu2", [0], 2.0, (0, [])),
             _plan("a_neu1", [0, 5], 3.0, (0, [])), _plan("b_sad", [0], 4.0, (0, [])),
             _plan("b_fear", [0], 5.0, (0, [])), _plan("c_only", [0, 5, 10], 6.0, (60.0, [5, 10]))]
    # A: its lowest-level neutral clip for the others (not the level-1 happy one); that clip
    # itself gets the other neutral one.
    # B: no neutral clip: the first other clip by id. C: nobody else.
    assert identity_donors(plans, manifest) == {"a_happy": "a_neu1", "a_neu2": "a_neu1",
                                                "a_neu1": "a_neu2", "b_sad": "b_fear",
                                                "b_fear": "b_sad"}
    wp = assign_windows(plans, manifest, WindowsConfig(identity="other_clip"), SplitConfig())
    got = {it["clip_id"]: it for items in wp.by_shard.values() for it in items}
    assert {c: float(it["identity"][0, 0]) for c, it in got.items()} == {
        "a_happy": 3.0, "a_neu2": 3.0, "a_neu1": 2.0, "b_sad": 5.0, "b_fear": 4.0, "c_only": 60.0}
    # C's fallback frame held its first window: that window is gone, and counted
    assert got["c_only"]["starts"] == [5, 10]
    assert (wp.identity_fallbacks, wp.windows_dropped_for_identity) == (1, 1)
    assert [r["window_id"] for r in wp.rows["test"]] == ["c_only@5", "c_only@10"]


def test_outside_frame_takes_a_free_frame_or_drops_the_windows_holding_it():
    lm = np.zeros((50, 68, 2), np.float32)
    # windows of 30 at stride 5 from 0 to 15 cover frames 0-44: 45-49 are free; nearest to 2 is 45
    assert outside_frame(lm, [0, 5, 10, 15], 30, preferred=2) == (45, [0, 5, 10, 15])
    lm[45:] = np.nan   # no free finite frame: frame 2 is taken, and windows 0 (0-29) goes
    assert outside_frame(lm, [0, 5, 10, 15], 30, preferred=2) == (2, [5, 10, 15])
    assert outside_frame(lm, [0, 5, 10, 15], 30, preferred=7) == (7, [10, 15])
