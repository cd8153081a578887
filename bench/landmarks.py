"""Benchmark of the landmarks stage against the limit its shape predictor sets, in one run.

(a) Throughput, frames/s with `--workers` processes over corpus clips (data/demo/corpus when
    it exists, else the GRID clips in ../shared/grid/s1), the runs of each repeat adjacent:
      stage  - kfusion.pipeline.data.landmarks.process_clip as the stage's workers run it
               (decode, detect sparsely + track, post-process, crop, identity JPEG);
      bound  - dlib's shape predictor alone on exactly the frames and boxes the stage
               predicts on (recorded in an untimed pass), the frames decoded into memory
               beforehand, in a pool of the same number of workers: the stage cannot beat it;
      naive  - the same decode, then dlib's HOG detector + shape predictor on every frame
               (in the first --naive-repeats repeats only: it is slow).
    Wall-clock rates swing with other jobs' load on a shared machine; CPU seconds per frame
    (the stage's with any ffmpeg process it starts) do not, so the share of the bound is
    given both ways. The target: the stage at >= 80% of the bound (wall clock).
(b) Where the stage's CPU goes (profile): one process, each part of process_clip timed, plus
    writing the clips' rows as a Parquet shard and starting a worker.
(c) The real 1080p MEAD clip, a copy per worker: stage, bound and naive, as in (a).
Also: landmark jitter (mean |second difference| of still-head points 27-30, 39, 42, in 256
crop px) and, on the demo, the error against the generator's landmarks: stage vs naive.

    python bench/landmarks.py [--corpus demo|grid] [--clips 24] [--workers 2] [--repeats 5]

Writes bench/results/landmarks.json (or --out) through bench/record.py and prints one line.
Medians over the repeats; ratios are medians of per-repeat ratios.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import kfusion.pipeline.data.landmarks as lm  # noqa: E402
import kfusion.pipeline.media.video as video  # noqa: E402
from kfusion.config import LandmarksConfig  # noqa: E402
from kfusion.pipeline.data.landmark_shards import PRELOAD  # noqa: E402
from kfusion.pipeline.data.landmarks import (DlibBackend, process_clip, read_clip,  # noqa: E402
                                             rows_to_table, shape_points, still_point_jitter,
                                             to_crop_px, track_clip)
from record import Machine, write_result  # noqa: E402

SHARED = REPO.parent / "shared"    # the read-only real clips, beside the repository
MEAD = SHARED / "realclips/mead/M030/video/front/sad/level_3/001.mp4"
GRID = SHARED / "grid/s1"
TARGET_SHARE = 0.8
_state: dict = {}


# ----------------------------------------------------------------------------- workers
def _init() -> None:
    import cv2
    cv2.setNumThreads(1)   # as the stage's workers: parallel across clips, one thread each
    _state["backend"] = DlibBackend("hog")
    _state["cfg"] = LandmarksConfig()


def _cpu() -> float:
    """CPU seconds of this process plus its reaped children (ffmpeg, where the pipe decodes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def decode_gray(path: str, fps: int = 30) -> list[np.ndarray]:
    """The clip's gray frames as the stage decodes them: in process, else through the pipe."""
    try:
        return [f.gray for f in video.decode_in_process(path, fps)]
    except video.NotInProcess:
        return [f.gray for f in video.pipe_frames(path, fps=fps)]


def _stage(path: str) -> tuple[int, float, dict]:
    """One clip through the stage's code -> (frames, CPU s, the clip's arrays)."""
    c = _cpu()
    r = process_clip(path, path, _state["backend"], _state["cfg"])
    return r.frames, _cpu() - c, read_clip(r.row)


def _naive(path: str) -> tuple[int, np.ndarray]:
    """Per frame, full resolution: detect, take the largest face, predict."""
    b = _state["backend"]
    pts = []
    for gray in decode_gray(path):
        found = b.detect(gray)
        if found:
            box = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]
            pts.append(b.predict(gray, box))
        else:
            pts.append(np.full((68, 2), np.nan, np.float32))
    return len(pts), np.stack(pts)


