"""config stage: validate params.yaml and write the resolved configuration, one file per section.

The root of the DAG. DVC runs a stage's command only after removing that stage's outputs, so a
bad value (`dvc exp run -S model.fusion=transformer`) must fail here, before any stage that
owns results (models/, dvclive/train) is reached: every stage depends on this stage's file of
its own section, which orders it after this one. One file per section keeps that ordering
cheap: a change to `model` rewrites data/config/model.yaml only, and the data stages, whose
files are unchanged, do not re-run.

Writes data/config/<section>.yaml for every section of kfusion/config.py and
data/config/run.yaml for the top-level keys (seed, device), every key resolved (defaults
filled in); evaluate.sets goes to data/config/evaluate_sets.yaml, read by the *_set stages.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from kfusion.config import Config, to_dict
from kfusion.pipeline.io import atomic_write_text, fresh_dir
from kfusion.stages._common import run_stage

OUT = Path("data/config")


def _run(cfg: Config, args: argparse.Namespace) -> None:
    """Validate the params file (run_stage has loaded it) and write each resolved section."""
    out = fresh_dir(OUT)
    resolved = to_dict(cfg)
    top = {k: v for k, v in resolved.items() if not isinstance(v, dict)}
    files = {"run": top, **{k: v for k, v in resolved.items() if isinstance(v, dict)}}
    # The extra test sets get a file of their own: declaring one must not re-run the
    # model's own evaluate stage, which depends on evaluate.yaml only.
    files["evaluate"] = dict(files["evaluate"])
    files["evaluate_sets"] = {"sets": files["evaluate"].pop("sets", {})}
    for name, section in files.items():
        atomic_write_text(out / f"{name}.yaml", yaml.safe_dump(section, sort_keys=False))
    print(f"[config] {args.params} is valid; {len(files)} resolved sections -> {out}/",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_stage("config", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
