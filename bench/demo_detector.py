"""How well does dlib's 68-point predictor see the demo faces? Detection rate and mean point
error against the generator's ground truth, in the ground truth's 256 crop, per emotion.

    python bench/demo_detector.py [--demo data/demo] [--stride 1] [--workers 2]

For scale, the same error for a "still" baseline (each clip's first ground-truth frame held
for the whole clip) says how much the faces move. Writes bench/results/demo_detector.json
with the machine block (bench/record.py) and prints one summary line.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from kfusion.pipeline.demo import load_groundtruth  # noqa: E402
from kfusion.pipeline.demo.faces import predictor_path  # noqa: E402
from kfusion.pipeline.demo.groundtruth import decode_frames, to_crop  # noqa: E402
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary  # noqa: E402
from record import Machine, write_result  # noqa: E402

_dlib = None


def _models():
    global _dlib
    if _dlib is None:
        import dlib
        _dlib = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path())), dlib)
    return _dlib


def measure_clip(job: tuple) -> dict:
    """dlib on every `stride`-th frame of one clip: found flags and per-frame crop-px errors."""
    video, gt_crop, box, stride, ffmpeg, frame_px = job
    detector, predictor, dlib = _models()
    frames = decode_frames(video, ffmpeg, frame_px)
    found, err, still = [], [], []
    for k in range(0, len(frames), stride):
        rects = detector(frames[k], 0)
        if not rects:
            rects = detector(frames[k], 1)    # one upsampling pass before giving up
        found.append(bool(rects))
        still.append(float(np.linalg.norm(gt_crop[0] - gt_crop[k], axis=-1).mean()))
        if rects:
            rect = max(rects, key=lambda r: r.width() * r.height())
            pts = np.array([(p.x, p.y) for p in predictor(frames[k], rect).parts()], np.float32)
            err.append(float(np.linalg.norm(to_crop(pts, box) - gt_crop[k], axis=-1).mean()))
    return {"found": found, "err": err, "still": still, "n_frames": len(frames)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=str(REPO / "data/demo"))
    ap.add_argument("--stride", type=int, default=1, help="measure every n-th frame")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench/results/demo_detector.json"))
    args = ap.parse_args(argv)
    machine = Machine.start(threads=args.workers)   # worker processes, one dlib thread each
    t0 = time.perf_counter()
    gt = load_groundtruth(args.demo)
    ffmpeg = ffmpeg_binary("")
    keys = sorted(gt)
    jobs = [(str(Path(args.demo) / "corpus" / k[0] / "video/front" / k[1] / f"level_{k[2]}" / f"{k[3]}.mp4"),
             gt[k]["landmarks_crop_px"], gt[k]["crop_box"], args.stride, ffmpeg, gt[k]["frame_w"])
            for k in keys]
    with mp.get_context("forkserver").Pool(args.workers) as pool:
        results = pool.map(measure_clip, jobs, chunksize=1)
    per_emotion: dict[str, dict] = {}
    per_speaker: dict[str, dict] = {}
    for (spk, emo, lvl, clip), r in zip(keys, results):
        for table, key in ((per_emotion, emo), (per_speaker, spk)):
            e = table.setdefault(key, {"frames": 0, "found": 0, "err": [], "still": []})
            e["frames"] += len(r["found"])
            e["found"] += sum(r["found"])
            e["err"] += r["err"]
            e["still"] += r["still"]

    def figures(e):
        return {"frames": e["frames"], "detection_rate": round(e["found"] / max(e["frames"], 1), 5),
                "mean_error_px": round(float(np.mean(e["err"])), 3) if e["err"] else None,
                "median_error_px": round(float(np.median(e["err"])), 3) if e["err"] else None,
                "p95_error_px": round(float(np.percentile(e["err"], 95)), 3) if e["err"] else None,
                "still_baseline_px": round(float(np.mean(e["still"])), 3) if e["still"] else None}

    allf = {"frames": 0, "found": 0, "err": [], "still": []}
    for e in per_emotion.values():
        for k in allf:
            allf[k] += e[k]
    out = {"demo": args.demo, "clips": len(keys), "stride": args.stride,
           "space": "ground truth's 256 crop (crop_box)", "detector": "dlib HOG (upsample 0, then 1)",
           "predictor": "face_recognition_models shape_predictor_68_face_landmarks",
           "overall": figures(allf), "per_emotion": {k: figures(v) for k, v in sorted(per_emotion.items())},
           "per_speaker": {k: figures(v) for k, v in sorted(per_speaker.items())},
           "seconds": round(time.perf_counter() - t0, 1)}
    o = out["overall"]
    worst = max(out["per_emotion"].items(), key=lambda kv: kv[1]["mean_error_px"] or 0)
    write_result("demo_detector", out, machine,
                 f"{o['frames']} frames of {len(keys)} clips: found {o['detection_rate']:.2%}, "
                 f"mean error {o['mean_error_px']} px (median {o['median_error_px']}, worst emotion "
                 f"{worst[0]} {worst[1]['mean_error_px']} px; still baseline "
                 f"{o['still_baseline_px']} px), {out['seconds']} s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
