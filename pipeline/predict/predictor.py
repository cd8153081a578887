"""Prediction for a user's own speech and face photo: the library behind `kfusion predict`.

    from kfusion.pipeline.predict.predictor import predict
    r = predict("speech.wav", "face.jpg", out="out.mp4")     # or out=None: arrays only
    r.landmarks_crop    # (T, 68, 2) in the 256 crop's pixels, T = round(duration x 30)
    r.landmarks_image   # (T, 68, 2) in the input image's pixels
    r.emotion, r.emotion_probabilities, r.checkpoint, r.paths

Everything the model sees is made by the training pipeline's own functions, with the
checkpoint's recorded config, so a prediction input looks exactly like a training window:
- audio: `kfusion.pipeline.media.container.decode_audio` (16 kHz mono float32, any container ffmpeg reads);
- face: the landmark stage's detector + tracker + crop rule (`kfusion.pipeline.data.landmarks.track_clip`,
  `postprocess`: square of crop_scale x face size, resized to crop_px) on the image decoded by
  the same ffmpeg pipe (`kfusion.pipeline.media.video.iter_frames`); its crop-px landmarks are the identity;
- features: `kfusion.pipeline.data.features.log_mel` and the content encoder the checkpoint's
  training data came from (its record: wav2vec2, Whisper, PPG or the random control with its
  seed; the weights found here must hash to the recorded SHA-256, else PredictError) on the
  whole clip, then the windows stage's span rule (`kfusion.shapes.window_timing`: spans and
  audio starts) for each window. Audio longer than 30 s goes through the encoder in chunks
  with context on both sides (`kfusion.pipeline.data.encoders.chunking`, the features stage's
  own rule); training clips are shorter than one chunk, so for them nothing differs.
Windows of 1 s start every `stride_frames` frames (plus one flush with the end) and are
blended by `kfusion.pipeline.predict.stitch.Stitcher` (tapered weights, so no seams). The model runs in
batches; the whole clip's features are held once (10 min: ~46 MB wav2vec2 in float16).

Emotion: a MEAD name, or "auto": the checkpoint's audio -> emotion head applied to every
window, its softmax averaged over windows; the argmax conditions all windows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from kfusion.config import Config, ConfigError, model_switches
from kfusion.device import resolve_device
from kfusion.pipeline.io import progress
from kfusion.pipeline.predict.background import Background
from kfusion.pipeline.training.checkpoint import (CheckpointError, build_checkpoint_model,
                                                  checkpoint_config, checkpoint_encoder,
                                                  config_differences, emotion_head,
                                                  read_checkpoint)
from kfusion.shapes import EMOTIONS, N_POINTS, window_timing

DEFAULT_CHECKPOINT = Path("models/best.pt")


class PredictError(RuntimeError):
    """A problem the user can act on; the CLI prints it as one line and exits 2."""


@dataclass
class Identity:
    """The face of the input image, cropped as the landmark stage crops a clip."""
    crop_box: np.ndarray          # (3,) x0, y0, side in image px
    landmarks_crop: np.ndarray    # (68, 2) crop px: the model's identity input
    landmarks_image: np.ndarray   # (68, 2) image px
    crop_rgb: np.ndarray          # (crop_px, crop_px, 3) uint8
    n_faces: int
    image_wh: tuple[int, int]


@dataclass
class PredictResult:
    landmarks_crop: np.ndarray                 # (T, 68, 2) crop px
    landmarks_image: np.ndarray                # (T, 68, 2) input image px
    fps: int
    duration_s: float
    emotion: str
    emotion_source: str                        # "given" | "auto" | "neutral" (auto not trusted)
    emotion_probabilities: dict[str, float] | None   # the head's, with auto (used or not)
    emotion_note: str                          # why auto fell back to neutral, or ""
    checkpoint: Path
    encoder: dict[str, Any]
    identity: Identity
    n_windows: int
    stride_frames: int
    model: dict[str, Any] = field(default_factory=dict)   # kfusion.config.model_switches
    paths: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)   # each step's own seconds; steps
    silence: dict[str, Any] = field(default_factory=dict)   # the gate (predict.silence)
    wall_s: float = 0.0                        # overlap, so the whole predict() took wall_s


@dataclass
class Inputs:
    """What predict() prepares before the model: the audio, its features and the face."""
    samples: np.ndarray                        # (n,) float32 at cfg.audio.sample_rate_hz
    mel: np.ndarray                            # (n_mel, n_mels) float32
    w2v: np.ndarray                            # (n_frames, feature_dim) float16
    identity: Identity
    notes: list[str]
    speech: Any = None                         # render.SpeechTrack, when writing the mp4


def check_params(trained: Config, params: Config, path: Path) -> None:
    """Refuse a checkpoint whose model or input settings differ from the params'."""
    diffs = config_differences(trained, params)
    if diffs:
        raise PredictError(
            f"{path} was trained with another model configuration than the params "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); run `dvc repro` to "
            f"retrain, or pass the matching --checkpoint")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a while. Many tiny parallel regions (a model's init, an LSTM
    step) wait at every barrier for a second OpenMP thread; while the other core is busy
    (here: loading dlib's models) that costs seconds instead of milliseconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - t


# ----------------------------------------------------------------------------- inputs
def read_audio(path: str | Path, cfg: Config, ffmpeg: str = "") -> np.ndarray:
    """(n,) float32 at 16 kHz, or PredictError for unreadable / empty / too short audio."""
    from kfusion.pipeline.media.container import MediaError, decode_audio
    try:
        samples = decode_audio(path, sample_rate_hz=cfg.audio.sample_rate_hz, ffmpeg=ffmpeg)
    except MediaError as e:
        what = {"no_audio_stream": "has no audio stream", "missing_file": "does not exist"}
        raise PredictError(f"audio {path}: {what.get(e.reason, 'cannot be decoded')} "
                           f"({e.message})") from None
    fps = cfg.landmarks.fps
    if samples.size == 0:
        raise PredictError(f"audio {path}: ffmpeg decoded no samples (empty audio)")
    from kfusion.pipeline.data.audio import non_finite_message
    if (bad := non_finite_message(samples, cfg.audio.sample_rate_hz)) is not None:
        raise PredictError(f"audio {path}: {bad}; the model cannot use them (repair or "
                           f"re-export the file)")
    if round(samples.size / cfg.audio.sample_rate_hz * fps) == 0:
        raise PredictError(f"audio {path}: {samples.size / cfg.audio.sample_rate_hz * 1000:.0f} ms "
                           f"is shorter than one video frame (1/{fps} s)")
    return samples


def decode_image(path: Path, fps: int, ffmpeg: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The picture in `path` as gray (H, W) (what the landmark stage's tracker sees) and RGB
    (H, W, 3), from one ffmpeg run: the pixels of iter_frames(pix_fmt="gray") and
    iter_frames(pix_fmt="rgb24")'s first frames (the same fps filter, then each format's
    own conversion; tests/predict/test_fast_paths.py), one decode instead of two."""
    import cv2
    from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
    with tempfile.TemporaryDirectory(prefix="kfusion-image-") as td:
        gray_path, rgb_path = Path(td) / "gray.pgm", Path(td) / "rgb.ppm"
        outputs = []
        for label, pix_fmt, codec, dst in (("g", "gray", "pgm", gray_path),
                                           ("c", "rgb24", "ppm", rgb_path)):
            outputs += ["-map", f"[{label}]", "-frames:v", "1", "-pix_fmt", pix_fmt, "-c:v", codec,
                        "-f", "image2", "-update", "1", str(dst)]
        r = subprocess.run([ffmpeg_binary(ffmpeg), "-nostdin", "-v", "error", "-i", str(path),
                            "-filter_complex", f"[0:v:0]fps={fps},split[g][c]", *outputs],
                           capture_output=True)
        err = r.stderr.decode(errors="replace").strip()
        if r.returncode != 0:
            raise PredictError(f"image {path}: cannot be decoded "
                               f"({err.splitlines()[-1] if err else f'ffmpeg exit {r.returncode}'})")
        if not (gray_path.is_file() and rgb_path.is_file()):
            raise PredictError(f"image {path}: ffmpeg decoded no picture")
        gray = cv2.imread(str(gray_path), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(cv2.imread(str(rgb_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return gray, rgb


class RememberedDetections:
    """A landmark backend that answers a detection it has made before on the same pixels
    from memory. find_identity looks for the face (detect_growing), then the tracker's first
    frame detects again at the size that found it: dlib's HOG would give the same boxes."""

    def __init__(self, backend):
        self.backend, self.memo = backend, {}

    def detect(self, image: np.ndarray, upsample: int | None = None):
        import hashlib
        key = (image.shape, upsample,
               hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest())
        if key not in self.memo:
            self.memo[key] = self.backend.detect(image, upsample)
        return self.memo[key]

    def predict(self, image: np.ndarray, box) -> np.ndarray:
        return self.backend.predict(image, box)


def find_identity(image: str | Path, cfg: Config, *, strict: bool = False, ffmpeg: str = "",
                  backend=None) -> tuple[Identity, list[str]]:
    """Detect, landmark and crop the face in `image` with the landmark stage's own code. A face
    the stage's detection size misses (a small face in a large photo) is looked for again at
    larger sizes before "no face" (kfusion.pipeline.data.landmarks.detect_growing)."""
    from kfusion.pipeline.data.landmarks import (detect_growing, make_backend, postprocess,
                                                 to_video_px, track_clip)
    from kfusion.pipeline.media.video import crop_square
    image, lcfg = Path(image), cfg.landmarks
    if not image.is_file():
        raise PredictError(f"image {image}: no such file")
    gray, rgb = decode_image(image, lcfg.fps, ffmpeg)   # gray: what the tracker sees
    backend = RememberedDetections(backend or make_backend(lcfg))
    faces, px, upsample = detect_growing(backend, gray, lcfg)
    notes = []
    if not faces:
        raise PredictError(f"image {image}: no face found (dlib {lcfg.detector} detector, up to "
                           f"the full {gray.shape[1]}x{gray.shape[0]} px"
                           + (" upsampled" if upsample > lcfg.detect_upsample else "")
                           + "); use a photo with one clearly visible, roughly frontal face")
    if (px, upsample) != (lcfg.detect_max_px, lcfg.detect_upsample):
        notes.append(f"image {image}: the face was found only at "
                     f"{'the full resolution' if px == 0 else f'{px} px'}"
                     f"{' upsampled' if upsample > lcfg.detect_upsample else ''} (it is small in "
                     f"the photo); a closer crop gives the detector more to work with")
    if len(faces) > 1:
        if strict:
            raise PredictError(f"image {image}: {len(faces)} faces found and --strict is set; "
                               f"crop the image to one face")
        notes.append(f"image {image}: {len(faces)} faces found; using the largest")
    found_at = dataclasses.replace(lcfg, detect_max_px=px, detect_upsample=upsample)
    track = track_clip([gray], backend, found_at)  # one frame: detect (largest face) + predict
    if not track.found[0]:
        raise PredictError(f"image {image}: no face landmarks found")
    clip = postprocess(track, lcfg)               # crop rule: crop_scale x face size, square
    box = clip.crop_box[0]
    ident = Identity(crop_box=box.astype(np.float32), landmarks_crop=clip.landmarks_px[0],
                     landmarks_image=to_video_px(clip.landmarks_px[:1], clip.crop_box[:1],
                                                 lcfg.crop_px)[0],
                     crop_rgb=crop_square(rgb, box, lcfg.crop_px), n_faces=len(faces),
                     image_wh=(gray.shape[1], gray.shape[0]))
    return ident, notes


# ----------------------------------------------------------------------------- features
def load_encoder(cfg: Config, record: dict[str, Any], device: torch.device, threads: int = 0):
    """The content encoder the checkpoint's features came from (its record), loaded here;
    PredictError when it cannot be, or when its weights are not the recorded ones. A long
    clip's Whisper chunks go through side by side, one per thread (the same numbers);
    threads: 0 = torch's."""
    from kfusion.pipeline.data.encoders import EncoderLoadError, EncoderMismatch, load_recorded
    threads = max(threads or torch.get_num_threads(), 1)
    try:
        return load_recorded(record, cfg.features, device=device.type, threads=threads,
                             piece_threads=threads)
    except (EncoderLoadError, EncoderMismatch) as e:
        raise PredictError(f"the checkpoint's content encoder cannot be used here: {e}") from None


def clip_features(samples: np.ndarray, cfg: Config, encoder,
                  transform=None) -> tuple[np.ndarray, np.ndarray]:
    """mel (n_mel, n_mels) float32 and w2v (n_frames, feature_dim) float16 (the content
    encoder's states) for the whole clip, padded so every window has its full spans.
    transform: the features stage's mel_transform for cfg (built here when None)."""
    return (mel_features(samples, cfg, encoder.record["encoder"], transform),
            content_features(samples, cfg, encoder))


def _window_input(samples: np.ndarray, cfg: Config) -> tuple[np.ndarray, int]:
    """(the samples, padded with silence to one window when shorter; the start frame of the
    last window (flush with the end))."""
    fps, frames, sr = cfg.landmarks.fps, cfg.windows.frames, cfg.audio.sample_rate_hz
    x, n = samples, round(frames / fps * sr)
    if len(x) < n:
        x = np.concatenate([x, np.zeros(n - len(x), np.float32)])
    return x, max(round(len(samples) / sr * fps), frames) - frames


# The last window (flush with the end) may need a frame more than the clip gives: the edge
# frame is repeated instead of dropping the window as training does.
def mel_features(samples: np.ndarray, cfg: Config, encoder_name: str, transform=None) -> np.ndarray:
    """(n_mel, n_mels) float32: the features stage's log-mel of the clip (torch)."""
    from kfusion.pipeline.data.features import log_mel, mel_transform
    x, last = _window_input(samples, cfg)
    timing = window_timing(cfg, encoder_name)
    mel = log_mel(x, transform or mel_transform(cfg.features, cfg.audio.sample_rate_hz))
    return _edge_pad(mel, timing.audio_starts(last)[0] + timing.n_mel)


def content_features(samples: np.ndarray, cfg: Config, encoder) -> np.ndarray:
    """(n_frames, feature_dim) float16: the content encoder's states, chunked past 30 s."""
    x, last = _window_input(samples, cfg)
    timing = window_timing(cfg, encoder.record["encoder"])
    return _edge_pad(encoder.encode(x), timing.audio_starts(last)[1] + timing.n_tokens)


def _edge_pad(a: np.ndarray, n: int) -> np.ndarray:
    return a if len(a) >= n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])


