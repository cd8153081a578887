"""`kfusion predict` speed on CPU: real-time factors (seconds of compute per second of audio)
for 10 s and 60 s of speech, split by step, with loading and rendering reported apart.

The checkpoint is models/best.pt when it exists, else one written by the real training code
for params.yaml's model (one short epoch on synthetic windows: the speed does not depend on
the weights). The speech is real (the shared MEAD / LRS2 clips, concatenated to length); the
face is a real MEAD frame. Steps: decode (ffmpeg), face (dlib), features (log-mel + wav2vec2),
emotion head, model (KFusion over overlapping windows, batched, stitched), render_mp4
(drawing + H.264/AAC encoding), write_landmarks (.npy + .csv). "Naive" beside it: the model
called one window at a time (batch 1), same stride, same run. Medians over --repeats.

    python bench/predict.py [--threads 2] [--repeats 3] [--lengths 10 60]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "train"))  # the tests' synthetic windows

from kfusion.config import load  # noqa: E402
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary  # noqa: E402
from kfusion.pipeline.media.container import decode_audio  # noqa: E402

CLIPS = ROOT.parent / "shared" / "realclips"
SPEECH = ["mead/M030/audio/sad/level_3/001.m4a", "mead/M030/audio/neutral/level_1/001.m4a",
          "other/00001.mp4", "other/bbaf2n.mpg", "other/lbax4n.mpg"]
FACE_VIDEO = "mead/M030/video/front/sad/level_3/001.mp4"


def checkpoint(tmp: Path, params: str) -> tuple[Path, str]:
    best = ROOT / "models" / "best.pt"
    if best.is_file():
        return best, str(best)
    import dataclasses
    from kfusion.pipeline.training.loop import train
    from train_helpers import write_synthetic_windows
    cfg = load(params)
    cfg = dataclasses.replace(cfg, device="cpu", train=dataclasses.replace(
        cfg.train, epochs=1, resume=False, resume_dir=str(tmp / "resume"), out=str(tmp / "models"),
        emotion_classifier_epochs=3))
    windows = write_synthetic_windows(tmp / "windows", n_train=32, n_val=8, n_test=8,
                                      n_mels=cfg.features.n_mels)
    return train(cfg, windows, tmp / "models").best, "params.yaml model, 1 synthetic epoch"


def speech(seconds: float, tmp: Path) -> Path:
    parts = [decode_audio(CLIPS / p) for p in SPEECH if (CLIPS / p).is_file()]
    x = np.concatenate(parts)
    x = np.tile(x, int(np.ceil(seconds * 16000 / len(x))))[: int(seconds * 16000)]
    path = tmp / f"speech_{seconds:g}s.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


def naive_model_seconds(pred, audio: Path, r, stride_frames: int, repeats: int) -> list[float]:
    """The model over the same windows as `r`, one window per call (batch 1); the features
    are computed once more, untimed."""
    from kfusion.shapes import EMOTIONS
    from kfusion.pipeline.predict.predictor import clip_features, window_starts_for
    mel, w2v = clip_features(decode_audio(audio), pred.cfg, pred.encoder())
    T = len(r.landmarks_crop)
    starts = window_starts_for(T, pred.cfg.windows.frames, stride_frames)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        pred._landmarks(mel, w2v, starts, r.identity.landmarks_crop, EMOTIONS.index(r.emotion), T, 1)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--stride-frames", type=int, default=10)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "predict.json"))
    args = ap.parse_args()
    if not (CLIPS / FACE_VIDEO).is_file():
        print(f"bench/predict: {CLIPS} absent (the shared real clips)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from kfusion.pipeline.predict.predictor import Predictor

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    ckpt, ckpt_note = checkpoint(tmp, args.params)
    face = tmp / "face.png"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(CLIPS / FACE_VIDEO), "-frames:v", "1",
                    str(face)], check=True)

    t0 = time.perf_counter()
    pred = Predictor(ckpt, device="cpu")
    pred.encoder()
    pred.backend()
    load_s = {k: round(v, 3) for k, v in pred.load_seconds.items()}
    load_s["total"] = round(time.perf_counter() - t0, 3)

    results = {}
    for seconds in args.lengths:
        audio = speech(seconds, tmp)
        runs = []
        for k in range(args.repeats):
            r = pred.predict(audio, face, out=tmp / f"out_{seconds:g}_{k}.mp4", emotion="auto",
                             stride_frames=args.stride_frames)
            runs.append(r.timings_s)
        med = {step: statistics.median(run[step] for run in runs) for step in runs[0]}
        naive = naive_model_seconds(pred, audio, r, args.stride_frames, max(1, args.repeats))
        pipeline_s = sum(v for k, v in med.items() if k not in ("render_mp4", "write_landmarks"))
        results[f"{seconds:g}s"] = {
            "audio_s": seconds, "frames": len(r.landmarks_crop), "windows": r.n_windows,
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "model_ms_per_window": round(1000 * med["model"] / r.n_windows, 2),
            "rtf": {"model": round(med["model"] / seconds, 4),
                    "model_naive_batch1": round(statistics.median(naive) / seconds, 4),
                    "features": round(med["features"] / seconds, 4),
                    "render_mp4": round(med["render_mp4"] / seconds, 4),
                    "prediction_without_render": round(pipeline_s / seconds, 4),
                    "end_to_end_excl_load": round(sum(med.values()) / seconds, 4)},
        }
    out = {"device": "cpu", "threads": args.threads, "repeats": args.repeats,
           "stride_frames": args.stride_frames, "checkpoint": ckpt_note,
           "params_M": round(sum(p.numel() for p in pred.model.parameters()) / 1e6, 3),
           "encoder": pred.encoder_info, "load_s": load_s, "lengths": results,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
           "cpu_count": os.cpu_count(), "target": "model RTF < 0.1"}
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    parts = [f"{k}: model RTF {v['rtf']['model']:.4f} (batch-1 {v['rtf']['model_naive_batch1']:.4f}), "
             f"features {v['rtf']['features']:.3f}, render {v['rtf']['render_mp4']:.3f}, "
             f"{v['model_ms_per_window']:.0f} ms/window"
             for k, v in results.items()]
    print(f"[bench predict] cpu x{args.threads}: " + "; ".join(parts)
          + f"; load {load_s['total']:.1f} s; peak RSS {out['peak_rss_mb']:.0f} MB; "
          f"loadavg {out['load_average_1_5_15'][0]:.1f} on {os.cpu_count()} cores -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
