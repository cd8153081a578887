"""`kfusion predict` end to end on CPU: the real-time factor (seconds of predict() per second
of speech, everything but loading: decode, face, features, emotion, model, landmark files,
drawing, H.264/AAC mux) for 10 s and 60 s of real speech, with loading reported apart.

Targets (issue 16): RTF <= 0.05 for both lengths on 2 cores, load < 2 s.

Each measurement runs in a fresh worker process (a user's `kfusion predict` is one): it
imports, loads a Predictor (timed), then calls predict() twice per length, writing the mp4
and the landmark files. "rtf" is the first call's wall time / audio seconds (the median over
--repeats workers), "rtf_second_call" the second's; "cpu_rtf" counts the CPU seconds of the
process and its ffmpeg children instead, which a busy machine inflates less than wall time.

--baseline REV (default: the merge-base with main) runs the same workers on that commit's
code (exported with `git archive`, imported ahead of this tree), alternated with this tree's
in one run, so the before/after ratios share the machine's load; the landmarks of the two
are compared too. --baseline none skips it.

The checkpoint is models/best.pt when it exists, else one written by the real training code
for params.yaml's model (one short epoch on synthetic windows: speed does not depend on the
weights). The speech is real (the shared MEAD / LRS2 clips, concatenated to length); the
face a real 1080p MEAD frame. The encoder is the checkpoint's (Whisper tiny.en here).

    python bench/predict.py [--threads 2] [--repeats 3] [--lengths 10 60] [--baseline REV]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "realclips"
SPEECH = ["mead/M030/audio/sad/level_3/001.m4a", "mead/M030/audio/neutral/level_1/001.m4a",
          "other/00001.mp4", "other/bbaf2n.mpg", "other/lbax4n.mpg"]
FACE_VIDEO = "mead/M030/video/front/sad/level_3/001.mp4"
TARGET_RTF, TARGET_LOAD_S = 0.05, 2.0
CALLS = 2   # predict() calls per length in a worker: the first (what a CLI user waits for), a second


# ----------------------------------------------------------------------------- worker
def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def worker(args: argparse.Namespace) -> int:
    """One process: import, load, CALLS predictions per length; JSON on stdout's last line."""
    t0 = time.perf_counter()
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from kfusion.pipeline.predict.predictor import Predictor
    t1 = time.perf_counter()
    pred = Predictor(args.checkpoint, device="cpu")
    pred.encoder()
    pred.backend()
    if hasattr(pred, "wait_loaded"):
        pred.wait_loaded()
    load_s = time.perf_counter() - t1
    out = {"import_s": t1 - t0, "load_s": load_s,
           "load_parts_s": {k: round(v, 3) for k, v in pred.load_seconds.items()},
           "code": str(Path(sys.modules[Predictor.__module__].__file__).parents[2]), "lengths": {}}
    work = Path(args.work)
    for seconds in args.lengths:
        calls = []
        for k in range(CALLS):
            c, t = cpu_seconds(), time.perf_counter()
            r = pred.predict(work / f"speech_{seconds:g}s.wav", work / "face.png",
                             out=work / f"out_{args.tag}_{seconds:g}_{k}.mp4", emotion="auto",
                             stride_frames=args.stride_frames)
            calls.append({"wall_s": time.perf_counter() - t, "cpu_s": cpu_seconds() - c,
                          "steps_s": {k: round(v, 4) for k, v in r.timings_s.items()}})
        np.save(work / f"landmarks_{args.tag}_{seconds:g}.npy", r.landmarks_crop)
        out["lengths"][f"{seconds:g}"] = {"calls": calls, "windows": r.n_windows,
                                          "frames": len(r.landmarks_crop)}
        if args.profile:
            out["lengths"][f"{seconds:g}"]["profile"] = profile(
                pred, work / f"speech_{seconds:g}s.wav", work / "face.png",
                work / f"profile_{seconds:g}.mp4")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


