"""Files of the demo corpus: ffmpeg encoding (H.264 mp4 with AAC, AAC m4a) into MEAD's layout.
The frames come from the piecewise-affine warp in kfusion.pipeline.media.warp."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable

import numpy as np

from kfusion.pipeline.io import atomic_path
from kfusion.pipeline.media.mp4 import write_mp4

# ----------------------------------------------------------------------------- ffmpeg
_BITEXACT = ["-fflags", "+bitexact", "-map_metadata", "-1"]


def _run(cmd: list[str], stdin_bytes: bytes | None = None) -> None:
    r = subprocess.run(cmd, input=stdin_bytes, capture_output=True)
    if r.returncode != 0:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"ffmpeg failed ({r.returncode}): {' | '.join(tail)}")


def encode_audio(path: Path, samples: np.ndarray, sample_rate_hz: int, out_rate_hz: int,
                 ffmpeg: str) -> None:
    """int16 mono samples -> AAC in an .m4a at out_rate_hz (ffmpeg's resampler), bit-exact."""
    with atomic_path(path) as tmp:
        _run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "s16le", "-ar", str(sample_rate_hz),
              "-ac", "1", "-i", "pipe:0", "-af", f"aresample={out_rate_hz}", "-c:a", "aac",
              "-b:a", "96k", "-flags:a", "+bitexact", *_BITEXACT, "-f", "ipod", str(tmp)],
             stdin_bytes=samples.astype("<i2").tobytes())


def encode_video(path: Path, frames: Iterable[np.ndarray], *, frame_px: int, fps: int,
                 audio: Path, ffmpeg: str, crf: int) -> None:
    """RGB frames piped into ffmpeg: H.264 (yuv420p) at `fps`, the m4a's AAC stream copied in,
    byte-reproducible."""
    write_mp4(path, frames, fps=fps, size_wh=(frame_px, frame_px), audio_file=audio,
              ffmpeg=ffmpeg, crf=crf, bitexact=True)
