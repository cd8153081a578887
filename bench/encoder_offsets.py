"""How late each content encoder's frames run, on the demo corpus (phoneme onsets exact to the
sample): the measurement behind kfusion.shapes.CONTENT_FRAME_OFFSET_S and the default of
`features.ppg_shift_ms` (method: kfusion.pipeline.data.encoders.offsets; docs/encoders.md).

    python bench/encoder_offsets.py --demo data/demo            # after `dvc repro demo`

Writes bench/results/encoder_offsets.json: per feature, the event-triggered peak lag in ms
relative to the frame's stamp, its bootstrap sd over clips, and the lag net of Whisper's
log-mel (the method's own bias on exact onsets), which is what an aligned encoder matches;
with the machine block (bench/record.py). Prints one line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from record import Machine, write_result  # noqa: E402


def features(with_random: bool) -> dict:
    """name -> (fn(samples) -> (n, D), period s, stamp of frame 0 s). The PPG's lag depends on
    what is measured, so it is measured two ways: its log-probabilities (what the model
    reads) and its probabilities, each unshifted and shifted by the default."""
    from kfusion.config import FeaturesConfig
    from kfusion.pipeline.data.encoders import build_encoder
    from kfusion.pipeline.data.encoders import ppg as P
    from kfusion.pipeline.data.encoders import whisper as W
    from kfusion.shapes import CONTENT_FRAME_OFFSET_S as STAMP
    whisper = build_encoder("whisper", FeaturesConfig())
    ppg = build_encoder("ppg", FeaturesConfig(ppg_shift_ms=0.0))
    shift = FeaturesConfig().ppg_shift_ms
    memo: dict = {}

    def logprobs(x):   # one hama pass per clip, whatever the variants
        key = (x.ctypes.data, len(x))
        if memo.get("key") != key:
            memo.update(key=key, lp=ppg.logprobs(x))
        return memo["lp"]

    out = {"log-mel (Whisper's, 100 Hz)": (lambda x: W.log_mel(x).T, 0.01, 0.0),
           "whisper": (whisper.encode, 0.02, STAMP["whisper"]),
           "ppg log-probabilities, unshifted": (logprobs, 0.02, STAMP["ppg"]),
           f"ppg log-probabilities, shift {shift:g} ms (default)":
               (lambda x: P.shift_frames(logprobs(x), shift), 0.02, STAMP["ppg"]),
           "ppg probabilities, unshifted": (lambda x: np.exp(logprobs(x)), 0.02, STAMP["ppg"]),
           f"ppg probabilities, shift {shift:g} ms (default)":
               (lambda x: np.exp(P.shift_frames(logprobs(x), shift)), 0.02, STAMP["ppg"])}
    if with_random:
        rand = build_encoder("random", FeaturesConfig())
        out["random wav2vec2"] = (rand.encode, 0.02, STAMP["random"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="data/demo", help="the demo stage's folder")
    ap.add_argument("--limit", type=int, default=0, help="clips (0 = all)")
    ap.add_argument("--no-random", action="store_true", help="skip the random wav2vec2 (slow)")
    ap.add_argument("--out", default=str(REPO / "bench/results/encoder_offsets.json"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from kfusion.pipeline.data.encoders.offsets import demo_clips, measure
    machine = Machine.start(threads=1)
    t0 = time.perf_counter()
    res = measure(demo_clips(args.demo, args.limit), features(not args.no_random))
    ref = res["log-mel (Whisper's, 100 Hz)"]["offset_ms"]
    for r in res.values():
        r["net_of_log_mel_ms"] = round(r["offset_ms"] - ref, 1)
    n_clips = len(list(Path(args.demo, "corpus").glob("*/audio/*/level_*/*.m4a")))
    out = {"demo": str(args.demo), "clips": min(args.limit or n_clips, n_clips),
           "seconds": round(time.perf_counter() - t0, 1),
           "convention": "ms an onset shows after the frame's stamp (late > 0); net = minus "
                         "the log-mel's, the method's own bias on exact onsets",
           "features": res}
    write_result("encoder_offsets", out, machine, f"{out['clips']} clips: " + "; ".join(
        f"{k} {v['net_of_log_mel_ms']:+.1f} ms (sd {v['boot_sd_ms']})" for k, v in res.items()),
        args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