def profile(pred, audio: Path, face: Path, out: Path) -> dict:
    """Each step of predict() alone, in turn, on one core (model: one worker): CPU and wall
    seconds. What the overlapping run spreads over two cores; this tree's code only."""
    from kfusion.pipeline.predict import predictor as P
    from kfusion.pipeline.predict.render import SpeechTrack, video_blocks, write_video
    from kfusion.pipeline.predict.stitch import window_starts
    steps: dict[str, dict[str, float]] = {}

    def step(name, fn):
        c, t = cpu_seconds(), time.perf_counter()
        value = fn()
        steps[name] = {"cpu_s": round(cpu_seconds() - c, 3), "wall_s": round(time.perf_counter() - t, 3)}
        return value
    cfg = pred.cfg
    with P.one_torch_thread():
        samples = step("decode_audio", lambda: P.read_audio(audio, cfg))
        ident, _ = step("face", lambda: P.find_identity(face, cfg, backend=pred.backend()))
        w2v = step("whisper", lambda: P.content_features(samples, cfg, pred.encoder()))
        mel = step("log_mel", lambda: P.mel_features(samples, cfg, pred.encoder_info["encoder"],
                                                     pred.mel_transform()))
        T = round(len(samples) / cfg.audio.sample_rate_hz * cfg.landmarks.fps)
        starts = window_starts(T, cfg.windows.frames, 10)
        step("emotion", lambda: pred._emotion_probabilities(mel, w2v, starts, 64))
        crop = step("model", lambda: pred._landmarks(mel, w2v, starts, ident.landmarks_crop, 0, T, 64, 1))
        result = P.PredictResult(landmarks_crop=crop, landmarks_image=crop, fps=cfg.landmarks.fps,
                                 duration_s=T / cfg.landmarks.fps, emotion="neutral",
                                 emotion_source="given", emotion_probabilities=None, emotion_note="",
                                 checkpoint=pred.checkpoint, encoder={}, identity=ident,
                                 n_windows=len(starts), stride_frames=10)
        paths = P.output_paths(out)
        step("landmark_files", lambda: P.write_landmark_files(result, paths))
        track = step("aac", lambda: finished(SpeechTrack(samples, cfg.audio.sample_rate_hz)))
        step("draw_i420", lambda: sum(len(b) for b in video_blocks(ident.crop_rgb, crop, ident.landmarks_crop)))
        step("video", lambda: write_video(paths["video"], ident.crop_rgb, crop, ident.landmarks_crop,
                                          track, cfg.landmarks.fps))
        track.close()
    return steps


def finished(track):
    track.result()   # waits for its ffmpeg
    return track


# ----------------------------------------------------------------------------- setup
def checkpoint(tmp: Path, params: str) -> tuple[Path, str]:
    best = ROOT / "models" / "best.pt"
    if best.is_file():
        return best, str(best)
    import dataclasses
    sys.path.insert(0, str(ROOT / "tests" / "train"))   # the tests' synthetic windows
    from kfusion.config import load
    from kfusion.pipeline.training.loop import train
    from train_helpers import write_synthetic_windows
    cfg = load(params)
    cfg = dataclasses.replace(cfg, device="cpu", train=dataclasses.replace(
        cfg.train, epochs=1, resume=False, resume_dir=str(tmp / "resume"), out=str(tmp / "models"),
        emotion_classifier_epochs=3))
    windows = write_synthetic_windows(tmp / "windows", n_train=32, n_val=8, n_test=8,
                                      n_mels=cfg.features.n_mels)
    return train(cfg, windows, tmp / "models").best, "params.yaml model, 1 synthetic epoch"


