"""The predict video: the landmarks drawn on the identity crop (with `--side-by-side`, also on
a neutral canvas; with `--animate`, beside the photo warped to them), H.264 with the audio.

Where the time goes, per 256 px frame, CPU (60 s of speech = 1,800 frames, measured on the
project's loaded 2-core machine): the crop copied ~0.02 ms, the contours ~0.04 ms and the 68
points ~0.15 ms drawn (draw.draw_landmarks_into: three OpenCV calls, the points' anti-aliased
discs being most of it), RGB -> I420 ~0.08 ms in OpenCV; H.264 ~0.4 ms in ffmpeg's own
process, meanwhile. ffmpeg's own RGB -> I420 (swscale) cost ~0.4 ms more per frame, so the
frames reach it in I420, BLOCK_FRAMES per pipe write. The drawing is C; the Python around it
is a few microseconds per frame, so no per-frame loop is left worth vectorising.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from kfusion.pipeline.io import progress
from kfusion.pipeline.media.draw import draw_landmarks_into, neutral_canvas
from kfusion.pipeline.media.mp4 import write_mp4

BLOCK_FRAMES = 64
LANDMARK_RGB = (255, 64, 64)    # on the photo
CANVAS_RGB = (40, 40, 40)       # on the neutral canvas
# Speech at 16 kHz mono: AAC's fast coder at 64 kb/s (the default two-loop search costs
# several times as much CPU; AAC at 16 kHz carries at most 96 kb/s per channel anyway).
SPEECH_AAC = ("-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k")
# x264: veryfast without the searches that find little in a still crop with moving lines
# (sub-pixel refinement, trellis, adaptive quantisation): ~25% less CPU, the same file size.
VIDEO_PRESET, VIDEO_X264 = "veryfast", "subme=0:me=dia:trellis=0:aq-mode=0"


def video_blocks(crop_rgb: np.ndarray, landmarks_crop: np.ndarray, identity_crop: np.ndarray,
                 *, side_by_side: bool = False, animate: bool = False,
                 block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """(n, 3 px / 2, W) uint8 I420 blocks, n <= block_frames, W = px x panels: per frame the
    landmarks on the crop, [on a neutral canvas], [the photo warped to them]."""
    px = crop_rgb.shape[0]
    panels = [(crop_rgb, LANDMARK_RGB)]
    if side_by_side:
        panels.append((neutral_canvas(px), CANVAS_RGB))
    head = None
    if animate:
        from kfusion.pipeline.media.warp import TalkingHead
        head = TalkingHead(crop_rgb, identity_crop)
    width = px * (len(panels) + animate)
    drawn = [np.empty_like(img) for img, _ in panels]   # reused: cv2 draws in place
    frame = np.empty((px, width, 3), np.uint8)
    for s in range(0, len(landmarks_crop), block_frames):
        chunk = landmarks_crop[s:s + block_frames]
        block = np.empty((len(chunk), px * 3 // 2, width), np.uint8)
        for i, pts in enumerate(chunk):
            for buf, (img, color) in zip(drawn, panels):
                np.copyto(buf, img)
                draw_landmarks_into(buf, pts, color)
            if len(drawn) == 1 and head is None:
                cv2.cvtColor(drawn[0], cv2.COLOR_RGB2YUV_I420, dst=block[i])
                continue
            np.concatenate(drawn + ([head.frame(pts)] if head is not None else []), 1, out=frame)
            cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420, dst=block[i])
        yield block


class SpeechTrack:
    """The audio track, AAC-encoded by its own ffmpeg process as soon as the samples are
    known: it runs beside the features and the model instead of after them, and the mp4
    takes its stream as it is (write_mp4's audio_file). close() removes the file."""

    def __init__(self, samples: np.ndarray, sample_rate_hz: int, ffmpeg: str = ""):
        import soundfile as sf
        from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
        self._dir = tempfile.TemporaryDirectory(prefix="kfusion-speech-")
        wav, self.path = Path(self._dir.name) / "speech.wav", Path(self._dir.name) / "speech.m4a"
        sf.write(wav, np.asarray(samples, np.float32), sample_rate_hz, subtype="FLOAT")
        self._proc = subprocess.Popen(
            [ffmpeg_binary(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
             "-i", str(wav), *SPEECH_AAC, "-f", "mp4", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._err: str | None = None   # ffmpeg's messages, once it has finished

    def result(self) -> Path:
        """The .m4a once ffmpeg has finished; RuntimeError (its message) when it failed."""
        if self._err is None:
            self._err = self._proc.communicate()[1].decode(errors="replace").strip()
        if self._proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed encoding the audio track: {self._err[-500:]}")
        return self.path

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        if self._err is None:
            self._err = self._proc.communicate()[1].decode(errors="replace").strip()
        self._dir.cleanup()


def write_video(path: Path, crop_rgb: np.ndarray, landmarks_crop: np.ndarray,
                identity_crop: np.ndarray, speech: SpeechTrack, fps: int, *,
                side_by_side: bool = False, animate: bool = False, ffmpeg: str = "") -> None:
    """The mp4: drawn and converted here while ffmpeg encodes the previous block; the audio
    stream is the SpeechTrack's, copied."""
    px = crop_rgb.shape[0]
    bar = progress(total=len(landmarks_crop), desc="render", unit="frame")

    def counted(blocks):
        for b in blocks:
            yield b
            bar.update(len(b))
    try:
        write_mp4(path, counted(video_blocks(crop_rgb, landmarks_crop, identity_crop,
                                             side_by_side=side_by_side, animate=animate)),
                  fps=fps, size_wh=((1 + side_by_side + animate) * px, px),
                  audio_file=speech.result(), ffmpeg=ffmpeg, pix_fmt="yuv420p",
                  preset=VIDEO_PRESET, x264_params=VIDEO_X264)
    finally:
        bar.close()