def window_batches(mel: np.ndarray, w2v: np.ndarray, starts: list[int], cfg: Config,
                   encoder: str, batch_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(starts, mel (B, 100, n_mels) f32, w2v (B, n_tokens, feature_dim) f32): each window's
    audio spans, as the windows stage cuts them (kfusion.shapes.window_timing), gathered
    with one index array per batch from the clip's features (float16 -> float32 once)."""
    timing = window_timing(cfg, encoder)
    mel32 = torch.from_numpy(np.ascontiguousarray(mel, np.float32))
    w2v32 = torch.from_numpy(np.asarray(w2v, np.float32))
    first = np.array([timing.audio_starts(s) for s in starts], np.int64).reshape(-1, 2)
    mel_idx = torch.from_numpy(first[:, :1] + np.arange(timing.n_mel))          # (W, n_mel)
    w2v_idx = torch.from_numpy(first[:, 1:] + np.arange(timing.n_tokens))       # (W, n_tokens)
    for i in range(0, len(starts), batch_size):
        yield starts[i:i + batch_size], mel32[mel_idx[i:i + batch_size]], w2v32[w2v_idx[i:i + batch_size]]


# ----------------------------------------------------------------------------- predictor
class Predictor:
    """A loaded checkpoint (model, emotion head, encoder, face finder), reusable across inputs.

    The content encoder and the face models load in threads of their own while the model is
    built (CTranslate2 loads off the GIL; dlib holds it), so loading takes about as long as
    its longest part; encoder() and backend() wait for theirs. A second predict() reuses
    everything loaded."""

    def __init__(self, checkpoint: str | Path | None = None, *, device: str = "auto",
                 params: Config | None = None, ffmpeg: str = "", log=None):
        """log: called with a line as each step starts (the CLI prints it); None: quiet."""
        t0 = time.perf_counter()
        self.log = log
        self.checkpoint = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        try:   # the checkpoint's errors are the evaluate stage's too; here they are the user's
            ckpt = read_checkpoint(self.checkpoint)
            self.cfg = checkpoint_config(ckpt, self.checkpoint)
            self.encoder_info = checkpoint_encoder(ckpt, self.checkpoint)   # its record
            if params is not None:
                check_params(self.cfg, params, self.checkpoint)
            try:
                self.device = resolve_device(device)
            except ConfigError as e:
                raise PredictError(f"--device {device}: {e}") from None
            from kfusion.pipeline.data.landmarks import make_backend
            self._loads = {"encoder": Background(load_encoder, self.cfg, self.encoder_info,
                                                 self.device, torch.get_num_threads(),
                                                 name="load-encoder"),
                           "face_models": Background(make_backend, self.cfg.landmarks,
                                                     name="load-face")}
            with one_torch_thread():   # KAN's init: many tiny parallel least squares
                self.model = build_checkpoint_model(self.cfg, ckpt, self.checkpoint, self.device)
        except CheckpointError as e:
            raise PredictError(str(e)) from None
        from kfusion.pipeline.data.features import mel_transform
        self._mel = mel_transform(self.cfg.features, self.cfg.audio.sample_rate_hz)
        self.ffmpeg = ffmpeg
        head = emotion_head(ckpt)
        self.classifier = head.to(self.device) if head is not None else None
        self.emotion_record = ckpt.get("emotion_classifier")   # the head and its held-out test
        self._t0 = t0
        self.load_seconds = {"checkpoint": time.perf_counter() - t0}

    def _loaded(self, what: str):
        value = self._loads[what].result()
        self.load_seconds[what] = self._loads[what].seconds
        return value

    def encoder(self):
        return self._loaded("encoder")

    def backend(self):
        return self._loaded("face_models")

    def mel_transform(self):
        return self._mel

    def wait_loaded(self) -> float:
        """Seconds from construction until everything was loaded (the loads' errors raised)."""
        for what in self._loads:
            self._loaded(what)
        end = max(self._loads[w].finished_at for w in self._loads)
        return max(end, self._t0 + self.load_seconds["checkpoint"]) - self._t0

    def predict(self, audio: str | Path, image: str | Path, *, out: str | Path | None = None,
                emotion: str = "auto", side_by_side: bool = False, strict: bool = False,
                stride_frames: int = 10, batch_size: int = 64,
                animate: bool = False, silence: str = "still") -> PredictResult:
        from kfusion.pipeline.predict.silence import MODES
        t_start, timings = time.perf_counter(), {}
        frames = self.cfg.windows.frames
        if emotion != "auto" and emotion not in EMOTIONS:
            raise PredictError(f"--emotion {emotion!r}: expected auto or one of {', '.join(EMOTIONS)}")
        if not 1 <= stride_frames <= frames:
            raise PredictError(f"stride_frames={stride_frames}: expected 1..{frames} (the window)")
        if silence not in MODES:
            raise PredictError(f"--silence {silence!r}: expected one of {', '.join(MODES)}")
        paths = output_paths(out) if out is not None else {}
        if paths:
            check_writable(paths)
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        with one_torch_thread():   # side by side instead: see _landmarks
            inputs = self._inputs(audio, image, strict, timings, speech_track=bool(paths))
        try:
            with one_torch_thread():
                result = self._result(inputs, emotion, stride_frames, batch_size, workers,
                                      silence, timings)
            if paths:
                self._say(f"write {len(result.landmarks_crop)} frames of video"
                          + (" (animated face)" if animate else ""))
                timings.update(write_outputs(result, paths, inputs.speech,
                                             side_by_side=side_by_side, animate=animate,
                                             ffmpeg=self.ffmpeg))
                result.paths = paths
        finally:
            if inputs.speech is not None:
                inputs.speech.close()
        result.wall_s = time.perf_counter() - t_start
        return result

    def _result(self, inputs: Inputs, emotion: str, stride_frames: int, batch_size: int,
                workers: int, silence: str, timings: dict[str, float]) -> PredictResult:
        """Emotion, the model over the windows, stitched, [held still where there is no
        speech]; landmarks in crop and image px."""
        cfg, (mel, w2v), identity = self.cfg, (inputs.mel, inputs.w2v), inputs.identity
        fps, frames = cfg.landmarks.fps, cfg.windows.frames
        duration_s = len(inputs.samples) / cfg.audio.sample_rate_hz
        T = round(duration_s * fps)
        starts = window_starts_for(T, frames, stride_frames)
        with self._step("emotion", timings, "emotion"):
            emotion_id, source, probs, why = self._choose_emotion(emotion, mel, w2v, starts,
                                                                  batch_size)
        with self._step(f"model on {len(starts)} windows", timings, "model"):
            crop = self._landmarks(mel, w2v, starts, identity.landmarks_crop, emotion_id, T,
                                   batch_size, workers)
        gate = {"mode": "model"}
        if silence == "still":
            with self._step("hold the face still where there is no speech", timings, "silence"):
                crop, gate = still_in_silence(crop, inputs.samples, identity.landmarks_crop, cfg)
        from kfusion.pipeline.data.landmarks import to_video_px
        image_px = to_video_px(crop, np.repeat(identity.crop_box[None], T, 0), cfg.landmarks.crop_px)
        return PredictResult(
            landmarks_crop=crop, landmarks_image=image_px, fps=fps, duration_s=duration_s,
            emotion=EMOTIONS[emotion_id], emotion_source=source, emotion_probabilities=probs,
            emotion_note=why, checkpoint=self.checkpoint, encoder=self.encoder_info,
            identity=identity, n_windows=len(starts), stride_frames=stride_frames,
            warnings=inputs.notes, timings_s=timings, model=model_switches(cfg.model),
            silence=gate)

    def _inputs(self, audio, image, strict: bool, timings: dict[str, float],
                speech_track: bool) -> Inputs:
        """The audio is decoded and encoded in a thread while the face is found here (ffmpeg,
        CTranslate2 and numpy's FFT leave the GIL to dlib). An audio problem is reported
        before a face problem, as when the two ran in turn."""
        self._say("decode audio")
        self._say("find the face")
        sound = Background(self._audio_features, audio, timings, speech_track,
                           name="predict-audio")
        try:
            with timed(timings, "face"):
                identity, notes = find_identity(image, self.cfg, strict=strict, ffmpeg=self.ffmpeg,
                                                backend=self.backend())
        except BaseException:
            speech = sound.result()[-1]   # raises the audio's error, if any, instead
            if speech is not None:
                speech.close()
            raise
        samples, w2v, speech = sound.result()
        try:   # torch here, alone: its threads would stall beside dlib and CTranslate2
            with timed(timings, "log_mel"):
                mel = mel_features(samples, self.cfg, self.encoder_info["encoder"],
                                   self.mel_transform())
        except BaseException:
            if speech is not None:
                speech.close()
            raise
        return Inputs(samples, mel, w2v, identity, notes, speech)

    def _audio_features(self, audio, timings: dict[str, float], speech_track: bool):
        """(samples, w2v, the SpeechTrack being encoded or None), no torch: ffmpeg,
        CTranslate2 and numpy, which leave the GIL and the cores' OpenMP teams alone."""
        from kfusion.pipeline.predict.render import SpeechTrack
        sr = self.cfg.audio.sample_rate_hz
        with timed(timings, "decode_audio"):
            samples = read_audio(audio, self.cfg, self.ffmpeg)
        speech = SpeechTrack(samples, sr, self.ffmpeg) if speech_track else None
        try:
            encoder = self.encoder()
            self._say(f"features of {len(samples) / sr:.1f} s of audio "
                      f"(log-mel, {self.encoder_info['encoder']})")
            with timed(timings, "features"):
                w2v = content_features(samples, self.cfg, encoder)
        except BaseException:
            if speech is not None:
                speech.close()
            raise
        return samples, w2v, speech

    def _say(self, what: str) -> None:
        if self.log is not None:
            self.log(f"[predict] {what}")

    @contextlib.contextmanager
    def _step(self, what: str, timings: dict[str, float], key: str) -> Iterator[None]:
        """Say what starts (a long input is minutes of silence otherwise) and time it."""
        self._say(what)
        with timed(timings, key):
            yield

    def _choose_emotion(self, emotion: str, mel, w2v, starts, batch_size,
                        ) -> tuple[int, str, dict[str, float] | None, str]:
        """(emotion id, "given" | "auto" | "neutral", the head's averaged probabilities or None,
        why auto was not used or ""). `auto` takes the head's choice only when the checkpoint
        records that the head beat chance on held-out windows (emotion.auto_verdict)."""
        from kfusion.pipeline.training.emotion import auto_verdict
        if emotion != "auto":
            return EMOTIONS.index(emotion), "given", None, ""
        probs = None   # with auto, the head's view goes in the JSON whether it is used or not
        if self.classifier is not None:
            p = self._emotion_probabilities(mel, w2v, starts, batch_size)
            probs = {e: float(v) for e, v in zip(EMOTIONS, p)}
        usable, why = auto_verdict(self.emotion_record)
        if usable:
            return EMOTIONS.index(max(probs, key=probs.get)), "auto", probs, ""
        return EMOTIONS.index("neutral"), "neutral", probs, why

    @torch.inference_mode()
    def _emotion_probabilities(self, mel, w2v, starts, batch_size) -> np.ndarray:
        """Softmax of the emotion head, averaged over windows: (8,)."""
        from kfusion.pipeline.training.emotion import pooled_features
        acc = torch.zeros(len(EMOTIONS), dtype=torch.float64)
        for chunk, m, w in window_batches(mel, w2v, starts, self.cfg, self.encoder_info["encoder"],
                                          batch_size):
            logits = self.classifier(pooled_features(m, w).to(self.device))   # (B, 8)
            acc += logits.float().softmax(-1).sum(0).cpu().double()
        return (acc / len(starts)).numpy()

    def _landmarks(self, mel, w2v, starts, identity, emotion_id, T, batch_size,
                   workers: int = 1) -> np.ndarray:
        """(T, 68, 2) crop px: the model on every window, stitched. Batches go to `workers`
        threads side by side (predict() gives one per torch thread it was given, and runs
        torch itself on one thread): N batches at once instead of every small op split N
        ways, whose OpenMP barriers (the LSTM's steps, ...) cost seconds when another
        process holds a core (measured on the loaded 2-core machine, 60 s of speech: 3-17 s
        at 2 OpenMP threads, 0.5 s on one). The same numbers: a window's prediction does
        not depend on the thread count."""
        from kfusion.pipeline.predict.stitch import Stitcher
        stitch = Stitcher(T, self.cfg.windows.frames, (N_POINTS, 2))
        ident = torch.from_numpy(np.asarray(identity, np.float32))
        batches = window_batches(mel, w2v, starts, self.cfg, self.encoder_info["encoder"],
                                 batch_size)
        bar = progress(total=-(-len(starts) // batch_size), desc="model", unit="batch")
        with ThreadPoolExecutor(workers, thread_name_prefix="model") as pool:
            while round_ := list(itertools.islice(batches, workers)):   # bounded memory
                for (chunk, _, _), pred in zip(round_, pool.map(
                        lambda b: self._forward(b[1], b[2], ident, emotion_id), round_)):
                    for s, p in zip(chunk, pred):
                        stitch.add(s, p.astype(np.float64))
                    bar.update(1)
        bar.close()
        return stitch.result()                                  # (T, 68, 2)

    def _forward(self, mel: torch.Tensor, w2v: torch.Tensor, identity: torch.Tensor,
                 emotion_id: int) -> np.ndarray:
        """(B, 30, 68, 2) crop px for one batch of windows (in any thread)."""
        B = len(mel)
        batch = {"mel": mel.to(self.device), "w2v": w2v.to(self.device),
                 "identity": identity[None].expand(B, -1, -1).to(self.device),
                 "emotion": torch.full((B,), emotion_id, dtype=torch.long, device=self.device)}
        with torch.inference_mode():   # per thread
            return self.model(batch).float().cpu().numpy()


def still_in_silence(crop: np.ndarray, samples: np.ndarray, identity: np.ndarray,
                     cfg: Config) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's landmarks with the face at rest where the audio holds no speech
    (kfusion.pipeline.predict.silence), and the gate's record for the JSON."""
    from kfusion.pipeline.predict.silence import apply_gate, speech_gate
    gate = speech_gate(samples, cfg.audio.sample_rate_hz, cfg.landmarks.fps, len(crop))
    return apply_gate(crop, identity, gate.weight), gate.record()


def window_starts_for(T: int, frames: int, stride: int) -> list[int]:
    from kfusion.pipeline.predict.stitch import window_starts
    return window_starts(T, frames, stride)


def predict(audio: str | Path, image: str | Path, *, out: str | Path | None = None,
            emotion: str = "auto", checkpoint: str | Path | None = None,
            side_by_side: bool = False, strict: bool = False, stride_frames: int = 10,
            device: str = "auto", batch_size: int = 64, params: Config | None = None,
            ffmpeg: str = "", animate: bool = False, silence: str = "still") -> PredictResult:
    """Landmarks (and, with `out`, an mp4 + .npy/.csv files) for `audio` spoken by the face in
    `image`. checkpoint None = models/best.pt. With `params`, a checkpoint whose model config
    differs from it is refused. `animate`: the mp4 also shows the photo warped to the predicted
    landmarks. `silence`: "still" holds the face at rest where there is no speech, "model"
    keeps the model's output (kfusion.pipeline.predict.silence). Raises PredictError with a
    message a user can act on."""
    p = Predictor(checkpoint, device=device, params=params, ffmpeg=ffmpeg)
    return p.predict(audio, image, out=out, emotion=emotion, side_by_side=side_by_side,
                     strict=strict, stride_frames=stride_frames, batch_size=batch_size,
                     animate=animate, silence=silence)


# ----------------------------------------------------------------------------- outputs
def output_paths(out: str | Path) -> dict[str, Path]:
    """OUT.mp4 -> OUT.mp4, OUT.crop.npy, OUT.image.npy, OUT.crop.csv, OUT.image.csv, OUT.json."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise PredictError(f"--out {out}: expected a path ending in .mp4 (the landmark files "
                           f"are written beside it)")
    stem = out.with_suffix("")
    return {"video": out, "crop_npy": Path(f"{stem}.crop.npy"), "image_npy": Path(f"{stem}.image.npy"),
            "crop_csv": Path(f"{stem}.crop.csv"), "image_csv": Path(f"{stem}.image.csv"),
            "json": Path(f"{stem}.json")}


def check_writable(paths: dict[str, Path]) -> None:
    """Fail before any work when an output cannot be written (one probe file per folder)."""
    for p in paths.values():
        if p.is_dir():
            raise PredictError(f"output {p}: is a directory")
    for folder in {p.parent for p in paths.values()}:
        if folder.exists() and not folder.is_dir():
            raise PredictError(f"output folder {folder}: exists and is not a folder")
        if not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise PredictError(f"output folder {folder}: cannot be created ({e.strerror})") from None
        try:
            fd, probe = tempfile.mkstemp(prefix=".kfusion-write-test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise PredictError(f"output folder {folder}: not writable ({e.strerror})") from None
    for p in paths.values():
        if p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
            raise PredictError(f"output {p}: exists and cannot be replaced")


def landmarks_csv(points: np.ndarray, start_frame: int = 0) -> str:
    """(T, 68, 2) -> 'frame,point,x,y' rows (no header), frame-major, x and y to 3 decimals.
    One %-format of the whole block (a row template per point, repeated per frame): the
    text of a per-value f-string, ~8x faster."""
    T = len(points)
    row = "".join(f"%d,{p},%.3f,%.3f\n" for p in range(N_POINTS))
    values = np.empty((T, N_POINTS, 3), object)        # frame, x, y as Python int / float
    values[:, :, 0] = np.arange(start_frame, start_frame + T)[:, None]
    values[:, :, 1:] = points.astype(np.float64)
    return (row * T) % tuple(values.ravel().tolist())


def write_csv(path: Path, points: np.ndarray, frames_per_block: int = 1800) -> None:
    """The CSV, written a minute of frames at a time (a 10-minute clip is 2 M rows)."""
    from kfusion.pipeline.io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("frame,point,x,y\n")
        for s in range(0, len(points), frames_per_block):
            fh.write(landmarks_csv(points[s:s + frames_per_block], s))


def write_landmark_files(result: PredictResult, paths: dict[str, Path]) -> None:
    """OUT.crop.npy / .image.npy (float32) and the two CSVs, each written atomically."""
    from kfusion.pipeline.io import atomic_path
    for key, pts in (("crop", result.landmarks_crop), ("image", result.landmarks_image)):
        with atomic_path(paths[f"{key}_npy"]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, pts.astype(np.float32))
        write_csv(paths[f"{key}_csv"], pts)


def write_outputs(result: PredictResult, paths: dict[str, Path], speech, *, side_by_side: bool,
                  animate: bool = False, ffmpeg: str = "") -> dict[str, float]:
    """Write every output (atomically): the landmark files in a thread while the video is
    drawn here and encoded by ffmpeg, with `speech` (a render.SpeechTrack) as its audio.
    Returns the seconds each of the two took."""
    from kfusion.pipeline.io import write_json
    from kfusion.pipeline.predict.render import write_video
    files = Background(write_landmark_files, result, paths, name="predict-files")
    timings: dict[str, float] = {}
    try:
        try:
            with timed(timings, "render_mp4"):
                write_video(paths["video"], result.identity.crop_rgb, result.landmarks_crop,
                            result.identity.landmarks_crop, speech, result.fps,
                            side_by_side=side_by_side, animate=animate, ffmpeg=ffmpeg)
        finally:
            files.wait()
        files.result()
        timings["write_landmarks"] = files.seconds
        write_json(paths["json"], summary(result, paths))
        umask = os.umask(0)
        os.umask(umask)
        for p in paths.values():   # temp files are created 0600; outputs are the user's files
            os.chmod(p, 0o666 & ~umask)
    except (OSError, RuntimeError) as e:   # RuntimeError: ffmpeg failed (e.g. disk full)
        raise PredictError(f"cannot write outputs beside {paths['video']}: {e}") from None
    return timings


def summary(result: PredictResult, paths: dict[str, Path] | None = None) -> dict[str, Any]:
    ident = result.identity
    return {"frames": len(result.landmarks_crop), "fps": result.fps,
            "duration_s": round(result.duration_s, 4), "emotion": result.emotion,
            "emotion_source": result.emotion_source,
            "emotion_note": result.emotion_note,
            "emotion_probabilities": result.emotion_probabilities,
            "checkpoint": str(result.checkpoint), "encoder": result.encoder,
            "model": result.model,   # fusion and the ablation switches it was trained with
            "silence": result.silence,   # the still-in-silence gate: mode, threshold, fractions
            "windows": result.n_windows, "stride_frames": result.stride_frames,
            "crop_box": [float(v) for v in ident.crop_box], "faces_in_image": ident.n_faces,
            "image_wh": list(ident.image_wh),
            "files": {k: str(v) for k, v in (paths or result.paths).items()},
            "warnings": result.warnings}
