"""A CREMA-D-layout test set from real clips, for evaluating a checkpoint on "CREMA-D" where the
corpus itself is not at hand (the README's GRID tables: `evaluate.sets.cremad`).

    python scripts/cremad_fixture.py OUT [--realclips ../shared/realclips]

OUT gets CREMA-D's layout: `VideoFlash/<speaker>_<sentence>_<emotion>_<level>.flv` (FLV1 video,
MP3 audio, as CREMA-D ships them) and, for one clip, `AudioWAV/<same stem>.wav` (16 kHz mono),
so both of the index's audio paths are exercised. Each real clip is its own speaker, since the
clips are of different people (an identity from "another clip of the speaker" would be
someone else). Clips that are GRID s1 recordings are not used: they would put the GRID model's
own speaker in a cross-corpus test. The clips stay outside the repository.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# stem in OUT -> clip under realclips (the emotion and level in the stem are CREMA-D codes)
CLIPS = {"1001_DFA_ANG_HI": "other/00001.mp4",                             # LRS2-style crop
         "1004_IEO_SAD_HI": "mead/M030/video/front/sad/level_3/001.mp4"}  # MEAD front, 1080p
WAV_TOO = "1001_DFA_ANG_HI"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--realclips", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "realclips")
    args = ap.parse_args(argv)
    missing = [src for src in CLIPS.values() if not (args.realclips / src).is_file()]
    if missing:
        print(f"error: {args.realclips}: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
    ff = ffmpeg_binary()
    (args.out / "VideoFlash").mkdir(parents=True, exist_ok=True)
    (args.out / "AudioWAV").mkdir(exist_ok=True)
    for stem, src in CLIPS.items():
        subprocess.run([ff, "-v", "error", "-y", "-i", str(args.realclips / src), "-c:v", "flv1",
                        "-q:v", "3", "-c:a", "libmp3lame", "-ar", "44100",
                        str(args.out / "VideoFlash" / f"{stem}.flv")], check=True)
    subprocess.run([ff, "-v", "error", "-y", "-i", str(args.realclips / CLIPS[WAV_TOO]), "-vn",
                    "-ac", "1", "-ar", "16000", str(args.out / "AudioWAV" / f"{WAV_TOO}.wav")],
                   check=True)
    print(f"{args.out}: {len(CLIPS)} clips in CREMA-D's layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
