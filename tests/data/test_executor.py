"""map_shards: every job's result once, in order or as completed, in worker processes set up
once each (or fresh per job), or here with no pool."""
from __future__ import annotations

import os
import time

from kfusion.pipeline.data.executor import map_shards

_state: dict = {}


def _init(tag: str) -> None:
    _state["tag"] = tag
    _state["inits"] = _state.get("inits", 0) + 1


def _job(x: int) -> tuple[int, int, str, int]:
    """(x squared, this process, what the initializer left, how often it ran here)."""
    return x * x, os.getpid(), _state.get("tag", ""), _state.get("inits", 0)


def _slow_first(x: float) -> float:
    time.sleep(x)
    return x


def test_ordered_results_come_in_job_order_from_initialised_workers():
    out = list(map_shards(_job, range(8), workers=2, ordered=True, initializer=_init,
                          initargs=("ready",)))
    assert [r[0] for r in out] == [x * x for x in range(8)]
    pids = {r[1] for r in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert all(r[2] == "ready" and r[3] == 1 for r in out)   # the initializer ran once per worker


def test_unordered_results_come_as_they_complete_ordered_ones_wait():
    assert list(map_shards(_slow_first, [1.5, 0.0], workers=2)) == [0.0, 1.5]
    assert list(map_shards(_slow_first, [1.5, 0.0], workers=2, ordered=True)) == [1.5, 0.0]


def test_fresh_process_per_job():
    out = list(map_shards(_job, range(4), workers=2, ordered=True, fresh_process_per_job=True,
                          initializer=_init, initargs=("fresh",)))
    assert len({r[1] for r in out}) == 4 and all(r[3] == 1 for r in out)


def test_zero_workers_run_here_in_order_and_no_jobs_start_nothing():
    _state.clear()
    out = list(map_shards(_job, [3, 1, 2], workers=0, initializer=_init, initargs=("here",)))
    assert out == [(9, os.getpid(), "here", 1), (1, os.getpid(), "here", 1), (4, os.getpid(), "here", 1)]
    _state.clear()
    assert list(map_shards(_job, [], workers=4, initializer=_init, initargs=("never",))) == []
    assert _state == {}
