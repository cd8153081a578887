"""DVC stage `landmarks`: every indexed clip -> 30 fps landmarks in 256 crop px, into shards.

Reads data/index/manifest.parquet; writes data/landmarks/shard-*.parquet (one row per clip,
schema in kfusion.pipeline.data.landmarks.shard_schema), rejects.parquet, config.yaml,
reports/landmarks.json and plots/landmarks/contact_sheet.png (a test set's: plots/landmarks/<set>/).

Resumable: data/landmarks is `persist: true` in dvc.yaml, and a shard written for the same
clip ids and the same settings is kept (kfusion.pipeline.data.landmark_shards), so an
interrupted run redoes only unfinished shards.
"""
from __future__ import annotations

import sys
from pathlib import Path

from kfusion.config import Config
from kfusion.pipeline.data.index import read_manifest
from kfusion.pipeline.data.landmark_shards import (check_backend, contact_sheet, groundtruth_error,
                                                   jitter_px, landmark_shards)
from kfusion.pipeline.io import StageRun
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.stages._common import finish_stage, run_stage

STAGE = "landmarks"


def _run(cfg: Config, args) -> dict:
    """Detect, track and crop faces in every indexed clip; write landmark shards."""
    manifest = read_manifest(cfg.index.out)
    out = Path(cfg.landmarks.out)
    out.mkdir(parents=True, exist_ok=True)
    run = StageRun(STAGE)
    ffmpeg = ffmpeg_binary(cfg.preprocess.ffmpeg)
    check_backend(cfg.landmarks)
    figures = landmark_shards(cfg, manifest, out, ffmpeg, run)
    figures.update(jitter_px=jitter_px(out),
                   groundtruth=groundtruth_error(manifest, cfg.demo.out, out, cfg.landmarks.crop_px))
    contact_sheet(out, Path("plots/landmarks", getattr(args, "set", None) or "", "contact_sheet.png"))
    return finish_stage(cfg, run, out, max_reject_fraction=cfg.landmarks.max_reject_fraction,
                        extra=figures)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
