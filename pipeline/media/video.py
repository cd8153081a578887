"""Video frames at a constant frame rate, streamed from ffmpeg through a pipe.

`-vf fps=30` resamples any input (25 fps GRID, 30 fps MEAD, variable-frame-rate phone
video) onto a constant 30 fps grid: frame t is the source frame shown at t/30 s, so a clip of
duration d gives round(d x 30) frames. Frames come out as PGM/PPM images on stdout
(`-f image2pipe`): each carries its own size in a short header, so no probe is needed and
rotation metadata (which ffmpeg applies) or odd sample aspect ratios cannot make us slice the
byte stream at the wrong width. We read one frame at a time from a buffered pipe, so memory
is one frame plus the pipe buffer, whatever the clip's length or resolution.

`decode_in_process` gives the same gray frames (and, for 4:2:0 sources, the same colour)
without the ffmpeg process: PyAV's libavcodec decodes in this process and the `fps` filter's
rule is applied to the frame timestamps here. Starting ffmpeg, probing the file and piping
every frame cost more CPU than decoding a small clip (docs/landmarks.md, Measured); a source
where equality with the pipe is not certain raises NotInProcess, and the caller uses the pipe.
"""
from __future__ import annotations

import functools
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Literal, NamedTuple

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
    return i420_rgb(frame[:h], chroma[:, : w // 2], chroma[:, w // 2:])


def i420_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """4:2:0 planes Y (h, w), U and V (h/2, w/2) -> RGB (h, w, 3), OpenCV's BT.601 conversion."""
    h, w = y.shape
    i420 = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return cv2.cvtColor(i420.reshape(h * 3 // 2, w), cv2.COLOR_YUV2RGB_I420)


def read_frame(path: str | Path, index: int, *, ffmpeg: str = "", fps: int = 30,
               pix_fmt: PixFmt = "rgb24", threads: int = 0) -> np.ndarray:
    """Frame `index` of the constant-rate stream (decodes up to it; cheap for early frames).
    threads=1: ffmpeg decodes no frames ahead of the one asked for (a third less CPU for the
    first frame of a 1080p clip); the frame is the same."""
    for t, frame in enumerate(iter_frames(path, ffmpeg=ffmpeg, fps=fps, pix_fmt=pix_fmt,
                                          max_frames=index + 1, threads=threads)):
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


# ----------------------------------------------------------------------------- in process
class NotInProcess(Exception):
    """The frames of this source are not certain to equal the pipe's when decoded in process
    (another pixel format, rotation, a decoding error, ...): decode it with `iter_frames`."""


class Frame(NamedTuple):
    """A decoded frame: the gray image and, on demand, its colour."""
    gray: np.ndarray                           # (h, w) uint8, even h and w (the pipe's crop)
    colour: Callable[[], np.ndarray | None]    # -> RGB (h, w, 3) as yuv_rgb gives it from the
                                               #    pipe, or None where that needs the pipe


# 8-bit planar YUV: ffmpeg's conversion to yuv420p leaves the luma plane as decoded (with this
# project's ffmpeg; tests/landmarks/test_decode.py compares), so it is the gray image. Only a
# yuv420p source has the pipe's chroma without a conversion: only it gives colour in process.
LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})


def pipe_frames(path: str | Path, *, ffmpeg: str = "", fps: int = 30) -> Iterator[Frame]:
    """`iter_frames` in yuv420p as Frames: the Y plane and the colour of the same bytes."""
    for yuv in iter_frames(path, ffmpeg=ffmpeg, fps=fps, pix_fmt="yuv420p"):
        yield Frame(yuv_gray(yuv), functools.partial(yuv_rgb, yuv))


def rescale_near(a: int, src: Fraction, dst: Fraction) -> int:
    """A timestamp `a` in time base `src` -> time base `dst` as ffmpeg rounds it:
    av_rescale_q_rnd(a, src, dst, AV_ROUND_NEAR_INF), exact, halves away from zero."""
    num, den = abs(a) * src.numerator * dst.denominator, src.denominator * dst.numerator
    q = (2 * num + den) // (2 * den)
    return q if a >= 0 else -q


def decode_in_process(path: str | Path, fps: int = 30) -> Iterator[Frame]:
    """The frames `pipe_frames` gives, decoded in this process (one thread).

    The `fps` filter's rule, on each frame's tick (rescale_near): tick n of the output shows the
    last frame whose tick is <= n, up to the end tick (the last frame's timestamp + duration);
    a frame whose successor has the same tick is dropped, a frame spanning k ticks is repeated
    k times (the same Frame object). The output starts at tick 0: a video that starts after
    the input (after its audio) repeats its first frame until then, as the command line's
    constant-rate output does. Raises NotInProcess, before the first frame or, rarely, later
    (the caller starts again with the pipe)."""
    import av
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise NotInProcess(f"{path}: {e}") from None
    with container:
        if not container.streams.video:
            raise NotInProcess(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1
        tb = stream.time_base
        # The command line shifts the input to start at 0 (its start time, in microseconds),
        # then the `fps` filter rounds each timestamp to its 1/fps tick.
        offset = rescale_near(container.start_time or 0, Fraction(1, 1_000_000), tb)
        out_tb = Fraction(1, fps)
        shown, tick, last = None, None, None          # the Frame waiting for its ticks, the next output tick
        try:
            for frame in container.decode(stream):
                if frame.pts is None or (last is not None and frame.pts <= last.pts):
                    raise NotInProcess(f"{path}: frame timestamps missing or not increasing")
                t = rescale_near(frame.pts - offset, tb, out_tb)
                if shown is not None:
                    while tick < t:                   # `shown` until this frame's tick
                        yield shown
                        tick += 1
                elif t < 0:
                    raise NotInProcess(f"{path}: the video starts before the input")
                else:
                    tick = 0                          # the first frame from tick 0, however late
                shown, last = _frame(frame, path), frame
        except av.FFmpegError as e:
            raise NotInProcess(f"{path}: {e}") from None
        if last is None:
            raise NotInProcess(f"{path}: no frame decoded")
        end = rescale_near(last.pts + _last_duration(last, path) - offset, tb, out_tb)
        while tick < end:
            yield shown
            tick += 1


def _last_duration(frame, path) -> int:
    """The last frame's duration, as the ffmpeg command line estimates it for the end of the
    stream when the container gives it (fftools' video_duration_estimate, first case)."""
    if not frame.duration or frame.duration <= 1:
        raise NotInProcess(f"{path}: the last frame has no duration")
    return frame.duration


def _frame(frame, path) -> Frame:
    """av.VideoFrame -> Frame: views on its planes, cropped to even sizes as the pipe is."""
    fmt = frame.format.name
    if fmt not in LUMA_FORMATS or frame.rotation:
        raise NotInProcess(f"{path}: {fmt}{f', rotated {frame.rotation}' if frame.rotation else ''}")
    h, w = frame.height // 2 * 2, frame.width // 2 * 2
    y = _plane(frame, 0, h, w)
    if fmt != "yuv420p":
        return Frame(y, _no_colour)
    return Frame(y, functools.partial(_frame_rgb, frame, y))


def _plane(frame, index: int, h: int, w: int) -> np.ndarray:
    """Plane `index` of an av.VideoFrame as (h, w) uint8: a view when its rows are unpadded
    (dlib and OpenCV take a contiguous image without copying it), else a compact copy."""
    p = frame.planes[index]
    a = np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:h, :w]
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _frame_rgb(frame, y: np.ndarray) -> np.ndarray:
    h, w = y.shape
    return i420_rgb(y, _plane(frame, 1, h // 2, w // 2), _plane(frame, 2, h // 2, w // 2))


def _no_colour() -> None:
    return None
