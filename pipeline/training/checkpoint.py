"""Checkpoints: the one place that writes them, reads them back and rebuilds their model.

The train stage writes models/best.pt, models/last.pt and, after every epoch, the resume
state with `save_checkpoint`: a torch-saved dict of

    model (state_dict), config (kfusion.config.to_dict), encoder (the record of the content
    encoder that made the features: name, weights hash, width; pipeline/data/encoders), data
    (the windows' fingerprint), world_size, device, amp, version, epoch,
    history, metrics, best_score; after training also emotion_classifier
    (EmotionClassifier.export() plus its report). last.pt and the resume state add
    optimizer, scheduler, scaler, rng and resume_key.

Evaluation and `kfusion predict` read one with `read_checkpoint` (a missing, unreadable or
foreign file is a CheckpointError with one line saying what to do), rebuild the config it
was trained with (`checkpoint_config`) and its model, for its encoder's features, with the
weights loaded strictly (`build_checkpoint_model`); `load_trained` does all three. Both
refuse features of another encoder than the checkpoint's (`check_encoder`).
"""
from __future__ import annotations

import dataclasses
import io
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from kfusion.config import Config, ConfigError, from_dict, to_dict
from kfusion.pipeline.data.encoders import EncoderMismatch, check_same, record_of
from kfusion.pipeline.io import StageError, atomic_write_bytes
from kfusion.pipeline.training.dataset import file_sha256
from kfusion.pipeline.training.emotion import EmotionClassifier

CHECKPOINT_VERSION = 2   # 2: the content encoder's full record (name, weights hash, width)
# Keys outside `model` whose values shape what the model sees; features made with other
# values would not look like the checkpoint's training windows. (Which encoder made them is
# checked on its record, name and weights hash: check_encoder.)
INPUT_KEYS = (("features", ("n_mels", "n_fft", "win_length", "hop_length")),
              ("windows", ("frames",)), ("landmarks", ("fps", "crop_px", "crop_scale")),
              ("audio", ("sample_rate_hz",)))


class CheckpointError(StageError):
    """A checkpoint that cannot be used (missing, unreadable, foreign, or from other code)."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """The same state -> the same bytes, whatever folder, file name or history made it.
    torch.save goes into memory, then the bytes to `path` atomically: saved to a file, torch
    names the zip's root folder after the file (atomic_path's random temp name); into a buffer
    it is always `archive`. The state is first made `canonical`."""
    buf = io.BytesIO()
    torch.save(canonical(state), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def canonical(obj: Any) -> Any:
    """`obj` with fresh containers and interned strings. Pickle writes an object seen before
    as a reference to it, by identity: a history loaded from a resume state holds its own
    copies of the key strings, a fresh run shares the literals, and equal checkpoints came
    out as different bytes. With every equal string one object and no container shared,
    the bytes depend on the values only. Tensors, arrays and other objects (a module's
    state_dict, an OrderedDict made fresh at each save) pass as they are."""
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if type(obj) in (list, tuple):
        return type(obj)(canonical(v) for v in obj)
    if type(obj) is dict:
        return {canonical(k): canonical(v) for k, v in obj.items()}
    return obj


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The saved dict as it is, on CPU, unchecked (the resume state; tests)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint the train stage wrote, or CheckpointError saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; run `dvc repro` to train one, "
                              f"or pass --checkpoint PATH")
    try:
        state = load_checkpoint(path)
    except Exception as e:  # torch.load raises many kinds for a file that is not its own
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{first})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a kfusion checkpoint (no model weights and "
                              f"config); use models/best.pt or models/last.pt from the train "
                              f"stage")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> Config:
    """The config the checkpoint was trained with, validated by this code's schema."""
    try:
        return from_dict(state["config"], f"{path} (its recorded config)")
    except ConfigError as e:
        raise CheckpointError(f"{path}: written with another version of kfusion's config "
                              f"({e}); retrain with `dvc repro`") from None


def checkpoint_encoder(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The record of the encoder whose features the checkpoint was trained on."""
    try:
        return record_of(state.get("encoder") or {}, f"{path} (its encoder)")
    except EncoderMismatch:
        raise CheckpointError(f"{path}: written before content encoders were recorded (no "
                              f"encoder name, weights hash and width); retrain with `dvc "
                              f"repro`") from None


def check_encoder(state: dict[str, Any], path: str | Path, features: dict[str, Any],
                  what: str) -> None:
    """CheckpointError (one line) unless `features` (an encoder record) names the encoder the
    checkpoint was trained on: same name and weights hash."""
    try:
        check_same(checkpoint_encoder(state, path), features, f"{path} was trained on", what)
    except EncoderMismatch as e:
        raise CheckpointError(f"{e}; recompute the features with the checkpoint's encoder "
                              f"or retrain (dvc repro)") from None


def build_checkpoint_model(cfg: Config, state: dict[str, Any], path: str | Path,
                           device: torch.device,
                           build_model: Callable[[Config, dict], torch.nn.Module] | None = None,
                           ) -> torch.nn.Module:
    """The model `cfg` builds for the checkpoint's encoder, with the checkpoint's weights
    loaded strictly, in eval mode."""
    if build_model is None:
        from kfusion.model.build import build_model
    encoder = checkpoint_encoder(state, path)
    model = build_model(dataclasses.replace(cfg, device="cpu"), encoder)  # weights: CPU tensors
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        raise CheckpointError(f"{path}: its weights do not fit the model its config builds "
                              f"with this code (a checkpoint from another model configuration "
                              f"or version: {detail[:300]}); retrain with `dvc repro`") from None
    return model.to(device).eval()


def emotion_head(state: dict[str, Any]) -> EmotionClassifier | None:
    """The audio -> emotion head the train stage stored, or None (emotion_classifier_epochs 0)."""
    d = state.get("emotion_classifier")
    return EmotionClassifier.from_export(d) if d else None


def add_emotion_head(paths: list[Path], clf: EmotionClassifier, report: dict[str, Any]) -> None:
    """Store the fitted emotion head (and its accuracy report) in each checkpoint."""
    for path in paths:
        state = load_checkpoint(path)
        state["emotion_classifier"] = {**clf.export(), "report": report}
        save_checkpoint(path, state)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(trained: Config, current: Config) -> list[str]:
    """'key: checkpoint value vs params value' for the model keys and INPUT_KEYS."""
    a, b = {"model": to_dict(trained.model)}, {"model": to_dict(current.model)}
    for section, keys in INPUT_KEYS:
        a[section] = {k: getattr(getattr(trained, section), k) for k in keys}
        b[section] = {k: getattr(getattr(current, section), k) for k in keys}
    fa, fb = _flat(a), _flat(b)
    return [f"{k}: {fa[k]!r} in the checkpoint, {fb[k]!r} in params" for k in fa if fa[k] != fb[k]]


@dataclass
class Trained:
    """A checkpoint's model, ready to run, with the config and state it came from."""
    model: torch.nn.Module
    cfg: Config
    state: dict[str, Any]
    path: Path

    @property
    def emotion_classifier(self) -> EmotionClassifier | None:
        return emotion_head(self.state)

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)


def load_trained(path: str | Path, device: torch.device,
                 build_model: Callable[[Config, dict], torch.nn.Module] | None = None) -> Trained:
    """Read a checkpoint and rebuild its model with the config it was trained with."""
    path = Path(path)
    state = read_checkpoint(path)
    cfg = checkpoint_config(state, path)
    return Trained(build_checkpoint_model(cfg, state, path, device, build_model), cfg, state, path)
