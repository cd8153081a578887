"""The one place `device: auto | cpu | cuda` becomes a torch device."""
from __future__ import annotations

import torch

from kfusion.config import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when present, else CPU; cuda: an error when absent. Under torchrun each rank
    takes the GPU `local_rank`."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device; "
                           "set device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)
