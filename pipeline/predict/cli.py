"""`kfusion predict`: argument handling and messages around `kfusion.pipeline.predict.predictor`.

Exit codes: 0 done; 2 a problem the user can act on (one line on stderr, no traceback).
Warnings (several faces in the image, the random-weights control encoder) go to stderr as
`warning: ...` lines; the summary (checkpoint, emotion, files) to stdout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfusion.config import ConfigError, describe_model, load


def _params(args: argparse.Namespace):
    """The params to check the checkpoint against: explicit --params (must exist), or
    ./params.yaml when the default checkpoint is used (the pipeline's own pair)."""
    from kfusion.pipeline.predict.predictor import PredictError
    if args.params:
        try:
            return load(args.params)
        except ConfigError as e:
            raise PredictError(str(e)) from None
    if args.checkpoint is None and Path("params.yaml").is_file():
        try:
            return load("params.yaml")
        except ConfigError as e:
            raise PredictError(str(e)) from None
    return None


def run(args: argparse.Namespace) -> int:
    from kfusion.pipeline.predict.predictor import (DEFAULT_CHECKPOINT, PredictError, Predictor,
                                                    check_writable, output_paths)
    try:
        # the output folder first: loading the model takes seconds, a typo in --out should not
        check_writable(output_paths(args.out))
        params = _params(args)
        ffmpeg = params.preprocess.ffmpeg if params is not None else ""
        if getattr(args, "threads", 0):
            import torch
            torch.set_num_threads(args.threads)
        ckpt = args.checkpoint or DEFAULT_CHECKPOINT
        print(f"checkpoint: {ckpt}" + ("" if args.checkpoint else " (the pipeline's; "
                                       "pass --checkpoint to use another)"), flush=True)
        predictor = Predictor(ckpt, device=getattr(args, "device", "auto"), params=params,
                              ffmpeg=ffmpeg, log=_say)
        if predictor.encoder_info.get("encoder_fallback"):
            from kfusion.pipeline.data.encoders import describe
            print(f"warning: this checkpoint was trained on features of the random-weights "
                  f"control encoder, {describe(predictor.encoder_info)}; predictions use the same",
                  file=sys.stderr, flush=True)
        result = predictor.predict(args.audio, args.image, out=args.out, emotion=args.emotion,
                                   side_by_side=args.side_by_side, strict=args.strict,
                                   stride_frames=getattr(args, "stride_frames", 10),
                                   batch_size=getattr(args, "batch_size", 64),
                                   animate=getattr(args, "animate", False),
                                   silence=getattr(args, "silence", "still"))
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    enc = result.encoder
    print(f"model: {describe_model(result.model, enc.get('encoder'), enc.get('encoder_fallback'))}")
    print(f"emotion: {emotion_line(result)}")
    t = result.timings_s
    print(f"predicted {len(result.landmarks_crop)} frames ({result.duration_s:.2f} s at "
          f"{result.fps} fps, {result.n_windows} windows, stride {result.stride_frames}) in "
          f"{result.wall_s:.1f} s (features {t.get('features', 0):.1f} s, model "
          f"{t.get('model', 0):.2f} s, video {t.get('render_mp4', 0):.1f} s)")
    for key, path in result.paths.items():
        print(f"  {key}: {path}")
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def emotion_line(result) -> str:
    """'sad (auto; sad 0.61, ...)', 'happy (given)', or 'neutral (--emotion auto not used: WHY;
    the classifier's guess: ...)': one line either way."""
    p = result.emotion_probabilities or {}
    top = ", ".join(f"{e} {p[e]:.2f}" for e in sorted(p, key=p.get, reverse=True)[:3])
    if result.emotion_source == "auto":
        return f"{result.emotion} (auto; {top})"
    if result.emotion_source == "neutral":
        return (f"neutral (--emotion auto not used: {result.emotion_note}"
                + (f"; the classifier's guess: {top}" if top else "")
                + "; pass --emotion NAME to choose one)")
    return f"{result.emotion} (given)"
