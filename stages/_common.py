"""What every stage entry point shares: argument parsing, config loading, clean failures.

A stage is `python -m stages.<name> [--params params.yaml]`. Data problems are rejects;
a failure the user must act on (bad params, too many rejects, missing input) ends with one
line on stderr and exit code 2, not a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from kfusion.config import Config, ConfigError, load
from kfusion.pipeline.io import StageError


def run_stage(name: str, body: Callable[[Config, argparse.Namespace], object],
              add_args: Callable[[argparse.ArgumentParser], None] | None = None,
              argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m kfusion.stages.{name}",
                                     description=(body.__doc__ or "").strip().splitlines()[0]
                                     if body.__doc__ else None)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.params)
        body(cfg, args)
    except (ConfigError, StageError, FileNotFoundError) as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        return 2
    return 0
