"""A checkpoint's bytes depend on its values only: not on the file's name or folder, and not on
whether its history was built in this process or loaded from a resume state."""
from __future__ import annotations

import torch

from kfusion.pipeline.training.checkpoint import load_checkpoint, save_checkpoint

KEYS = ("epoch", "train/loss", "lr", "val/loss")


def _state(history: list[dict]) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    return {"model": model.state_dict(), "history": history, "metrics": history[-1],
            "config": {"train": {"epochs": 2, "out": "models"}}}


def _record(epoch: int) -> dict:
    return {k: float(epoch) if k != "epoch" else epoch for k in KEYS}


def test_same_values_same_bytes_in_any_folder_and_after_a_resume(tmp_path):
    # a run that went straight through: epoch 1's record built here, its strings the literals
    fresh = tmp_path / "one" / "models" / "best.pt"
    fresh.parent.mkdir(parents=True)
    straight = [_record(1), _record(2)]
    save_checkpoint(fresh, _state(straight))
    # a resumed run: epoch 1's record comes back from the resume state (its own key strings)
    resume = tmp_path / "state.pt"
    save_checkpoint(resume, _state([_record(1)]))
    resumed = load_checkpoint(resume)["history"] + [_record(2)]
    other = tmp_path / "elsewhere" / "deeper" / "last.pt"
    other.parent.mkdir(parents=True)
    save_checkpoint(other, _state(resumed))
    assert other.read_bytes() == fresh.read_bytes()
    # and it loads back as saved, module versions included
    back = load_checkpoint(other)
    assert back["history"] == straight and back["model"]._metadata[""] == {"version": 1}
    torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)).load_state_dict(back["model"])
