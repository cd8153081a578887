"""index stage: scan the corpus roots in params into data/index/manifest.parquet (+ rejects)."""
from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import sys
from collections import Counter
from pathlib import Path

from kfusion.config import Config, dump
from kfusion.pipeline.data.index import assign_split, check, manifest_table, scan
from kfusion.pipeline.io import StageRun, progress, write_parquet
from kfusion.stages._common import run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Scan corpora, pair audio with video, probe durations, assign splits."""
    out = Path(cfg.index.out)
    out.mkdir(parents=True, exist_ok=True)  # keeps the tar cache between runs
    for stale in ("manifest.parquet", "rejects.parquet"):
        (out / stale).unlink(missing_ok=True)
    cache = Path(cfg.index.tar_cache_dir) if cfg.index.tar_cache_dir else out / "extracted"
    run = StageRun("index")
    candidates = []
    for corpus in cfg.index.corpora:
        candidates += scan(corpus, Path(cfg.index.roots.get(corpus, "")), cache)
    candidates.sort(key=lambda c: c.clip_id)

    rows = []
    fn = functools.partial(check, ffmpeg=cfg.preprocess.ffmpeg)
    with mp.get_context("spawn").Pool(cfg.preprocess.workers) as pool:
        results = pool.imap(fn, candidates, chunksize=8)
        for c, (row, problem) in progress(zip(candidates, results), total=len(candidates),
                                          desc="index"):
            if problem:
                run.reject(c.clip_id, *problem)
                continue
            row["split"] = assign_split(row, cfg.split)
            rows.append(row)
            run.processed += 1

    write_parquet(out / "manifest.parquet", manifest_table(rows))
    dump(cfg, out / "config.yaml")
    run.extra.update({
        "corpora": list(cfg.index.corpora), "split_by": cfg.split.by,
        "split_leaky": cfg.split.by == "window",
        "clips_per_split": dict(Counter(r["split"] for r in rows)),
        "clips_per_corpus": dict(Counter(r["corpus"] for r in rows)),
        "speakers": len({(r["corpus"], r["speaker"]) for r in rows}),
        "hours": round(sum(r["video_duration_s"] for r in rows) / 3600.0, 4),
    })
    run.finish(rejects_path=out / "rejects.parquet", metrics_path=Path("metrics/index.json"),
               max_reject_fraction=cfg.index.max_reject_fraction)


def main(argv: list[str] | None = None) -> int:
    return run_stage("index", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
