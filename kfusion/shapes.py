"""What the data looks like, defined once: landmark layout, emotions, splits, window arrays,
and the audio frame timing of a window, derived from the config.

Every module that needs one of these imports it from here; none restates a number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module; the annotation only needs the name
    from kfusion.config import Config

N_POINTS = 68                                         # iBUG-68 landmarks per frame
MOUTH_INDICES: tuple[int, ...] = tuple(range(48, 68))  # iBUG-68 points 48-67
# Upper and lower inner-lip points facing each other (61-67, 62-66, 63-65): the mouth opening.
INNER_LIP_PAIRS: tuple[tuple[int, int], ...] = ((61, 67), (62, 66), (63, 65))
EMOTIONS: tuple[str, ...] = (
    "neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised",
)  # MEAD's eight, in MEAD's folder spelling; index i is the emotion id everywhere.
SPLITS: tuple[str, ...] = ("train", "val", "test")
# One memory-mapped .npy per array in data/windows/<split>/ (docs/data.md has the shapes).
WINDOW_ARRAYS: tuple[str, ...] = ("landmarks", "identity", "mel", "w2v", "emotion", "gt_landmarks")
# train/aug/<copy>/: what a copy of the speech (features.audio_augment) replaces in a window
AUG_ARRAYS: tuple[str, ...] = ("mel", "w2v")

# wav2vec2 runs on 16 kHz audio; its conv feature stack (kernels 10,3,3,3,3,2,2; strides
# 5,2,2,2,2,2,2) has a 400-sample receptive field and a 320-sample hop: 50 frames/s.
ENCODER_SAMPLE_RATE_HZ = 16000
W2V_RECEPTIVE_SAMPLES, W2V_HOP_SAMPLES = 400, 320
W2V_RATE_HZ = ENCODER_SAMPLE_RATE_HZ / W2V_HOP_SAMPLES
W2V_DIM = 768

# Content encoders (the Content Domain's input, `features.encoder`; docs/encoders.md). All
# four give one frame per 320 samples (50 frames/s); they differ in how many frames a clip
# gives and where frame 0 sits. `random` is wav2vec2-base with seeded random weights.
CONTENT_ENCODERS: tuple[str, ...] = ("wav2vec2", "random", "whisper", "ppg")
CONTENT_HOP_SAMPLES = W2V_HOP_SAMPLES
CONTENT_RATE_HZ = ENCODER_SAMPLE_RATE_HZ / CONTENT_HOP_SAMPLES
# Time (s) of frame 0's centre; frame k sits at k / CONTENT_RATE_HZ + this. wav2vec2: the
# middle of its 400-sample receptive field. Whisper: its stride-2 conv centres state k on mel
# frame 2k, at 20k ms (measured -1.5 ms from that against the log-mel, docs/encoders.md).
# PPG: hama's frames run ~30 ms late; the features stage shifts them by features.ppg_shift_ms,
# after which frame k sits at 20k ms like Whisper's.
CONTENT_FRAME_OFFSET_S = {"wav2vec2": W2V_RECEPTIVE_SAMPLES / 2 / ENCODER_SAMPLE_RATE_HZ,
                          "random": W2V_RECEPTIVE_SAMPLES / 2 / ENCODER_SAMPLE_RATE_HZ,
                          "whisper": 0.0, "ppg": 0.0}


def n_w2v_frames(n_samples: int) -> int:
    """Frames wav2vec2's conv stack yields for n samples at 16 kHz (49 for 1 s)."""
    n = n_samples
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        n = (n - k) // s + 1
    return max(n, 0)


def n_content_frames(encoder: str, n_samples: int) -> int:
    """Frames `encoder` yields for n samples at 16 kHz: for 1 s, wav2vec2 49, Whisper 50
    (ceil of its n // 160 mel frames / 2: its second conv has stride 2), PPG 51 (hama's
    n // 320 + 1)."""
    if encoder in ("wav2vec2", "random"):
        return n_w2v_frames(n_samples)
    if encoder == "whisper":
        return -(-(n_samples // 160) // 2)
    if encoder == "ppg":
        return n_samples // CONTENT_HOP_SAMPLES + 1
    raise ValueError(f"unknown content encoder {encoder!r}; expected one of {CONTENT_ENCODERS}")


@dataclass(frozen=True)
class WindowTiming:
    """Where a window's audio frames lie, for one config and content encoder: the one source
    of frame rates.

    A window starts at video frame s and holds `n_frames` frames; its audio spans start at the
    same instant t0 = s / fps: mel frames round(t0 * mel_rate_hz) .. + n_mel, content encoder
    frames round(t0 * CONTENT_RATE_HZ) .. + n_tokens (the encoder's frame count for the
    window's audio), whose first frame sits at token_offset_s after t0's frame.
    """
    n_frames: int
    fps: float
    mel_rate_hz: float
    n_mel: int
    n_tokens: int
    n_mels: int
    encoder: str = "wav2vec2"
    token_offset_s: float = CONTENT_FRAME_OFFSET_S["wav2vec2"]

    def audio_starts(self, start_frame: int) -> tuple[int, int]:
        """First mel frame and first content frame of the window starting at `start_frame`."""
        t0 = start_frame / self.fps
        return int(round(t0 * self.mel_rate_hz)), int(round(t0 * CONTENT_RATE_HZ))


def window_timing(cfg: "Config", encoder: str) -> WindowTiming:
    """The timing of one window for the content `encoder` (a resolved name, never "auto": the
    features' encoder.json, the windows' meta or the checkpoint's record say which). 1 s at
    the defaults: 100 mel frames, 30 video frames, 49 wav2vec2 / 50 Whisper / 51 PPG frames."""
    window_s = cfg.windows.frames / cfg.landmarks.fps
    mel_rate_hz = cfg.audio.sample_rate_hz / cfg.features.hop_length
    return WindowTiming(n_frames=cfg.windows.frames, fps=float(cfg.landmarks.fps),
                        mel_rate_hz=mel_rate_hz, n_mel=int(round(window_s * mel_rate_hz)),
                        n_tokens=n_content_frames(encoder, int(round(window_s * ENCODER_SAMPLE_RATE_HZ))),
                        n_mels=cfg.features.n_mels, encoder=encoder,
                        token_offset_s=CONTENT_FRAME_OFFSET_S[encoder])
