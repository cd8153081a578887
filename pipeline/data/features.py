"""Features stage library: log-mel (Global Domain) and the content encoder's states (Content
Domain), per clip, in resumable shards.

- log-mel: torchaudio MelSpectrogram, hop `features.hop_length` (160 at 16 kHz = 100 frames/s),
  centred frames (frame k is centred on k * hop), log(max(mel, 1e-5)). Shape (n_mel, n_mels).
- content states: the encoder `features.encoder` names (pipeline/data/encoders: wav2vec2,
  Whisper, PPG or the random-weights control), (n_frames, feature_dim) at 50 frames/s, stored
  as float16 in the `w2v` column (the paper's wav2vec2 slot; any encoder fills it). The
  encoder is loaded once in the main process (fail early, and learn its record), then once
  per worker; each worker checks it loaded the same weights.
- Rejects: a clip shorter than one encoder frame (`too_short`), and a clip whose samples or
  features are not finite (`non_finite_features`): NaN never reaches the windows.
- Shards: clip ids sorted and cut every `clips_per_shard` (the unit of resume and of the
  progress bar); a shard is skipped when it exists with the same fingerprint (params, encoder
  record, input audio shards). Every shard's metadata and `encoder.json` carry the record.
- Audio augmentation (`features.audio_augment`, pipeline/data/perturb.py): for each variant,
  the training split's clips (the manifest's `train`) again, their speech perturbed, into
  `<out>/aug/<variant>/` (the same shards, fingerprints and encoder.json). The clean shards
  do not depend on the list: adding a variant leaves them as they are.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.config import Config, FeaturesConfig, parse_variant
from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ, W2V_RECEPTIVE_SAMPLES
from kfusion.pipeline.data.encoders import EncoderMismatch, build_encoder, check_same, describe
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.data.perturb import VERSION as PERTURB_VERSION, perturb
from kfusion.pipeline.data.shards import (SHARD_GLOB, ShardTally, clean_stale, plan_shards,
                                          shard_meta, write_shard)
from kfusion.pipeline.io import StageError, StageRun, atomic_path, write_json

SCHEMA_VERSION = 2   # 2: any content encoder (its record and width in the metadata)
FEATURES_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("mel", pa.list_(pa.float32())), ("n_mel", pa.int32()),
    ("w2v", pa.list_(pa.float16())), ("n_w2v", pa.int32()),
])


# ----------------------------------------------------------------------------- log-mel
def mel_transform(cfg: FeaturesConfig, sample_rate_hz: int = ENCODER_SAMPLE_RATE_HZ):
    import torchaudio
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate_hz, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, n_mels=cfg.n_mels, center=True, power=2.0)


def log_mel(samples: np.ndarray, transform) -> np.ndarray:
    """(n,) float32 -> (n // hop + 1, n_mels) float32 log power mel."""
    import torch
    with torch.no_grad():
        mel = transform(torch.from_numpy(np.array(samples, dtype=np.float32)))  # owned, writable
    return torch.log(mel.clamp_min(1e-5)).T.contiguous().numpy()  # (n_mel, n_mels)


# ----------------------------------------------------------------------------- shards
def fingerprint(cfg: FeaturesConfig, encoder: dict, inputs: list) -> str:
    params = {k: v for k, v in asdict(cfg).items() if k not in (
        "out", "max_reject_fraction", "batch_seconds", "threads", "clips_per_shard",
        "audio_augment")}   # a variant's name goes into its own shards' inputs
    blob = json.dumps([SCHEMA_VERSION, params, encoder, inputs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def feature_shard_path(out_dir: str | Path, k: int, fmt: str) -> Path:
    return Path(out_dir) / f"shard-{k:05d}.{'npz' if fmt == 'npz' else 'parquet'}"


def read_meta(path: str | Path) -> dict:
    """kfusion metadata of a features shard (Parquet key-value metadata or the npz's `meta`)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return json.loads(str(z["meta"]))
    return shard_meta(path)


def shard_complete(path: Path, planned_ids: list[str], fp: str) -> bool:
    if not path.exists():
        return False
    try:
        meta = read_meta(path)
    except Exception:
        return False
    return meta.get("planned_ids") == planned_ids and meta.get("fingerprint") == fp


def write_features(path: Path, rows: list[dict], meta: dict, planned_ids: list[str]) -> None:
    """Rows {clip_id, mel (n_mel, n_mels), w2v (n, feature_dim) float16} -> one shard, atomically."""
    if path.suffix == ".npz":
        meta = {**meta, "planned_ids": planned_ids}
        arrays = {
            "clip_id": np.array([r["clip_id"] for r in rows], dtype=str),
            "n_mel": np.array([len(r["mel"]) for r in rows], np.int32),
            "n_w2v": np.array([len(r["w2v"]) for r in rows], np.int32),
            "mel": np.concatenate([r["mel"] for r in rows]) if rows
            else np.zeros((0, meta["n_mels"]), np.float32),
            "w2v": np.concatenate([r["w2v"] for r in rows]) if rows
            else np.zeros((0, meta["feature_dim"]), np.float16),
            "meta": np.array(json.dumps(meta)),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return
    table_rows = [{"clip_id": r["clip_id"], "mel": r["mel"].reshape(-1), "n_mel": len(r["mel"]),
                   "w2v": r["w2v"].reshape(-1), "n_w2v": len(r["w2v"])} for r in rows]
    write_shard(path, table_rows, schema=FEATURES_SCHEMA, meta=meta, planned_ids=planned_ids)


def iter_features(out_dir: str | Path, clip_ids: set[str] | None = None) -> Iterator[dict]:
    """{clip_id, mel (n_mel, n_mels) float32, w2v (n, feature_dim) float16} per clip, by shard."""
    for path in sorted(Path(out_dir).glob("shard-*")):
        if path.suffix not in (".parquet", ".npz") or path.name.startswith("."):
            continue
        yield from read_shard(path, clip_ids)


def read_shard(path: Path, clip_ids: set[str] | None = None) -> Iterator[dict]:
    if path.suffix == ".npz":
        with np.load(path) as z:
            mo = np.concatenate([[0], np.cumsum(z["n_mel"])])
            wo = np.concatenate([[0], np.cumsum(z["n_w2v"])])
            mel, w2v = z["mel"], z["w2v"]
            for i, cid in enumerate(z["clip_id"].tolist()):
                if clip_ids is None or cid in clip_ids:
                    yield {"clip_id": cid, "mel": mel[mo[i]:mo[i + 1]], "w2v": w2v[wo[i]:wo[i + 1]]}
        return
    t = pq.read_table(path)
    width = int(shard_meta(path)["feature_dim"])
    for i, cid in enumerate(t.column("clip_id").to_pylist()):
        if clip_ids is not None and cid not in clip_ids:
            continue
        n_mel = t.column("n_mel")[i].as_py()
        mel = t.column("mel")[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        w2v = t.column("w2v")[i].values.to_numpy(zero_copy_only=False).astype(np.float16)
        yield {"clip_id": cid, "mel": mel.reshape(n_mel, mel.size // max(n_mel, 1)),
               "w2v": w2v.reshape(-1, width)}


def read_encoder(out_dir: str | Path) -> dict[str, Any]:
    """The encoder record of a features folder (its encoder.json), after checking that every
    shard was made by that same encoder: features of mixed encoders are refused."""
    out_dir = Path(out_dir)
    path = out_dir / "encoder.json"
    if not path.exists():
        raise StageError(f"{path}: missing; the features were made by an older version or not "
                         f"at all; run the features stage (dvc repro features)")
    record = json.loads(path.read_text())
    for shard in sorted(p for p in out_dir.glob("shard-*") if p.suffix in (".parquet", ".npz")):
        meta = read_meta(shard)
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StageError(f"{shard}: features schema {meta.get('schema_version')}, this code "
                             f"reads {SCHEMA_VERSION}; re-run the features stage")
        try:
            check_same(meta, record, f"{shard.name} was made by", "encoder.json names")
        except EncoderMismatch as e:
            raise EncoderMismatch(f"{out_dir}: features of mixed encoders ({e}); re-run the "
                                  f"features stage") from None
    return record


# ----------------------------------------------------------------------------- worker side
_ENCODER: dict[str, Any] = {}


def worker_encoder(job: dict):
    """The encoder the main process resolved, loaded once per process (and checked to be
    the same weights)."""
    key = (json.dumps(job["encoder"], sort_keys=True), job["device"])
    if _ENCODER.get("key") != key:
        if job["device"] == "cpu":
            import torch
            torch.set_num_threads(job["threads"])
        enc = build_encoder(job["encoder"]["encoder"], job["cfg"], device=job["device"],
                            threads=job["threads"])
        check_same(enc.record, job["encoder"], "a worker loaded", "the stage resolved")
        _ENCODER.update(key=key, encoder=enc, mel=mel_transform(job["cfg"]))
    return _ENCODER["encoder"], _ENCODER["mel"]


def keep_encoder(enc, fcfg: FeaturesConfig, device: str) -> None:
    """Hand the main process's encoder to worker_encoder (one worker: no second load)."""
    _ENCODER.update(key=(json.dumps(enc.record, sort_keys=True), device), encoder=enc,
                    mel=mel_transform(fcfg))


def release_encoder() -> None:
    """Drop the main process's encoder when workers load their own (memory)."""
    _ENCODER.clear()


def read_clips(sources: list[str], ids: list[str]) -> list[tuple[str, np.ndarray]]:
    """(clip id, samples) of these clips from their audio shards, sorted by id."""
    want, clips = set(ids), []
    for src in sources:
        t = pq.read_table(src, columns=["clip_id", "samples"])
        for i, cid in enumerate(t.column("clip_id").to_pylist()):
            if cid in want:
                clips.append((cid, t.column("samples")[i].values.to_numpy(zero_copy_only=False)))
    return sorted(clips, key=lambda c: c[0])


def usable_clips(clips: list[tuple[str, np.ndarray]]) -> tuple[list, list]:
    """Clips to encode, and rejects [clip id, reason, message] for the others."""
    usable, rejects = [], []
    for cid, x in clips:
        if len(x) < W2V_RECEPTIVE_SAMPLES:
            rejects.append([cid, "too_short", f"{len(x)} samples: shorter than one 25 ms encoder frame"])
        elif not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x))
            rejects.append([cid, "non_finite_features", f"{len(bad)} non-finite samples (first at "
                                                        f"sample {bad[0]}): its features would be NaN"])
        else:
            usable.append((cid, x))
    return usable, rejects


def process_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Compute one features shard from its audio rows (skipped when already complete)."""
    path, ids, fp = Path(job["path"]), job["ids"], job["fingerprint"]
    if shard_complete(path, ids, fp):
        meta = read_meta(path)
        return {"path": str(path), "skipped": True, "rejects": meta.get("rejects", []),
                "n_rows": meta.get("n_rows", 0), "seconds": meta.get("seconds", 0.0)}
    encoder, mel_tf = worker_encoder(job)
    clips = read_clips(job["sources"], ids)
    variant = parse_variant(job["variant"]) if job.get("variant") else None
    if variant:
        clips = [(cid, perturb(x, variant, cid)) for cid, x in clips]
    usable, rejects = usable_clips(clips)
    states = encoder.encode_many([x for _, x in usable])
    rows, seconds = [], 0.0
    for (cid, x), h in zip(usable, states):
        mel = log_mel(x, mel_tf)
        if not (np.isfinite(mel).all() and np.isfinite(h).all()):
            rejects.append([cid, "non_finite_features", "its log-mel or encoder states hold "
                                                        "NaN/inf (float16 overflow?)"])
            continue
        rows.append({"clip_id": cid, "mel": mel, "w2v": h})
        seconds += len(x) / ENCODER_SAMPLE_RATE_HZ
    meta = {"schema_version": SCHEMA_VERSION, "fingerprint": fp, **job["encoder"],
            "n_mels": job["cfg"].n_mels, "rejects": rejects, "n_rows": len(rows), "seconds": seconds}
    if variant:
        meta["audio_variant"] = variant.record()
    write_features(path, rows, meta, ids)
    return {"path": str(path), "skipped": False, "rejects": rejects, "n_rows": len(rows),
            "seconds": seconds}


def default_threads(workers: int, configured: int) -> int:
    return configured or max(1, (os.cpu_count() or 1) // max(workers, 1))


def encoder_workers(cfg: Config, device: str, shards: int) -> tuple[int, int]:
    """(workers, torch threads per worker). On a local GPU one worker, this process; else up
    to preprocess.workers. The thread count changes wav2vec2's float sums, so it is fixed
    here, once, and goes into every shard's fingerprint."""
    local_gpu = device == "cuda" and cfg.scale.executor == "local"
    workers = 1 if local_gpu else min(cfg.preprocess.workers, max(shards, 1))
    return workers, default_threads(workers, cfg.features.threads)


# ----------------------------------------------------------------------------- stage
def encoder_device(cfg: Config) -> str:
    """"cuda" or "cpu" for the encoder, from `device`. torch is imported here, not when this
    module or the stage is: shard workers import both, and a resumed shard needs no torch."""
    if cfg.scale.executor == "ray":   # the actors' device: GPUs where the cluster has them
        from kfusion.pipeline.data.executor import cluster_gpus
        gpus = cluster_gpus(cfg.scale) if cfg.device != "cpu" else 0.0
        if cfg.device == "cuda" and not gpus:
            raise StageError("device: cuda, but the Ray cluster has no GPU")
        return "cuda" if gpus else "cpu"
    from kfusion.device import resolve_device
    return resolve_device(cfg.device).type


def encoder_record(cfg: Config, device: str) -> dict:
    """Load the encoder once here: fail early, say which one auto chose, and learn the record
    every shard will carry. The loaded encoder is kept for a run with one worker."""
    import sys
    from kfusion.pipeline.data.encoders import load_encoder
    enc = load_encoder(cfg.features, device=device, threads=default_threads(1, cfg.features.threads))
    keep_encoder(enc, cfg.features, device)
    rec = enc.record
    if rec.get("encoder_auto"):
        print(f"[features] features.encoder auto: {rec['encoder_auto']}", file=sys.stderr, flush=True)
    if rec["encoder_fallback"]:
        print(f"warning: features.encoder random: {describe(rec)}; a control with random weights, "
              f"recorded as encoder_fallback: true", file=sys.stderr, flush=True)
    return dict(rec)


def audio_inputs(audio_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """clip id -> audio shard path, and shard path -> that shard's fingerprint."""
    where, fps = {}, {}
    for p in sorted(audio_dir.glob(SHARD_GLOB)):
        meta = shard_meta(p)
        fps[str(p)] = meta.get("fingerprint", "")
        for cid in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist():
            where[cid] = str(p)
    return where, fps


AUG_DIR = "aug"   # <features out>/aug/<variant>/: the perturbed copies' shards


def variant_dir(out: str | Path, variant: str) -> Path:
    return Path(out) / AUG_DIR / variant


def train_clip_ids(cfg: Config) -> set[str]:
    """The clips of the manifest's training split: the ones audio variants are made for."""
    from kfusion.pipeline.data.index import read_manifest
    return {r["clip_id"] for r in read_manifest(cfg.index.out) if r["split"] == "train"}


def feature_jobs(cfg: Config, out: Path, encoder: dict, device: str) -> list[dict]:
    """One job per features shard (clip ids sorted, cut every clips_per_shard), each with the
    fingerprint that lets a finished shard be kept; shards of an older plan are removed. Then
    the same for each audio variant's training clips, under <out>/aug/<variant>/."""
    where, audio_fp = audio_inputs(Path(cfg.audio.out))
    variants = cfg.features.audio_augment
    train = train_clip_ids(cfg) if variants else set()
    plans = [(out, None, plan_shards(sorted(where), cfg.features.clips_per_shard))]
    plans += [(variant_dir(out, v), v, plan_shards(sorted(train & set(where)),
                                                   cfg.features.clips_per_shard)) for v in variants]
    threads = encoder_workers(cfg, device, len(plans[0][2]))[1]
    jobs = []
    for folder, variant, plan in plans:
        for k, ids in enumerate(plan):
            sources = sorted({where[c] for c in ids})
            # the thread count changes the encoder's float sums: part of the shard's identity
            inputs = [ids, [audio_fp[s] for s in sources], device, threads]
            fp = fingerprint(cfg.features, encoder,
                             inputs + [variant, PERTURB_VERSION] if variant else inputs)
            jobs.append({"path": str(feature_shard_path(folder, k, cfg.features.format)),
                         "ids": ids, "sources": sources, "fingerprint": fp, "cfg": cfg.features,
                         "encoder": encoder, "device": device, "threads": threads,
                         "variant": variant})
        folder.mkdir(parents=True, exist_ok=True)
        # shards of an older plan or the other format, temp files of a killed run
        clean_stale(folder, [feature_shard_path(folder, k, cfg.features.format)
                             for k in range(len(plan))])
    for old in (out / AUG_DIR).glob("*") if (out / AUG_DIR).is_dir() else ():
        if old.name not in variants:   # a variant no longer asked for
            shutil.rmtree(old)
    return jobs


def encode_features(cfg: Config, out: Path, device: str, encoder: dict,
                    run: StageRun) -> dict[str, Any]:
    """Every audio shard's clips -> log-mel + content shards under `out` (a finished shard is
    kept), encoder.json (`encoder`, from encoder_record) beside them; rejects and counts on
    `run`. Returns the figures reports/features.json adds. The audio is at 16 kHz: the config
    accepts no other rate."""
    jobs = feature_jobs(cfg, out, encoder, device)
    workers, threads = encoder_workers(cfg, device, len(jobs))
    # one local worker: encode here, with no pool (on CUDA the model stays in this process)
    here = workers == 1 and cfg.scale.executor == "local"
    if not here:
        release_encoder()   # the workers load their own; free this process's copy
    tally = ShardTally()
    variants = {v: ShardTally() for v in cfg.features.audio_augment}
    variant_of = {j["path"]: j["variant"] for j in jobs}
    for res in map_shards(process_shard, jobs, workers=0 if here else workers, desc="features",
                          scale=cfg.scale, cpus_per_worker=threads, shared_dir=out,
                          gpus_per_worker=cfg.scale.gpus_per_encoder if device == "cuda" else 0):
        if v := variant_of[res["path"]]:   # its rejects are not the clip's: training uses
            variants[v].add(res, None)     # the clean features instead
        else:
            tally.add(res, run)
    computed = tally.computed_seconds + sum(t.computed_seconds for t in variants.values())
    write_json(out / "encoder.json", encoder)
    for v in cfg.features.audio_augment:
        write_json(variant_dir(out, v) / "encoder.json", encoder)
    copies = {v: {"clips": t.rows, "shards": t.shards, "rejects": t.rejects} for v, t in variants.items()}
    return {**encoder, **({"audio_variants": copies} if copies else {}),
            "device": device, "format": cfg.features.format,
            "audio_seconds": round(tally.seconds, 2), "shards": tally.shards,
            "shards_resumed": tally.resumed, "workers": workers, "threads_per_worker": threads,
            # audio encoded in this run (the copies' included) per second of it; resumed
            # shards cost nothing, so they do not count (null when every shard was resumed)
            "real_time_factor": round(computed / max(run.seconds, 1e-9), 2) if computed else None}
