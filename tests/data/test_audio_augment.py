"""Audio augmentation (features.audio_augment): the perturbations against hand-computed
pitch and SNR, the grammar of a variant, and the features and windows stages making the
training split's perturbed copies beside the clean features (which stay as they were)."""
from __future__ import annotations

import json
import re
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from kfusion.config import ConfigError, from_dict, load, parse_variant, variant_error
from kfusion.config import test_set_config as set_config
from kfusion.pipeline.data.features import log_mel, mel_transform, read_meta, read_shard
from kfusion.pipeline.data.perturb import add_noise, noise_seed, perturb, pitch_shift
from kfusion.pipeline.data.windows import open_split
from data_helpers import manifest_row, write_manifest, write_params
from test_features import tiny_wav2vec2_dir
from test_windows import _synthetic_inputs

SR = 16000


def _peak_hz(x: np.ndarray) -> float:
    """The strongest frequency of the middle 2 s (0.5 Hz bins)."""
    mid = x[SR // 2:SR // 2 + 2 * SR]
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    return float(np.fft.rfftfreq(len(mid), 1 / SR)[spec.argmax()])


def test_pitch_moves_a_tone_by_the_fraction_and_keeps_the_length():
    t = np.arange(3 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    up, down = parse_variant("pitch+2"), parse_variant("pitch-2")
    assert (up.ratio.numerator, up.ratio.denominator) == (9, 8)        # 2^(2/12) = 1.1225 ~ 9/8
    assert up.record() == {"name": "pitch+2", "kind": "pitch", "ratio": "9/8",
                           "semitones": 2.039}                       # 12 log2(9/8) = 2.0391
    y_up, y_down = pitch_shift(tone, up.ratio), pitch_shift(tone, down.ratio)
    assert len(y_up) == len(y_down) == len(tone)
    assert abs(_peak_hz(y_up) - 225.0) <= 1.0                         # 200 * 9/8
    assert abs(_peak_hz(y_down) - 1600 / 9) <= 1.0                    # 200 * 8/9 = 177.8
    # the level is kept (the phase vocoder and resampler neither boost nor drop the tone)
    rms = lambda a: float(np.sqrt(np.mean(a[SR // 2:-SR // 2] ** 2)))  # noqa: E731
    assert abs(rms(y_up) / rms(tone) - 1) < 0.1


def test_noise_at_the_asked_snr_seeded_by_clip_and_variant():
    x = (0.2 * np.sin(2 * np.pi * 300 * np.arange(2 * SR) / SR)).astype(np.float32)
    v = parse_variant("noise20")
    y = perturb(x, v, "clip-a")
    snr = 10 * math.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.1 and y.dtype == np.float32 and len(y) == len(x)
    assert np.array_equal(y, perturb(x, v, "clip-a"))                 # the same on every run
    assert not np.array_equal(y, perturb(x, v, "clip-b"))             # another clip, other noise
    assert noise_seed("clip-a", "noise20") != noise_seed("clip-a", "noise10")
    assert np.array_equal(add_noise(np.zeros(5, np.float32), 20, 1), np.zeros(5, np.float32))


@pytest.mark.parametrize("name,says", [
    ("pitch2", "not an audio variant"), ("speed1.1", "not an audio variant"),
    ("pitch+0.1", "too small"), ("pitch+13", "<= 12"), ("noise70", "between 0 and 60")])
def test_a_bad_variant_is_one_line_naming_the_key(tmp_path, name, says):
    assert says in variant_error(name)
    p = write_params(tmp_path / "p.yaml", features={"audio_augment": [name]})
    with pytest.raises(ConfigError, match=r"features\.audio_augment: .*" + re.escape(name)):
        load(p)


def test_config_cross_checks():
    assert variant_error("pitch-1.5") is None and variant_error("noise0") is None
    with pytest.raises(ConfigError, match="names a variant twice"):
        from_dict({"features": {"audio_augment": ["noise20", "noise20"]}})
    with pytest.raises(ConfigError, match=r"train\.augment\.audio_p: 0\.5 draws from "
                                          r"features\.audio_augment, which is empty"):
        from_dict({"train": {"augment": {"audio_p": 0.5}}})
    # a test set is never trained on: its features stage makes no copies
    cfg = from_dict({"features": {"audio_augment": ["noise20"]},
                     "evaluate": {"sets": {"x": {"corpus": "folder", "root": "/r"}}}})
    assert set_config(cfg, "x").features.audio_augment == []


def test_stages_make_the_training_clips_copies_beside_unchanged_clean_features(tmp_path, monkeypatch):
    """c0, c1 train, c2 test. Adding [pitch+2, noise20] keeps the clean shard (resumed, same
    bytes), writes each variant's shard for c0 and c1 only, equal to the features of the
    perturbed audio computed here; the windows stage writes train/aug/<v>/{mel,w2v}.npy row
    for row at the window's hand-computed spans; dropping a variant removes its folder."""
    from kfusion.stages import features, windows
    monkeypatch.chdir(tmp_path)
    _synthetic_inputs(tmp_path, ["c0", "c1", "c2"], n_frames=90, seconds=3.0)
    write_manifest(tmp_path / "data/index", [manifest_row("c0"), manifest_row("c1"),
                                             manifest_row("c2", split="test")])
    w2v = str(tiny_wav2vec2_dir(tmp_path / "w2v"))
    common = dict(preprocess={"workers": 1}, windows={"stride_frames": 15})
    write_params(tmp_path / "p.yaml", features={"wav2vec2": w2v}, **common)
    assert features.main(["--params", "p.yaml"]) == 0
    (clean,) = sorted((tmp_path / "data/features").glob("shard-*"))
    clean_bytes = clean.read_bytes()

    write_params(tmp_path / "p.yaml", features={"wav2vec2": w2v, "audio_augment": ["pitch+2", "noise20"]},
                 train={"augment": {"audio_p": 0.5}}, **common)
    assert features.main(["--params", "p.yaml"]) == 0
    assert clean.read_bytes() == clean_bytes
    report = json.loads((tmp_path / "reports/features.json").read_text())
    assert report["processed"] == 3 and report["shards"] == 1 and report["audio_variants"] == {
        "pitch+2": {"clips": 2, "shards": 1, "rejects": []},
        "noise20": {"clips": 2, "shards": 1, "rejects": []}}
    log = json.loads((tmp_path / "reports/features.log.json").read_text())
    assert log["shards_resumed"] == 1 and log["real_time_factor"] > 0   # the copies' encoding
    audio = {r["clip_id"]: np.array(r["samples"], np.float32) for r in
             pq.read_table(tmp_path / "data/audio/shard-00000.parquet").to_pylist()}
    mel_tf = mel_transform(load("p.yaml").features)
    variant_feats = {}
    for v in ("pitch+2", "noise20"):
        (shard,) = sorted((tmp_path / "data/features/aug" / v).glob("shard-*"))
        assert read_meta(shard)["audio_variant"]["name"] == v
        rows = {r["clip_id"]: r for r in read_shard(shard)}
        assert sorted(rows) == ["c0", "c1"]                      # the training split only
        for cid, r in rows.items():
            want = log_mel(perturb(audio[cid], parse_variant(v), cid), mel_tf)
            assert np.array_equal(r["mel"], want), (v, cid)
        variant_feats[v] = rows

    assert windows.main(["--params", "p.yaml"]) == 0
    a = open_split("data/windows/train")
    table = pq.read_table("data/windows/train/windows.parquet").to_pylist()
    meta = json.loads((tmp_path / "data/windows/train/meta.json").read_text())
    assert meta["audio_variants"] == ["pitch+2", "noise20"]
    assert sorted(meta["audio_variant_shards"]) == ["noise20", "pitch+2"]   # their fingerprints
    assert "audio_variants" not in json.loads((tmp_path / "data/windows/test/meta.json").read_text())
    assert not (tmp_path / "data/windows/test/aug").exists()
    for v, rows in variant_feats.items():
        mel = np.load(f"data/windows/train/aug/{v}/mel.npy")
        enc = np.load(f"data/windows/train/aug/{v}/w2v.npy")
        assert mel.shape == a["mel"].shape and enc.shape == a["w2v"].shape
        for i, w in enumerate(table):
            t0 = w["start_frame"] / 30
            m0, w0 = round(t0 * 100), round(t0 * 50)     # by hand: the window's first instant
            assert np.array_equal(mel[i], rows[w["clip_id"]]["mel"][m0:m0 + 100])
            assert np.array_equal(enc[i], rows[w["clip_id"]]["w2v"][w0:w0 + 49])
        assert not np.array_equal(mel, a["mel"])           # perturbed, not the clean copy
    assert "audio_variant_fallbacks" in json.loads((tmp_path / "reports/windows.json").read_text())

    write_params(tmp_path / "p.yaml", features={"wav2vec2": w2v, "audio_augment": ["noise20"]}, **common)
    assert features.main(["--params", "p.yaml"]) == 0
    assert sorted(p.name for p in (tmp_path / "data/features/aug").iterdir()) == ["noise20"]
