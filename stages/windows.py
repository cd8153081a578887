"""windows stage: train/val/test window tables + memory-mapped arrays for the DataLoader.

Two passes over the landmark shards, both in worker processes, one shard per task:
1. plan: which windows each clip gives (landmarks finite, faces found, audio spans inside
   the features), and its identity landmarks; the main process then assigns splits and
   sizes every array.
2. fill: each worker opens the (temp-named) .npy files of its windows' splits with
   mmap_mode="r+" and writes its rows at the offsets pass 1 fixed. Files are renamed into
   place only when every worker is done, so a split is complete or absent.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.config import Config, dump
from kfusion.shapes import EMOTIONS
from kfusion.pipeline.data.features import W2V_DIM, read_meta, read_shard
from kfusion.pipeline.io import StageRun, atomic_path, fresh_dir, progress, write_json, write_parquet
from kfusion.pipeline.data.windows import (N_POINTS, SPLITS, WINDOWS_SCHEMA, audio_starts, gt_in_crop,
                              landmark_rows, reference_frame, spans, valid_starts, window_split)

ARRAYS = ("landmarks", "identity", "mel", "w2v", "emotion", "gt_landmarks")


# ----------------------------------------------------------------------------- pass 1
def _plan_shard(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Per clip of one landmark shard: usable window starts + identity landmarks."""
    wcfg, n_feat, manifest_ids = job["wcfg"], job["n_feat"], job["manifest_ids"]
    cols = ["clip_id", "n_frames", "fps", "landmarks_px", "face_found", "identity_frame"]
    table = pq.read_table(job["path"], columns=cols)
    out = []
    for r in landmark_rows(table):
        cid = r["clip_id"]
        if cid not in manifest_ids or cid not in n_feat:
            continue
        n_mel, n_w2v = n_feat[cid]
        starts = valid_starts(r["landmarks_px"], r["face_found"], n_mel, n_w2v,
                              frames=wcfg.frames, stride=wcfg.stride_frames, fps=r["fps"],
                              max_missing=wcfg.max_missing_frames)
        idf = r.get("identity_frame")
        ref = reference_frame(r["landmarks_px"], idf if idf is not None and idf >= 0 else wcfg.identity_frame)
        out.append({"clip_id": cid, "starts": starts, "fps": r["fps"], "n_frames": r["n_frames"],
                    "identity": r["landmarks_px"][ref] if ref >= 0 else None,
                    "landmark_shard": job["path"]})
    return out


# ----------------------------------------------------------------------------- pass 2
def _fill_shard(job: dict[str, Any]) -> int:
    """Write the windows of one landmark shard into the split arrays at their offsets."""
    items = job["items"]  # [{clip_id, split, offset, starts, identity (68,2) or None}]
    want = {it["clip_id"] for it in items}
    lm = {r["clip_id"]: r for r in landmark_rows(pq.read_table(job["path"], columns=[
        "clip_id", "n_frames", "fps", "landmarks_px", "face_found", "crop_box"])) if r["clip_id"] in want}
    feats: dict[str, dict] = {}
    for p in job["feature_shards"]:
        for f in read_shard(Path(p), want):
            feats[f["clip_id"]] = f
    gt = job["gt"]   # {clip_id: (T, 68, 2) video px}
    arrays = {s: {k: np.load(job["tmp"][s][k], mmap_mode="r+") for k in ARRAYS}
              for s in {s for it in items for s in it["splits"]}}   # window mode: several
    frames, crop_px = job["frames"], job["crop_px"]
    n = 0
    for it in items:
        r, f = lm[it["clip_id"]], feats[it["clip_id"]]
        mel_len, w2v_len = spans(frames, r["fps"])
        gt_crop = gt_in_crop(gt[it["clip_id"]], r["crop_box"], crop_px) if it["clip_id"] in gt else None
        for s, split, i in zip(it["starts"], it["splits"], it["offsets"]):
            a = arrays[split]
            m0, w0 = audio_starts(s, r["fps"])
            a["landmarks"][i] = r["landmarks_px"][s:s + frames]                 # (30, 68, 2)
            a["identity"][i] = r["landmarks_px"][s] if job["identity"] == "window_first" \
                else it["identity"]                                             # (68, 2)
            a["mel"][i] = f["mel"][m0:m0 + mel_len]                             # (100, n_mels)
            a["w2v"][i] = f["w2v"][w0:w0 + w2v_len]                             # (49, 768)
            a["emotion"][i] = it["emotion_id"]
            a["gt_landmarks"][i] = gt_crop[s:s + frames] if gt_crop is not None else np.nan
            n += 1
    for split in arrays.values():
        for arr in split.values():
            arr.flush()
    return n


