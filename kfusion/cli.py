"""The `kfusion` console command. Subcommands are thin: the work lives in the packages."""
from __future__ import annotations

import argparse
import importlib
import sys

from kfusion import __version__
from kfusion.config import CORPORA

STAGES = ("config", "demo", "index", "landmarks", "audio", "features", "windows", "train", "evaluate")
COLS = ("M-LD", "M-LVD", "F-LD", "F-LVD", "mouth_r")


def _cmd_config(args: argparse.Namespace) -> int:
    """Validate a params file and print the resolved configuration."""
    import yaml
    from kfusion.config import ConfigError, load, to_dict
    try:
        cfg = load(args.params)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Print the evaluation reports as one table: model, controls and baselines, per test set
    and corpus, against the detector's landmarks (and the ground truth where there is one)."""
    import json
    from pathlib import Path
    paths = [Path(p) for p in args.report] if args.report else \
        [p for p in [Path("reports/evaluate.json"), *sorted(Path("reports/sets").glob("*/evaluate.json"))]
         if p.exists()]
    missing = [p for p in paths if not p.exists()]
    if not paths or missing:
        print(f"error: {missing[0] if missing else 'reports/evaluate.json'}: no evaluation yet; "
              f"run `dvc repro` (the evaluate stages write it) or `kfusion evaluate`", file=sys.stderr)
        return 2
    print("\n\n".join(format_report(json.loads(p.read_text()), str(p)) for p in paths))
    return 0


def format_report(m: dict, source: str = "report") -> str:
    """Rows: corpus x reference (detector landmarks, generator's ground truth) x system."""
    from kfusion.config import describe_model
    p = m.get("provenance", {})
    lines = [f"{source}: test set {p.get('set')}; {m.get('units', 'Eq. 13-15, px of the 256 crop')}",
             f"encoder {p.get('encoder')} (fallback: {p.get('encoder_fallback')}), checkpoint "
             f"{p.get('checkpoint')}, preset {p.get('preset')}, seed {p.get('seed')}",
             f"differs from the paper: {_differences(p.get('differs_from_paper'))}",
             f"model: {describe_model(p) or 'not recorded'}",
             f"{'corpus':8} {'vs':13} {'system':12} {'windows':>7} " + " ".join(f"{c:>7}" for c in COLS)]
    for corpus, block in (m.get("corpora") or {}).items():
        for ref in ("vs_reference", "vs_ground_truth"):
            for system, row in (block.get(ref) or {}).items():
                vals = " ".join(f"{v:7.3f}" if isinstance(v, (int, float)) else f"{'-':>7}"
                                for v in (row.get(c) for c in COLS))
                lines.append(f"{corpus:8} {ref[3:]:13} {system:12} {row.get('windows', 0):7d} {vals}")
    lines.append(m.get("not_in_paper", ""))
    return "\n".join(lines)


