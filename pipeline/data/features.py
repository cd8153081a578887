"""Features stage library: log-mel (Global Domain) and wav2vec2 hidden states (Content Domain).

- log-mel: torchaudio MelSpectrogram, hop `features.hop_length` (160 at 16 kHz = 100 frames/s),
  centred frames (frame k is centred on k * hop), log(max(mel, 1e-5)). Shape (n_mel, n_mels).
- wav2vec2: last hidden state of a frozen `Wav2Vec2Model`, 50 frames/s (frame k starts at
  k * 20 ms, 25 ms receptive field), stored as float16. Shape (n_w2v, 768).
  Loaded with `local_files_only=True` from a hub id (the local HF cache) or a directory:
  nothing downloads. When that fails and `features.wav2vec2_fallback: random`, the same
  architecture (`Wav2Vec2Config()` defaults = base) is built with seeded random weights;
  that is warned about and recorded (`fallback: true`) in every shard and in the metrics.
- Batches: clips sorted by length, at most `batch_seconds` of padded audio and at most
  `max_pad_fraction` padding per batch, attention masked over the padding. wav2vec2-base
  still normalises its first conv layer over the padded length (group norm), so padding
  shifts every frame a little (2.5% padding: mean |diff| 1.5% of mean |h|, corr 0.9997,
  tested); near-equal lengths keep that small.
- Shards: clip ids sorted and cut every `clips_per_shard`; a shard is skipped when it exists
  with the same fingerprint (params, encoder, input audio shards): resumable.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.config import Config, FeaturesConfig
from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ, W2V_DIM, W2V_RECEPTIVE_SAMPLES, n_w2v_frames
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.data.shards import SHARD_GLOB, ShardTally, plan_shards, shard_meta, write_shard
from kfusion.pipeline.io import StageError, StageRun, atomic_path, write_json

SCHEMA_VERSION = 1
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


# ----------------------------------------------------------------------------- wav2vec2
def load_wav2vec2(name_or_dir: str, *, fallback: str = "random", seed: int = 0):
    """(model in eval mode, fallback used?, why it fell back or "")."""
    from transformers import Wav2Vec2Model
    try:
        model = Wav2Vec2Model.from_pretrained(name_or_dir, local_files_only=True)
        return model.eval(), False, ""
    except Exception as e:   # missing from the cache, no such folder, corrupt weights
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if fallback != "random":
            raise FileNotFoundError(
                f"features.wav2vec2: cannot load {name_or_dir!r} offline ({why}); put the model "
                f"in the Hugging Face cache or a local folder, or set "
                f"features.wav2vec2_fallback: random") from None
    warnings.warn(f"wav2vec2 {name_or_dir!r} could not be loaded offline ({why}); using the same "
                  f"architecture with seeded random weights (seed={seed}). Features are recorded "
                  f"as fallback: true.", stacklevel=2)
    return random_wav2vec2(seed), True, why


def random_wav2vec2(seed: int):
    """The recorded fallback encoder: wav2vec2-base's architecture with seeded random weights
    (a function of `seed` only), in eval mode."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config()).eval()   # defaults = wav2vec2-base (12 layers, 768 wide)