class _Recorder:
    """A backend passing every call through that notes the frame and box of each predict."""

    def __init__(self, backend, frames: list[np.ndarray]):
        self.backend, self.calls = backend, []
        self.index = {id(f): t for t, f in reversed(list(enumerate(frames)))}

    def detect(self, image, upsample=None):
        return self.backend.detect(image, upsample)

    def predict(self, image, box):
        self.calls.append((self.index[id(image)], tuple(int(round(v)) for v in box)))
        return self.backend.predict(image, box)


def record_predictions(path: str, backend, cfg: LandmarksConfig) -> list[tuple[int, tuple]]:
    """(frame index, integer box) of every predictor call the stage makes on this clip."""
    frames = decode_gray(path, cfg.fps)
    rec = _Recorder(backend, frames)
    track_clip(frames, rec, cfg)
    return rec.calls


def _bound_init(clips: list[str], calls: list[list]) -> None:
    """Bound worker: the predictor, and every clip's frames (once per file) and boxes in memory."""
    import dlib
    _init()
    _state["bound"], decoded = [], {}
    for path, clip_calls in zip(clips, calls):
        if path not in decoded:
            decoded[path] = [np.ascontiguousarray(g) for g in decode_gray(path)]
        frames = decoded[path]
        _state["bound"].append((len(frames), [(frames[t], dlib.rectangle(*box))
                                              for t, box in clip_calls]))


def _bound(i: int) -> tuple[int, float]:
    """Clip i's predictor calls alone -> (the clip's frames, CPU s)."""
    predictor = _state["backend"].predictor
    frames, work = _state["bound"][i]
    c = _cpu()
    for image, rect in work:
        predictor(image, rect)
    return frames, _cpu() - c


def _stage_context():
    """Worker processes as the stage starts them (kfusion.pipeline.data.executor): from a fork
    server that has read the shape predictor, so the workers share it; the bound's too."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", *PRELOAD])
    return ctx


def _timed(pool, fn, items) -> tuple[float, list]:
    t = time.perf_counter()
    out = pool.map(fn, items, chunksize=1)
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------- (a) throughput
def corpus(limit: int, which: str = "auto") -> tuple[str, list[str]]:
    demo = sorted((REPO / "data/demo/corpus").glob("*/video/front/*/*/*.mp4"))
    if demo and which in ("auto", "demo"):
        return "demo", [str(p) for p in demo[::max(1, len(demo) // limit)][:limit]]   # all speakers
    grid = sorted(GRID.glob("*.mpg"))
    if not grid:
        sys.exit(f"no clips: neither {REPO / 'data/demo/corpus'} nor {GRID}")
    return "grid", [str(p) for p in grid[:limit]]


def measure_throughput(clips: list[str], workers: int, repeats: int, naive_repeats: int) -> dict:
    """Stage, bound and naive runs, adjacent within each repeat: frames/s per run, CPU s per
    frame, predictor calls per frame, and the last repeat's stage clips and naive points."""
    _init()
    recorded = {p: record_predictions(p, _state["backend"], _state["cfg"]) for p in set(clips)}
    calls = [recorded[p] for p in clips]
    ctx = _stage_context()
    runs: dict[str, list[float]] = {"stage": [], "bound": [], "naive": []}
    cpu: dict[str, list[float]] = {"stage": [], "bound": []}
    naive: list = []
    with ctx.Pool(workers, _init) as pool, ctx.Pool(workers, _bound_init, (clips, calls)) as bound:
        pool.map(abs, range(workers))
        bound.map(abs, range(workers))            # workers up and frames decoded before timing
        for r in range(repeats):
            dt, out = _timed(pool, _stage, clips)
            frames = sum(n for n, _, _ in out)
            runs["stage"].append(frames / dt)
            cpu["stage"].append(sum(c for _, c, _ in out) / frames)
            stage_clips = [c for _, _, c in out]
            dt, out = _timed(bound, _bound, range(len(clips)))
            runs["bound"].append(sum(n for n, _ in out) / dt)
            cpu["bound"].append(sum(c for _, c in out) / frames)
            if r < naive_repeats:
                dt, naive = _timed(pool, _naive, clips)
                runs["naive"].append(sum(n for n, _ in naive) / dt)
    return {"frames": frames, "runs": runs, "cpu": cpu, "stage_clips": stage_clips,
            "predicts": sum(len(c) for c in calls), "naive": [p for _, p in naive]}


