"""Media probing and audio decoding through the ffmpeg binary (there is no ffprobe).

`probe()` parses the stream lines and Duration that `ffmpeg -i FILE` prints on stderr,
then measures each stream's own length with a stream copy to the null muxer (no decoding,
milliseconds even for 1080p): container durations lie when one stream is longer than the
other, and that mismatch is exactly what the audio stage must see.

`decode_audio()` pipes the first audio stream through ffmpeg's resampler as 16 kHz (or any
rate) mono float32, so every container ffmpeg reads (MEAD m4a, CREMA-D wav, flv, mp4,
GRID's MPEG-1 with MP2) lands in the same array.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kfusion.shapes import ENCODER_SAMPLE_RATE_HZ
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary


class MediaError(RuntimeError):
    """A media file ffmpeg cannot use. `reason` is a reject reason code (docs/data.md)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class MediaInfo:
    path: str
    has_video: bool
    has_audio: bool
    duration_s: float                 # container duration (0.0 when ffmpeg reports N/A)
    video_duration_s: float           # measured on the video stream (0.0 without one)
    audio_duration_s: float           # measured on the audio stream (0.0 without one)
    fps: float                        # average frame rate of the video stream (0.0 without one)
    width: int
    height: int
    sample_rate_hz: int
    channels: int
    video_codec: str
    audio_codec: str
    n_video_frames: int = 0           # packets in the video stream (= frames for all our codecs)

    def to_dict(self) -> dict:
        return asdict(self)


_DURATION = re.compile(r"Duration:\s*(N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_STREAM = re.compile(r"Stream #\d+:\d+(?:\[[^\]]*\])?(?:\([^)]*\))?:\s*(Video|Audio):\s*([^\s,]+)(.*)")
_SIZE = re.compile(r",\s*(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+)(k?)\s+fps")
_TBR = re.compile(r"([\d.]+)(k?)\s+tbr")
_RATE = re.compile(r"(\d+)\s+Hz")
_TIME = re.compile(r"time=\s*(-?\d+):(\d+):(\d+(?:\.\d+)?)")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4,
                    "5.0": 5, "5.1": 6, "5.1(side)": 6, "6.1": 7, "7.1": 8}


def _hms(h: str, m: str, s: str) -> float:
    return int(h) * 3600 + int(m) * 60 + float(s)


def _num(m: re.Match | None) -> float:
    if not m:
        return 0.0
    return float(m.group(1)) * (1000.0 if m.group(2) else 1.0)


def _channels(rest: str) -> int:
    fields = [f.strip() for f in rest.split(",")]
    for f in fields:
        if f in _LAYOUT_CHANNELS:
            return _LAYOUT_CHANNELS[f]
        m = re.fullmatch(r"(\d+) channels(?: \(.*\))?", f)
        if m:
            return int(m.group(1))
    return 0


def parse_header(stderr: str, path: str = "") -> MediaInfo:
    """MediaInfo from `ffmpeg -i` stderr (first video and first audio stream; no stream lengths)."""
    dur = _DURATION.search(stderr)
    duration_s = _hms(*dur.groups()[1:]) if dur and dur.group(1) != "N/A" else 0.0
    info = MediaInfo(path=path, has_video=False, has_audio=False, duration_s=duration_s,
                     video_duration_s=0.0, audio_duration_s=0.0, fps=0.0, width=0, height=0,
                     sample_rate_hz=0, channels=0, video_codec="", audio_codec="")
    for line in stderr.splitlines():
        m = _STREAM.search(line)
        if not m:
            continue
        kind, codec, rest = m.groups()
        if kind == "Video" and not info.has_video:
            if "attached pic" in rest:   # cover art in an audio file is not a video
                continue
            size = _SIZE.search(rest)
            info.has_video, info.video_codec = True, codec
            info.width, info.height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
            info.fps = _num(_FPS.search(rest)) or _num(_TBR.search(rest))
        elif kind == "Audio" and not info.has_audio:
            info.has_audio, info.audio_codec = True, codec
            rate = _RATE.search(rest)
            info.sample_rate_hz = int(rate.group(1)) if rate else 0
            info.channels = _channels(rest)
    return info