def inputs(work: Path, lengths: list[float]) -> None:
    """face.png (a real 1080p frame) and speech_<N>s.wav (real speech, concatenated)."""
    import numpy as np
    import soundfile as sf
    from kfusion.pipeline.media.container import decode_audio
    from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(CLIPS / FACE_VIDEO),
                    "-frames:v", "1", str(work / "face.png")], check=True)
    x = np.concatenate([decode_audio(CLIPS / p) for p in SPEECH if (CLIPS / p).is_file()])
    for seconds in lengths:
        n = int(seconds * 16000)
        sf.write(work / f"speech_{seconds:g}s.wav", np.tile(x, -(-n // len(x)))[:n], 16000,
                 subtype="FLOAT")


def baseline_tree(rev: str, tmp: Path) -> tuple[Path, str]:
    """REV's code exported, laid out as the installed namespace (kfusion, kfusion.model,
    kfusion.pipeline, kfusion.stages), for PYTHONPATH: (the folder, the commit)."""
    if rev == "merge-base":
        rev = subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                             capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                            capture_output=True, text=True, check=True).stdout.strip()
    src, farm = tmp / "baseline-src", tmp / "baseline-path" / "kfusion"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    shutil.copytree(src / "kfusion", farm)
    for sub in ("model", "pipeline", "stages"):
        (farm / sub).symlink_to(src / sub)
    return farm.parent, commit


# ----------------------------------------------------------------------------- parent
def run_worker(args, tag: str, work: Path, ckpt: Path, pythonpath: Path | None,
               profile_steps: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tag", tag,
           "--work", str(work), "--checkpoint", str(ckpt), "--threads", str(args.threads),
           "--stride-frames", str(args.stride_frames), "--lengths", *map(str, args.lengths),
           *(["--profile"] if profile_steps else [])]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)   # cwd: not this tree
    if r.returncode != 0:
        raise RuntimeError(f"bench worker ({tag}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def med(values) -> float:
    return round(statistics.median(values), 4)


def summarise(runs: list[dict], lengths: list[float]) -> dict:
    """Medians over the workers of one code version."""
    out = {"import_s": med(r["import_s"] for r in runs), "load_s": med(r["load_s"] for r in runs),
           "load_parts_s": {k: med(r["load_parts_s"][k] for r in runs)
                            for k in runs[0]["load_parts_s"]},
           "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
           "code": sorted({r["code"] for r in runs}), "lengths": {}}
    for seconds in lengths:
        key = f"{seconds:g}"
        calls = [r["lengths"][key]["calls"] for r in runs]
        first = [c[0] for c in calls]
        steps = {k: med(c["steps_s"].get(k, 0.0) for c in first) for k in first[0]["steps_s"]}
        out["lengths"][f"{key}s"] = {
            "audio_s": seconds, "frames": runs[0]["lengths"][key]["frames"],
            "windows": runs[0]["lengths"][key]["windows"],
            "rtf": med(c["wall_s"] / seconds for c in first),
            "rtf_second_call": med(c[1]["wall_s"] / seconds for c in calls),
            "cpu_rtf": med(c["cpu_s"] / seconds for c in first),
            "wall_s_runs": [round(c["wall_s"], 3) for c in first],
            "steps_s": steps,     # each step's own seconds (overlapping ones overlap)
        }
        profiled = [r["lengths"][key]["profile"] for r in runs if "profile" in r["lengths"][key]]
        if profiled:   # each step alone, one core: where the CPU goes
            prof = profiled[0]
            out["lengths"][f"{key}s"]["profile"] = {
                **prof, "total_cpu_s": round(sum(v["cpu_s"] for k, v in prof.items()
                                                 if k != "draw_i420"), 3)}
    return out


def compare(work: Path, lengths: list[float]) -> dict:
    """Per length, the largest |new - before| of the landmarks (crop px); None: other shapes."""
    import numpy as np
    out = {}
    for seconds in lengths:
        a = np.load(work / f"landmarks_new_{seconds:g}.npy")
        b = np.load(work / f"landmarks_baseline_{seconds:g}.npy")
        out[f"{seconds:g}s"] = float(np.abs(a - b).max()) if a.shape == b.shape else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--stride-frames", type=int, default=10)
    ap.add_argument("--baseline", default="merge-base",
                    help="commit to compare with, alternated in this run; 'none' to skip")
    ap.add_argument("--results", default=None, help="default bench/results/predict.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="new", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if not (CLIPS / FACE_VIDEO).is_file():
        print(f"bench/predict: {CLIPS} absent (the shared real clips)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "bench"))
    from record import Machine, write_result

    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        ckpt, ckpt_note = checkpoint(tmp, args.params)
        inputs(tmp, args.lengths)
        base_path, base_commit = (None, None) if args.baseline == "none" \
            else baseline_tree(args.baseline, tmp)
        machine = Machine.start(args.threads)
        runs: dict[str, list[dict]] = {"new": [], "baseline": []}
        for k in range(args.repeats):   # alternated: both see the same load
            if base_path is not None:
                runs["baseline"].append(run_worker(args, "baseline", tmp, ckpt, base_path))
            runs["new"].append(run_worker(args, "new", tmp, ckpt, None, profile_steps=k == 0))
        figures = figures_of(args, runs, ckpt_note, base_commit, tmp)
        write_result("predict", figures, machine, summary_line(figures), out=args.results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def figures_of(args, runs: dict[str, list[dict]], ckpt_note: str, base_commit: str | None,
               work: Path) -> dict:
    new = summarise(runs["new"], args.lengths)
    figures = {"device": "cpu", "threads": args.threads, "repeats": args.repeats,
               "stride_frames": args.stride_frames, "checkpoint": ckpt_note,
               "target": {"rtf": TARGET_RTF, "load_s": TARGET_LOAD_S},
               **new,
               "met": {"rtf": all(v["rtf"] <= TARGET_RTF for v in new["lengths"].values()),
                       "load_s": new["load_s"] < TARGET_LOAD_S}}
    if base_commit is not None:   # before / after, side by side per length
        base = summarise(runs["baseline"], args.lengths)
        diffs = compare(work, args.lengths)
        figures["before"] = {"commit": base_commit, **{k: v for k, v in base.items() if k != "lengths"}}
        figures["speedup_load"] = round(base["load_s"] / new["load_s"], 2)
        for k, v in new["lengths"].items():
            b = base["lengths"][k]
            v["before"] = {"rtf": b["rtf"], "cpu_rtf": b["cpu_rtf"], "steps_s": b["steps_s"]}
            v["speedup"] = round(b["rtf"] / v["rtf"], 2)
            v["speedup_cpu"] = round(b["cpu_rtf"] / v["cpu_rtf"], 2)
            v["landmarks_max_abs_diff_px"] = diffs[k]
    return figures


def summary_line(f: dict) -> str:
    parts = [f"{k} RTF {v['rtf']:.3f} (cpu {v['cpu_rtf']:.3f})" for k, v in f["lengths"].items()]
    line = (f"{'; '.join(parts)}; load {f['load_s']:.2f} s (+ import {f['import_s']:.1f} s); "
            f"target RTF <= {TARGET_RTF}: {'met' if f['met']['rtf'] else 'NOT met'}, "
            f"load < {TARGET_LOAD_S:g} s: {'met' if f['met']['load_s'] else 'NOT met'}")
    if "before" in f:
        L = f["lengths"]
        diff = max((v["landmarks_max_abs_diff_px"] or 0) for v in L.values())
        line += (f"; vs {f['before']['commit']}: "
                 + ", ".join(f"{k} {v['speedup']:.1f}x" for k, v in L.items())
                 + f", load {f['speedup_load']:.1f}x, landmarks max diff {diff:.1e} px")
    return line


if __name__ == "__main__":
    sys.exit(main())
