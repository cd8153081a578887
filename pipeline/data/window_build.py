"""The windows stage's work: train/val/test window tables + memory-mapped arrays.

First a scan of the features shards (`scan_features_shard`, in workers): a clip whose mel or
wav2vec2 features hold a NaN or an infinity is a `non_finite_features` reject, so no such
value reaches training (one NaN input makes the KAN's spline index overflow).
Then two passes over the landmark shards, both in workers (map_shards), one shard per job:
1. plan (`plan_shard`): which windows each clip gives (landmarks finite, faces found, audio
   spans inside the features), and its identity landmarks; the main process then assigns
   splits and row offsets (`assign_windows`) and sizes every array.
2. fill (`fill_shard`): each worker opens the (temp-named) .npy files of its windows' splits
   with mmap_mode="r+" and writes its rows at the offsets pass 1 fixed. Files are renamed into
   place only when every worker is done (`write_arrays`), so a split is complete or absent.
The arithmetic of one window (timing, valid starts, crops, splits) is in windows.py.

Audio augmentation (`features.audio_augment`): for each variant, the training split also gets
`train/aug/<variant>/{mel,w2v}.npy`, row for row beside train/mel.npy and train/w2v.npy: the
same spans of the perturbed speech's features. A clip whose variant has no features (rejected
there) gets its clean ones in that slot, counted (`audio_variant_fallbacks`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.config import Config, SplitConfig, WindowsConfig
from kfusion.shapes import AUG_ARRAYS, EMOTIONS, N_POINTS, SPLITS, WINDOW_ARRAYS, WindowTiming
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.data.features import (AUG_DIR, read_encoder, read_meta, read_shard,
                                            variant_dir)
from kfusion.pipeline.data.index import read_manifest
from kfusion.pipeline.data.windows import (WINDOWS_SCHEMA, gt_in_crop, landmark_rows, outside_frame,
                                           reference_frame, valid_starts, window_split)
from kfusion.pipeline.io import StageError, atomic_path, write_json, write_parquet


# ----------------------------------------------------------------------------- inputs
@dataclass
class WindowSources:
    """What the windows stage reads from the index, landmarks and features stages."""
    manifest: dict[str, dict]             # clip id -> manifest row
    n_feat: dict[str, tuple[int, int]]    # clip id -> (mel frames, content encoder frames)
    feature_shard: dict[str, str]         # clip id -> the features shard holding it
    encoder: dict                         # features/encoder.json: the content encoder's record
    landmark_shards: list[str]
    bad_features: dict[str, str] = field(default_factory=dict)   # clip id -> what is non-finite
    # audio variant -> clip id -> (its features shard, (mel frames, encoder frames))
    variants: dict[str, dict[str, tuple[str, tuple[int, int]]]] = field(default_factory=dict)


def read_sources(cfg: Config) -> WindowSources:
    """The manifest, the features index and encoder, and the landmark shards; a clear error
    when a stage before windows has not run, made its features with another n_mels than the
    config's, or with more than one encoder."""
    for p in (Path(cfg.landmarks.out), Path(cfg.features.out)):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing; run the stages before windows (dvc repro)")
    manifest = {r["clip_id"]: r for r in read_manifest(cfg.index.out)}
    features_dir = Path(cfg.features.out)
    encoder = read_encoder(features_dir)   # refuses shards of mixed encoders
    n_feat, where = _feature_index(features_dir)
    shards, want = sorted(set(where.values())), cfg.features.n_mels
    if shards and (n_mels := int(read_meta(shards[0]).get("n_mels", want))) != want:
        raise StageError(f"{shards[0]}: made with {n_mels} mel bands, features.n_mels="
                         f"{want}; re-run the features stage (dvc repro features)")
    variants = {}
    for v in cfg.features.audio_augment:
        vdir = variant_dir(features_dir, v)
        if not (vdir / "encoder.json").exists():
            raise StageError(f"{vdir}: missing; features.audio_augment names {v!r} but the "
                             f"features stage has not made it (dvc repro features)")
        if read_encoder(vdir) != encoder:
            raise StageError(f"{vdir}: made by another encoder than {features_dir}; re-run "
                             f"the features stage (dvc repro features)")
        nf, wh = _feature_index(vdir)
        variants[v] = {c: (wh[c], nf[c]) for c in nf}
    return WindowSources(manifest, n_feat, where, encoder,
                         sorted(str(p) for p in Path(cfg.landmarks.out).glob("shard-*.parquet")),
                         variants=variants)


