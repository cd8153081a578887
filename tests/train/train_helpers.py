"""Shared by tests/train: a tiny real-model params dict (imported by name; no package)."""
from pathlib import Path

N_MELS = 16


def tiny_params(tmp: Path, **train) -> dict:
    """A params dict: the real model, shrunk; paths inside tmp."""
    return {
        "seed": 7, "device": "cpu",
        "features": {"n_mels": N_MELS},
        "windows": {"out": str(tmp / "windows")},
        "model": {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                  "ff_mult": 1, "lstm_hidden": 8, "fusion_channels": 8, "dropout": 0.1,
                  "kan": {"hidden": [8], "grid_size": 3}},
        "train": {"epochs": 3, "batch_size": 16, "threads": 1,
                  "resume_dir": str(tmp / "resume"), "out": str(tmp / "models"),
                  "emotion_classifier_epochs": 5, "emotion_classifier_hidden": 8, **train},
        "evaluate": {"out": str(tmp / "metrics"), "plots": str(tmp / "plots"),
                     "landmarks_dir": str(tmp / "landmarks"), "qualitative_windows": 2,
                     "qualitative_frames": 3},
    }
