"""The landmarks stage's work: every indexed clip -> a row of a landmark shard, in workers.

Each worker (a local process or a Ray actor, kfusion.pipeline.data.executor) loads the
detector once (`_init_worker`) and then makes one whole shard per job (`landmark_shard`):
`process_clip` (landmarks.py) on each of its clips, the shard written atomically by the
worker, only counts and rejects sent back. A shard's metadata records its clip ids, the
settings that made it (a hash), its rejects and per-clip counts (no timings: the same
inputs give the same bytes), so a re-run keeps every finished shard made with the same
settings (data/landmarks is `persist: true`): an interrupted run redoes only unfinished shards.
Also here: the figures of reports/landmarks.json and the contact sheet.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from kfusion.config import Config, LandmarksConfig, to_dict
from kfusion.shapes import EMOTIONS, MOUTH_INDICES, N_POINTS
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.data.groundtruth import groundtruth_by_clip
from kfusion.pipeline.data.landmarks import (CNN_DETECTOR_FILE, PREDICTOR_FILE, LandmarkError,
                                             MultipleFaces, NoFace,
                                             dlib_model_path, fan_weights_path, make_backend,
                                             process_clip, read_clip, rows_to_table,
                                             still_point_jitter, to_crop_px)
from kfusion.pipeline.data.shards import (clean_stale, iter_rows, plan_shards, shard_done, shard_meta,
                                          shard_path)
from kfusion.pipeline.io import StageError, StageRun, atomic_path
from kfusion.pipeline.media.container import MediaError
from kfusion.pipeline.media.draw import grid

SCHEMA_VERSION = 1
# The workers' fork server reads the shape predictor once; the workers share it (dlib_preload).
PRELOAD = ("kfusion.pipeline.data.dlib_preload",)

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
    except (NoFace, MultipleFaces) as e:
        return clip_id, None, {"reason": e.reason, "message": str(e)}
    except Exception as e:   # a data problem we did not foresee: record it, never crash the run
        return clip_id, None, {"reason": "landmarks_failed", "message": f"{path}: {type(e).__name__}: {e}"}
    return clip_id, r.row, {"frames": r.frames, "face_frames": r.face_frames,
                            "detections": r.detections,
                            "multi_face_detections": r.multi_face_detections,
                            "kept_frames": list(r.kept)}   # [a, b): trimmed when not [0, frames]


def landmark_shard(job: dict[str, Any]) -> dict[str, Any]:
    """One shard job {path, ids, videos, expect}: every clip through `_work`, the shard
    written here; its rejects and its clips' counts go back."""
    rows, rejects, stats = [], [], []
    for task in zip(job["ids"], job["videos"]):
        cid, row, info = _work(task)
        if row is None:
            rejects.append({"clip_id": cid, **info})
        else:
            rows.append(row)
            stats.append({"clip_id": cid, **info})
    write_landmark_shard(Path(job["path"]), rows, job["ids"], job["expect"], rejects, stats)
    return {"rejects": rejects, "stats": stats}


# ----------------------------------------------------------------------------- shards
def settings_hash(cfg: Config) -> str:
    """What a finished shard must have been made with to be reused."""
    s = json.dumps({"landmarks": to_dict(cfg.landmarks), "schema": SCHEMA_VERSION,
                    "ffmpeg": cfg.preprocess.ffmpeg}, sort_keys=True)
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def check_backend(lcfg: LandmarksConfig) -> None:
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


def write_landmark_shard(path: Path, rows: list[dict], ids: list[str], expect: dict,
                         rejects: list[dict], stats: list[dict]) -> None:
    """One shard, atomically; its metadata lets a re-run reuse it (ids, settings, rejects, counts)."""
    table = rows_to_table(rows)
    md = dict(table.schema.metadata or {})
    md[b"kfusion"] = json.dumps({**expect, "planned_ids": ids, "rejects": rejects,
                                 "stats": stats, "schema_version": SCHEMA_VERSION}).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(md), tmp)


def _finished(paths: list[Path], done: set[int], run: StageRun) -> list[dict]:
    """The per-clip counts of the shards made earlier; their rejects go on `run`."""
    stats: list[dict] = []
    for k in done:
        m = shard_meta(paths[k])
        stats += m["stats"]
        for rj in m["rejects"]:
            run.reject(rj["clip_id"], rj["reason"], rj["message"])
    return stats


