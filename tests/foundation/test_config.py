"""The typed config: every bad params file fails with a message naming key and file."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kfusion import config as C


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repo_params_file_is_valid_and_complete(repo_root: Path) -> None:
    # params.yaml must name every key the schema declares, so `dvc exp run -S` can reach each.
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    cfg = C.load(repo_root / "params.yaml")

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) and k not in ("roots", "sets") else {prefix + k}
        return out
    assert keys(data) == keys(C.to_dict(cfg))


def test_typo_key_names_key_file_and_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, {"model": {"fusoin": "kan"}})
    with pytest.raises(C.ConfigError) as e:
        C.load(p)
    msg = str(e.value)
    assert "model.fusoin" in msg and str(p) in msg and "fusion" in msg


def test_wrong_type(tmp_path: Path) -> None:
    p = _write(tmp_path, {"train": {"epochs": "ten"}})
    with pytest.raises(C.ConfigError, match=r"train\.epochs: expected int, got 'ten'") as e:
        C.load(p)
    assert str(p) in str(e.value)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match="train.batch_size"):
        C.load(_write(tmp_path, {"train": {"batch_size": True}}))


def test_out_of_range(tmp_path: Path) -> None:
    p = _write(tmp_path, {"audio": {"max_reject_fraction": 1.5}})
    with pytest.raises(C.ConfigError, match=r"audio\.max_reject_fraction: 1\.5 is out of range; "
                                            r"allowed: \[0\.0, 1\.0\]"):
        C.load(p)


def test_unknown_enum_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match=r"model\.fusion: 'transformer' is not allowed; "
                                            r"allowed values: 'kan', 'mlp', 'none'"):
        C.load(_write(tmp_path, {"model": {"fusion": "transformer"}}))


def test_nested_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match=r"unknown key model\.kan\.grid; allowed keys under model\.kan"):
        C.load(_write(tmp_path, {"model": {"kan": {"grid": 5}}}))


def test_cross_field_check(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match="demo.emotions"):
        C.load(_write(tmp_path, {"demo": {"emotions": ["neutral", "bored"]}}))


def test_int_widens_to_float_and_defaults_fill_in(tmp_path: Path) -> None:
    cfg = C.load(_write(tmp_path, {"train": {"lr": 1}}))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.fusion == "kan"  # untouched default


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match="no such params file"):
        C.load(tmp_path / "nope.yaml")


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = C.load(_write(tmp_path, {"model": {"fusion": "mlp"}, "train": {"epochs": 3}}))
    C.dump(cfg, tmp_path / "out" / "config.yaml")
    again = C.load(tmp_path / "out" / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("rate", [22050, 8000, 44100])
def test_a_sample_rate_the_encoders_cannot_take_is_rejected(tmp_path: Path, rate: int) -> None:
    # Features at another rate would sit on the wrong time base: reject, naming the key.
    with pytest.raises(C.ConfigError, match=rf"audio\.sample_rate_hz: {rate} is not supported"):
        C.load(_write(tmp_path, {"audio": {"sample_rate_hz": rate}}))
