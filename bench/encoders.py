"""Speed and memory of each content encoder on 60 s of real speech, at 1 and 2 threads.

    python bench/encoders.py                  # writes bench/results/encoders.json

The speech: the first wavs of ../shared/unseen (five real speakers) concatenated and cut to
60 s. Two workloads per encoder, each in a fresh process (so its peak RSS is its own):
`clips`: the 60 s cut into 20 clips of 3 s (a GRID-like training corpus) through
encode_many, batched where the encoder allows (wav2vec2 by length, Whisper equal lengths;
hama's engine takes one clip); `long`: the 60 s as one clip (predict on long audio:
chunked). Real-time factor = wall seconds / audio seconds (lower is faster), with the
process's CPU seconds beside it: on a shared machine the wall clock is inflated by the
other load, which is recorded (1-minute load average before and after each run; the whole
bench's in the machine block of bench/record.py). Prints one line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from record import Machine, write_result  # noqa: E402

SHARED = REPO.parent / "shared"
ENCODERS = (("random", "random wav2vec2-base"), ("whisper", "Whisper tiny.en, CTranslate2 int8"),
            ("ppg", "hama PPG (single-threaded engine)"))
SECONDS = 60.0


def speech(seconds: float = SECONDS):
    import numpy as np
    from kfusion.pipeline.media.container import decode_audio
    pieces, names = [], []
    for wav in sorted((SHARED / "unseen").glob("*/*.wav")):
        pieces.append(decode_audio(wav))
        names.append(str(wav.relative_to(SHARED)))
        if sum(map(len, pieces)) >= seconds * 16000:
            return np.concatenate(pieces)[:int(seconds * 16000)], names
    sys.exit(f"error: {SHARED / 'unseen'} holds less than {seconds} s of speech")


def run_one(name: str, threads: int, workload: str) -> dict:
    """In this (fresh) process: load the encoder, warm it up, time one pass."""
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    from kfusion.config import FeaturesConfig
    from kfusion.pipeline.data.encoders import build_encoder
    x, _ = speech()
    t = time.perf_counter()
    enc = build_encoder(name, FeaturesConfig(), device="cpu", threads=threads)
    load_s = time.perf_counter() - t
    clips = [x[i:i + 48000] for i in range(0, len(x), 48000)]   # 20 x 3 s
    enc.encode_many(clips[:2])                                   # warm-up
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    out = enc.encode_many(clips) if workload == "clips" else [enc.encode(x)]
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert sum(len(h) for h in out) > 0 and all(np.isfinite(h.astype(np.float32)).all() for h in out)
    return {"encoder": name, "threads": threads, "workload": workload, "load_s": round(load_s, 2),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rtf": round(wall / SECONDS, 4),
            "cpu_rtf": round(cpu / SECONDS, 4), "feature_dim": enc.record["feature_dim"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "load_average_before": load0, "load_average_after": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("ENCODER", "THREADS", "WORKLOAD"),
                    help=argparse.SUPPRESS)   # the child process's job
    ap.add_argument("--out", default=str(REPO / "bench/results/encoders.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.one[2])))
        return 0
    machine = Machine.start(threads=2)   # runs at 1 and 2 threads; each run records its own
    runs, env = [], {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name, _ in ENCODERS:
        for threads in (1, 2):
            for workload in ("clips", "long"):
                env["OMP_NUM_THREADS"] = str(threads)
                r = subprocess.run([sys.executable, __file__, "--one", name, str(threads), workload],
                                   capture_output=True, text=True, env=env, check=True)
                runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"  {name} {threads} thread(s) {workload}: RTF {runs[-1]['rtf']:.3f}",
                      file=sys.stderr)
    out = {"audio_s": SECONDS, "speech": speech()[1], "encoders": dict(ENCODERS), "runs": runs}
    one = {r["encoder"]: r for r in runs if r["threads"] == 1 and r["workload"] == "clips"}
    write_result("encoders", out, machine, "60 s of speech as 3 s clips, 1 thread: " + ", ".join(
        f"{n} RTF {one[n]['rtf']:.3f} ({one[n]['peak_rss_mb']} MB)" for n, _ in ENCODERS),
        args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
