"""Writing H.264 mp4 files from RGB (or I420) frames, with an optional AAC audio track muxed in.

Frames are streamed to ffmpeg's stdin (memory stays bounded for long videos); the file appears
under its final name only when ffmpeg has finished successfully.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.io import atomic_path


# Byte-reproducible output: no encoder/muxer version strings, no metadata, one x264 thread.
BITEXACT = ["-threads", "1", "-flags:v", "+bitexact", "-fflags", "+bitexact", "-map_metadata", "-1"]


# The raw input formats: the array shape of one frame of a (w, h) video.
PIX_FMTS = {"rgb24": lambda w, h: (h, w, 3),          # RGB, one (H, W, 3) array per frame
            "yuv420p": lambda w, h: (h * 3 // 2, w)}  # I420 as OpenCV writes it: Y, then U, V


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], *, fps: int, size_wh: tuple[int, int],
              audio: np.ndarray | None = None, sample_rate_hz: int = ENCODER_SAMPLE_RATE_HZ,
              audio_file: str | Path | None = None, ffmpeg: str = "", crf: int = 20,
              bitexact: bool = False, pix_fmt: str = "rgb24", preset: str = "veryfast",
              x264_params: str = "",
              audio_codec: Sequence[str] = ("-c:a", "aac", "-b:a", "128k")) -> None:
    """Encode uint8 frames at `fps` to H.264 (yuv420p), with either `audio` (mono float
    samples, encoded with `audio_codec`) or `audio_file` (an AAC file, its stream copied).

    frames: arrays in `pix_fmt` (PIX_FMTS), each one frame or a block of frames (n, ...): a
    block goes to ffmpeg in one write. "yuv420p" frames (cv2.COLOR_RGB2YUV_I420) spare
    ffmpeg's RGB conversion, which costs more than the H.264 encoding of a 256 px face."""
    w, h = size_wh
    if w % 2 or h % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    if audio is not None and audio_file is not None:
        raise ValueError("pass audio samples or an audio file, not both")
    frame_shape = PIX_FMTS[pix_fmt](w, h)
    with tempfile.TemporaryDirectory() as td, atomic_path(path) as tmp:
        cmd = [ffmpeg_binary(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
        if audio is not None:
            wav = Path(td) / "audio.wav"
            sf.write(wav, np.asarray(audio, np.float32), sample_rate_hz, subtype="FLOAT")
            cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", *audio_codec]
        elif audio_file is not None:
            cmd += ["-i", str(audio_file), "-map", "0:v", "-map", "1:a", "-c:a", "copy"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                *(["-x264-params", x264_params] if x264_params else []), "-pix_fmt", "yuv420p",
                *(BITEXACT if bitexact else ["-movflags", "+faststart"]), "-f", "mp4", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            for f in frames:
                if f.shape[-len(frame_shape):] != frame_shape or f.ndim > len(frame_shape) + 1 \
                        or f.dtype != np.uint8:
                    raise ValueError(f"frame of shape {f.shape} {f.dtype}, expected {frame_shape} "
                                     f"uint8 ({pix_fmt}) or a block of them")
                proc.stdin.write(np.ascontiguousarray(f).data)
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()[-500:]}")
