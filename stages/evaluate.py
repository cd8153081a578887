"""evaluate stage: the paper's four metrics on data/windows/test, beside the baselines.

Writes metrics/evaluate.json (cache: false), plots/evaluate/per_emotion.json (DVC bar plot)
and plots/evaluate/qualitative.png (reference vs predicted landmarks, like the paper's Fig. 4),
and metrics/train.json: the train stage's summary (models/train.json without its timing), kept
in git because models/ and dvclive/train are DVC-cached.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfusion.config import Config, dump
from kfusion.pipeline.io import write_json
from kfusion.stages._common import run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Evaluate the trained checkpoint (see docs/training.md)."""
    from kfusion.pipeline.training.evaluation import evaluate
    ckpt = Path(args.checkpoint or Path(cfg.train.out) / f"{cfg.evaluate.checkpoint}.pt")
    out = Path(cfg.evaluate.out) / "evaluate.json"
    r = evaluate(cfg, Path(cfg.windows.out), ckpt, out_json=out, plots_dir=Path(cfg.evaluate.plots))
    dump(cfg, Path(cfg.evaluate.plots) / "config.yaml")
    summary = Path(cfg.train.out) / "train.json"
    if summary.is_file():
        write_json(Path(cfg.evaluate.out) / "train.json",
                   {k: v for k, v in json.loads(summary.read_text()).items() if k != "seconds"})
    if "overall" in r:
        m, i, mm = (r["overall"][s] for s in ("model", "identity", "mean_motion"))
        print(f"[evaluate] {m['windows']} test windows; M-LD model {m['M-LD']:.3f} / identity "
              f"{i['M-LD']:.3f} / mean-motion {mm['M-LD']:.3f} px; M-LVD model {m['M-LVD']:.3f} "
              f"/ identity {i['M-LVD']:.3f} / mean-motion {mm['M-LVD']:.3f} px "
              f"(encoder {r['encoder']}, fallback {r['encoder_fallback']}) -> {out}",
              file=sys.stderr, flush=True)
    else:
        print(f"[evaluate] reference-definition metrics -> {out}", file=sys.stderr, flush=True)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint to evaluate (default: <train.out>/<evaluate.checkpoint>.pt)")


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", _run, add_args=_args, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
