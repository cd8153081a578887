"""train stage: fit the KFusion model on data/windows/train, validate on val every epoch.

Writes models/best.pt, models/last.pt (each with config, encoder, data fingerprint, history, the
mean-motion baseline's trajectory and the emotion head), models/train.json, models/config.yaml,
DVCLive logs in dvclive/train, and its timing in the untracked reports/train.log.json.
Runs as one process or, when train.nproc_per_node or train.nnodes is above 1, launches itself
under torchrun (DDP; kfusion.pipeline.training.launch) and waits for it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfusion.config import Config, dump
from kfusion.pipeline.io import StageError
from kfusion.stages._common import run_stage

LIVE_DIR = Path("dvclive/train")


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Train the model (the paper's recipe; see docs/training.md)."""
    from kfusion.pipeline.training.launch import run_torchrun, wants_torchrun
    if wants_torchrun(cfg):   # train.nproc_per_node or train.nnodes > 1: this stage, N times
        code = run_torchrun(cfg, args.params)
        if code:
            raise StageError(f"torchrun: the training processes failed (exit {code}); "
                             f"their errors are above")
        return
    from kfusion.pipeline.training.dataset import split_speakers
    from kfusion.pipeline.training.loop import train, write_summary
    out = Path(cfg.train.out)
    result = train(cfg, Path(cfg.windows.out), out, live_dir=LIVE_DIR)
    if result is None:  # a non-zero rank under torchrun
        return
    dump(cfg, out / "config.yaml")
    s = write_summary(result, out / "train.json", Path(cfg.reports) / "train.log.json")
    final = s["final"]
    print(f"[train] {s['epochs']} epochs (resumed after {s['resumed_from_epoch']}), "
          f"final train loss {final.get('train/loss', float('nan')):.4g}, "
          f"val loss {final.get('val/loss', float('nan')):.4g}, "
          f"val M-LD {final.get('val/M-LD', float('nan')):.3f} px (validation speakers: "
          f"{split_speakers(Path(cfg.windows.out) / 'val')}; test figures: the evaluate stage, "
          f"docs/training.md on why they differ), best epoch {s['best_epoch']}, "
          f"{result.seconds:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
