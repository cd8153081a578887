"""windows stage: train/val/test window tables + memory-mapped arrays for the DataLoader.

Reads data/index/manifest.parquet, data/landmarks, data/features and (demo corpus) the ground
truth under data/demo/groundtruth; writes data/windows/<split>/{<array>.npy, windows.parquet,
meta.json}, rejects.parquet, config.yaml and reports/windows.json. How: window_build.py.
"""
from __future__ import annotations

import argparse
import sys

from kfusion.config import Config
from kfusion.shapes import window_timing
from kfusion.pipeline.data.groundtruth import groundtruth_by_clip
from kfusion.pipeline.data.window_build import (assign_windows, find_non_finite_features, plan_windows,
                                                read_sources, variant_fingerprints,
                                                window_metrics, write_arrays, write_tables)
from kfusion.pipeline.io import StageRun, fresh_dir
from kfusion.stages._common import finish_stage, run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Cut clips into aligned 1 s windows, split them, and write memory-mappable arrays."""
    src = read_sources(cfg)
    timing = window_timing(cfg, src.encoder["encoder"])   # video, mel and encoder frames of a window
    src.bad_features = find_non_finite_features(src, cfg.preprocess.workers)   # rejects
    out = fresh_dir(cfg.windows.out)
    run = StageRun("windows")
    plans = plan_windows(src, cfg.windows, timing, cfg.preprocess.workers)      # pass 1
    wp = assign_windows(plans, src.manifest, cfg.windows, cfg.split)
    for clip_id, reason, message in wp.rejects:
        run.reject(clip_id, reason, message)
    run.processed = wp.clips
    gt = groundtruth_by_clip(src.manifest, cfg.demo.out, wp.clip_ids())
    fallbacks = write_arrays(out, wp, src, gt, timing, cfg)                      # pass 2
    write_tables(out, wp, cfg, timing, src.encoder, len(gt), variant_fingerprints(src))
    finish_stage(cfg, run, out, max_reject_fraction=cfg.windows.max_reject_fraction,
                 extra=window_metrics(cfg, wp, src, plans, len(gt), fallbacks))


def main(argv: list[str] | None = None) -> int:
    return run_stage("windows", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
