"""Writing H.264 mp4 files from RGB frames, with an optional AAC audio track muxed in.

Frames are streamed to ffmpeg's stdin (memory stays bounded for long videos); the file appears
under its final name only when ffmpeg has finished successfully.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from pipeline.ffmpeg import ffmpeg_binary
from pipeline.io import atomic_path


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: int, size_wh: tuple[int, int],
              audio: np.ndarray | None = None, sample_rate_hz: int = 16000, ffmpeg: str = "",
              crf: int = 20) -> None:
    """Encode RGB uint8 frames (H, W, 3) at `fps` to H.264 (yuv420p); mux `audio` (mono float) as AAC."""
    w, h = size_wh
    if w % 2 or h % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    with tempfile.TemporaryDirectory() as td, atomic_path(path) as tmp:
        cmd = [ffmpeg_binary(ffmpeg), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
        if audio is not None:
            wav = Path(td) / "audio.wav"
            sf.write(wav, np.asarray(audio, np.float32), sample_rate_hz, subtype="FLOAT")
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            for f in frames:
                if f.shape != (h, w, 3) or f.dtype != np.uint8:
                    raise ValueError(f"frame of shape {f.shape} {f.dtype}, expected ({h}, {w}, 3) uint8")
                proc.stdin.write(f.tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()[-500:]}")