def throughput_figures(m: dict) -> dict:
    runs, cpu, stage_clips = m["runs"], m["cpu"], m["stage_clips"]
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    n = len(runs["naive"])
    share = statistics.median([a / b for a, b in zip(runs["stage"], runs["bound"])])
    return {
        "frames": m["frames"], "stage_fps": round(med["stage"], 1),
        "naive_fps": round(med["naive"], 1) if n else None,
        "predictor_bound_fps": round(med["bound"], 1),
        # Ratios per repeat (the runs of one repeat are adjacent in time, so they see about the
        # same load from other jobs), then their median.
        "share_of_bound": round(share, 3),
        "speedup_vs_naive": round(statistics.median(
            [a / b for a, b in zip(runs["stage"][:n], runs["naive"])]), 2) if n else None,
        "runs_fps": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        # CPU seconds per frame do not depend on the other jobs' load: predictor CPU / stage
        # CPU (with its ffmpeg processes) is the share of the stage's work the predictor is.
        "cpu_ms_per_frame": {k: round(1e3 * statistics.median(v), 3) for k, v in cpu.items()},
        "cpu_share_of_bound": round(statistics.median(cpu["bound"]) / statistics.median(cpu["stage"]), 3),
        "predicts_per_frame": round(m["predicts"] / m["frames"], 4),
        "face_frame_share": round(float(np.mean([c["face_found"].mean() for c in stage_clips])), 4),
        "targets": {"share_of_bound": TARGET_SHARE},
        "target_met": share >= TARGET_SHARE,
    }


def jitter_figures(stage_clips: list[dict], naive: list[np.ndarray]) -> dict:
    jit_stage = [still_point_jitter(c["landmarks_px"]) for c in stage_clips]
    jit_naive = [still_point_jitter(to_crop_px(p, c["crop_box"][:len(p)], 256))
                 for p, c in zip(naive, stage_clips)]
    return {"stage": round(float(np.nanmean(jit_stage)), 3),
            "naive_per_frame": round(float(np.nanmean(jit_naive)), 3) if naive else None,
            "points": [27, 28, 29, 30, 39, 42], "units": "256 crop px"}


def groundtruth_error(clips: list[str], stage_clips: list[dict], naive: list[np.ndarray]) -> dict:
    """Mean error vs the demo generator's tracks in the stage's 256 crop px: tracking vs the
    naive per-frame detection, so the cost (or gain) of tracking in accuracy is visible."""
    from kfusion.pipeline.data.groundtruth import load_groundtruth
    gt = load_groundtruth(REPO / "data/demo")
    err: dict[str, list[float]] = {"stage": [], "naive_per_frame": []}
    for k, (path, c) in enumerate(zip(clips, stage_clips)):
        q = Path(path)   # <SPK>/video/front/<emotion>/level_<n>/<id>.mp4
        g = gt.get((q.parts[-6], q.parts[-3], int(q.parts[-2].split("_")[1]), q.stem))
        if g is None:
            continue
        T = min(len(g["landmarks_video_px"]), c["n_frames"])
        box = c["crop_box"][:T]
        ref = to_crop_px(g["landmarks_video_px"][:T], box, 256)
        err["stage"].append(np.nanmean(np.linalg.norm(c["landmarks_px"][:T] - ref, axis=-1)))
        if naive:
            nv = to_crop_px(naive[k][:T], box, 256)
            err["naive_per_frame"].append(np.nanmean(np.linalg.norm(nv - ref, axis=-1)))
    return {k: round(float(np.mean(v)), 3) if v else None for k, v in err.items()} \
        | {"clips": len(err["stage"])}


