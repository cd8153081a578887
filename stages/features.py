"""features stage: log-mel + content encoder shards from the audio shards (resumable, persist: true)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfusion.config import Config
from kfusion.pipeline.data.features import encode_features, encoder_device, encoder_record
from kfusion.pipeline.io import StageRun
from kfusion.stages._common import finish_stage, run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Compute log-mel and content encoder features per clip into shards; skip shards done."""
    audio_dir, out = Path(cfg.audio.out), Path(cfg.features.out)
    if not (audio_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{audio_dir}: no audio stage output; run the audio stage first")
    out.mkdir(parents=True, exist_ok=True)
    device = encoder_device(cfg)
    encoder = encoder_record(cfg, device)   # load it once here: fail or warn before any work
    run = StageRun("features")      # its clock, and so real_time_factor, starts after the load
    figures = encode_features(cfg, out, device, encoder, run)
    finish_stage(cfg, run, out, max_reject_fraction=cfg.features.max_reject_fraction, extra=figures)


def main(argv: list[str] | None = None) -> int:
    return run_stage("features", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
