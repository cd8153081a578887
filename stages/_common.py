"""What every stage entry point shares: argument parsing, config loading, clean failures.

A stage is `python -m stages.<name> [--params params.yaml]`. Data problems are rejects;
a failure the user must act on (bad params, too many rejects, missing input) ends with one
line on stderr and exit code 2, not a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from kfusion.config import Config, ConfigError, dump, load, test_set_config
from kfusion.pipeline.io import StageError, StageRun


# Stages that also run for each extra test set (evaluate.sets, dvc.yaml's foreach): with
# `--set NAME` they read and write that set's folders (kfusion.config.test_set_config).
SET_STAGES = ("index", "landmarks", "audio", "features", "windows", "evaluate")


def run_stage(name: str, body: Callable[[Config, argparse.Namespace], object],
              add_args: Callable[[argparse.ArgumentParser], None] | None = None,
              argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kfusion.stages.{name}",
                                     description=(body.__doc__ or "").strip().splitlines()[0]
                                     if body.__doc__ else None)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    if name in SET_STAGES:
        parser.add_argument("--set", default=None, metavar="NAME",
                            help="run for the extra test set evaluate.sets.NAME")
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.params)
        if getattr(args, "set", None):
            cfg = test_set_config(cfg, args.set)
        body(cfg, args)
    except (ConfigError, StageError, FileNotFoundError) as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        return 2
    return 0


def finish_stage(cfg: Config, run: StageRun, out: str | Path, *, max_reject_fraction: float,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The end every data stage shares: the config beside its outputs (<out>/config.yaml), its
    rejects (<out>/rejects.parquet), its counts and `extra` figures in <reports>/<stage>.json
    (timings in the untracked <stage>.log.json beside it), the one-line summary; a StageError
    above `max_reject_fraction`."""
    dump(cfg, Path(out) / "config.yaml")
    run.extra.update(extra or {})
    return run.finish(rejects_path=Path(out) / "rejects.parquet",
                      report_path=Path(cfg.reports) / f"{run.stage}.json",
                      max_reject_fraction=max_reject_fraction)
