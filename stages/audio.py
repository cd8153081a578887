"""audio stage: decode every indexed clip's audio to 16 kHz mono float32 shards (+ rejects)."""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path

import pyarrow.parquet as pq

from kfusion.config import Config, dump
from kfusion.pipeline.data.audio import process_shard
from kfusion.pipeline.io import StageRun, progress
from kfusion.pipeline.data.shards import clean_stale, plan_shards, shard_path


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Decode, check (silence, A/V mismatch, length) and shard each clip's audio."""
    manifest = Path(cfg.index.out) / "manifest.parquet"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: no manifest; run the index stage first")
    rows = sorted(pq.read_table(manifest).to_pylist(), key=lambda r: r["clip_id"])
    out = Path(cfg.audio.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_shards([r["clip_id"] for r in rows], cfg.audio.clips_per_shard)
    jobs, i = [], 0
    for k, ids in enumerate(plan):
        jobs.append({"rows": rows[i:i + len(ids)], "cfg": cfg.audio, "path": str(shard_path(out, k)),
                     "ffmpeg": cfg.preprocess.ffmpeg})
        i += len(ids)
    clean_stale(out, [j["path"] for j in jobs])

    run = StageRun("audio")
    seconds, skipped = 0.0, 0
    with mp.get_context("spawn").Pool(min(cfg.preprocess.workers, max(len(jobs), 1))) as pool:
        for res in progress(pool.imap_unordered(process_shard, jobs), total=len(jobs), desc="audio"):
            for clip_id, reason, message in res["rejects"]:
                run.reject(clip_id, reason, message)
            run.processed += res["n_rows"]
            seconds += res["seconds"]
            skipped += res["skipped"]
    dump(cfg, out / "config.yaml")
    run.extra.update({"audio_hours": round(seconds / 3600.0, 4), "shards": len(jobs),
                      "shards_resumed": skipped, "sample_rate_hz": cfg.audio.sample_rate_hz})
    run.finish(rejects_path=out / "rejects.parquet", metrics_path=Path("metrics/audio.json"),
               max_reject_fraction=cfg.audio.max_reject_fraction)


def main(argv: list[str] | None = None) -> int:
    from kfusion.stages._common import run_stage
    return run_stage("audio", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