def normalise(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip: what Wav2Vec2FeatureExtractor(do_normalize) does."""
    x = samples.astype(np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def plan_batches(lengths: list[int], batch_samples: int, max_pad_fraction: float) -> list[list[int]]:
    """Indices grouped into batches of near-equal length (sorted), <= batch_samples padded."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            b = batches[-1]
            longest, shortest = lengths[i], lengths[b[0]]
            if (len(b) + 1) * longest <= batch_samples and \
                    longest - shortest <= max_pad_fraction * longest:
                b.append(i)
                continue
        batches.append([i])
    return batches


def wav2vec2_features(model, clips: list[np.ndarray], *, device: str = "cpu", half: bool = False,
                      batch_samples: int = 960_000, max_pad_fraction: float = 0.05) -> list[np.ndarray]:
    """Last hidden states per clip: list of (n_w2v_frames(n), 768) float16."""
    import torch
    dtype = torch.float16 if (half and device.startswith("cuda")) else torch.float32
    use_mask = True   # mask attention over padding: batched output stays close to one-by-one
    out: list[np.ndarray | None] = [None] * len(clips)
    lengths = [len(c) for c in clips]
    for batch in plan_batches(lengths, batch_samples, max_pad_fraction):
        longest = max(lengths[i] for i in batch)
        x = np.zeros((len(batch), longest), np.float32)   # (B, n)
        mask = np.zeros((len(batch), longest), np.int64)
        for j, i in enumerate(batch):
            x[j, :lengths[i]] = normalise(clips[i])
            mask[j, :lengths[i]] = 1
        with torch.no_grad():
            xt = torch.from_numpy(x).to(device=device, dtype=dtype)
            kw = {"attention_mask": torch.from_numpy(mask).to(device)} if use_mask else {}
            h = model(xt, **kw).last_hidden_state   # (B, T, 768)
        h = h.float().cpu().numpy()
        for j, i in enumerate(batch):
            out[i] = h[j, :n_w2v_frames(lengths[i])].astype(np.float16)
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- shards
def fingerprint(cfg: FeaturesConfig, encoder: dict, inputs: list) -> str:
    params = {k: v for k, v in asdict(cfg).items() if k not in (
        "out", "max_reject_fraction", "batch_seconds", "threads", "clips_per_shard")}
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
    """Rows {clip_id, mel (n_mel, n_mels), w2v (n_w2v, 768) float16} -> one shard, atomically."""
    if path.suffix == ".npz":
        meta = {**meta, "planned_ids": planned_ids}
        n_mels = rows[0]["mel"].shape[1] if rows else 0
        arrays = {
            "clip_id": np.array([r["clip_id"] for r in rows], dtype=str),
            "n_mel": np.array([len(r["mel"]) for r in rows], np.int32),
            "n_w2v": np.array([len(r["w2v"]) for r in rows], np.int32),
            "mel": np.concatenate([r["mel"] for r in rows]) if rows else np.zeros((0, n_mels), np.float32),
            "w2v": np.concatenate([r["w2v"] for r in rows]) if rows else np.zeros((0, W2V_DIM), np.float16),
            "meta": np.array(json.dumps(meta)),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return
    table_rows = [{"clip_id": r["clip_id"], "mel": r["mel"].reshape(-1), "n_mel": len(r["mel"]),
                   "w2v": r["w2v"].reshape(-1), "n_w2v": len(r["w2v"])} for r in rows]
    write_shard(path, table_rows, schema=FEATURES_SCHEMA, meta=meta, planned_ids=planned_ids)


def iter_features(out_dir: str | Path, clip_ids: set[str] | None = None) -> Iterator[dict]:
    """{clip_id, mel (n_mel, n_mels) float32, w2v (n_w2v, 768) float16} for every clip, shard by shard."""
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
    n_mels = None
    for i, cid in enumerate(t.column("clip_id").to_pylist()):
        if clip_ids is not None and cid not in clip_ids:
            continue
        n_mel = t.column("n_mel")[i].as_py()
        mel = t.column("mel")[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        n_mels = mel.size // max(n_mel, 1)
        w2v = t.column("w2v")[i].values.to_numpy(zero_copy_only=False).astype(np.float16)
        yield {"clip_id": cid, "mel": mel.reshape(n_mel, n_mels),
               "w2v": w2v.reshape(-1, W2V_DIM)}


# ----------------------------------------------------------------------------- worker side
_MODEL: dict[str, Any] = {}


def _worker_model(job: dict):
    """The encoder, loaded once per worker process."""
    import torch
    key = (job["cfg"].wav2vec2, job["seed"], job["device"])
    if _MODEL.get("key") != key:
        torch.set_num_threads(job["threads"])
        model, fallback, _ = load_wav2vec2(job["cfg"].wav2vec2, fallback=job["cfg"].wav2vec2_fallback,
                                           seed=job["seed"])
        if fallback != job["encoder"]["fallback"]:
            raise RuntimeError("wav2vec2 loaded differently in a worker than in the main process")
        model = model.to(job["device"])
        if job["cfg"].half_precision and job["device"].startswith("cuda"):
            model = model.half()
        _MODEL.update(key=key, model=model, mel=mel_transform(job["cfg"]))
    return _MODEL["model"], _MODEL["mel"]


def process_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Compute one features shard from its audio rows (skipped when already complete)."""
    import warnings as _w
    path, ids, fp = Path(job["path"]), job["ids"], job["fingerprint"]
    if shard_complete(path, ids, fp):
        meta = read_meta(path)
        return {"path": str(path), "skipped": True, "rejects": meta.get("rejects", []),
                "n_rows": meta.get("n_rows", 0), "seconds": meta.get("seconds", 0.0)}
    with _w.catch_warnings():
        _w.simplefilter("ignore")   # the main process already warned about the fallback
        model, mel_tf = _worker_model(job)
    want = set(ids)
    clips: list[tuple[str, np.ndarray]] = []
    for src in job["sources"]:   # audio shards holding these clips
        t = pq.read_table(src, columns=["clip_id", "samples"])
        for i, cid in enumerate(t.column("clip_id").to_pylist()):
            if cid in want:
                clips.append((cid, t.column("samples")[i].values.to_numpy(zero_copy_only=False)))
    clips.sort(key=lambda c: c[0])
    rows, rejects = [], []
    usable = []
    for cid, x in clips:
        if len(x) < W2V_RECEPTIVE_SAMPLES:   # shorter than one wav2vec2 frame (25 ms)
            rejects.append([cid, "too_short", f"{len(x)} samples: shorter than one wav2vec2 frame"])
        else:
            usable.append((cid, x))
    cfg = job["cfg"]
    w2v = wav2vec2_features(model, [x for _, x in usable], device=job["device"],
                            half=cfg.half_precision,
                            batch_samples=int(cfg.batch_seconds * ENCODER_SAMPLE_RATE_HZ),
                            max_pad_fraction=cfg.max_pad_fraction)
    seconds = 0.0
    for (cid, x), h in zip(usable, w2v):
        rows.append({"clip_id": cid, "mel": log_mel(x, mel_tf), "w2v": h})
        seconds += len(x) / ENCODER_SAMPLE_RATE_HZ
    meta = {"schema_version": SCHEMA_VERSION, "fingerprint": fp, **job["encoder"],
            "n_mels": cfg.n_mels, "rejects": rejects, "n_rows": len(rows), "seconds": seconds}
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


def encoder_record(cfg: Config) -> dict:
    """Load the encoder once here: fail or warn early, and know what every shard will record."""
    model, fallback, why = load_wav2vec2(cfg.features.wav2vec2, fallback=cfg.features.wav2vec2_fallback,
                                         seed=cfg.seed)
    del model
    enc = {"encoder": cfg.features.wav2vec2, "fallback": fallback}
    if fallback:
        enc.update(fallback_seed=cfg.seed, fallback_reason=why,
                   fallback_architecture="transformers.Wav2Vec2Config() defaults (wav2vec2-base)")
    return enc


def audio_inputs(audio_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """clip id -> audio shard path, and shard path -> that shard's fingerprint."""
    where, fps = {}, {}
    for p in sorted(audio_dir.glob(SHARD_GLOB)):
        meta = shard_meta(p)
        fps[str(p)] = meta.get("fingerprint", "")
        for cid in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist():
            where[cid] = str(p)
    return where, fps


def feature_jobs(cfg: Config, out: Path, encoder: dict, device: str) -> list[dict]:
    """One job per features shard (clip ids sorted, cut every clips_per_shard), each with the
    fingerprint that lets a finished shard be kept; shards of an older plan are removed."""
    where, audio_fp = audio_inputs(Path(cfg.audio.out))
    plan = plan_shards(sorted(where), cfg.features.clips_per_shard)
    threads = encoder_workers(cfg, device, len(plan))[1]
    jobs = []
    for k, ids in enumerate(plan):
        sources = sorted({where[c] for c in ids})
        fp = fingerprint(cfg.features, encoder,
                         [ids, [audio_fp[s] for s in sources], cfg.seed, device, threads])
        jobs.append({"path": str(feature_shard_path(out, k, cfg.features.format)), "ids": ids,
                     "sources": sources, "fingerprint": fp, "cfg": cfg.features,
                     "encoder": encoder, "seed": cfg.seed, "device": device, "threads": threads})
    keep = {Path(j["path"]).name for j in jobs}
    for p in out.glob("shard-*"):   # shards of an older plan or the other format
        if p.name not in keep:
            p.unlink()
    for p in out.glob(".shard-*.tmp"):   # temp files of a killed run: never read, only disk
        p.unlink()
    return jobs


def encode_features(cfg: Config, out: Path, device: str, encoder: dict,
                    run: StageRun) -> dict[str, Any]:
    """Every audio shard's clips -> log-mel + wav2vec2 shards under `out` (a finished shard is
    kept), encoder.json (`encoder`, from encoder_record) beside them; rejects and counts on
    `run`. Returns the figures metrics/features.json adds. The audio is at 16 kHz: the config
    accepts no other rate."""
    jobs = feature_jobs(cfg, out, encoder, device)
    workers, threads = encoder_workers(cfg, device, len(jobs))
    tally = ShardTally()
    # one local worker: encode here, with no pool (on CUDA the model stays in this process)
    here = workers == 1 and cfg.scale.executor == "local"
    for res in map_shards(process_shard, jobs, workers=0 if here else workers, desc="features",
                          scale=cfg.scale, cpus_per_worker=threads, shared_dir=out,
                          gpus_per_worker=cfg.scale.gpus_per_encoder if device == "cuda" else 0):
        tally.add(res, run)
    write_json(out / "encoder.json", encoder)
    return {**encoder, "device": device, "format": cfg.features.format,
            "audio_seconds": round(tally.seconds, 2), "shards": len(jobs),
            "shards_resumed": tally.resumed, "workers": workers, "threads_per_worker": threads,
            # audio encoded in this run per second of it; resumed shards cost nothing, so
            # they do not count (null when every shard was resumed)
            "real_time_factor": round(tally.computed_seconds / max(run.seconds, 1e-9), 2)
            if tally.computed_seconds else None}