# ----------------------------------------------------------------------------- (b) profile
class _Clock:
    """CPU seconds (this process) per named part of the work."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            c = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.process_time() - c)
        return timed

    def wrap_iter(self, name: str, fn):
        """A generator function whose time inside next() goes to `name`."""
        def timed(*args, **kwargs):
            it = iter(fn(*args, **kwargs))
            while True:
                c = time.process_time()
                try:
                    item = next(it)
                except StopIteration:
                    self.add(name, time.process_time() - c)
                    return
                self.add(name, time.process_time() - c)
                yield item
        return timed


class _ProfiledBackend:
    """DlibBackend's detect and predict with the predictor call and the points conversion
    timed apart."""

    def __init__(self, backend: DlibBackend, clock: _Clock):
        import dlib
        self.rect, self.backend = dlib.rectangle, backend
        self.detect = clock.wrap("detector (HOG)", backend.detect)
        self.predictor = clock.wrap("shape predictor (dlib)", backend.predictor)
        self.points = clock.wrap("points to numpy", shape_points)

    def predict(self, image, box):
        return self.points(self.predictor(image, self.rect(*(int(round(v)) for v in box))))


PATCHED = ((lm, "track_clip", "wrap"), (lm, "upper_face_patch", "wrap"), (lm, "downscale", "wrap"),
           (video, "decode_in_process", "wrap_iter"), (video, "pipe_frames", "wrap_iter"))


def profile_stage(clips: list[str], workers: int) -> dict:
    """CPU ms per frame of each part of the stage, one pass over the clips in this process;
    the parts exclusive (tracking bookkeeping = tracking minus the parts inside it)."""
    import pyarrow.parquet as pq
    _init()
    clock, cfg = _Clock(), _state["cfg"]
    backend = _ProfiledBackend(_state["backend"], clock)
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in PATCHED]
    for mod, name, how in PATCHED:
        setattr(mod, name, getattr(clock, how)(name, getattr(mod, name)))
    rows, frames = [], 0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        for path in clips:
            c = time.process_time()
            r = process_clip(path, path, backend, cfg)
            clock.add("process_clip", time.process_time() - c)
            rows.append(r.row)
            frames += r.frames
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(rows_to_table(rows[:1]), Path(tmp) / "warm.parquet")   # a process's first
        c = time.process_time()                         # write sets up pyarrow (0.2 s, once)
        pq.write_table(rows_to_table(rows), Path(tmp) / "shard.parquet")
    s = clock.seconds
    g = s.get
    parts = {
        "decode (in process, or reading the pipe)": g("decode_in_process", 0) + g("pipe_frames", 0),
        "decode: ffmpeg processes": after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime,
        "detector (HOG) + downscale": g("detector (HOG)", 0) + g("downscale", 0),
        "shape predictor (dlib)": g("shape predictor (dlib)", 0),
        "points to numpy": g("points to numpy", 0),
        "upper-face patch (NCC)": g("upper_face_patch", 0),
    }
    parts["tracking bookkeeping (boxes, IoU, loop)"] = g("track_clip", 0) - sum(
        v for k, v in parts.items() if k != "decode: ffmpeg processes")
    parts["post-process, crops, identity JPEG"] = s["process_clip"] - g("track_clip", 0)
    parts["Parquet shard (rows to table + write)"] = time.process_time() - c
    total = sum(parts.values())
    return {"frames": frames, "clips": len(clips), "cpu_ms_per_frame": round(1e3 * total / frames, 3),
            "parts": {k: {"cpu_ms_per_frame": round(1e3 * v / frames, 3), "share": round(v / total, 3)}
                      for k, v in parts.items()},
            "worker_start_s": round(_worker_start(workers), 2) if workers else None}


def _worker_start(workers: int) -> float:
    """Seconds from starting the pool to its workers' first results (the detector and the
    shape predictor loaded in each): paid once per stage run, not per clip."""
    t = time.perf_counter()
    with _stage_context().Pool(workers, _init) as pool:
        pool.map(abs, range(workers), chunksize=1)
        return time.perf_counter() - t


# ----------------------------------------------------------------------------- (c) MEAD
def measure_mead(workers: int, repeats: int, naive_repeats: int) -> dict:
    """The real 1080p MEAD clip as the stage runs it: a copy per worker, stage, bound and naive
    as in (a), and its profile (one process). Its decoding is most of its work."""
    if not MEAD.exists():
        return {"skipped": f"{MEAD} absent"}
    m = measure_throughput([str(MEAD)] * workers, workers, repeats, naive_repeats)
    t = throughput_figures(m)
    keep = ("frames", "stage_fps", "predictor_bound_fps", "share_of_bound", "naive_fps",
            "cpu_ms_per_frame", "cpu_share_of_bound", "face_frame_share", "runs_fps")
    return {"copies": workers, **{k: t[k] for k in keep}, "speedup": t["speedup_vs_naive"],
            "profile": profile_stage([str(MEAD)], workers=0), "target_speedup": 5}


# ----------------------------------------------------------------------------- main
def summary_line(res: dict) -> str:
    t, m, j, p = res["throughput"], res["mead_1080p"], res["jitter_px"], res["profile"]
    gt = res.get("groundtruth_error_px")
    naive = f" = {t['speedup_vs_naive']}x naive" if t["speedup_vs_naive"] else ""
    mead = ""
    if "stage_fps" in m:
        mead = f"; MEAD 1080p {m['stage_fps']} fps = {m['share_of_bound']:.0%} of its bound"
        mead += f", {m['speedup']}x naive" if m["speedup"] else ""
    return (f"{res['corpus']}, {res['clips']} clips, {res['workers']} workers: stage "
            f"{t['stage_fps']} fps{naive}, {t['share_of_bound']:.0%} of the predictor-only bound "
            f"{t['predictor_bound_fps']} fps (by CPU time {t['cpu_share_of_bound']:.0%}; the predictor "
            f"{p['parts']['shape predictor (dlib)']['share']:.0%} of the profiled CPU): target "
            f"{TARGET_SHARE:.0%} {'met' if t['target_met'] else 'NOT met'}{mead}; jitter "
            f"{j['stage']} px (naive {j['naive_per_frame']})"
            + (f"; GT error {gt['stage']} px (naive {gt['naive_per_frame']})" if gt else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-repeats", type=int, default=1,
                    help="repeats that also time the naive loop (slow: ~40 s on the demo)")
    ap.add_argument("--corpus", choices=["auto", "demo", "grid"], default="auto",
                    help="auto: data/demo/corpus when it exists, else ../shared/grid/s1")
    ap.add_argument("--out", default=str(REPO / "bench/results/landmarks.json"))
    args = ap.parse_args()
    machine = Machine.start(threads=args.workers)
    name, clips = corpus(args.clips, args.corpus)
    res: dict = {"corpus": name, "clips": len(clips), "workers": args.workers,
                 "repeats": args.repeats, "naive_repeats": args.naive_repeats}
    m = measure_throughput(clips, args.workers, args.repeats, args.naive_repeats)
    res["throughput"] = throughput_figures(m)
    res["jitter_px"] = jitter_figures(m["stage_clips"], m["naive"])
    if name == "demo":
        res["groundtruth_error_px"] = groundtruth_error(clips, m["stage_clips"], m["naive"])
    res["profile"] = profile_stage(clips, args.workers)
    res["mead_1080p"] = measure_mead(args.workers, args.repeats, args.naive_repeats)
    write_result(Path(args.out).stem, res, machine, summary_line(res), out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
