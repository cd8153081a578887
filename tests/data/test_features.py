"""features: log-mel numbers, wav2vec2 loading (local dir / recorded fallback), batching, resume."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from kfusion.config import FeaturesConfig
from kfusion.pipeline.data.audio import AUDIO_SCHEMA
from kfusion.pipeline.data.features import (load_wav2vec2, log_mel, mel_transform, n_w2v_frames, plan_batches,
                               read_meta, read_shard, wav2vec2_features)
from kfusion.pipeline.data.shards import write_shard
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
    model, fallback, _ = load_wav2vec2(str(tiny_wav2vec2_dir(tmp_path / "w2v")))
    assert fallback is False
    for n in (16000, 16321, 47648):
        with torch.no_grad():
            h = model(torch.zeros(1, n)).last_hidden_state
        assert h.shape == (1, n_w2v_frames(n), 768)
    assert n_w2v_frames(16000) == 49


def test_fallback_is_seeded_and_recorded():
    with pytest.warns(UserWarning, match="seeded random weights"):
        a, fb, why = load_wav2vec2("/nonexistent/wav2vec2", seed=7)
    assert fb is True and why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b, _, _ = load_wav2vec2("/nonexistent/wav2vec2", seed=7)
    assert a.config.num_hidden_layers == 12 and a.config.hidden_size == 768   # base
    pa_, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert all(torch.equal(pa_[k], pb[k]) for k in pa_)
    with pytest.raises(FileNotFoundError, match="wav2vec2_fallback"):
        load_wav2vec2("/nonexistent/wav2vec2", fallback="error")


def test_batched_equals_one_by_one(tmp_path):
    model, _, _ = load_wav2vec2(str(tiny_wav2vec2_dir(tmp_path / "w2v")))
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


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_stage_writes_resumes_and_records_encoder(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    rows = [{"clip_id": f"c{i}", "sample_rate_hz": 16000, "duration_s": n / 16000,
             "samples": (0.1 * rng.standard_normal(n)).astype(np.float32)}
            for i, n in enumerate((16000, 20000, 24000))]
    (tmp_path / "data/audio").mkdir(parents=True)
    write_shard("data/audio/shard-00000.parquet", rows, schema=AUDIO_SCHEMA, meta={"fingerprint": "a"})
    (tmp_path / "data/audio/config.yaml").write_text("{}")
    w2v = tiny_wav2vec2_dir(tmp_path / "w2v")
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1},
                 features={"wav2vec2": str(w2v), "format": fmt, "clips_per_shard": 2})
    assert features_stage.main(["--params", "p.yaml"]) == 0
    ext = "npz" if fmt == "npz" else "parquet"
    shards = sorted((tmp_path / "data/features").glob(f"shard-*.{ext}"))
    assert len(shards) == 2
    meta = read_meta(shards[0])
    assert (meta["encoder"], meta["fallback"], meta["schema_version"]) == (str(w2v), False, 1)
    got = {r["clip_id"]: r for p in shards for r in read_shard(p)}
    assert got["c2"]["mel"].shape == (24000 // 160 + 1, 80) and got["c2"]["w2v"].shape == (74, 768)
    before = shards[1].read_bytes()
    shards[0].unlink()   # as if killed before shard 0 landed
    assert features_stage.main(["--params", "p.yaml"]) == 0
    m = json.loads((tmp_path / "reports/features.log.json").read_text())
    m.update(json.loads((tmp_path / "reports/features.json").read_text()))
    assert (m["shards_resumed"], m["processed"], m["fallback"]) == (1, 3, False)
    assert shards[1].read_bytes() == before and shards[0].exists()
    assert m["real_time_factor"] > 0   # over the re-encoded shard only
    assert features_stage.main(["--params", "p.yaml"]) == 0   # nothing left to encode
    m = json.loads((tmp_path / "reports/features.log.json").read_text())
    assert m["shards_resumed"] == 2 and m["real_time_factor"] is None
    again = {r["clip_id"]: r for p in shards for r in read_shard(p)}
    assert np.array_equal(again["c0"]["w2v"], got["c0"]["w2v"])