def landmark_shards(cfg: Config, manifest: list[dict], out: Path, ffmpeg: str,
                    run: StageRun) -> dict[str, Any]:
    """Landmark shards under `out` for the manifest's clips (sorted by id): finished shards
    are kept, the rest made in workers, a shard per job. Rejects and processed clips go on
    `run`; returns the counting figures of reports/landmarks.json."""
    by_id = {r["clip_id"]: r for r in manifest}
    plan = plan_shards(list(by_id), cfg.landmarks.clips_per_shard)
    paths = [shard_path(out, k) for k in range(len(plan))]
    clean_stale(out, paths)
    expect = {"settings": settings_hash(cfg)}
    todo = [k for k, ids in enumerate(plan) if not shard_done(paths[k], ids, expect)]
    stats = _finished(paths, set(range(len(plan))) - set(todo), run)
    t0 = time.perf_counter()
    jobs = [{"path": str(paths[k]), "ids": plan[k], "expect": expect,
             "videos": [by_id[cid]["video_path"] for cid in plan[k]]} for k in todo]
    work_frames = 0
    for res in map_shards(landmark_shard, jobs, workers=cfg.preprocess.workers,
                          initializer=_init_worker, initargs=(cfg.landmarks, ffmpeg),
                          preload=PRELOAD if cfg.landmarks.backend == "dlib" else (),
                          desc="landmarks", scale=cfg.scale, shared_dir=out):
        stats += res["stats"]
        work_frames += sum(s["frames"] for s in res["stats"])
        for rj in res["rejects"]:
            run.reject(rj["clip_id"], rj["reason"], rj["message"])
    wall = time.perf_counter() - t0
    run.processed = len(stats)
    frames = sum(s["frames"] for s in stats)
    face = sum(s["face_frames"] for s in stats)
    return {"clips": len(manifest), "shards": len(plan), "shards_reused": len(plan) - len(todo),
            "frames": frames, "face_frame_share": round(face / frames, 4) if frames else 0.0,
            **trim_and_face_counts(stats),
            "detections_per_frame": round(sum(s["detections"] for s in stats) / frames, 4) if frames else 0.0,
            "frames_per_s": round(work_frames / wall, 1) if work_frames else None,
            "workers": cfg.preprocess.workers, "backend": cfg.landmarks.backend,
            "detector": cfg.landmarks.detector}


def trim_and_face_counts(stats: list[dict]) -> dict[str, Any]:
    """Clips trimmed to their good span (and the frames cut), clips where the detector saw a
    second face, from the per-clip stats of the shards (older shards lack the keys: none)."""
    trimmed = [s for s in stats if s.get("kept_frames", [0, s["frames"]]) != [0, s["frames"]]]
    return {"clips_trimmed": len(trimmed),
            "frames_trimmed": sum(s["frames"] - (s["kept_frames"][1] - s["kept_frames"][0])
                                  for s in trimmed),
            "clips_with_multiple_faces": sum(1 for s in stats if s.get("multi_face_detections"))}


# ----------------------------------------------------------------------------- figures
def jitter_px(out: Path) -> float | None:
    """Mean |second difference| of still-head points in crop px, over all clips."""
    vals = [still_point_jitter(read_clip(r)["landmarks_px"])
            for r in iter_rows(out, ["clip_id", "n_frames", "landmarks_px", "confidence",
                                     "face_found", "crop_box"])]
    vals = [v for v in vals if np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def groundtruth_error(manifest: list[dict], demo_dir: str | Path, out: Path,
                      crop_px: int) -> dict | None:
    """Mean landmark error vs the demo generator's tracks, in our crop's px (face frames only)."""
    by_id = {r["clip_id"]: r for r in manifest}
    try:
        gt = groundtruth_by_clip(by_id, demo_dir)
    except Exception as e:   # no ground truth written: say so in the metrics, do not fail
        return {"error": f"{type(e).__name__}: {e}"}
    per_emotion: dict[str, list[float]] = {}
    errs, face_frames, total = [], 0, 0
    for r in iter_rows(out, ["clip_id", "n_frames", "landmarks_px", "confidence", "face_found", "crop_box"]):
        if r["clip_id"] not in gt:
            continue
        c, g_video = read_clip(r), gt[r["clip_id"]]
        emo = by_id[r["clip_id"]]["gt_key"].split("|")[1]
        T = min(len(g_video), c["n_frames"])
        ours, boxes, found = c["landmarks_px"][:T], c["crop_box"][:T], c["face_found"][:T]
        g_crop = to_crop_px(g_video[:T], boxes, crop_px)                  # (T, 68, 2)
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


def contact_sheet(out: Path, png: Path, n: int = 16, cols: int = 4) -> None:
    """Identity crops of up to n clips (evenly spread) with their detected landmarks drawn."""
    import cv2
    rows = list(iter_rows(out, ["clip_id", "n_frames", "landmarks_px", "identity_frame",
                                "identity_jpeg"]))
    pick = [rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)] if rows else []
    tiles = []
    for r in pick:
        img = cv2.imdecode(np.frombuffer(r["identity_jpeg"], np.uint8), cv2.IMREAD_COLOR)
        pts = np.asarray(r["landmarks_px"], np.float32).reshape(r["n_frames"], N_POINTS, 2)
        pts = pts[r["identity_frame"]]                                     # (68, 2)
        for i, (x, y) in enumerate(pts):
            if np.isfinite(x):
                cv2.circle(img, (int(round(x)), int(round(y))), 2,
                           (0, 0, 255) if i in MOUTH_INDICES else (0, 255, 0), -1, cv2.LINE_AA)
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
