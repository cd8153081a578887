"""evaluate stage: the paper's four metrics on one test set, beside baselines and controls.

The model's own test split (data/windows/test), or with `--set NAME` the extra test corpus
evaluate.sets.NAME (data/sets/NAME/windows/test). Writes <evaluate.out>/<set>.json (the DVC
metrics: the model's numbers, every system's in a list), the report with every breakdown
(<reports>/evaluate.json; a set's: reports/sets/NAME/evaluate.json) and the plots
(<evaluate.plots>/<set>/per_emotion.json, qualitative.png). See docs/training.md.
On the model's own split it also writes metrics/train.json: the train stage's summary
(models/train.json without its timing), kept in git because models/ and dvclive/train are
DVC-cached.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfusion.config import TEST_SPLIT, Config, dump
from kfusion.pipeline.io import write_json
from kfusion.stages._common import run_stage


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Evaluate the trained checkpoint on a test set (see docs/training.md)."""
    from kfusion.pipeline.training.evaluation import EvalOutputs, evaluate, summary_line
    name = args.set or TEST_SPLIT
    ckpt = Path(args.checkpoint or Path(cfg.train.out) / f"{cfg.evaluate.checkpoint}.pt")
    outputs = EvalOutputs.for_set(cfg, name)
    report = evaluate(cfg, Path(cfg.windows.out), ckpt, outputs=outputs, set_name=name)
    dump(cfg, outputs.plots_dir / "config.yaml")
    summary = Path(cfg.train.out) / "train.json"
    if name == TEST_SPLIT and summary.is_file():
        write_json(Path(cfg.evaluate.out).parent / "train.json",
                   {k: v for k, v in json.loads(summary.read_text()).items() if k != "seconds"})
    print(f"[evaluate] {name}: {summary_line(report)} -> {outputs.metrics}",
          file=sys.stderr, flush=True)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint to evaluate (default: <train.out>/<evaluate.checkpoint>.pt)")


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", _run, add_args=_args, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
