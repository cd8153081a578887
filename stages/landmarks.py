"""DVC stage `landmarks`: every indexed clip -> 30 fps landmarks in 256 crop px, into shards.

Reads data/index/manifest.parquet; writes data/landmarks/shard-*.parquet (one row per clip,
schema in kfusion.pipeline.data.landmarks.shard_schema), rejects.parquet, config.yaml,
metrics/landmarks.json and plots/landmarks/contact_sheet.png.

Resumable: data/landmarks is `persist: true` in dvc.yaml, and a shard written for the same
clip ids and the same settings (its metadata records both, plus its rejects and counts) is
kept, so an interrupted run redoes only unfinished shards.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from kfusion.config import Config, LandmarksConfig, dump, to_dict
from kfusion.shapes import EMOTIONS
from kfusion.pipeline.media.draw import grid
from kfusion.pipeline.io import StageError, StageRun, atomic_path, progress
from kfusion.pipeline.data.landmarks import (CNN_DETECTOR_FILE, PREDICTOR_FILE, LandmarkError, NoFace,
                                dlib_model_path, fan_weights_path, make_backend, process_clip,
                                read_clip, rows_to_table, still_point_jitter)
from kfusion.pipeline.media.container import MediaError
from kfusion.pipeline.data.shards import clean_stale, iter_rows, plan_shards, shard_done, shard_meta, shard_path
from kfusion.stages._common import run_stage

STAGE = "landmarks"
SCHEMA_VERSION = 1

# ----------------------------------------------------------------------------- workers
_worker: dict = {}


def _init_worker(cfg: LandmarksConfig, ffmpeg: str) -> None:
    import cv2
    cv2.setNumThreads(1)   # parallelism is across clips; one thread per worker
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    _worker.update(cfg=cfg, ffmpeg=ffmpeg, backend=make_backend(cfg))


def _work(task: tuple[str, str]) -> tuple[str, dict | None, dict]:
    """(clip_id, video_path) -> (clip_id, row or None, stats or reject)."""
    clip_id, path = task
    try:
        r = process_clip(clip_id, path, _worker["backend"], _worker["cfg"], _worker["ffmpeg"])
    except MediaError as e:
        return clip_id, None, {"reason": e.reason, "message": e.message}
    except NoFace as e:
        return clip_id, None, {"reason": "no_face", "message": str(e)}
    except Exception as e:   # a data problem we did not foresee: record it, never crash the run
        return clip_id, None, {"reason": "landmarks_failed", "message": f"{path}: {type(e).__name__}: {e}"}
    return clip_id, r.row, {"frames": r.frames, "face_frames": r.face_frames,
                            "detections": r.detections, "seconds": r.seconds}


def settings_hash(cfg: Config) -> str:
    """What a finished shard must have been made with to be reused."""
    s = json.dumps({"landmarks": to_dict(cfg.landmarks), "schema": SCHEMA_VERSION,
                    "ffmpeg": cfg.preprocess.ffmpeg}, sort_keys=True)
    return hashlib.sha256(s.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- stage
def _run(cfg: Config, args) -> dict:
    """Detect, track and crop faces in every indexed clip; write landmark shards."""
    lcfg = cfg.landmarks
    manifest_path = Path(cfg.index.out) / "manifest.parquet"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path}: no manifest; run the index stage first "
                                f"(dvc repro index)")
    manifest = pq.read_table(manifest_path).to_pylist()
    manifest.sort(key=lambda r: r["clip_id"])
    by_id = {r["clip_id"]: r for r in manifest}
    out = Path(lcfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump(cfg, out / "config.yaml")
    run = StageRun(STAGE)
    from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
    ffmpeg = ffmpeg_binary(cfg.preprocess.ffmpeg)
    _check_backend(lcfg)

    plan = plan_shards(list(by_id), lcfg.clips_per_shard)
    paths = [shard_path(out, k) for k in range(len(plan))]
    clean_stale(out, paths)
    expect = {"settings": settings_hash(cfg)}
    todo = [k for k, ids in enumerate(plan) if not shard_done(paths[k], ids, expect)]
    stats: list[dict] = []
    for k in set(range(len(plan))) - set(todo):   # finished earlier: take their counts and rejects
        m = shard_meta(paths[k])
        stats += m["stats"]
        for rj in m["rejects"]:
            run.reject(rj["clip_id"], rj["reason"], rj["message"])
    reused = len(plan) - len(todo)

    t0 = time.perf_counter()
    work_frames = 0
    if todo:
        tasks = [(cid, by_id[cid]["video_path"]) for k in todo for cid in plan[k]]
        # forkserver, not fork: the caller may hold threads (torch, OpenMP) whose locks a
        # forked child would inherit locked.
        with mp.get_context("forkserver").Pool(cfg.preprocess.workers, _init_worker, (lcfg, ffmpeg)) as pool:
            results = pool.imap(_work, tasks, chunksize=1)
            bar = progress(total=len(tasks), desc=STAGE, unit="clip")
            for k in todo:   # results arrive in task order, so shard by shard
                rows, rejects, shard_stats = [], [], []
                for _ in plan[k]:
                    cid, row, info = next(results)
                    bar.update(1)
                    if row is None:
                        rejects.append({"clip_id": cid, **info})
                        continue
                    rows.append(row)
                    shard_stats.append({"clip_id": cid, **info})
                    work_frames += info["frames"]
                _write(paths[k], rows, plan[k], expect, rejects, shard_stats)
                stats += shard_stats
                for rj in rejects:
                    run.reject(rj["clip_id"], rj["reason"], rj["message"])
            bar.close()
    wall = time.perf_counter() - t0

    run.processed = len(stats)
    frames = sum(s["frames"] for s in stats)
    face = sum(s["face_frames"] for s in stats)
    run.extra.update({
        "clips": len(manifest), "shards": len(plan), "shards_reused": reused,
        "frames": frames, "face_frame_share": round(face / frames, 4) if frames else 0.0,
        "detections_per_frame": round(sum(s["detections"] for s in stats) / frames, 4) if frames else 0.0,
        "frames_per_s": round(work_frames / wall, 1) if work_frames else None,
        "workers": cfg.preprocess.workers, "backend": lcfg.backend, "detector": lcfg.detector,
        "jitter_px": _jitter(out),
        "groundtruth": _groundtruth_error(cfg, out, by_id),
    })
    _contact_sheet(out, Path("plots/landmarks/contact_sheet.png"))
    return run.finish(rejects_path=out / "rejects.parquet", metrics_path=Path("metrics/landmarks.json"),
                      max_reject_fraction=lcfg.max_reject_fraction)


def _check_backend(lcfg: LandmarksConfig) -> None:
    """Fail before the pool starts when model files are missing (a worker whose initializer
    raises would be restarted forever)."""
    try:
        dlib_model_path(PREDICTOR_FILE)
        if lcfg.detector == "cnn":
            dlib_model_path(CNN_DETECTOR_FILE)
        if lcfg.backend == "fan":
            fan_weights_path(lcfg.fan_weights_dir)
    except LandmarkError as e:
        raise StageError(str(e)) from None


def _write(path: Path, rows: list[dict], ids: list[str], expect: dict, rejects: list[dict],
           stats: list[dict]) -> None:
    """One shard, atomically; its metadata lets a re-run reuse it (ids, settings, rejects, counts)."""
    table = rows_to_table(rows)
    md = dict(table.schema.metadata or {})
    md[b"kfusion"] = json.dumps({**expect, "planned_ids": ids, "rejects": rejects,
                                 "stats": stats, "schema_version": SCHEMA_VERSION}).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(md), tmp)


def _jitter(out: Path) -> float | None:
    """Mean |second difference| of still-head points in crop px, over all clips."""
    vals = [still_point_jitter(read_clip(r)["landmarks_px"])
            for r in iter_rows(out, ["clip_id", "n_frames", "landmarks_px", "confidence",
                                     "face_found", "crop_box"])]
    vals = [v for v in vals if np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def _groundtruth_error(cfg: Config, out: Path, by_id: dict) -> dict | None:
    """Mean landmark error vs the demo generator's tracks, in our crop's px (face frames only)."""
    keyed = {r["gt_key"]: cid for cid, r in by_id.items() if r.get("gt_key")}
    if not keyed:
        return None
    try:
        from kfusion.pipeline.demo import load_groundtruth
        gt = load_groundtruth(cfg.demo.out)
    except Exception as e:   # no ground truth written: say so in the metrics, do not fail
        return {"error": f"{type(e).__name__}: {e}"}
    from kfusion.pipeline.data.landmarks import to_crop_px
    per_emotion: dict[str, list[float]] = {}
    errs, face_frames, total = [], 0, 0
    cols = ["clip_id", "n_frames", "landmarks_px", "confidence", "face_found", "crop_box"]
    want = {cid: k for k, cid in keyed.items()}
    for r in iter_rows(out, cols):
        if r["clip_id"] not in want:
            continue
        c = read_clip(r)
        spk, emo, lvl, clip = want[r["clip_id"]].split("|")
        g = gt.get((spk, emo, int(lvl), clip))
        if g is None:
            continue
        g_video = np.asarray(g["landmarks_video_px"] if isinstance(g, dict) else g, np.float32)
        T = min(len(g_video), c["n_frames"])
        ours, boxes, found = c["landmarks_px"][:T], c["crop_box"][:T], c["face_found"][:T]
        g_crop = to_crop_px(g_video[:T], boxes, cfg.landmarks.crop_px)   # (T, 68, 2)
        d = np.linalg.norm(ours - g_crop, axis=-1).mean(-1)               # (T,)
        e = float(d[found].mean()) if found.any() else float("nan")
        errs.append(e)
        per_emotion.setdefault(emo, []).append(e)
        face_frames, total = face_frames + int(found.sum()), total + T
    if not errs:
        return None
    return {"clips": len(errs), "mean_px": round(float(np.nanmean(errs)), 3),
            "face_frame_share": round(face_frames / total, 4) if total else 0.0,
            "per_emotion_px": {e: round(float(np.nanmean(per_emotion[e])), 3)
                               for e in EMOTIONS if e in per_emotion}}


def _contact_sheet(out: Path, png: Path, n: int = 16, cols: int = 4) -> None:
    """Identity crops of up to n clips (evenly spread) with their detected landmarks drawn."""
    import cv2
    rows = list(iter_rows(out, ["clip_id", "n_frames", "landmarks_px", "identity_frame",
                                "identity_jpeg"]))
    pick = [rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)] if rows else []
    tiles = []
    for r in pick:
        img = cv2.imdecode(np.frombuffer(r["identity_jpeg"], np.uint8), cv2.IMREAD_COLOR)
        pts = np.asarray(r["landmarks_px"], np.float32).reshape(r["n_frames"], 68, 2)[r["identity_frame"]]
        for i, (x, y) in enumerate(pts):
            if np.isfinite(x):
                cv2.circle(img, (int(round(x)), int(round(y))), 2,
                           (0, 0, 255) if i >= 48 else (0, 255, 0), -1, cv2.LINE_AA)
        cv2.putText(img, r["clip_id"][-28:], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    if not tiles:   # the declared plot exists even when every clip was rejected
        tiles = [np.zeros((256, 256, 3), np.uint8)]
    sheet = grid(tiles, cols=min(cols, len(tiles)), pad_px=0, fill=0)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        ok, buf = cv2.imencode(".png", sheet)
        tmp.write_bytes(buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