# ----------------------------------------------------------------------------- stage
def _feature_index(features_dir: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str], dict]:
    """clip id -> (n_mel, n_w2v), clip id -> shard path, and the encoder record."""
    n_feat, where = {}, {}
    for p in sorted(features_dir.glob("shard-*")):
        if p.suffix == ".npz":
            with np.load(p) as z:
                ids, nm, nw = z["clip_id"].tolist(), z["n_mel"].tolist(), z["n_w2v"].tolist()
        elif p.suffix == ".parquet":
            t = pq.read_table(p, columns=["clip_id", "n_mel", "n_w2v"])
            ids, nm, nw = (t.column(c).to_pylist() for c in ("clip_id", "n_mel", "n_w2v"))
        else:
            continue
        for c, a, b in zip(ids, nm, nw):
            n_feat[c], where[c] = (a, b), str(p)
    enc_path = features_dir / "encoder.json"
    encoder = json.loads(enc_path.read_text()) if enc_path.exists() else {}
    return n_feat, where, encoder


def _n_mels(features_dir: Path, where: dict[str, str]) -> int:
    for p in sorted(set(where.values())):
        return int(read_meta(p).get("n_mels", 80))
    return 80


def _speaker_neutral(plans: list[dict], manifest: dict[str, dict]) -> tuple[dict, int]:
    """(corpus, speaker) -> identity of its first neutral clip (lowest level, then id)."""
    best: dict[tuple[str, str], tuple] = {}
    for p in plans:
        m = manifest[p["clip_id"]]
        if m["emotion"] != "neutral" or p["identity"] is None:
            continue
        key, rank = (m["corpus"], m["speaker"]), (m["level"], p["clip_id"])
        if key not in best or rank < best[key][0]:
            best[key] = (rank, p["identity"])
    return {k: v[1] for k, v in best.items()}, len(best)