def variant_fingerprints(src: WindowSources) -> dict[str, str]:
    """audio variant -> a hash of its features shards' fingerprints (in shard order)."""
    out = {}
    for v, clips in src.variants.items():
        fps = [read_meta(p).get("fingerprint", "") for p in sorted({sh for sh, _ in clips.values()})]
        out[v] = hashlib.sha256(json.dumps(fps).encode()).hexdigest()[:16]
    return out


def _feature_index(features_dir: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """clip id -> (mel frames, encoder frames), and clip id -> its shard, of one features
    folder (its own shards, not its aug/ subfolders)."""
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
    return n_feat, where


def scan_features_shard(path: str) -> dict[str, str]:
    """clip id -> what is non-finite in its features, for the clips of one features shard
    whose log-mel or wav2vec2 frames hold a NaN or an infinity."""
    out = {}
    for f in read_shard(Path(path)):
        parts = []
        for name, a in (("log-mel", f["mel"]), ("content encoder", f["w2v"])):
            bad = ~np.isfinite(a)
            if bad.any():
                frame = int(np.flatnonzero(bad.any(axis=1))[0])
                parts.append(f"{name}: {int(bad.sum())} of {bad.size} values NaN or infinite "
                             f"(first in frame {frame} of {len(a)})")
        if parts:
            out[f["clip_id"]] = "; ".join(parts)
    return out


def find_non_finite_features(src: WindowSources, workers: int) -> dict[str, str]:
    """Scan every features shard (in workers); the clips with non-finite features."""
    shards = sorted(set(src.feature_shard.values()))
    bad: dict[str, str] = {}
    for res in map_shards(scan_features_shard, shards, workers=workers, desc="windows scan"):
        bad.update(res)
    return bad


# ----------------------------------------------------------------------------- pass 1
def plan_shard(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Per clip of one landmark shard: usable window starts + identity landmarks."""
    wcfg, timing, n_feat, manifest_ids = job["wcfg"], job["timing"], job["n_feat"], job["manifest_ids"]
    cols = ["clip_id", "n_frames", "fps", "landmarks_px", "face_found", "identity_frame"]
    out = []
    for r in landmark_rows(pq.read_table(job["path"], columns=cols)):
        cid = r["clip_id"]
        if cid not in manifest_ids or cid not in n_feat:
            continue
        if cid in job["bad_features"]:
            out.append({"clip_id": cid, "starts": [], "n_frames": r["n_frames"], "identity": None,
                        "landmark_shard": job["path"],
                        "problem": ("non_finite_features", job["bad_features"][cid])})
            continue
        if r["fps"] != timing.fps:
            raise StageError(f"{job['path']}: {cid} has landmarks at {r['fps']:g} fps, "
                             f"landmarks.fps={timing.fps:g}; re-run the landmarks stage")
        n_mel, n_w2v = n_feat[cid]
        starts = valid_starts(r["landmarks_px"], r["face_found"], n_mel, n_w2v, timing,
                              stride=wcfg.stride_frames, max_missing=wcfg.max_missing_frames)
        idf = r.get("identity_frame")
        preferred = idf if idf is not None and idf >= 0 else wcfg.identity_frame
        ref = reference_frame(r["landmarks_px"], preferred)
        plan = {"clip_id": cid, "starts": starts, "n_frames": r["n_frames"],
                "identity": r["landmarks_px"][ref] if ref >= 0 else None,
                "landmark_shard": job["path"]}
        if wcfg.identity == "other_clip":   # the fallback, for a speaker with no other clip
            f, kept = outside_frame(r["landmarks_px"], starts, wcfg.frames, preferred)
            plan["outside"] = {"identity": r["landmarks_px"][f] if f >= 0 else None, "starts": kept}
        out.append(plan)
    return out


def plan_windows(src: WindowSources, wcfg: WindowsConfig, timing: WindowTiming,
                 workers: int) -> list[dict[str, Any]]:
    """Pass 1 over every landmark shard, in shard order: one plan per clip."""
    jobs = [{"path": p, "wcfg": wcfg, "timing": timing, "n_feat": src.n_feat,
             "manifest_ids": set(src.manifest), "bad_features": src.bad_features}
            for p in src.landmark_shards]
    return [c for res in map_shards(plan_shard, jobs, workers=workers, ordered=True, desc="windows plan")
            for c in res]


# ----------------------------------------------------------------------------- splits
@dataclass
class WindowPlan:
    """Every window's split and row offset, from pass 1's clip plans."""
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    rows: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    # landmark shard -> [{clip_id, starts, identity (68, 2), emotion_id, splits, offsets}]
    by_shard: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    rejects: list[tuple[str, str, str]] = field(default_factory=list)   # (clip id, reason, message)
    clips: int = 0                       # clips with at least one window
    identity_fallbacks: int = 0          # speaker_neutral: no neutral clip; other_clip: no other clip
    speakers_with_neutral: int = 0
    windows_dropped_for_identity: int = 0   # other_clip fallback: windows holding the identity frame

    def clip_ids(self) -> set[str]:
        return {it["clip_id"] for items in self.by_shard.values() for it in items}


def speaker_neutral(plans: list[dict], manifest: dict[str, dict]) -> dict[tuple[str, str], np.ndarray]:
    """(corpus, speaker) -> identity of its first neutral clip (lowest level, then id)."""
    best: dict[tuple[str, str], tuple] = {}
    for p in plans:
        m = manifest[p["clip_id"]]
        if m["emotion"] != "neutral" or p["identity"] is None:
            continue
        key, rank = (m["corpus"], m["speaker"]), (m["level"], p["clip_id"])
        if key not in best or rank < best[key][0]:
            best[key] = (rank, p["identity"])
    return {k: v[1] for k, v in best.items()}


def identity_donors(plans: list[dict], manifest: dict[str, dict]) -> dict[str, str]:
    """other_clip: clip id -> the clip of the same speaker whose reference frame is its
    identity: a neutral clip first (lowest level, then id), else the first other clip by id."""
    by_speaker: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for p in plans:
        m = manifest[p["clip_id"]]
        if p["identity"] is not None:
            by_speaker[(m["corpus"], m["speaker"])].append(
                (m["emotion"] != "neutral", m["level"], p["clip_id"]))
    donors = {}
    for p in plans:
        m = manifest[p["clip_id"]]
        others = sorted(k for k in by_speaker[(m["corpus"], m["speaker"])] if k[2] != p["clip_id"])
        if others:
            donors[p["clip_id"]] = others[0][2]
    return donors


def _other_clip_identities(plans: list[dict], manifest: dict[str, dict], wp: WindowPlan) -> list[dict]:
    """other_clip: the plans with each clip's identity from its donor clip, or from a frame
    outside its windows (and the windows kept) where its speaker has no other clip."""
    donors = identity_donors(plans, manifest)
    ident = {p["clip_id"]: p["identity"] for p in plans}
    out = []
    for p in plans:
        if p["clip_id"] in donors:
            out.append({**p, "identity": ident[donors[p["clip_id"]]]})
            continue
        wp.identity_fallbacks += 1
        wp.windows_dropped_for_identity += len(p["starts"]) - len(p["outside"]["starts"])
        out.append({**p, **p["outside"]})
    return out


def assign_windows(plans: list[dict], manifest: dict[str, dict], wcfg: WindowsConfig,
                   scfg: SplitConfig) -> WindowPlan:
    """Each window's split (the clip's, or a seeded draw with split.by: window) and its row in
    that split's arrays; each clip's identity landmarks. A clip with no window is a reject."""
    wp = WindowPlan()
    neutral = speaker_neutral(plans, manifest) if wcfg.identity == "speaker_neutral" else {}
    wp.speakers_with_neutral = len(neutral)
    if wcfg.identity == "other_clip":
        plans = _other_clip_identities(plans, manifest, wp)
    for p in plans:
        m = manifest[p["clip_id"]]
        if p.get("problem"):
            wp.rejects.append((p["clip_id"], *p["problem"]))
            continue
        if not p["starts"] or p["identity"] is None:
            wp.rejects.append((p["clip_id"], "no_valid_window",
                               f"{p['n_frames']} frames give no window of {wcfg.frames} frames with "
                               f"landmarks, <= {wcfg.max_missing_frames} bridged frames and audio"))
            continue
        identity = p["identity"]
        if wcfg.identity == "speaker_neutral":
            if (m["corpus"], m["speaker"]) in neutral:
                identity = neutral[(m["corpus"], m["speaker"])]
            else:
                wp.identity_fallbacks += 1
        item = {"clip_id": p["clip_id"], "starts": p["starts"], "identity": identity,
                "emotion_id": m["emotion_id"], "splits": [], "offsets": []}
        for s in p["starts"]:
            wid = f"{p['clip_id']}@{s}"
            split = window_split(scfg.seed, wid, scfg.test_fraction, scfg.val_fraction) \
                if scfg.by == "window" and m["split"] == "train" else m["split"]
            item["splits"].append(split)
            item["offsets"].append(wp.counts[split])
            wp.counts[split] += 1
            wp.rows[split].append({"window_id": wid, "clip_id": p["clip_id"], "corpus": m["corpus"],
                                   "speaker": m["speaker"], "emotion": m["emotion"],
                                   "emotion_id": m["emotion_id"], "level": m["level"],
                                   "start_frame": s, "split": split})
        wp.by_shard[p["landmark_shard"]].append(item)
        wp.clips += 1
    return wp


# ----------------------------------------------------------------------------- pass 2
def fill_shard(job: dict[str, Any]) -> int:
    """Write the windows of one landmark shard into the split arrays at their offsets."""
    items, timing = job["items"], job["timing"]   # items: see WindowPlan.by_shard
    want = {it["clip_id"] for it in items}
    lm = {r["clip_id"]: r for r in landmark_rows(pq.read_table(job["path"], columns=[
        "clip_id", "n_frames", "fps", "landmarks_px", "face_found", "crop_box"])) if r["clip_id"] in want}
    feats = {f["clip_id"]: f for p in job["feature_shards"] for f in read_shard(Path(p), want)}
    gt = job["gt"]   # {clip_id: (T, 68, 2) video px}
    arrays = {s: {k: np.load(job["tmp"][s][k], mmap_mode="r+") for k in WINDOW_ARRAYS}
              for s in {s for it in items for s in it["splits"]}}   # window mode: several
    frames, n_mel, n_tokens = timing.n_frames, timing.n_mel, timing.n_tokens
    variants = _variant_features(job, want) if "train" in arrays else {}
    n, fallbacks = 0, Counter()
    for it in items:
        r, f = lm[it["clip_id"]], feats[it["clip_id"]]
        gt_crop = gt_in_crop(gt[it["clip_id"]], r["crop_box"], job["crop_px"]) \
            if it["clip_id"] in gt else None                                    # (T, 68, 2)
        for s, split, i in zip(it["starts"], it["splits"], it["offsets"]):
            a = arrays[split]
            m0, w0 = timing.audio_starts(s)
            a["landmarks"][i] = r["landmarks_px"][s:s + frames]                 # (30, 68, 2)
            a["identity"][i] = r["landmarks_px"][s] if job["identity"] == "window_first" \
                else it["identity"]                                             # (68, 2)
            a["mel"][i] = f["mel"][m0:m0 + n_mel]                               # (100, n_mels)
            a["w2v"][i] = f["w2v"][w0:w0 + n_tokens]                # (n_tokens, feature_dim)
            a["emotion"][i] = it["emotion_id"]
            a["gt_landmarks"][i] = gt_crop[s:s + frames] if gt_crop is not None else np.nan
            if split == "train":
                for v, (vf, va) in variants.items():
                    g = vf.get(it["clip_id"], f)       # rejected there: the clean features
                    va["mel"][i] = g["mel"][m0:m0 + n_mel]
                    va["w2v"][i] = g["w2v"][w0:w0 + n_tokens]
                    fallbacks[v] += g is f
            n += 1
    for arr in [*(x for split in arrays.values() for x in split.values()),
                *(x for _, va in variants.values() for x in va.values())]:
        arr.flush()
    return {"windows": n, "audio_variant_fallbacks": dict(fallbacks)}


def _variant_features(job: dict[str, Any], want: set[str]) -> dict[str, tuple[dict, dict]]:
    """audio variant -> (clip id -> its perturbed features, where they have as many frames as
    the clean ones; its train arrays opened for writing)."""
    out = {}
    for v, shards in job["variant_shards"].items():
        feats = {f["clip_id"]: f for p in shards for f in read_shard(Path(p), want)
                 if job["n_feat"].get(f["clip_id"]) == (len(f["mel"]), len(f["w2v"]))}
        out[v] = (feats, {k: np.load(job["tmp_aug"][v][k], mmap_mode="r+") for k in AUG_ARRAYS})
    return out


def array_shapes(timing: WindowTiming, feature_dim: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """Each window array's per-window shape and dtype (WINDOW_ARRAYS order); `w2v` holds the
    content encoder's frames, feature_dim wide (768 wav2vec2, 384 Whisper tiny.en, 191 PPG)."""
    clip = (timing.n_frames, N_POINTS, 2)
    return {"landmarks": (clip, np.float32), "identity": ((N_POINTS, 2), np.float32),
            "mel": ((timing.n_mel, timing.n_mels), np.float32),
            "w2v": ((timing.n_tokens, feature_dim), np.float16), "emotion": ((), np.int64),
            "gt_landmarks": (clip, np.float32)}


def write_arrays(out: Path, wp: WindowPlan, src: WindowSources, gt: dict[str, np.ndarray],
                 timing: WindowTiming, cfg: Config) -> dict[str, int]:
    """Pass 2: size every split's arrays (and the training split's audio variants'), fill
    them in workers, rename them into place. Returns the windows per variant that got the
    clean features (the variant had none for their clip)."""
    shapes = array_shapes(timing, int(src.encoder["feature_dim"]))
    with contextlib.ExitStack() as stack:
        def new_array(path: Path, k: str, n: int) -> str:
            shape, dtype = shapes[k]
            tmp_path = stack.enter_context(atomic_path(path))
            arr = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=dtype, shape=(n, *shape))
            del arr   # header + size written; workers fill it
            return str(tmp_path)
        tmp = {s: {k: new_array(out / s / f"{k}.npy", k, wp.counts[s]) for k in shapes}
               for s in SPLITS}
        tmp_aug = {v: {k: new_array(out / "train" / AUG_DIR / v / f"{k}.npy", k, wp.counts["train"])
                       for k in AUG_ARRAYS} for v in src.variants}
        jobs = []
        for shard, items in wp.by_shard.items():
            ids = {it["clip_id"] for it in items}
            jobs.append({"path": shard, "items": items, "tmp": tmp, "tmp_aug": tmp_aug,
                         "timing": timing,
                         "feature_shards": sorted({src.feature_shard[c] for c in ids}),
                         "variant_shards": {v: sorted({m[c][0] for c in ids if c in m})
                                            for v, m in src.variants.items()},
                         "n_feat": {c: src.n_feat[c] for c in ids},
                         "gt": {c: gt[c] for c in ids if c in gt},
                         "crop_px": cfg.landmarks.crop_px, "identity": cfg.windows.identity})
        written, fallbacks = 0, Counter({v: 0 for v in src.variants})
        for res in map_shards(fill_shard, jobs, workers=cfg.preprocess.workers, desc="windows fill"):
            written += res["windows"]
            fallbacks.update(res["audio_variant_fallbacks"])
        assert written == sum(wp.counts.values()), (written, wp.counts)
    # leaving the ExitStack renamed every array into place
    return dict(fallbacks)


