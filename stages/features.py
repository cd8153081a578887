"""features stage: log-mel + wav2vec2 shards from the audio shards (resumable, persist: true)."""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path

import pyarrow.parquet as pq

from kfusion.config import Config, dump
from kfusion.pipeline.data.features import (default_threads, feature_shard_path, fingerprint, load_wav2vec2,
                               process_shard)
from kfusion.pipeline.io import StageError, StageRun, progress, write_json
from kfusion.pipeline.data.shards import SHARD_GLOB, plan_shards, shard_meta


def _device(cfg: Config) -> str:
    import torch
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise StageError("device: cuda, but torch sees no CUDA device; set device: auto or cpu")
    return "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"


def _audio_inputs(audio_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """clip id -> audio shard path, and shard path -> that shard's fingerprint."""
    where, fps = {}, {}
    for p in sorted(audio_dir.glob(SHARD_GLOB)):
        meta = shard_meta(p)
        fps[str(p)] = meta.get("fingerprint", "")
        for cid in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist():
            where[cid] = str(p)
    return where, fps


def _encoder(cfg: Config) -> dict:
    """Load the encoder once here: fail or warn early, and know what every shard will record."""
    model, fallback, why = load_wav2vec2(cfg.features.wav2vec2, fallback=cfg.features.wav2vec2_fallback,
                                         seed=cfg.seed)
    del model
    enc = {"encoder": cfg.features.wav2vec2, "fallback": fallback}
    if fallback:
        enc.update(fallback_seed=cfg.seed, fallback_reason=why,
                   fallback_architecture="transformers.Wav2Vec2Config() defaults (wav2vec2-base)")
    return enc


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Compute log-mel and wav2vec2 features per clip into shards; skip shards already done."""
    audio_dir, out = Path(cfg.audio.out), Path(cfg.features.out)
    if not (audio_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{audio_dir}: no audio stage output; run the audio stage first")
    if cfg.audio.sample_rate_hz != 16000:
        raise StageError(f"audio.sample_rate_hz={cfg.audio.sample_rate_hz}: wav2vec2 and the "
                         f"100 frames/s mel need 16000")
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg)
    encoder = _encoder(cfg)
    where, audio_fp = _audio_inputs(audio_dir)
    plan = plan_shards(sorted(where), cfg.features.clips_per_shard)
    workers = 1 if device == "cuda" else min(cfg.preprocess.workers, max(len(plan), 1))
    threads = default_threads(workers, cfg.features.threads)
    jobs = []
    for k, ids in enumerate(plan):
        sources = sorted({where[c] for c in ids})
        fp = fingerprint(cfg.features, encoder, [ids, [audio_fp[s] for s in sources], cfg.seed])
        jobs.append({"path": str(feature_shard_path(out, k, cfg.features.format)), "ids": ids,
                     "sources": sources, "fingerprint": fp, "cfg": cfg.features,
                     "encoder": encoder, "seed": cfg.seed, "device": device, "threads": threads})
    keep = {Path(j["path"]).name for j in jobs}
    for p in out.glob("shard-*"):   # shards of an older plan or the other format
        if p.name not in keep:
            p.unlink()
    for p in out.glob(".shard-*.tmp"):   # temp files of a killed run: never read, only disk
        p.unlink()

    run = StageRun("features")
    seconds, computed_seconds, skipped = 0.0, 0.0, 0
    if workers == 1:
        results = map(process_shard, jobs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers, maxtasksperchild=None)
        results = pool.imap_unordered(process_shard, jobs)
    try:
        for res in progress(results, total=len(jobs), desc="features"):
            for clip_id, reason, message in res["rejects"]:
                run.reject(clip_id, reason, message)
            run.processed += res["n_rows"]
            seconds += res["seconds"]
            computed_seconds += 0.0 if res["skipped"] else res["seconds"]
            skipped += res["skipped"]
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    dump(cfg, out / "config.yaml")
    write_json(out / "encoder.json", encoder)
    run.extra.update({**encoder, "device": device, "format": cfg.features.format,
                      "audio_seconds": round(seconds, 2), "shards": len(jobs),
                      "shards_resumed": skipped, "workers": workers, "threads_per_worker": threads,
                      # audio encoded in this run per second of it; resumed shards cost
                      # nothing, so they do not count (null when every shard was resumed)
                      "real_time_factor": round(computed_seconds / max(run.seconds, 1e-9), 2)
                      if computed_seconds else None})
    run.finish(rejects_path=out / "rejects.parquet", metrics_path=Path("metrics/features.json"),
               max_reject_fraction=cfg.features.max_reject_fraction)


def main(argv: list[str] | None = None) -> int:
    from kfusion.stages._common import run_stage
    return run_stage("features", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
