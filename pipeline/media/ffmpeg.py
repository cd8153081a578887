"""Locate the ffmpeg binary: params (`preprocess.ffmpeg`), then PATH, then imageio-ffmpeg's."""
from __future__ import annotations

import functools
import os
import shutil


@functools.lru_cache(maxsize=None)
def ffmpeg_binary(configured: str = "") -> str:
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise FileNotFoundError(f"preprocess.ffmpeg: {configured!r} is not an executable file")
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # ships a static ffmpeg with libx264 and AAC
    return imageio_ffmpeg.get_ffmpeg_exe()
