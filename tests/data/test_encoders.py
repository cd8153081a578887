"""The content encoders on real speech (../shared): real weights (Whisper decodes the words of
a GRID sentence; the PPG's best path holds its phonemes), frame counts, the torch Whisper
against CTranslate2, Whisper's log-mel against transformers', the shared chunking rule, the
identity check, and the windows stage on Whisper features (widths, tokens, mixed encoders)."""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest
import torch
import yaml

from kfusion.config import FeaturesConfig
from kfusion.pipeline.data.encoders import EncoderMismatch, build_encoder, load_recorded
from kfusion.pipeline.data.encoders import ppg as P
from kfusion.pipeline.data.encoders import whisper as W
from kfusion.pipeline.data.encoders.chunking import encode_chunked
from kfusion.pipeline.media.container import decode_audio
from kfusion.shapes import n_content_frames, n_w2v_frames
from data_helpers import SHARED, grid_root, write_params
from test_features import tiny_wav2vec2_dir

# GRID words in IPA, hama's symbols (CMU-dict pronunciations): the PPG test's lexicon
GRID_IPA = {"bin": "b ɪ n", "blue": "b l u", "at": "æ t", "f": "ɛ f", "two": "t u", "now": "n aʊ",
            "lay": "l eɪ", "red": "ɹ ɛ d", "in": "ɪ n", "e": "i", "one": "w ʌ n",
            "again": "ə g ɛ n", "set": "s ɛ t", "with": "w ɪ θ", "h": "eɪ tʃ", "six": "s ɪ k s"}
GRID_CLIPS = ("bbaf2n", "lrie1a", "sbwh6n")


def grid_clip(cid: str) -> tuple[np.ndarray, list[str]]:
    """16 kHz samples of a GRID s1 clip (decoded by the bundled ffmpeg) and its aligned words."""
    root = grid_root()
    words = [ln.split()[2] for ln in (root / "alignments/s1" / f"{cid}.align").read_text().splitlines()]
    return decode_audio(root / "s1" / f"{cid}.mpg"), [w for w in words if w != "sil"]


@lru_cache(maxsize=None)
def encoder(name: str):
    return build_encoder(name, FeaturesConfig())


def long_speech(seconds: float) -> np.ndarray:
    wavs = sorted((SHARED / "unseen").glob("*/*.wav"))
    if not wavs:
        pytest.skip(f"{SHARED / 'unseen'} is absent (real speech for the long-audio tests)")
    pieces, n = [], 0
    for w in wavs:
        pieces.append(decode_audio(w))
        n += len(pieces[-1])
        if n >= seconds * 16000:
            return np.concatenate(pieces)[:int(seconds * 16000)]
    pytest.skip(f"{SHARED / 'unseen'} holds less than {seconds} s of speech")


# ----------------------------------------------------------------------------- real weights
@pytest.mark.realdata
def test_whisper_decodes_the_words_of_grid_sentences():
    # the same package decodes its encoder's states: real weights say real words
    said = {cid: W.transcribe(grid_clip(cid)[0]).lower() for cid in GRID_CLIPS}
    assert "blue" in said["bbaf2n"] and "now" in said["bbaf2n"], said
    for cid in GRID_CLIPS:
        words = grid_clip(cid)[1]
        assert sum(w in said[cid].split() or w in said[cid] for w in words if len(w) > 2) >= 2, said


def _found(word: str, path: list[str]) -> bool:
    """The word's phonemes as a run in the best path, one substitution allowed from 3 on."""
    want = GRID_IPA[word].split()
    runs = [path[i:i + len(want)] for i in range(len(path) - len(want) + 1)]
    allowed = 1 if len(want) >= 3 else 0
    return any(sum(a != b for a, b in zip(r, want)) <= allowed for r in runs)


