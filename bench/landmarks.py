"""Benchmark of the landmarks stage against the naive way, measured in the same run.

(a) Throughput, frames/s with `--workers` processes over corpus clips (data/demo/corpus when
    it exists, else the GRID clips in ../shared/grid/s1):
      stage  - pipeline.landmarks.process_clip, as the stage's workers run it (decode at
               30 fps, detect sparsely + track, crop, identity JPEG);
      naive  - the same decode, then dlib's HOG detector + shape predictor on every frame;
      bound  - the dlib shape predictor alone on the same 256 crops (frames decoded and
               cropped beforehand, untimed): no pipeline can beat it with this predictor.
(b) The real 1080p MEAD clip, one process: the stage's per-clip path vs a naive per-frame
    full-resolution detect + predict loop.
Also: landmark jitter (mean |second difference| of still-head points 27-30, 39, 42, in 256
crop px) of the stage's tracks vs the naive per-frame tracks, on the same clips.

Writes bench/results/landmarks.json and prints one summary line. Medians over --repeats.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfusion.config import LandmarksConfig  # noqa: E402
from pipeline.landmarks import (DlibBackend, landmark_box, process_clip, read_clip,  # noqa: E402
                                still_point_jitter, to_crop_px)
from pipeline.video import crop_square, iter_frames  # noqa: E402

MEAD = REPO.parent / "shared/realclips/mead/M030/video/front/sad/level_3/001.mp4"
_state: dict = {}


def _init() -> None:
    import cv2
    cv2.setNumThreads(1)
    _state["backend"] = DlibBackend("hog")
    _state["cfg"] = LandmarksConfig()


def _stage(path: str) -> tuple[int, dict]:
    r = process_clip(path, path, _state["backend"], _state["cfg"])
    return r.frames, read_clip(r.row)


def _naive(path: str) -> tuple[int, np.ndarray]:
    """Per frame, full resolution: detect, take the largest face, predict."""
    b = _state["backend"]
    pts = []
    for gray in iter_frames(path, pix_fmt="gray"):
        found = b.detect(gray)
        if found:
            box = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]
            pts.append(b.predict(gray, box))
        else:
            pts.append(np.full((68, 2), np.nan, np.float32))
    return len(pts), np.stack(pts)


def _predictor_only(crops_boxes: tuple[np.ndarray, tuple]) -> int:
    crops, box = crops_boxes
    b = _state["backend"]
    for c in crops:
        b.predict(c, box)
    return len(crops)


def _prepare_crops(path: str, clip: dict) -> tuple[np.ndarray, tuple]:
    """The clip's 256 gray crops and a predictor box around its first crop's face (untimed)."""
    crops = np.stack([crop_square(g, clip["crop_box"][min(t, clip["n_frames"] - 1)], 256)
                      for t, g in enumerate(iter_frames(path, pix_fmt="gray"))])
    cx, cy, s = landmark_box(clip["landmarks_px"][clip["identity_frame"]])
    return crops, (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)


def _timed_pool(pool, fn, items) -> tuple[float, list]:
    t = time.perf_counter()
    out = pool.map(fn, items, chunksize=1)
    return time.perf_counter() - t, out


def corpus(limit: int) -> tuple[str, list[str]]:
    demo = sorted((REPO / "data/demo/corpus").glob("*/video/front/*/*/*.mp4"))
    if demo:
        return "demo", [str(p) for p in demo[:limit]]
    grid = sorted((REPO.parent / "shared/grid/s1").glob("*.mpg"))
    if not grid:
        sys.exit(f"no clips: neither {REPO / 'data/demo/corpus'} nor {REPO.parent / 'shared/grid/s1'}")
    return "grid", [str(p) for p in grid[:limit]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench/results/landmarks.json"))
    args = ap.parse_args()
    name, clips = corpus(args.clips)
    ctx = mp.get_context("forkserver")
    res: dict = {"corpus": name, "clips": len(clips), "workers": args.workers,
                 "repeats": args.repeats}

    with ctx.Pool(args.workers, _init) as pool:
        runs = {"stage": [], "naive": [], "bound": []}
        crops = None
        for _ in range(args.repeats):
            dt, out = _timed_pool(pool, _stage, clips)
            frames = sum(n for n, _ in out)
            runs["stage"].append(frames / dt)
            stage_clips = [c for _, c in out]
            dt, naive = _timed_pool(pool, _naive, clips)
            runs["naive"].append(sum(n for n, _ in naive) / dt)
            if crops is None:
                crops = [_prepare_crops(p, c) for p, c in zip(clips, stage_clips)]
            dt, n = _timed_pool(pool, _predictor_only, crops)
            runs["bound"].append(sum(n) / dt)
    med = {k: statistics.median(v) for k, v in runs.items()}
    jit_stage = [still_point_jitter(c["landmarks_px"]) for c in stage_clips]
    jit_naive = [still_point_jitter(to_crop_px(p, c["crop_box"][:len(p)], 256))
                 for (_, p), c in zip(naive, stage_clips)]
    res["throughput"] = {
        "frames": frames, "stage_fps": round(med["stage"], 1), "naive_fps": round(med["naive"], 1),
        "predictor_bound_fps": round(med["bound"], 1),
        "share_of_bound": round(med["stage"] / med["bound"], 3),
        "speedup_vs_naive": round(med["stage"] / med["naive"], 2),
        "runs_fps": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "face_frame_share": round(float(np.mean([c["face_found"].mean() for c in stage_clips])), 4),
        "targets": {"stage_fps": 150, "share_of_bound": 0.4},
    }
    res["jitter_px"] = {"stage": round(float(np.nanmean(jit_stage)), 3),
                        "naive_per_frame": round(float(np.nanmean(jit_naive)), 3),
                        "points": [27, 28, 29, 30, 39, 42], "units": "256 crop px"}

    if MEAD.exists():
        _init()
        st, nv = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            n, clip = _stage(str(MEAD))
            st.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            n2, _ = _naive(str(MEAD))
            nv.append(n2 / (time.perf_counter() - t))
        res["mead_1080p"] = {"frames": n, "stage_fps": round(statistics.median(st), 1),
                             "naive_fps": round(statistics.median(nv), 1),
                             "speedup": round(statistics.median(st) / statistics.median(nv), 2),
                             "face_frame_share": round(float(clip["face_found"].mean()), 4),
                             "runs_fps": {"stage": [round(x, 1) for x in st],
                                          "naive": [round(x, 1) for x in nv]},
                             "target_speedup": 5}
    else:
        res["mead_1080p"] = {"skipped": f"{MEAD} absent"}

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    t, m = res["throughput"], res["mead_1080p"]
    print(f"landmarks bench ({name}, {len(clips)} clips, {args.workers} workers): stage "
          f"{t['stage_fps']} fps = {t['speedup_vs_naive']}x naive, {t['share_of_bound']:.0%} of the "
          f"predictor-only bound {t['predictor_bound_fps']} fps; MEAD 1080p {m.get('stage_fps')} fps "
          f"= {m.get('speedup')}x naive; jitter {res['jitter_px']['stage']} px (naive "
          f"{res['jitter_px']['naive_per_frame']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