def _run(cmd: list[str], timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)


def _stream_length(ff: str, path: str, spec: str) -> tuple[float, int]:
    """(seconds, packets) of one stream, by stream copy to the null muxer (no decode)."""
    r = _run([ff, "-hide_banner", "-nostdin", "-i", path, "-map", f"0:{spec}:0", "-c", "copy",
              "-f", "null", "-"])
    err = r.stderr.decode(errors="replace").replace("\r", "\n")
    times, frames = _TIME.findall(err), _FRAMES.findall(err)
    seconds = _hms(*times[-1]) if times else 0.0
    return max(seconds, 0.0), int(frames[-1]) if frames else 0


def probe(path: str | Path, ffmpeg: str = "") -> MediaInfo:
    """Streams, codecs, sizes, rates and durations of a media file.

    Raises MediaError("missing_file" | "unreadable", ...) when there is nothing ffmpeg can read.
    `ffmpeg` is `cfg.preprocess.ffmpeg` (empty = PATH, then imageio-ffmpeg's binary).
    """
    path = str(path)
    if not Path(path).is_file():
        raise MediaError("missing_file", f"{path}: no such file")
    ff = ffmpeg_binary(ffmpeg)
    try:
        r = _run([ff, "-hide_banner", "-nostdin", "-i", path], timeout_s=60.0)
    except subprocess.TimeoutExpired:
        raise MediaError("unreadable", f"{path}: ffmpeg timed out reading the header") from None
    err = r.stderr.decode(errors="replace")
    info = parse_header(err, path)
    if not (info.has_video or info.has_audio):
        last = err.strip().splitlines()[-1] if err.strip() else "no output"
        raise MediaError("unreadable", f"{path}: ffmpeg finds no audio or video stream ({last})")
    if info.has_video:
        seconds, frames = _stream_length(ff, path, "v")
        info.n_video_frames = frames
        # frames / average rate is the stream's length; the copy's time= is the last
        # packet's start, one frame short
        info.video_duration_s = frames / info.fps if frames and info.fps else seconds
    if info.has_audio:
        seconds, _ = _stream_length(ff, path, "a")
        info.audio_duration_s = seconds or info.duration_s
    if info.has_video and info.video_duration_s <= 0 and info.duration_s > 0:
        info.video_duration_s = info.duration_s
    return info


def decode_audio(path: str | Path, *, sample_rate_hz: int = ENCODER_SAMPLE_RATE_HZ,
                 ffmpeg: str = "", timeout_s: float = 600.0) -> np.ndarray:
    """First audio stream of `path` as mono float32 at `sample_rate_hz`, shape (n_samples,).

    Channels are averaged (ffmpeg's -ac 1 downmix). Raises MediaError("no_audio_stream")
    when there is none and MediaError("decode_failed") when ffmpeg fails mid-stream.
    """
    path = str(path)
    if not Path(path).is_file():
        raise MediaError("missing_file", f"{path}: no such file")
    ff = ffmpeg_binary(ffmpeg)
    cmd = [ff, "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
           "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    try:
        r = _run(cmd, timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        raise MediaError("decode_failed", f"{path}: audio decode timed out") from None
    err = r.stderr.decode(errors="replace").strip()
    if r.returncode != 0:
        if "matches no streams" in err or "Stream map" in err:
            raise MediaError("no_audio_stream", f"{path}: no audio stream")
        if "Invalid data" in err or "could not find codec" in err.lower():
            raise MediaError("unreadable", f"{path}: {err.splitlines()[-1] if err else 'unreadable'}")
        raise MediaError("decode_failed", f"{path}: ffmpeg exit {r.returncode}: "
                                          f"{err.splitlines()[-1] if err else ''}")
    n = len(r.stdout) // 4
    return np.frombuffer(r.stdout[: n * 4], dtype="<f4").astype(np.float32, copy=True)
