"""kfusion evaluate's cache key: the corpus and every preprocessing setting, not paths,
workers or threads."""
import dataclasses
from pathlib import Path

from kfusion.config import Config
from kfusion.corpus_eval import preprocessing_key


def test_cache_key_follows_root_and_preprocessing_only(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg = Config()
    key = preprocessing_key(cfg, "folder", tmp_path / "a")
    assert key == preprocessing_key(cfg, "folder", tmp_path / "a" / ".." / "a")
    assert key != preprocessing_key(cfg, "folder", tmp_path / "b")
    assert key != preprocessing_key(cfg, "cremad", tmp_path / "a")
    rep = dataclasses.replace
    for changed in (rep(cfg, landmarks=rep(cfg.landmarks, crop_px=128)),
                    rep(cfg, features=rep(cfg.features, n_mels=40)),
                    rep(cfg, windows=rep(cfg.windows, identity="clip")),
                    rep(cfg, audio=rep(cfg.audio, min_rms=0.01))):
        assert preprocessing_key(changed, "folder", tmp_path / "a") != key
    for same in (rep(cfg, landmarks=rep(cfg.landmarks, out="elsewhere")),
                 rep(cfg, features=rep(cfg.features, threads=3, out="y")),
                 rep(cfg, model=rep(cfg.model, d_model=32)), rep(cfg, seed=99)):
        assert preprocessing_key(same, "folder", tmp_path / "a") == key
