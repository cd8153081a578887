"""Tiny synthetic window folders and a tiny model config, so training runs take seconds."""
from pathlib import Path

import pytest

from kfusion.config import from_dict
from train_helpers import N_MELS, tiny_params, write_synthetic_windows


@pytest.fixture
def windows(tmp_path: Path) -> Path:
    return write_synthetic_windows(tmp_path / "windows", n_train=48, n_val=16, n_test=16,
                                   n_mels=N_MELS)


@pytest.fixture
def tiny_cfg(tmp_path: Path, windows: Path):
    return lambda **train: from_dict(tiny_params(tmp_path, **train), "tiny")
