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

from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.io import atomic_path


# Byte-reproducible output: no encoder/muxer version strings, no metadata, one x264 thread.
BITEXACT = ["-threads", "1", "-flags:v", "+bitexact", "-fflags", "+bitexact", "-map_metadata", "-1"]


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: int, size_wh: tuple[int, int],
              audio: np.ndarray | None = None, sample_rate_hz: int = ENCODER_SAMPLE_RATE_HZ,
              audio_file: str | Path | None = None, ffmpeg: str = "", crf: int = 20,
              bitexact: bool = False) -> None:
    """Encode RGB uint8 frames (H, W, 3) at `fps` to H.264 (yuv420p), with either `audio`
    (mono float samples, encoded as AAC) or `audio_file` (an AAC file, its stream copied)."""
    w, h = size_wh
    if w % 2 or h % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    if audio is not None and audio_file is not None:
        raise ValueError("pass audio samples or an audio file, not both")
    with tempfile.TemporaryDirectory() as td, atomic_path(path) as tmp:
        cmd = [ffmpeg_binary(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
        if audio is not None:
            wav = Path(td) / "audio.wav"
            sf.write(wav, np.asarray(audio, np.float32), sample_rate_hz, subtype="FLOAT")
            cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k"]
        elif audio_file is not None:
            cmd += ["-i", str(audio_file), "-map", "0:v", "-map", "1:a", "-c:a", "copy"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                *(BITEXACT if bitexact else ["-movflags", "+faststart"]), "-f", "mp4", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
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