# ----------------------------------------------------------------------------- tables
def split_meta(cfg: Config, timing: WindowTiming, encoder: dict, rows: list[dict], n: int,
               identity_fallbacks: int, n_gt: int) -> dict:
    """meta.json of one split: its counts and how its windows were made."""
    return {"n_windows": n, "fps": cfg.landmarks.fps, "frames": cfg.windows.frames,
            "stride_frames": cfg.windows.stride_frames, "mel_frames": timing.n_mel,
            "n_mels": timing.n_mels, "w2v_frames": timing.n_tokens,
            **encoder,   # the content encoder's record: name, weights hash, feature_dim, ...
            "corpora": sorted({r["corpus"] for r in rows}),
            "emotions": list(EMOTIONS), "identity": cfg.windows.identity,
            "identity_leaky": cfg.windows.identity == "window_first",
            "identity_fallbacks": identity_fallbacks,
            "split_by": cfg.split.by, "split_leaky": cfg.split.by == "window",
            "clips": len({r["clip_id"] for r in rows}),
            "emotion_counts": dict(Counter(r["emotion"] for r in rows)),
            "clips_with_groundtruth": n_gt}


def write_tables(out: Path, wp: WindowPlan, cfg: Config, timing: WindowTiming, encoder: dict,
                 n_gt: int, variants: dict[str, str]) -> None:
    """windows.parquet (one row per window, in array order) and meta.json of every split; the
    training split's names its audio variants (train/aug/<variant>/), when there are any."""
    for s in SPLITS:
        write_parquet(out / s / "windows.parquet", pa.Table.from_pylist(wp.rows[s], schema=WINDOWS_SCHEMA))
        meta = split_meta(cfg, timing, encoder, wp.rows[s], wp.counts[s], wp.identity_fallbacks, n_gt)
        if s == "train" and variants:   # absent when none: the default's meta stays as it was
            meta["audio_variants"] = list(variants)
            # what the copies were made from: their shards' fingerprints (a re-made copy
            # changes this file, and so the data fingerprint a resumed training run checks)
            meta["audio_variant_shards"] = variants
        write_json(out / s / "meta.json", meta)


def window_metrics(cfg: Config, wp: WindowPlan, src: WindowSources, plans: list[dict],
                   n_gt: int, variant_fallbacks: dict[str, int]) -> dict[str, Any]:
    """What reports/windows.json adds to the counts."""
    missing = set(src.manifest) - {p["clip_id"] for p in plans}
    # training windows per audio variant that hold the clean features (the variant's were rejected)
    variants = {"audio_variant_fallbacks": variant_fallbacks} if variant_fallbacks else {}
    return {**variants, "windows_per_split": wp.counts, "split_by": cfg.split.by,
            "split_leaky": cfg.split.by == "window", "identity": cfg.windows.identity,
            "identity_leaky": cfg.windows.identity == "window_first",
            "identity_fallbacks": wp.identity_fallbacks,
            "windows_dropped_for_identity": wp.windows_dropped_for_identity,
            "speakers_with_neutral": wp.speakers_with_neutral,
            "clips_with_groundtruth": n_gt, "clips_missing_upstream": len(missing),
            **{k: src.encoder.get(k) for k in ("encoder", "encoder_version", "encoder_sha256",
                                                "encoder_fallback", "feature_dim")}}
