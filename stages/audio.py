"""audio stage: decode every indexed clip's audio to 16 kHz mono float32 shards (+ rejects)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfusion.config import Config
from kfusion.pipeline.data.audio import audio_shards
from kfusion.pipeline.data.index import read_manifest
from kfusion.pipeline.io import StageRun
from kfusion.stages._common import finish_stage, run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Decode, check (silence, A/V mismatch, length) and shard each clip's audio."""
    rows = read_manifest(cfg.index.out)
    out = Path(cfg.audio.out)
    out.mkdir(parents=True, exist_ok=True)
    run = StageRun("audio")
    figures = audio_shards(cfg, rows, out, run)
    finish_stage(cfg, run, out, max_reject_fraction=cfg.audio.max_reject_fraction, extra=figures)


def main(argv: list[str] | None = None) -> int:
    return run_stage("audio", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
