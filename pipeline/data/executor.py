"""Map shards over workers: the one place data preparation runs jobs in parallel.

Every stage that fans work out (index: clips, landmarks, audio and features: shards,
windows: landmark shards, demo: clips) hands `map_shards` a picklable function and its jobs.
Two executors sit behind it, chosen by `scale.executor` in params:

- local: processes of this machine. They start from a fork server: a clean, single-threaded
  process, so a worker never inherits a lock held by a thread (torch, OpenMP) of the caller,
  as a plain fork could.
- ray: actors of a Ray cluster (`scale.ray_address`, else $RAY_ADDRESS, else a new cluster
  on this machine). Each actor runs the same `initializer` once and then the same function
  on one job at a time, so a shard's bytes do not depend on the executor. Ray is an optional
  dependency (`pip install -e .[ray]`), imported only here and only when asked for.

A job must be idempotent: a shard job skips a complete shard and otherwise writes it
atomically, so a job that Ray retries after a lost node, or a re-run after a kill, is safe.
Results should be small (counts, rejects): shard data goes to disk in the worker and never
travels back. docs/scale.md: running on a cluster.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from kfusion.config import ScaleConfig
from kfusion.pipeline.io import StageError, progress

# Read by Ray into its C++ config when `ray` is first imported, so set before that import:
# no usage-stats notice or report, and token authentication (Ray 2.60's default for a
# local cluster, said explicitly: no warning, and a driver given host:port authenticates).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def map_shards(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int,
               ordered: bool = False, initializer: Callable[..., None] | None = None,
               initargs: tuple = (), fresh_process_per_job: bool = False,
               preload: Sequence[str] = (), desc: str = "", unit: str = "shard",
               scale: ScaleConfig | None = None, cpus_per_worker: float = 1,
               gpus_per_worker: float = 0, shared_dir: str | Path | None = None) -> Iterator[Any]:
    """Yield fn(job) for every job: in job order when `ordered`, else as each completes.

    workers: processes (or Ray actors), at most one per job; 0 runs every job here, in order,
        with no pool (an encoder on the GPU of this process, a debugger); with Ray, 0 is one actor.
    initializer(*initargs): runs once in each worker before its first job, to load what
        every job shares (a face detector, an encoder) once per worker, not once per job.
    fresh_process_per_job: each job in a new process, so no state (a speech synthesiser's)
        carries from one job into the next (local only).
    preload: modules the fork server imports once, so each new worker starts with them.
    desc, unit: the progress bar's label and unit; the bar counts jobs.
    scale: the executor (None or executor local: this machine's processes).
    cpus_per_worker, gpus_per_worker: what each Ray actor reserves; GPUs only where the
        cluster has some.
    shared_dir: a folder every worker writes into; each Ray actor checks it sees a file the
        driver put there, so a node without the shared storage fails at once, by name.
    """
    jobs = list(jobs)
    if not jobs:
        return
    if scale is not None and scale.executor == "ray":
        if fresh_process_per_job:
            raise ValueError("fresh_process_per_job runs on the local executor only")
        results = _map_ray(fn, jobs, max(workers, 1), ordered, initializer, initargs, scale,
                           {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}, shared_dir)
    elif workers <= 0:
        results = _map_here(fn, jobs, initializer, initargs)
    else:
        results = _map_local(fn, jobs, workers, ordered, initializer, initargs,
                             fresh_process_per_job, preload)
    try:
        yield from progress(results, total=len(jobs), desc=desc, unit=unit)
    finally:   # every job is done, or the caller stopped early: end the workers either way
        results.close()


def _map_here(fn, jobs, initializer, initargs) -> Iterator[Any]:
    if initializer is not None:
        initializer(*initargs)
    yield from map(fn, jobs)


def _map_local(fn, jobs, workers, ordered, initializer, initargs, fresh_process_per_job,
               preload) -> Iterator[Any]:
    ctx = mp.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(list(preload))
    pool = ctx.Pool(min(workers, len(jobs)), initializer, initargs,
                    maxtasksperchild=1 if fresh_process_per_job else None)
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, jobs, chunksize=1)
    finally:
        pool.terminate()
        pool.join()


# ----------------------------------------------------------------------------- ray
def import_ray():
    """The one `import ray` of the project, after RAY_ENV (Ray reads it at first import)."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import ray
    except ImportError:
        raise StageError("scale.executor: ray needs Ray installed: pip install -e '.[ray]' "
                         "(or set scale.executor: local)") from None
    return ray


def ray_address(scale: ScaleConfig) -> str:
    """scale.ray_address, else $RAY_ADDRESS, else "local" (a new cluster on this machine).
    Never None: Ray would then attach to whatever cluster the last `ray start` on this
    machine recorded in /tmp/ray, even a dead one."""
    return scale.ray_address or os.environ.get("RAY_ADDRESS") or "local"


def connect_ray(scale: ScaleConfig):
    """Ray, connected: to the cluster at ray_address(scale), or a new local cluster with a
    capped object store. Once per process: later calls (and a session a test started) reuse
    it; Ray disconnects, and stops a cluster it started, when the process exits."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = ray_address(scale)
    kw: dict[str, Any] = {}
    if address == "local":   # jobs and results are KBs; Ray's default is 30% of the RAM
        kw["object_store_memory"] = scale.object_store_mb * 2**20
    try:
        # No runtime_env: nothing of the checkout is uploaded; workers import kfusion from
        # the same environment, which every node must have at the same path.
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 logging_level="WARNING", **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise StageError(f"scale.executor: ray: cannot connect to {address!r}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return ray


def cluster_gpus(scale: ScaleConfig) -> float:
    """GPUs the Ray cluster has (connecting to it)."""
    return float(connect_ray(scale).cluster_resources().get("GPU", 0))


class _Host:
    """A Ray actor: the worker's initializer once, then the function on one job at a time."""

    def __init__(self, fn, initializer, initargs, cwd: str, probe: str | None):
        if os.path.isdir(cwd):   # a `ray start` worker runs in that command's folder
            os.chdir(cwd)        # relative paths in jobs are the driver's
        if probe is not None and not os.path.exists(probe):
            raise RuntimeError(f"{socket.gethostname()}: {probe} is not visible here; every "
                               f"Ray node must mount the data folders at the same path")
        if initializer is not None:
            initializer(*initargs)
        self.fn = fn

    def run(self, job):
        return self.fn(job)


def _actors_that_fit(ray, workers: int, jobs: int, need: dict[str, float]) -> int:
    """At most what the cluster can place now: ActorPool hands every actor a job, and an
    actor that is never scheduled would hold its job forever."""
    have = ray.cluster_resources()
    fit = [workers, jobs]
    for key, res in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        if need[key]:
            fit.append(int(have.get(res, 0) // need[key]))
    return max(1, min(fit))


def _map_ray(fn, jobs, workers, ordered, initializer, initargs, scale, need,
             shared_dir) -> Iterator[Any]:
    ray = connect_ray(scale)
    from ray.util import ActorPool
    if not ray.cluster_resources().get("GPU", 0):
        need = {**need, "num_gpus": 0}
    probe = Path(shared_dir) / f".probe-{uuid.uuid4().hex}" if shared_dir is not None else None
    if probe is not None:
        probe.write_text(socket.gethostname())
    # The driver's OpenMP setting goes to the actors (env vars only: nothing is uploaded).
    # Ray sets OMP_NUM_THREADS=1 in a 1-CPU actor, and CTranslate2 (Whisper) then takes
    # another code path with other float sums: measured, its states' bytes differ from a
    # local worker's, where the variable is unset.
    omp = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    # a lost node's actor restarts once and its job runs again: jobs are idempotent
    host = ray.remote(max_restarts=1, max_task_retries=1,
                      runtime_env={"env_vars": {"OMP_NUM_THREADS": omp}}, **need)(_Host)
    actors = [host.remote(fn, initializer, initargs, os.getcwd(), probe and str(probe.resolve()))
              for _ in range(_actors_that_fit(ray, workers, len(jobs), need))]
    try:
        pool = ActorPool(actors)
        yield from (pool.map if ordered else pool.map_unordered)(
            lambda actor, job: actor.run.remote(job), jobs)
    finally:
        for actor in actors:
            ray.kill(actor)
        if probe is not None:
            probe.unlink(missing_ok=True)