@pytest.mark.realdata
def test_ppg_best_path_holds_the_phonemes_of_the_aligned_words():
    enc, found, total = encoder("ppg"), 0, 0
    for cid in GRID_CLIPS:
        x, words = grid_clip(cid)
        lp = enc.logprobs(x)
        assert lp.shape == (len(x) // 320 + 1, 191)
        assert np.abs(np.logaddexp.reduce(lp, axis=1)).max() < 1e-4   # log-softmax rows
        path = [s for s in P.best_path(enc.model, lp) if s != "|"]
        hits = [w for w in words if _found(w, path)]
        assert len(hits) >= 3, (cid, words, path)
        found, total = found + len(hits), total + len(words)
    assert found >= 12 and total == 18   # measured: 12 of 18 (blue, six, one again, ...)
    # time-reversed speech has the same spectra but no words: the test has teeth
    rev = [s for s in P.best_path(enc.model, enc.logprobs(grid_clip("bbaf2n")[0][::-1].copy()))
           if s != "|"]
    assert sum(_found(w, rev) for w in grid_clip("bbaf2n")[1]) <= 1


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["whisper", "ppg", "wav2vec2"])
def test_frame_count_is_within_one_of_50_per_second(tmp_path, name):
    enc = build_encoder(name, FeaturesConfig(wav2vec2=str(tiny_wav2vec2_dir(tmp_path / "w2v")))) \
        if name == "wav2vec2" else encoder(name)
    x = grid_clip("bbaf2n")[0]                      # 47648 samples = 2.978 s
    # within 1 of 50 x duration; wav2vec2 within 1.25: its first frame needs 400 samples, so
    # it gives floor((n - 400) / 320) + 1 (16321 samples: 50 frames for 51.003)
    slack = 1.25 if name == "wav2vec2" else 1.0
    for n in (len(x), 16000, 16160, 16321, 48000):
        h = enc.encode(x[:n] if n <= len(x) else np.resize(x, n))
        assert len(h) == n_content_frames(name, n) and abs(len(h) - 50 * n / 16000) <= slack, (name, n)
        assert h.dtype == np.float16 and np.isfinite(h.astype(np.float32)).all()
    assert enc.record["feature_dim"] == {"whisper": 384, "ppg": 191, "wav2vec2": 768}[name]


