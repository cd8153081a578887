"""Scale benchmark: the landmarks and features stages over 1x, 4x and 16x a demo corpus, with the
local executor and with Ray (a new local Ray cluster per stage run, as `dvc repro` starts one).

The corpus is the tiny demo of tests/scale (1 speaker x 2 emotions x 1 level = 2 clips), its
clips replicated under new ids (`<id>-rK`) in the manifest: 2, 8 and 32 clips at 1x, 4x, 16x
(`--factors`). Each stage runs as its own process (`python -m kfusion.stages.<name>`), from no
output, so Ray's start-up is in its wall time. While it runs, the RSS of every process under it
is sampled every 0.1 s; a worker is a local pool process or a Ray worker seen at work (`ray::`, not IDLE); its peak
RSS must stay flat as the corpus grows (a worker holds one shard, never the corpus).

Reported per (stage, executor, factor): clips, wall s, clips/s, peak worker RSS MB; Ray's fixed
overhead = Ray wall - local wall at the smallest factor (start a cluster, start actors, load
the detector/encoder in each). Writes bench/results/scale.json (--out) with the machine block
(bench/record.py: load averages, thread count) and prints one line.

    python bench/scale.py                         # about 10 min on 2 busy cores
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "scale"))
sys.path.insert(0, str(REPO / "bench"))

from kfusion.pipeline.data.index import manifest_table, read_manifest  # noqa: E402
from record import Machine, write_result  # noqa: E402
from scale_helpers import run_stages, tiny_params, write_params  # noqa: E402

STAGES = {"landmarks": ("data/landmarks",), "features": ("data/audio", "data/features")}


def replicate(folder: Path, factor: int, base: list[dict]) -> int:
    """data/index/manifest.parquet with every clip `factor` times (ids -r0..-rK); its size."""
    rows = [{**r, "clip_id": f"{r['clip_id']}-r{k}"} for k in range(factor) for r in base]
    import pyarrow.parquet as pq
    pq.write_table(manifest_table(rows), folder / "data/index/manifest.parquet")
    return len(rows)


class PeakRSS:
    """The peak RSS (MB) of each process under `pid`, sampled in a thread."""

    def __init__(self, pid: int):
        self.root, self.peak, self.kind = psutil.Process(pid), {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                procs = self.root.children(recursive=True)
            except psutil.Error:
                return
            for p in procs:
                try:
                    rss, cmd = p.memory_info().rss / 2**20, " ".join(p.cmdline())
                except psutil.Error:
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0.0), rss)
                if "ray::" in cmd and "IDLE" not in cmd:   # an actor (ray::_Host...) at work
                    self.kind[p.pid] = "ray_actor"
                elif "multiprocessing" in cmd:
                    self.kind[p.pid] = "local_worker"
                else:
                    self.kind.setdefault(p.pid, "other")
            time.sleep(0.1)

    def workers(self) -> list[float]:
        self.stop.set()
        self.thread.join()
        return sorted((round(v, 1) for k, v in self.peak.items()
                       if self.kind[k] in ("ray_actor", "local_worker")), reverse=True)


def run_stage(folder: Path, name: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"kfusion.stages.{name}", "--params",
                             "params.yaml"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    workers = rss.workers()
    if proc.returncode:
        raise SystemExit(f"{name} failed in {folder}:\n{err[-3000:]}")
    return {"wall_s": round(wall, 2), "worker_peak_rss_mb": workers[:4],
            "max_worker_rss_mb": workers[0] if workers else None}


def measure(folder: Path, factors: list[int], workers: int) -> list[dict]:
    base = read_manifest(folder / "data/index")
    results = []
    for factor in factors:
        clips = replicate(folder, factor, base)
        for executor in ("local", "ray"):
            write_params(folder, tiny_params(workers=workers, scale={"executor": executor}))
            for stage, outs in STAGES.items():
                for out in outs:
                    shutil.rmtree(folder / out, ignore_errors=True)
                if stage == "features":   # its input, untimed
                    run_stage(folder, "audio")
                r = run_stage(folder, stage)
                r.update(stage=stage, executor=executor, factor=factor, clips=clips,
                         clips_per_s=round(clips / r["wall_s"], 3))
                print(json.dumps(r), file=sys.stderr, flush=True)
                results.append(r)
    return results


def summary(results: list[dict], factors: list[int]) -> dict:
    def get(stage, ex, f):
        return next(r for r in results if (r["stage"], r["executor"], r["factor"]) == (stage, ex, f))
    lo, hi = min(factors), max(factors)
    return {stage: {"ray_fixed_overhead_s": round(get(stage, "ray", lo)["wall_s"]
                                                  - get(stage, "local", lo)["wall_s"], 2),
                    "local_clips_per_s": {f: get(stage, "local", f)["clips_per_s"] for f in factors},
                    "ray_clips_per_s": {f: get(stage, "ray", f)["clips_per_s"] for f in factors},
                    "worker_rss_growth_mb": {ex: round((get(stage, ex, hi)["max_worker_rss_mb"] or 0)
                                                       - (get(stage, ex, lo)["max_worker_rss_mb"] or 0), 1)
                                             for ex in ("local", "ray")}}
            for stage in STAGES}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factors", default="1,4,16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench/results/scale.json"))
    args = ap.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    machine = Machine.start(threads=args.workers)   # stage workers, one torch thread each
    with tempfile.TemporaryDirectory(prefix="kf-scale-") as tmp:
        folder = Path(tmp)
        write_params(folder, tiny_params(workers=args.workers))
        run_stages(folder, "demo", "index")
        results = measure(folder, factors, args.workers)
    report = {"corpus": "tiny demo (2 clips) replicated", "factors": factors,
              "workers": args.workers, "features_threads": 1,
              "summary": summary(results, factors), "runs": results}
    s = report["summary"]
    write_result("scale", report, machine,
                 f"landmarks local {s['landmarks']['local_clips_per_s']} clips/s, ray "
                 f"{s['landmarks']['ray_clips_per_s']}; features local "
                 f"{s['features']['local_clips_per_s']}, ray {s['features']['ray_clips_per_s']}; "
                 f"ray overhead {s['landmarks']['ray_fixed_overhead_s']} / "
                 f"{s['features']['ray_fixed_overhead_s']} s; worker RSS growth 1x->{max(factors)}x "
                 f"{s['landmarks']['worker_rss_growth_mb']} / "
                 f"{s['features']['worker_rss_growth_mb']} MB", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
