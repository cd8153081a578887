"""index stage: scan the corpus roots in params into data/index/manifest.parquet (+ rejects)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfusion.config import Config
from kfusion.pipeline.data.index import index_corpora, index_metrics, manifest_table, path_bases
from kfusion.pipeline.io import StageRun, write_parquet
from kfusion.stages._common import finish_stage, run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Scan corpora, pair audio with video, probe durations, assign splits."""
    out = Path(cfg.index.out)
    out.mkdir(parents=True, exist_ok=True)  # keeps the tar cache between runs
    for stale in ("manifest.parquet", "rejects.parquet"):
        (out / stale).unlink(missing_ok=True)
    cache = Path(cfg.index.tar_cache_dir) if cfg.index.tar_cache_dir else out / "extracted"
    run = StageRun("index")
    rows = index_corpora(cfg, cache, run)
    write_parquet(out / "manifest.parquet", manifest_table(rows, path_bases(cfg, cache)))
    finish_stage(cfg, run, out, max_reject_fraction=cfg.index.max_reject_fraction,
                 extra=index_metrics(cfg, rows))


def main(argv: list[str] | None = None) -> int:
    return run_stage("index", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
