"""demo stage: generate the built-in demo corpus (MEAD layout, real media) and its ground truth.

Writes data/demo/corpus/ (video + audio per clip), data/demo/groundtruth/shard-*.parquet,
rejects.parquet, config.yaml, reports/demo.json and plots/demo/contact_sheet.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

from kfusion.config import Config
from kfusion.pipeline.demo.generate import generate_corpus
from kfusion.pipeline.demo.groundtruth import write_groundtruth
from kfusion.pipeline.demo.report import summary, write_sheet
from kfusion.pipeline.io import StageRun, fresh_dir
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.stages._common import finish_stage, run_stage

SHEET = Path("plots/demo/contact_sheet.png")


def _run(cfg: Config, args) -> None:
    """Generate the demo corpus: speech, faces, tracks, media, ground truth, contact sheet."""
    demo = cfg.demo
    out = fresh_dir(demo.out)
    ffmpeg = ffmpeg_binary(cfg.preprocess.ffmpeg)
    run = StageRun("demo")
    results = generate_corpus(demo, out / "corpus", ffmpeg, cfg.preprocess.workers, run)
    write_groundtruth(out / "groundtruth", [r["row"] for r in results], demo.clips_per_shard)
    write_sheet(SHEET, demo, results, out / "corpus", ffmpeg)
    # the generator should make every clip it plans: any failure is a bug to see, not skip
    finish_stage(cfg, run, out, max_reject_fraction=0.0, extra=summary(demo, results))


def main(argv: list[str] | None = None) -> int:
    return run_stage("demo", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