# ----------------------------------------------------------------------------- Whisper numerics
@pytest.mark.realdata
def test_torch_whisper_equals_ctranslate2_float32():
    from kfusion.pipeline.data.encoders.whisper_torch import WhisperTorchEncoder
    path = W.model_dir("")
    ct2 = W.load_ct2(path, compute_type="float32")
    port = WhisperTorchEncoder.from_model_bin(path / "model.bin")
    x = grid_clip("bbaf2n")[0]
    # measured max |difference|: 1.7e-5 (3 s), 2.3e-5 (odd mel count), 2.1e-4 (28 s); values to 12.5
    for samples in (x, x[:16160], long_speech(28.0)):
        mel = W.log_mel(samples)
        a = W.ct2_encode_mel(ct2, mel[None])[0]
        with torch.no_grad():
            b = port(torch.from_numpy(mel)[None])[0].numpy()
        assert a.shape == b.shape == (-(-mel.shape[1] // 2), 384)
        assert np.abs(a - b).max() < 1e-3 and np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-5


@pytest.mark.realdata
def test_the_gpu_path_of_whisper_runs_on_cpu_like_ctranslate2():
    # the CUDA runtime (torch, float16 autocast) exercised on CPU, where autocast is off:
    # the same numbers as CTranslate2 float32 (the float16 difference is untested here: no GPU)
    path = W.model_dir("")
    kw = dict(device="cpu", compute_type="float32", threads=1, half=True)
    gpu_path = W.WhisperEncoder(path, {}, runtime="torch", **kw)
    ct2 = W.WhisperEncoder(path, {}, **kw)
    assert (gpu_path.runtime, gpu_path.half, ct2.runtime) == ("torch", False, "ct2")
    assert gpu_path.record["encoder_runtime"] == "torch, float32"
    x = grid_clip("bbaf2n")[0]
    for a, b in zip(gpu_path.encode_many([x, x, x[:20000]]), ct2.encode_many([x, x, x[:20000]])):
        assert a.shape == b.shape and np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 1e-2


@pytest.mark.realdata
def test_whisper_batches_equal_lengths_with_the_same_numbers():
    enc = encoder("whisper")                  # int8 on CPU: a batch gives the same numbers
    x, y = grid_clip("bbaf2n")[0], grid_clip("lrie1a")[0]
    clips = [x, y[:len(x)], x[:30000], y[:len(x)]]          # three of one length, one other
    for got, clip in zip(enc.encode_many(clips), clips):
        np.testing.assert_array_equal(got, enc.encode(clip))


@pytest.mark.realdata
def test_whisper_log_mel_is_whispers():
    from transformers import WhisperFeatureExtractor   # builds its filters offline
    x = grid_clip("bbaf2n")[0]
    ref = WhisperFeatureExtractor(feature_size=80)(x, sampling_rate=16000, return_tensors="np",
                                                   padding="longest")["input_features"][0]
    mel = W.log_mel(x)
    assert mel.shape == (80, len(x) // 160) and ref.shape[1] >= mel.shape[1]
    assert np.abs(ref[:, :mel.shape[1]] - mel).max() < 1e-4   # measured 7.4e-6


# ----------------------------------------------------------------------------- chunking
def test_chunks_join_into_the_frames_of_one_pass():
    # a local encoder (frame k = mean of samples 320k .. 320k + 400): exact, whatever the cores
    x = np.random.default_rng(0).standard_normal(320 * 97 + 150).astype(np.float32)
    n = n_content_frames("wav2vec2", len(x))

    def local(piece):
        m = n_content_frames("wav2vec2", len(piece))
        return np.stack([piece[320 * k:320 * k + 400].mean(keepdims=True) for k in range(m)])

    one = local(x)
    for core, ctx in ((10, 0), (10, 3), (26, 7), (40, 0)):
        got = encode_chunked(local, x, n_frames=n, per_frame=320, max_frames=40, core_frames=core,
                             context_frames=ctx, tail=80)
        np.testing.assert_array_equal(got, one)
    # an encoder that sees its whole input (frame value = the piece's length): the cores
    # were encoded with their context, and only the core frames were kept
    whole = lambda piece: np.full((n_content_frames("ppg", len(piece)), 1), len(piece) // 320, float)  # noqa: E731
    got = encode_chunked(whole, x, n_frames=n_content_frames("ppg", len(x)), per_frame=320,
                         max_frames=40, core_frames=20, context_frames=5)[:, 0]
    assert got[:20].tolist() == [25] * 20 and got[20:40].tolist() == [30] * 20   # 5 + 20 + 5
    assert len(got) == len(x) // 320 + 1
    with pytest.raises(ValueError, match="exceeds the encoder's 40 frames"):
        encode_chunked(local, x, n_frames=n, per_frame=320, max_frames=40, core_frames=30,
                       context_frames=6)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", ["ppg", "whisper"])
def test_long_audio_goes_through_in_aligned_chunks(name):
    # 40 s: beyond one pass of both (hama silently caps at 30 s); the chunked frames keep
    # their place: each agrees with a one-pass encoding of the 24 s around it far better
    # than its neighbour does
    enc, x = encoder(name), long_speech(40.0)
    h = enc.encode(x).astype(np.float32)
    assert len(h) == n_content_frames(name, len(x)) == 2000 + (name == "ppg")
    lo = 800                              # frames 800 .. 1200 (16 .. 24 s) cross the first seam
    ref = enc.encode(x[lo * 320:(lo + 1200) * 320]).astype(np.float32)[:400]
    mu, sd = ref.mean(0), ref.std(0) + 1e-6          # each channel standardised over time

    def cos(a, b):
        a, b = (a - mu) / sd, (b - mu) / sd
        return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))

    seg = h[lo:lo + 400]
    same, shifted = cos(seg, ref), cos(seg[1:], ref[:-1])   # measured 0.87 / 0.72 (PPG), 0.91 / 0.76
    assert same > 0.8 and same > shifted + 0.1, (same, shifted)


@pytest.mark.slow
@pytest.mark.realdata
def test_wav2vec2_long_audio_goes_in_pieces_that_fit_one_pass():
    # 40 s of random-weights wav2vec2 (the architecture is what matters here): every piece
    # (core + context) fits the 30 s one pass, the frames are wav2vec2's count for 40 s, and
    # they agree with a single 40 s pass (each piece is normalised on its own, so not exactly)
    enc, x = encoder("random"), long_speech(40.0)
    h = enc.encode(x).astype(np.float32)
    assert len(h) == n_w2v_frames(len(x)) == 1999
    whole = enc.one_pass(x).astype(np.float32)
    assert np.corrcoef(h.ravel(), whole.ravel())[0, 1] > 0.95


# ----------------------------------------------------------------------------- PPG shift
def test_ppg_shift_moves_frames_earlier_by_the_offset():
    f = np.arange(10, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)   # (10, 2)
    np.testing.assert_allclose(P.shift_frames(f, 40.0)[:, 0], [2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
    np.testing.assert_allclose(P.shift_frames(f, 30.0)[:3, 1], [-3.0, -5.0, -7.0])   # 1.5 frames
    np.testing.assert_array_equal(P.shift_frames(f, 0.0), f)


# ----------------------------------------------------------------------------- identity
def test_a_recorded_encoder_must_be_the_one_found_here():
    rec = dict(encoder("whisper").record)
    assert load_recorded(rec, FeaturesConfig()).record["encoder_sha256"] == rec["encoder_sha256"]
    assert rec["encoder_sha256"] == W.file_sha256(W.model_dir("") / "model.bin")
    with pytest.raises(EncoderMismatch, match="encoder mismatch: recorded whisper .* weights "
                                              "sha256 000000000000.* found here whisper"):
        load_recorded({**rec, "encoder_sha256": "0" * 64}, FeaturesConfig())


# ----------------------------------------------------------------------------- windows stage
def test_windows_of_whisper_features_and_no_mixed_encoders(tmp_path, monkeypatch, capsys):
    from kfusion.pipeline.data.features import read_meta, write_features, read_shard
    from kfusion.pipeline.data.windows import open_split
    from kfusion.stages import features, windows
    from test_windows import _synthetic_inputs
    monkeypatch.chdir(tmp_path)
    _synthetic_inputs(tmp_path, ["c0", "c1"], n_frames=90, seconds=3.0)
    write_params(tmp_path / "p.yaml", preprocess={"workers": 1}, windows={"stride_frames": 15},
                 features={"encoder": "whisper", "clips_per_shard": 1})
    assert features.main(["--params", "p.yaml"]) == 0
    assert windows.main(["--params", "p.yaml"]) == 0
    a = open_split("data/windows/train")
    meta = json.loads((tmp_path / "data/windows/train/meta.json").read_text())
    # 3 s clips, 30-frame windows every 15 frames: starts 0, 15, 30, 45, 60 per clip; each
    # window 50 Whisper frames of 384 (width and tokens from the features' record)
    assert a["w2v"].shape == (10, 50, 384) and meta["w2v_frames"] == 50
    assert (meta["encoder"], meta["feature_dim"], meta["encoder_fallback"]) == ("whisper", 384, False)
    assert meta["encoder_sha256"] == encoder("whisper").record["encoder_sha256"]
    f = {r["clip_id"]: r for p in sorted((tmp_path / "data/features").glob("shard-*")) for r in read_shard(p)}
    np.testing.assert_array_equal(a["w2v"][1], f["c0"]["w2v"][25:75])   # start 15 = 0.5 s: frame 25
    # one shard re-written as if by another encoder: the windows stage refuses, one line
    shard = sorted((tmp_path / "data/features").glob("shard-*"))[1]
    rows = list(read_shard(shard))
    m = read_meta(shard)
    write_features(shard, rows, {**m, "encoder_sha256": "f" * 64}, m["planned_ids"])
    capsys.readouterr()
    assert windows.main(["--params", "p.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "features of mixed encoders" in err[0] and "ffffffffffff" in err[0], err
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["features"]["encoder"] == "whisper"
