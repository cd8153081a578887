"""What each audio-augmentation copy costs and what it does to the speech the encoder hears.

    python bench/audio_augment.py          # writes bench/results/audio_augment.json

On 24 real GRID s1 clips (../shared/grid, with their aligned words), for the clean speech
and each copy (`features.audio_augment`, pipeline/data/perturb.py):
- the perturbation's real-time factor (wall / audio seconds, CPU seconds beside it);
- Whisper tiny.en's word error rate on the copy against the aligned words (the speech is
  still the speech: a copy the recogniser cannot read would teach the model noise). GRID's
  grammar is not English (tiny.en hears "bin blue" as "BIMBLUE"), so the clean speech's rate
  is high: compare each copy with it, not with zero;
- the cosine similarity of the copy's encoder states to the clean ones, frame by frame (how
  far the copy moves the model's input);
- the bytes a copy adds per training window (its mel and encoder arrays).
Prints one line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from record import Machine, write_result  # noqa: E402

GRID = REPO.parent / "shared" / "grid"
COPIES = ("pitch+2", "pitch-2", "noise20", "noise10")
N_CLIPS = 24


def grid_clips(n: int):
    """(clip id, 16 kHz samples, aligned words) of the first n GRID s1 clips by id."""
    from kfusion.pipeline.media.container import decode_audio
    out = []
    for mpg in sorted((GRID / "s1").glob("*.mpg"))[:n]:
        words = [ln.split()[2] for ln in (GRID / "alignments/s1" / f"{mpg.stem}.align")
                 .read_text().splitlines()]
        out.append((mpg.stem, decode_audio(mpg), [w for w in words if w != "sil"]))
    return out


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def words_of(text: str) -> list[str]:
    """Whisper's text as GRID's words: lower case, no punctuation, digits and letters spelled
    as GRID's alignments spell them."""
    import re
    digits = "zero one two three four five six seven eight nine".split()
    out = []
    spaced = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text.lower())   # F2 -> f 2
    for w in re.sub(r"[^a-z0-9 ]", " ", spaced).split():
        out += [digits[int(c)] for c in w] if w.isdigit() else [w]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=N_CLIPS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from kfusion.config import FeaturesConfig
    from kfusion.pipeline.data.encoders import build_encoder
    from kfusion.pipeline.data.encoders.whisper import transcribe
    from kfusion.config import parse_variant
    from kfusion.pipeline.data.perturb import perturb
    from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ
    machine = Machine.start(1)
    clips = grid_clips(args.clips)
    seconds = sum(len(x) for _, x, _ in clips) / ENCODER_SAMPLE_RATE_HZ
    enc = build_encoder("whisper", FeaturesConfig())
    clean_states = [enc.encode(x) for _, x, _ in clips]
    figures = {"clips": len(clips), "audio_seconds": round(seconds, 2), "encoder": enc.record["encoder"],
               # one copy's arrays per training window: 100 x 80 float32 mel + 49 x 384 float16
               "bytes_per_training_window": 100 * 80 * 4 + 49 * 384 * 2, "copies": {}}
    for name in ("clean",) + COPIES:
        t0, c0 = time.perf_counter(), time.process_time()
        audio = [x if name == "clean" else perturb(x, parse_variant(name), cid) for cid, x, _ in clips]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        errors = sum(word_errors(w, words_of(transcribe(a))) for a, (_, _, w) in zip(audio, clips))
        states = [enc.encode(a) for a in audio]
        cos = np.concatenate([np.sum(a.astype(np.float32) * b.astype(np.float32), 1)
                              / (np.linalg.norm(a.astype(np.float32), axis=1)
                                 * np.linalg.norm(b.astype(np.float32), axis=1) + 1e-9)
                              for a, b in zip(states, clean_states)])
        figures["copies"][name] = {
            "perturb_real_time_factor": round(wall / seconds, 5),
            "perturb_cpu_per_audio_second": round(cpu / seconds, 5),
            "whisper_word_error_rate": round(errors / sum(len(w) for _, _, w in clips), 4),
            "encoder_cosine_to_clean": round(float(cos.mean()), 4)}
    c = figures["copies"]
    summary = (f"{len(clips)} GRID clips ({seconds:.0f} s): Whisper WER clean "
               f"{c['clean']['whisper_word_error_rate']:.3f}, "
               + ", ".join(f"{k} {c[k]['whisper_word_error_rate']:.3f} (cos {c[k]['encoder_cosine_to_clean']:.2f},"
                           f" RTF {c[k]['perturb_real_time_factor']:.4f})" for k in COPIES))
    write_result("audio_augment", figures, machine, summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
