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
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from kfusion.config import Config, ConfigError, model_switches
from kfusion.device import resolve_device
from kfusion.pipeline.io import progress
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
    timings_s: dict[str, float] = field(default_factory=dict)
    silence: dict[str, Any] = field(default_factory=dict)   # the gate (predict.silence)


def check_params(trained: Config, params: Config, path: Path) -> None:
    """Refuse a checkpoint whose model or input settings differ from the params'."""
    diffs = config_differences(trained, params)
    if diffs:
        raise PredictError(
            f"{path} was trained with another model configuration than the params "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); run `dvc repro` to "
            f"retrain, or pass the matching --checkpoint")


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


def _first_frame(path: Path, pix_fmt: str, ffmpeg: str) -> np.ndarray:
    from kfusion.pipeline.media.container import MediaError
    from kfusion.pipeline.media.video import iter_frames
    try:
        for frame in iter_frames(path, ffmpeg=ffmpeg, pix_fmt=pix_fmt, max_frames=1):
            return frame
    except MediaError as e:
        raise PredictError(f"image {path}: cannot be decoded ({e.message})") from None
    raise PredictError(f"image {path}: ffmpeg decoded no picture")


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
    gray = _first_frame(image, "gray", ffmpeg)   # what the landmark stage's tracker sees
    backend = backend or make_backend(lcfg)
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
    rgb = _first_frame(image, "rgb24", ffmpeg)
    ident = Identity(crop_box=box.astype(np.float32), landmarks_crop=clip.landmarks_px[0],
                     landmarks_image=to_video_px(clip.landmarks_px[:1], clip.crop_box[:1],
                                                 lcfg.crop_px)[0],
                     crop_rgb=crop_square(rgb, box, lcfg.crop_px), n_faces=len(faces),
                     image_wh=(gray.shape[1], gray.shape[0]))
    return ident, notes


# ----------------------------------------------------------------------------- features
def load_encoder(cfg: Config, record: dict[str, Any], device: torch.device):
    """The content encoder the checkpoint's features came from (its record), loaded here;
    PredictError when it cannot be, or when its weights are not the recorded ones."""
    from kfusion.pipeline.data.encoders import EncoderLoadError, EncoderMismatch, load_recorded
    try:
        return load_recorded(record, cfg.features, device=device.type,
                             threads=max(torch.get_num_threads(), 1))
    except (EncoderLoadError, EncoderMismatch) as e:
        raise PredictError(f"the checkpoint's content encoder cannot be used here: {e}") from None


def clip_features(samples: np.ndarray, cfg: Config, encoder) -> tuple[np.ndarray, np.ndarray]:
    """mel (n_mel, n_mels) float32 and w2v (n_frames, feature_dim) float16 (the content
    encoder's states) for the whole clip, padded so every window has its full spans."""
    from kfusion.pipeline.data.features import log_mel, mel_transform
    timing = window_timing(cfg, encoder.record["encoder"])
    fps, frames, sr = cfg.landmarks.fps, cfg.windows.frames, cfg.audio.sample_rate_hz
    x = samples
    if len(x) < round(frames / fps * sr):   # shorter than one window: pad with silence
        x = np.concatenate([x, np.zeros(round(frames / fps * sr) - len(x), np.float32)])
    mel = log_mel(x, mel_transform(cfg.features, sr))                          # (n_mel, n_mels)
    w2v = encoder.encode(x)                                # (n_frames, feature_dim), chunked > 30 s
    # The last window (flush with the end) may need a frame more than the clip gives:
    # repeat the edge frame instead of dropping the window as training does.
    T = max(round(len(samples) / sr * fps), frames)
    m0, w0 = timing.audio_starts(T - frames)
    mel = _edge_pad(mel, m0 + timing.n_mel)
    w2v = _edge_pad(w2v, w0 + timing.n_tokens)
    return mel, w2v


def _edge_pad(a: np.ndarray, n: int) -> np.ndarray:
    return a if len(a) >= n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])


