"""NaN and infinite samples: one such clip among good ones is rejected by the audio stage with
its count and first sample, and the rest of the corpus goes through every stage to a trained,
evaluated model (issue 14, item 1). Before the check, a float WAV with NaN passed index, audio,
features (100% NaN) and windows, and train crashed in the KAN with an index error naming no clip.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from kfusion.config import default_dict
from fault_corpus import REAL, Case, _link, make_base, mead_paths
from test_bad_inputs import tiny_wav2vec2

pytestmark = pytest.mark.slow   # every stage, index to evaluate, on 6 clips: about a minute

STAGES = ("index", "audio", "landmarks", "features", "windows", "train", "evaluate")
# Speakers that land in each split with params.yaml's default split.by: speaker.
GOOD = [("M001", "001"), ("M001", "002"), ("M002", "001"), ("M005", "001"), ("M003", "001")]
NAN_CLIP = Case("nan_audio", "float WAV with NaN and inf samples", "rejected", "audio",
                "non_finite", speaker="M001", clip="003")
NAN_AT, N_NAN, INF_AT = 8000, 25, 30000   # 16 kHz samples: NaN in 8000..8024, +inf at 30000


def nan_wav(path, base) -> np.ndarray:
    """The base clip's speech as a 16 kHz float WAV with N_NAN NaN and one +inf sample: at
    16 kHz mono ffmpeg passes float samples through unchanged, so the counts are exact."""
    from kfusion.pipeline.media.container import decode_audio
    x = decode_audio(base.audio)                       # (47648,) float32: 2.978 s of AAC
    x[NAN_AT:NAN_AT + N_NAN] = np.nan
    x[INF_AT] = np.inf
    sf.write(path, x, 16000, subtype="FLOAT")
    return x


def params(tmp, w2v: str) -> dict:
    d = default_dict()
    d["index"].update(corpora=["mead"], out=str(tmp / "data/index"),
                      roots={"demo": "", "grid": "", "cremad": "", "mead": str(tmp / "corpus")})
    d["audio"].update(out=str(tmp / "data/audio"), max_reject_fraction=0.5)
    d["landmarks"]["out"] = str(tmp / "data/landmarks")
    d["features"].update(out=str(tmp / "data/features"), wav2vec2=w2v, threads=1)
    d["windows"]["out"] = str(tmp / "data/windows")
    d["model"].update(d_model=16, n_heads=2, ff_mult=1, lstm_hidden=8, fusion_channels=8,
                      kan={**d["model"]["kan"], "hidden": [8], "grid_size": 3})
    d["train"].update(epochs=1, batch_size=16, resume=False, out=str(tmp / "models"),
                      resume_dir=str(tmp / "resume"), emotion_classifier_epochs=2)
    d["evaluate"].update(out=str(tmp / "metrics"), plots=str(tmp / "plots/evaluate"))
    d["reports"] = str(tmp / "reports")
    d["device"] = "cpu"
    return d


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (the real face video and speech the clips are cut from)")
    tmp = tmp_path_factory.mktemp("nan")
    base = make_base(tmp / "base")
    for spk, clip in GOOD:
        v, a = mead_paths(tmp / "corpus", Case(clip, "", "processed", speaker=spk, clip=clip))
        _link(base.video, v)
        _link(base.audio, a)
    v, a = mead_paths(tmp / "corpus", NAN_CLIP, aext=".wav")
    _link(base.video, v)
    n_samples = len(nan_wav(a, base))
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump(params(tmp, tiny_wav2vec2(tmp / "w2v"))))
    rc = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for stage in STAGES:
            mod = __import__(f"kfusion.stages.{stage}", fromlist=["main"])
            rc[stage] = mod.main(["--params", str(p)])
            if rc[stage]:
                break
    return {"tmp": tmp, "rc": rc, "n_samples": n_samples}


def test_every_stage_runs_to_an_evaluated_model(run):
    assert run["rc"] == {s: 0 for s in STAGES}
    m = json.loads((run["tmp"] / "metrics/test.json").read_text())
    assert m["windows"] > 0 and np.isfinite(m["M-LD"])


def test_the_nan_clip_is_rejected_by_audio_with_count_and_first_sample(run):
    rejects = pq.read_table(run["tmp"] / "data/audio/rejects.parquet").to_pylist()
    assert [(r["clip_id"], r["reason"]) for r in rejects] == [(NAN_CLIP.clip_id, "non_finite")]
    msg = rejects[0]["message"]
    # 25 NaN + 1 inf; the first is sample 8000 = 0.500 s at 16 kHz
    assert f"{N_NAN + 1} of {run['n_samples']} samples are NaN or infinite (the first is sample {NAN_AT}, " \
           f"at 0.500 s" in msg and msg.startswith(str(run["tmp"] / "corpus"))


def test_the_nan_clip_reaches_no_later_stage(run):
    d = run["tmp"] / "data"
    windows = [r["clip_id"] for s in ("train", "val", "test")
               for r in pq.read_table(d / f"windows/{s}/windows.parquet").to_pylist()]
    assert NAN_CLIP.clip_id not in windows
    assert {c.split(":")[1] for c in windows} == {spk for spk, _ in GOOD}
    for s in ("train", "val", "test"):   # what train and evaluate read is finite
        for k in ("mel", "w2v", "landmarks", "identity"):
            assert np.isfinite(np.load(d / f"windows/{s}/{k}.npy")).all(), (s, k)
