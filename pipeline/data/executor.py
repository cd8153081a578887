"""Map shards over workers: the one place data preparation runs jobs in parallel.

Every stage that fans work out (index: clips, landmarks: clips, audio and features: shards,
windows: landmark shards, demo: clips) hands `map_shards` a picklable function and its jobs.
Today the workers are local processes; another executor (a Ray cluster) slots in behind
this function without a stage noticing.

Workers start from a fork server: a clean, single-threaded process, so a worker never
inherits a lock held by a thread (torch, OpenMP) of the caller, as a plain fork could.
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable, Iterator, Sequence

from kfusion.pipeline.io import progress


def map_shards(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int,
               ordered: bool = False, initializer: Callable[..., None] | None = None,
               initargs: tuple = (), fresh_process_per_job: bool = False,
               preload: Sequence[str] = (), desc: str = "", unit: str = "shard") -> Iterator[Any]:
    """Yield fn(job) for every job: in job order when `ordered`, else as each completes.

    workers: processes, at most one per job; 0 runs every job here, in order, with no pool
        (an encoder on the GPU of this process, a debugger).
    initializer(*initargs): runs once in each worker before its first job, to load what
        every job shares (a face detector, an encoder) once per worker, not once per job.
    fresh_process_per_job: each job in a new process, so no state (a speech synthesiser's)
        carries from one job into the next.
    preload: modules the fork server imports once, so each new worker starts with them.
    desc, unit: the progress bar's label and unit; the bar counts jobs.
    """
    jobs = list(jobs)
    if not jobs:
        return
    if workers <= 0:
        if initializer is not None:
            initializer(*initargs)
        yield from progress(map(fn, jobs), total=len(jobs), desc=desc, unit=unit)
        return
    ctx = mp.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(list(preload))
    pool = ctx.Pool(min(workers, len(jobs)), initializer, initargs,
                    maxtasksperchild=1 if fresh_process_per_job else None)
    try:
        results = (pool.imap if ordered else pool.imap_unordered)(fn, jobs, chunksize=1)
        yield from progress(results, total=len(jobs), desc=desc, unit=unit)
    finally:   # every job is done, or the caller stopped early: end the workers either way
        pool.terminate()
        pool.join()
