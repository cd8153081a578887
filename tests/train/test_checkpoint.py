"""The one checkpoint reader: a trained model comes back exactly; every way a file can fail to
be a usable checkpoint is one line naming the file and what to do."""
import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from kfusion.pipeline.training.checkpoint import (CheckpointError, config_differences,
                                                  load_checkpoint, load_trained, save_checkpoint)
from kfusion.pipeline.training.dataset import WindowDataset, file_sha256, model_inputs
from kfusion.pipeline.training.loop import train


@pytest.fixture
def best(tiny_cfg, windows: Path, tmp_path) -> Path:
    return train(tiny_cfg(epochs=1), windows, tmp_path / "models").best


def test_load_trained_rebuilds_the_trained_model(best: Path, tiny_cfg, windows: Path):
    t = load_trained(best, torch.device("cpu"))
    state = load_checkpoint(best)
    assert t.cfg == tiny_cfg(epochs=1) and not t.model.training
    assert all(torch.equal(v, state["model"][k]) for k, v in t.model.state_dict().items())
    assert t.sha256 == file_sha256(best)
    batch = next(iter(DataLoader(WindowDataset(windows / "test"), batch_size=4)))
    with torch.no_grad():   # the emotion head the train stage stored, usable as is
        ids = t.emotion_classifier.predict(batch["mel"], batch["w2v"])
        assert ids.shape == (4,) and t.model(model_inputs(batch, "cpu")).shape == (4, 30, 68, 2)


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_trained(path, torch.device("cpu"))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_and_unreadable_files(tmp_path: Path):
    assert _error(tmp_path / "none.pt") == (f"{tmp_path / 'none.pt'}: no such checkpoint; run "
                                            f"`dvc repro` to train one, or pass --checkpoint PATH")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    assert _error(tmp_path / "text.pt").startswith(f"{tmp_path / 'text.pt'}: not a readable checkpoint (")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert "not a kfusion checkpoint" in _error(tmp_path / "foreign.pt")


def test_config_of_another_version_and_weights_of_another_model(best: Path, tmp_path: Path):
    state = load_checkpoint(best)
    state["config"]["model"]["no_such_key"] = 1
    save_checkpoint(tmp_path / "old.pt", state)
    msg = _error(tmp_path / "old.pt")
    assert "written with another version of kfusion's config" in msg and "no_such_key" in msg
    state = load_checkpoint(best)
    state["config"]["model"]["fusion"] = "mlp"   # kan weights under a config that says mlp
    save_checkpoint(tmp_path / "mlp.pt", state)
    msg = _error(tmp_path / "mlp.pt")
    assert msg.startswith(f"{tmp_path / 'mlp.pt'}: its weights do not fit the model") and \
        "another model configuration" in msg and "dvc repro" in msg


def test_config_differences_name_model_and_input_keys(best: Path):
    trained = load_trained(best, torch.device("cpu")).cfg
    assert config_differences(trained, trained) == []
    other = dataclasses.replace(trained, model=dataclasses.replace(trained.model, d_model=32),
                                features=dataclasses.replace(trained.features, n_mels=80))
    assert config_differences(trained, other) == [
        "model.d_model: 16 in the checkpoint, 32 in params",
        "features.n_mels: 16 in the checkpoint, 80 in params"]