def _load_gt(cfg: Config, manifest: dict[str, dict], clip_ids: set[str]) -> dict[str, np.ndarray]:
    keyed = {m["gt_key"]: cid for cid, m in manifest.items() if m["gt_key"] and cid in clip_ids}
    if not keyed:
        return {}
    from kfusion.pipeline.demo import load_groundtruth
    gt = load_groundtruth(cfg.demo.out)
    out = {}
    for (spk, emo, level, clip), row in gt.items():
        cid = keyed.get(f"{spk}|{emo}|{level}|{clip}")
        if cid is not None:
            out[cid] = row["landmarks_video_px"]
    return out


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Cut clips into aligned 1 s windows, split them, and write memory-mappable arrays."""
    wcfg, scfg = cfg.windows, cfg.split
    manifest_path = Path(cfg.index.out) / "manifest.parquet"
    lm_dir, feat_dir = Path(cfg.landmarks.out), Path(cfg.features.out)
    for p in (manifest_path, lm_dir, feat_dir):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing; run the stages before windows (dvc repro)")
    manifest = {r["clip_id"]: r for r in pq.read_table(manifest_path).to_pylist()}
    n_feat, feat_where, encoder = _feature_index(feat_dir)
    lm_shards = sorted(str(p) for p in lm_dir.glob("shard-*.parquet"))
    out = fresh_dir(wcfg.out)
    run = StageRun("windows")

    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, min(cfg.preprocess.workers, len(lm_shards) or 1))) as pool:
        jobs = [{"path": p, "wcfg": wcfg, "n_feat": n_feat, "manifest_ids": set(manifest)}
                for p in lm_shards]
        plans = [c for res in progress(pool.imap(_plan_shard, jobs), total=len(jobs), desc="windows plan")
                 for c in res]

        neutral, n_speakers_neutral = _speaker_neutral(plans, manifest) \
            if wcfg.identity == "speaker_neutral" else ({}, 0)
        counts: dict[str, int] = {s: 0 for s in SPLITS}
        rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
        by_shard: dict[str, list[dict]] = defaultdict(list)
        identity_fallbacks = 0
        for p in plans:
            m = manifest[p["clip_id"]]
            if not p["starts"] or p["identity"] is None:
                run.reject(p["clip_id"], "no_valid_window",
                           f"{p['n_frames']} frames give no window of {wcfg.frames} frames with "
                           f"landmarks, <= {wcfg.max_missing_frames} bridged frames and audio")
                continue
            identity = p["identity"]
            if wcfg.identity == "speaker_neutral":
                if (m["corpus"], m["speaker"]) in neutral:
                    identity = neutral[(m["corpus"], m["speaker"])]
                else:
                    identity_fallbacks += 1
            item = {"clip_id": p["clip_id"], "starts": p["starts"], "identity": identity,
                    "emotion_id": m["emotion_id"], "splits": [], "offsets": []}
            for s in p["starts"]:
                wid = f"{p['clip_id']}@{s}"
                split = window_split(scfg.seed, wid, scfg.test_fraction, scfg.val_fraction) \
                    if scfg.by == "window" and m["split"] == "train" else m["split"]
                item["splits"].append(split)
                item["offsets"].append(counts[split])
                counts[split] += 1
                rows[split].append({"window_id": wid, "clip_id": p["clip_id"], "corpus": m["corpus"],
                                    "speaker": m["speaker"], "emotion": m["emotion"],
                                    "emotion_id": m["emotion_id"], "level": m["level"],
                                    "start_frame": s, "split": split})
            by_shard[p["landmark_shard"]].append(item)
            run.processed += 1

        n_mels = _n_mels(feat_dir, feat_where)
        mel_len, w2v_len = spans(wcfg.frames, cfg.landmarks.fps)
        shapes = {"landmarks": ((wcfg.frames, N_POINTS, 2), np.float32),
                  "identity": ((N_POINTS, 2), np.float32), "mel": ((mel_len, n_mels), np.float32),
                  "w2v": ((w2v_len, W2V_DIM), np.float16), "emotion": ((), np.int64),
                  "gt_landmarks": ((wcfg.frames, N_POINTS, 2), np.float32)}
        needed = {it["clip_id"] for items in by_shard.values() for it in items}
        gt = _load_gt(cfg, manifest, needed)
        with contextlib.ExitStack() as stack:
            tmp = {}
            for s in SPLITS:
                tmp[s] = {}
                for k, (shape, dtype) in shapes.items():
                    path = stack.enter_context(atomic_path(out / s / f"{k}.npy"))
                    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                                    shape=(counts[s], *shape))
                    del arr   # header + size written; workers fill it
                    tmp[s][k] = str(path)
            fill_jobs = []
            for shard, items in by_shard.items():
                fill_jobs.append({"path": shard, "items": items, "tmp": tmp,
                                  "feature_shards": sorted({feat_where[it["clip_id"]] for it in items}),
                                  "gt": {c: gt[c] for c in {it["clip_id"] for it in items} if c in gt},
                                  "frames": wcfg.frames, "crop_px": cfg.landmarks.crop_px,
                                  "identity": wcfg.identity})
            written = sum(progress(pool.imap_unordered(_fill_shard, fill_jobs), total=len(fill_jobs),
                                   desc="windows fill"))
            assert written == sum(counts.values()), (written, counts)
        # leaving the ExitStack renamed every array into place

    missing = sorted(set(manifest) - {p["clip_id"] for p in plans})
    for s in SPLITS:
        write_parquet(out / s / "windows.parquet", pa.Table.from_pylist(rows[s], schema=WINDOWS_SCHEMA))
        write_json(out / s / "meta.json", _meta(cfg, encoder, rows[s], counts[s], n_mels,
                                               identity_fallbacks, len(gt)))
    dump(cfg, out / "config.yaml")
    run.extra.update({"windows_per_split": counts, "split_by": scfg.by,
                      "split_leaky": scfg.by == "window", "identity": wcfg.identity,
                      "identity_leaky": wcfg.identity == "window_first",
                      "identity_fallbacks_to_clip": identity_fallbacks,
                      "speakers_with_neutral": n_speakers_neutral,
                      "clips_with_groundtruth": len(gt),
                      "clips_missing_upstream": len(missing),
                      "encoder": encoder.get("encoder", ""), "fallback": encoder.get("fallback")})
    run.finish(rejects_path=out / "rejects.parquet", metrics_path=Path("metrics/windows.json"),
               max_reject_fraction=wcfg.max_reject_fraction)


def _meta(cfg: Config, encoder: dict, rows: list[dict], n: int, n_mels: int,
          identity_fallbacks: int, n_gt: int) -> dict:
    mel_len, w2v_len = spans(cfg.windows.frames, cfg.landmarks.fps)
    return {"n_windows": n, "fps": cfg.landmarks.fps, "frames": cfg.windows.frames,
            "stride_frames": cfg.windows.stride_frames, "mel_frames": mel_len, "n_mels": n_mels,
            "w2v_frames": w2v_len, "encoder": encoder.get("encoder", ""),
            "fallback": bool(encoder.get("fallback", False)),
            "corpora": sorted({r["corpus"] for r in rows}),
            "emotions": list(EMOTIONS), "identity": cfg.windows.identity,
            "identity_leaky": cfg.windows.identity == "window_first",
            "identity_fallbacks_to_clip": identity_fallbacks,
            "split_by": cfg.split.by, "split_leaky": cfg.split.by == "window",
            "clips": len({r["clip_id"] for r in rows}),
            "emotion_counts": dict(Counter(r["emotion"] for r in rows)),
            "clips_with_groundtruth": n_gt}


def main(argv: list[str] | None = None) -> int:
    from kfusion.stages._common import run_stage
    return run_stage("windows", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