def _differences(d) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) if d else "none"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a corpus outside the pipeline (preprocessing cached)."""
    from kfusion.config import ConfigError
    from kfusion.corpus_eval import PrepareError, evaluate_corpus
    from kfusion.pipeline.io import StageError
    from kfusion.pipeline.training.evaluation import summary_line
    try:
        report, out = evaluate_corpus(args.checkpoint, args.corpus, args.root, name=args.name,
                                      out=args.out, cache_root=args.cache, device=args.device,
                                      workers=args.workers)
    except (ConfigError, StageError, FileNotFoundError, PrepareError) as e:
        print(f"error: evaluate: {e}", file=sys.stderr)
        return 2
    print(f"[evaluate] {report['provenance']['set']}: {summary_line(report)} -> {out}",
          file=sys.stderr)
    print(format_report(report, str(out / "report.json")))
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    """Run one pipeline stage outside DVC (same code `dvc repro` runs)."""
    try:
        mod = importlib.import_module(f"kfusion.stages.{args.stage}")
    except ModuleNotFoundError:
        print(f"error: stage {args.stage!r} is not implemented in this version", file=sys.stderr)
        return 2
    return mod.main(["--params", args.params])


def _cmd_predict(args: argparse.Namespace) -> int:
    try:
        from kfusion.pipeline.predict.cli import run as run_predict
    except ModuleNotFoundError:
        print("error: predict is not implemented in this version", file=sys.stderr)
        return 2
    return run_predict(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kfusion", description=__doc__)
    p.add_argument("--version", action="version", version=f"kfusion {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("config", help="validate params.yaml and print the resolved config",
                       description=_cmd_config.__doc__)
    c.add_argument("--params", default="params.yaml")
    c.set_defaults(func=_cmd_config)

    r = sub.add_parser("report", help="print the evaluation reports as one table",
                       description=_cmd_report.__doc__)
    r.add_argument("--report", action="append", default=[], metavar="JSON",
                   help="an evaluation report (repeatable; default: reports/evaluate.json and "
                        "every reports/sets/*/evaluate.json)")
    r.set_defaults(func=_cmd_report)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a corpus, outside the pipeline",
                       description=_cmd_evaluate.__doc__)
    e.add_argument("--checkpoint", required=True, help="a checkpoint the train stage wrote")
    e.add_argument("--corpus", required=True, choices=CORPORA, help="the corpus layout")
    e.add_argument("--root", required=True, help="the corpus folder, as distributed")
    e.add_argument("--name", default="", help="the test set's name (default: the corpus)")
    e.add_argument("--out", default=None, help="output folder (default: eval/<name>)")
    e.add_argument("--cache", default="data/cache/evaluate",
                   help="preprocessed corpora, keyed by root and settings (default: %(default)s)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--workers", type=int, default=2, help="worker processes for the data stages")
    e.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("stage", help="run one pipeline stage outside DVC",
                       description=_cmd_stage.__doc__)
    s.add_argument("stage", choices=STAGES)
    s.add_argument("--params", default="params.yaml")
    s.set_defaults(func=_cmd_stage)

    pr = sub.add_parser("predict", help="landmarks and a video from speech and a face photo",
                        description="Predict a 30 fps 68-point landmark sequence for SPEECH "
                                    "and the face in FACE, and render it to an mp4.")
    pr.add_argument("--audio", required=True, help="speech: any audio ffmpeg reads, or a video")
    pr.add_argument("--image", required=True, help="a photo with one face")
    pr.add_argument("--out", required=True, help="output mp4; .npy/.csv are written beside it")
    pr.add_argument("--emotion", default="auto",
                    help="a MEAD emotion name, or auto (default): the checkpoint's audio emotion "
                         "classifier, used only where it beat chance on held-out data (else neutral)")
    pr.add_argument("--checkpoint", default=None, help="default: the pipeline's best checkpoint")
    pr.add_argument("--side-by-side", action="store_true", help="also draw on a neutral canvas")
    pr.add_argument("--animate", action="store_true",
                    help="also show the photo warped to the predicted landmarks (a talking head)")
    pr.add_argument("--strict", action="store_true", help="fail when the image has several faces")
    pr.add_argument("--silence", choices=("still", "model"), default="still",
                    help="still (default): where the audio holds no speech, the face rests as in "
                         "the photo; model: the model's own output everywhere (docs/predict.md)")
    pr.add_argument("--stride-frames", type=int, default=10,
                    help="frames between overlapping 1 s windows (1-30; default %(default)s)")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pr.add_argument("--batch-size", type=int, default=64, help="windows per model batch")
    pr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    pr.add_argument("--params", default=None,
                    help="params file the checkpoint must match (default: ./params.yaml when "
                         "the default checkpoint is used)")
    pr.set_defaults(func=_cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()   # a closed pipe shows up here, while we can still handle it
    except BrokenPipeError:
        return _broken_pipe()
    return rc


def _broken_pipe() -> int:
    """The reader went away (`kfusion report | head`): stop quietly, as Unix tools do. stdout
    is pointed at /dev/null so the interpreter's final flush cannot fail a second time."""
    import os
    import signal
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
