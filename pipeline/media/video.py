"""Video frames at a constant frame rate, streamed from ffmpeg through a pipe.

`-vf fps=30` resamples any input (25 fps GRID, 30 fps MEAD, variable-frame-rate phone
video) onto a constant 30 fps grid: frame t is the source frame shown at t/30 s, so a clip of
duration d gives round(d x 30) frames. Frames come out as PGM/PPM images on stdout
(`-f image2pipe`): each carries its own size in a short header, so no probe is needed and
rotation metadata (which ffmpeg applies) or odd sample aspect ratios cannot make us slice the
byte stream at the wrong width. We read one frame at a time from a buffered pipe, so memory
is one frame plus the pipe buffer, whatever the clip's length or resolution.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.media.container import MediaError

PixFmt = Literal["gray", "rgb24", "yuv420p"]
# yuv420p comes as ffmpeg's PGMYUV: the Y plane (the gray image, free) on top of the U and V
# rows side by side, in a P5 image of height h * 3/2; colour costs half the bytes of RGB.
_CODEC = {"gray": ("pgm", b"P5", 1), "rgb24": ("ppm", b"P6", 3), "yuv420p": ("pgmyuv", b"P5", 1)}


def ffmpeg_frames_cmd(path: str | Path, *, ffmpeg: str = "", fps: int = 30,
                      pix_fmt: PixFmt = "gray", threads: int = 0) -> list[str]:
    codec, _, _ = _CODEC[pix_fmt]
    vf = f"fps={fps}"
    if pix_fmt == "yuv420p":   # 4:2:0 needs even sizes: drop an odd last row/column (no resampling)
        vf += ",crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"
    return [ffmpeg_binary(ffmpeg), "-nostdin", "-v", "error", "-threads", str(threads),
            "-i", str(path), "-map", "0:v:0", "-vf", vf, "-pix_fmt", pix_fmt,
            "-c:v", codec, "-f", "image2pipe", "-"]


def _read_header(f, magic: bytes) -> tuple[int, int] | None:
    """Parse 'P5\\nW H\\n255\\n' (ffmpeg's exact layout); None at end of stream."""
    line = f.readline()
    if not line:
        return None
    if line.strip() != magic:
        raise MediaError("decode_failed", f"unexpected frame header {line[:16]!r} from ffmpeg")
    w, h = (int(v) for v in f.readline().split())
    if int(f.readline()) != 255:
        raise MediaError("decode_failed", "ffmpeg wrote a frame with more than 8 bits per sample")
    return w, h


def iter_frames(path: str | Path, *, ffmpeg: str = "", fps: int = 30, pix_fmt: PixFmt = "gray",
                max_frames: int | None = None, threads: int = 0,
                buffer_bytes: int = 1 << 22) -> Iterator[np.ndarray]:
    """Yield frames (H, W) uint8 for gray or (H, W, 3) RGB, at a constant `fps`.

    Raises MediaError("no_video_stream" | "decode_failed", message) when ffmpeg yields no frame.
    Stopping early (break, max_frames) terminates ffmpeg.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError("missing_file", f"{path}: no such file")
    _, magic, channels = _CODEC[pix_fmt]
    proc = subprocess.Popen(ffmpeg_frames_cmd(path, ffmpeg=ffmpeg, fps=fps, pix_fmt=pix_fmt,
                                              threads=threads),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=buffer_bytes)
    n = 0
    try:
        while max_frames is None or n < max_frames:
            size = _read_header(proc.stdout, magic)
            if size is None:
                break
            w, h = size
            buf = proc.stdout.read(w * h * channels)
            if len(buf) < w * h * channels:
                break  # truncated last frame of a damaged file: keep what we have
            frame = np.frombuffer(buf, np.uint8).reshape((h, w, channels) if channels == 3 else (h, w))
            n += 1
            yield frame
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        proc.wait()
    if n == 0:
        if "matches no streams" in err or "does not contain any stream" in err:
            raise MediaError("no_video_stream", f"{path}: no video stream")
        raise MediaError("decode_failed", f"{path}: ffmpeg decoded no video frame: "
                                          f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}")


def yuv_gray(frame: np.ndarray) -> np.ndarray:
    """The Y plane of a PGMYUV frame (h * 3/2, w): the gray image (h, w), without a copy."""
    return frame[: frame.shape[0] * 2 // 3]


def yuv_rgb(frame: np.ndarray) -> np.ndarray:
    """PGMYUV frame (h * 3/2, w) -> RGB (h, w, 3)."""
    h, w = frame.shape[0] * 2 // 3, frame.shape[1]
    chroma = frame[h:]
    i420 = np.concatenate([frame[:h].ravel(), chroma[:, : w // 2].ravel(), chroma[:, w // 2:].ravel()])
    return cv2.cvtColor(i420.reshape(h * 3 // 2, w), cv2.COLOR_YUV2RGB_I420)


def read_frame(path: str | Path, index: int, *, ffmpeg: str = "", fps: int = 30,
               pix_fmt: PixFmt = "rgb24") -> np.ndarray:
    """Frame `index` of the constant-rate stream (decodes up to it; cheap for early frames)."""
    for t, frame in enumerate(iter_frames(path, ffmpeg=ffmpeg, fps=fps, pix_fmt=pix_fmt,
                                          max_frames=index + 1)):
        if t == index:
            return frame
    raise MediaError("decode_failed", f"{path}: has no frame {index} at {fps} fps")


def downscale(frame: np.ndarray, max_px: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most `max_px` (area filter); returns (image, scale)."""
    h, w = frame.shape[:2]
    s = max_px / max(h, w)
    if max_px <= 0 or s >= 1.0:
        return frame, 1.0
    small = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return small, s


def crop_square(frame: np.ndarray, box: np.ndarray, out_px: int) -> np.ndarray:
    """Crop box (x0, y0, side) in integer source px (may leave the frame: black padding),
    resized to out_px x out_px with an area filter (no aliasing when shrinking 1080p)."""
    x0, y0, side = (int(round(v)) for v in box)
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    roi = frame[sy0:sy1, sx0:sx1]
    if (sx0, sy0, sx1, sy1) != (x0, y0, x0 + side, y0 + side):
        roi = cv2.copyMakeBorder(roi, sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1,
                                 cv2.BORDER_CONSTANT, value=0) if roi.size else \
            np.zeros((side, side) + frame.shape[2:], np.uint8)
    interp = cv2.INTER_AREA if side > out_px else cv2.INTER_LINEAR
    return cv2.resize(roi, (out_px, out_px), interpolation=interp)