def window_batches(mel: np.ndarray, w2v: np.ndarray, starts: list[int], cfg: Config,
                   encoder: str, batch_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(starts, mel (B, 100, n_mels) f32, w2v (B, n_tokens, feature_dim) f32): each window's
    audio spans, as the windows stage cuts them (kfusion.shapes.window_timing)."""
    timing = window_timing(cfg, encoder)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        first = [timing.audio_starts(s) for s in chunk]
        m = np.stack([mel[m0:m0 + timing.n_mel] for m0, _ in first])
        w = np.stack([w2v[w0:w0 + timing.n_tokens] for _, w0 in first])
        yield chunk, torch.from_numpy(m.astype(np.float32)), torch.from_numpy(w.astype(np.float32))


# ----------------------------------------------------------------------------- predictor
class Predictor:
    """A loaded checkpoint (model, emotion head, encoder, face finder), reusable across inputs."""

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
            self.model = build_checkpoint_model(self.cfg, ckpt, self.checkpoint, self.device)
        except CheckpointError as e:
            raise PredictError(str(e)) from None
        self.ffmpeg = ffmpeg
        head = emotion_head(ckpt)
        self.classifier = head.to(self.device) if head is not None else None
        self.emotion_record = ckpt.get("emotion_classifier")   # the head and its held-out test
        self._encoder = None
        self._backend = None
        self.load_seconds = {"checkpoint": time.perf_counter() - t0}

    # lazily: a run that fails on its inputs should fail before the slow loads
    def encoder(self):
        if self._encoder is None:
            t0 = time.perf_counter()
            self._encoder = load_encoder(self.cfg, self.encoder_info, self.device)
            self.load_seconds["encoder"] = time.perf_counter() - t0
        return self._encoder

    def backend(self):
        if self._backend is None:
            from kfusion.pipeline.data.landmarks import make_backend
            t0 = time.perf_counter()
            self._backend = make_backend(self.cfg.landmarks)
            self.load_seconds["face_models"] = time.perf_counter() - t0
        return self._backend

    def predict(self, audio: str | Path, image: str | Path, *, out: str | Path | None = None,
                emotion: str = "auto", side_by_side: bool = False, strict: bool = False,
                stride_frames: int = 10, batch_size: int = 64,
                animate: bool = False, silence: str = "still") -> PredictResult:
        from kfusion.pipeline.predict.silence import MODES
        cfg, timings = self.cfg, {}
        frames, fps, sr = cfg.windows.frames, cfg.landmarks.fps, cfg.audio.sample_rate_hz
        if emotion != "auto" and emotion not in EMOTIONS:
            raise PredictError(f"--emotion {emotion!r}: expected auto or one of {', '.join(EMOTIONS)}")
        if not 1 <= stride_frames <= frames:
            raise PredictError(f"stride_frames={stride_frames}: expected 1..{frames} (the window)")
        if silence not in MODES:
            raise PredictError(f"--silence {silence!r}: expected one of {', '.join(MODES)}")
        paths = output_paths(out) if out is not None else {}
        if paths:
            check_writable(paths)
        with self._step("decode audio", timings, "decode_audio"):
            samples = read_audio(audio, cfg, self.ffmpeg)
        duration_s = len(samples) / sr
        with self._step("find the face", timings, "face"):
            identity, notes = find_identity(image, cfg, strict=strict, ffmpeg=self.ffmpeg,
                                            backend=self.backend())
        encoder = self.encoder()   # loaded once per Predictor; timed in load_seconds
        with self._step(f"features of {duration_s:.1f} s of audio (log-mel, "
                        f"{self.encoder_info['encoder']})", timings, "features"):
            mel, w2v = clip_features(samples, cfg, encoder)
        T = round(duration_s * fps)
        starts = window_starts_for(T, frames, stride_frames)
        with self._step("emotion", timings, "emotion"):
            emotion_id, source, probs, why = self._choose_emotion(emotion, mel, w2v, starts,
                                                                  batch_size)
        with self._step(f"model on {len(starts)} windows", timings, "model"):
            crop = self._landmarks(mel, w2v, starts, identity.landmarks_crop, emotion_id, T,
                                   batch_size)
        gate = {"mode": "model"}
        if silence == "still":
            with self._step("hold the face still where there is no speech", timings, "silence"):
                crop, gate = still_in_silence(crop, samples, identity.landmarks_crop, cfg)
        from kfusion.pipeline.data.landmarks import to_video_px
        image_px = to_video_px(crop, np.repeat(identity.crop_box[None], T, 0), cfg.landmarks.crop_px)
        result = PredictResult(
            landmarks_crop=crop, landmarks_image=image_px, fps=fps, duration_s=duration_s,
            emotion=EMOTIONS[emotion_id], emotion_source=source, emotion_probabilities=probs,
            emotion_note=why, checkpoint=self.checkpoint, encoder=self.encoder_info,
            identity=identity, n_windows=len(starts), stride_frames=stride_frames,
            warnings=notes, timings_s=timings, model=model_switches(cfg.model), silence=gate)
        if paths:
            self._say(f"write {T} frames of video" + (" (animated face)" if animate else ""))
            timings.update(write_outputs(result, paths, samples, sr, side_by_side=side_by_side,
                                         animate=animate, ffmpeg=self.ffmpeg))
            result.paths = paths
        return result

    def _say(self, what: str) -> None:
        if self.log is not None:
            self.log(f"[predict] {what}")

    @contextlib.contextmanager
    def _step(self, what: str, timings: dict[str, float], key: str) -> Iterator[None]:
        """Say what starts (a long input is minutes of silence otherwise) and time it."""
        self._say(what)
        t = time.perf_counter()
        yield
        timings[key] = time.perf_counter() - t

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

    @torch.no_grad()
    def _emotion_probabilities(self, mel, w2v, starts, batch_size) -> np.ndarray:
        """Softmax of the emotion head, averaged over windows: (8,)."""
        from kfusion.pipeline.training.emotion import pooled_features
        acc = torch.zeros(len(EMOTIONS), dtype=torch.float64)
        for chunk, m, w in window_batches(mel, w2v, starts, self.cfg, self.encoder_info["encoder"],
                                          batch_size):
            logits = self.classifier(pooled_features(m, w).to(self.device))   # (B, 8)
            acc += logits.float().softmax(-1).sum(0).cpu().double()
        return (acc / len(starts)).numpy()

    @torch.no_grad()
    def _landmarks(self, mel, w2v, starts, identity, emotion_id, T, batch_size) -> np.ndarray:
        from kfusion.pipeline.predict.stitch import Stitcher
        frames = self.cfg.windows.frames
        stitch = Stitcher(T, frames, (N_POINTS, 2))
        ident = torch.from_numpy(np.asarray(identity, np.float32))
        batches = progress(window_batches(mel, w2v, starts, self.cfg, self.encoder_info["encoder"],
                                          batch_size),
                           desc="model", total=-(-len(starts) // batch_size), unit="batch")
        for chunk, m, w in batches:
            B = len(chunk)
            batch = {"mel": m.to(self.device), "w2v": w.to(self.device),
                     "identity": ident[None].expand(B, -1, -1).to(self.device),
                     "emotion": torch.full((B,), emotion_id, dtype=torch.long, device=self.device)}
            pred = self.model(batch).float().cpu().numpy()     # (B, 30, 68, 2) crop px
            for s, p in zip(chunk, pred):
                stitch.add(s, p.astype(np.float64))
        return stitch.result()                                  # (T, 68, 2)


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
    """(T, 68, 2) -> 'frame,point,x,y' rows (no header), frame-major."""
    T = len(points)
    frame = np.repeat(np.arange(start_frame, start_frame + T), N_POINTS)
    point = np.tile(np.arange(N_POINTS), T)
    xy = points.reshape(-1, 2).tolist()
    return "".join(f"{f},{p},{x:.3f},{y:.3f}\n" for f, p, (x, y) in zip(frame, point, xy))


def write_csv(path: Path, points: np.ndarray, frames_per_block: int = 1800) -> None:
    """The CSV, written a minute of frames at a time (a 10-minute clip is 2 M rows)."""
    from kfusion.pipeline.io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("frame,point,x,y\n")
        for s in range(0, len(points), frames_per_block):
            fh.write(landmarks_csv(points[s:s + frames_per_block], s))


def render_frames(result: PredictResult, side_by_side: bool,
                  animate: bool = False) -> Iterator[np.ndarray]:
    """Per frame, side by side: the landmarks on the identity crop; with `side_by_side`, the
    landmarks alone on a neutral canvas; with `animate`, the identity photo warped to the
    landmarks (kfusion.pipeline.media.warp.TalkingHead), a talking head."""
    from kfusion.pipeline.media.draw import draw_landmarks, neutral_canvas
    from kfusion.pipeline.media.warp import TalkingHead
    crop = result.identity.crop_rgb
    canvas = neutral_canvas(crop.shape[0])
    head = TalkingHead(crop, result.identity.landmarks_crop) if animate else None
    for pts in result.landmarks_crop:
        panels = [draw_landmarks(crop, pts)]
        if side_by_side:
            panels.append(draw_landmarks(canvas, pts, (40, 40, 40)))
        if head is not None:
            panels.append(head.frame(pts))
        yield np.concatenate(panels, 1) if len(panels) > 1 else panels[0]


def write_outputs(result: PredictResult, paths: dict[str, Path], samples: np.ndarray,
                  sample_rate_hz: int, *, side_by_side: bool, animate: bool = False,
                  ffmpeg: str = "") -> dict[str, float]:
    """Write every output (atomically); returns seconds spent on landmark files and on the mp4."""
    from kfusion.pipeline.io import atomic_path, write_json
    from kfusion.pipeline.media.mp4 import write_mp4
    t0 = time.perf_counter()
    try:
        for key, pts in (("crop", result.landmarks_crop), ("image", result.landmarks_image)):
            with atomic_path(paths[f"{key}_npy"]) as tmp, open(tmp, "wb") as fh:
                np.save(fh, pts.astype(np.float32))
            write_csv(paths[f"{key}_csv"], pts)
        t1 = time.perf_counter()
        px = result.identity.crop_rgb.shape[0]
        frames = progress(render_frames(result, side_by_side, animate), desc="render",
                          total=len(result.landmarks_crop), unit="frame")
        write_mp4(paths["video"], frames, fps=result.fps,
                  size_wh=((1 + side_by_side + animate) * px, px), audio=samples,
                  sample_rate_hz=sample_rate_hz, ffmpeg=ffmpeg)
        t2 = time.perf_counter()
        write_json(paths["json"], summary(result, paths))
        umask = os.umask(0)
        os.umask(umask)
        for p in paths.values():   # temp files are created 0600; outputs are the user's files
            os.chmod(p, 0o666 & ~umask)
    except (OSError, RuntimeError) as e:   # RuntimeError: ffmpeg failed (e.g. disk full)
        raise PredictError(f"cannot write outputs beside {paths['video']}: {e}") from None
    return {"write_landmarks": t1 - t0, "render_mp4": t2 - t1}


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
