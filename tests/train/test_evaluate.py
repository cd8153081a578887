"""Evaluation on a tiny trained model, every number recomputed here independently: the model
re-run from its checkpoint file, metrics in numpy, the mean motion from the training windows,
the audio-swap control, the mouth-opening correlation, the detector floor; the compact DVC
metrics, the reference definition labelled, drop-last and per corpus."""
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from kfusion.config import from_dict, to_dict
from kfusion.model.build import build_model
from kfusion.pipeline.training.evaluation import EvalOutputs, evaluate, swap_partners
from kfusion.pipeline.training.loop import train
from kfusion.pipeline.training.metrics import AUTHORS_MOUTH, reference_metrics
from kfusion.shapes import MOUTH_INDICES

MOUTH = list(MOUTH_INDICES)
from train_helpers import whisper_record


def _np_ld(pred, ref, pts=None):
    """Eq. 14 in numpy, per window -> (N,)."""
    if pts is not None:
        pred, ref = pred[:, :, pts], ref[:, :, pts]
    return np.sqrt(((pred - ref) ** 2).sum(-1)).mean(axis=(1, 2))


def _np_lvd(pred, ref, pts=None):
    return _np_ld(np.diff(pred, axis=1), np.diff(ref, axis=1), pts)


def _np_mouth_r(pred, ref):
    """Pearson r of the inner-lip openings (61-67, 62-66, 63-65) per window, np.corrcoef."""
    def opening(x):
        return np.mean([np.linalg.norm(x[:, :, u] - x[:, :, v], axis=-1)
                        for u, v in ((61, 67), (62, 66), (63, 65))], axis=0)   # (N, T)
    a, b = opening(pred), opening(ref)
    return np.array([np.corrcoef(a[i], b[i])[0, 1] for i in range(len(a))])


def _four(pred, ref):
    return {"M-LD": _np_ld(pred, ref, MOUTH).mean(), "M-LVD": _np_lvd(pred, ref, MOUTH).mean(),
            "F-LD": _np_ld(pred, ref).mean(), "F-LVD": _np_lvd(pred, ref).mean()}


def _write_identity_shard(windows: Path, out: Path):
    import cv2
    clip_ids = pq.read_table(windows / "test" / "windows.parquet").column("clip_id").to_pylist()
    ok, jpg = cv2.imencode(".jpg", np.full((256, 256, 3), 90, np.uint8))
    out.mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": clip_ids, "identity_jpeg": [jpg.tobytes()] * len(clip_ids)}),
                   out / "shard-00000.parquet")


@pytest.fixture
def trained(windows: Path, tmp_path):
    from train_helpers import tiny_params
    p = tiny_params(tmp_path, epochs=2)
    # the head's usual initialisation: a 2-epoch model whose output depends on its audio, so
    # that the audio-swap control differs from the model by more than rounding
    p["model"]["head_init_scale"] = 1.0
    cfg = from_dict(p)
    train(cfg, windows, tmp_path / "models")
    return cfg


def _rerun_model(path: Path, test: Path, mel=None, w2v=None) -> np.ndarray:
    """The checkpoint's model on the test arrays, built and loaded here, not by evaluation."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(from_dict(state["config"]), state["encoder"])
    model.load_state_dict(state["model"])
    model.eval()
    batch = {"mel": torch.from_numpy(np.load(test / "mel.npy") if mel is None else mel).float(),
             "w2v": torch.from_numpy(np.load(test / "w2v.npy") if w2v is None else w2v).float(),
             "identity": torch.from_numpy(np.load(test / "identity.npy")).float(),
             "emotion": torch.from_numpy(np.load(test / "emotion.npy"))}
    with torch.no_grad():
        return model(batch).double().numpy()


def test_every_system_against_an_independent_computation(trained, windows: Path, tmp_path):
    _write_identity_shard(windows, tmp_path / "landmarks")
    out = EvalOutputs.under(tmp_path / "eval")
    r = evaluate(trained, windows, tmp_path / "models" / "best.pt", outputs=out)
    test = windows / "test"
    ref = np.load(test / "landmarks.npy").astype(np.float64)
    ident = np.load(test / "identity.npy").astype(np.float64)[:, None]
    s = r["systems"]
    assert set(s) == {"model", "audio_swap", "identity", "mean_motion"}
    # the model: re-run from the checkpoint file, scored in numpy
    pred = _rerun_model(tmp_path / "models" / "best.pt", test)
    for k, v in _four(pred, ref).items():
        assert s["model"][k] == pytest.approx(v, rel=1e-5), k
    assert s["model"]["mouth_r"] == pytest.approx(np.nanmean(_np_mouth_r(pred, ref)), rel=1e-5)
    # held still
    still = np.broadcast_to(ident, ref.shape)
    for k, v in _four(still, ref).items():
        assert s["identity"][k] == pytest.approx(v), k
    assert s["identity"]["mouth_r"] is None          # a still mouth has no correlation
    # mean motion: from the training windows, read here (evaluation got it from the checkpoint)
    tr = windows / "train"
    offset = (np.load(tr / "landmarks.npy").astype(np.float64)
              - np.load(tr / "identity.npy").astype(np.float64)[:, None]).mean(0)
    for k, v in _four(ident + offset, ref).items():
        assert s["mean_motion"][k] == pytest.approx(v, rel=1e-5), k
    # audio swap: each window's audio from a window of another clip
    clips = np.array(pq.read_table(test / "windows.parquet").column("clip_id").to_pylist())
    j = swap_partners(list(clips), trained.evaluate.swap_seed)
    assert (clips[j] != clips).all()
    swapped = _rerun_model(tmp_path / "models" / "best.pt", test,
                           mel=np.load(test / "mel.npy")[j], w2v=np.load(test / "w2v.npy")[j])
    for k, v in _four(swapped, ref).items():
        assert s["audio_swap"][k] == pytest.approx(v, rel=1e-5), k
    assert abs(s["audio_swap"]["M-LD"] - s["model"]["M-LD"]) > 1e-4   # > the tolerance above


def test_compact_metrics_report_and_plots(trained, windows: Path, tmp_path):
    _write_identity_shard(windows, tmp_path / "landmarks")
    out = EvalOutputs.under(tmp_path / "eval")
    r = evaluate(trained, windows, tmp_path / "models" / "best.pt", outputs=out)
    rec = json.loads(out.metrics.read_text())
    model, systems = r["systems"]["model"], r["systems"]
    # numbers: the model's and the audio-swap control's M-LD; lists: everything else
    assert {k: v for k, v in rec.items() if not isinstance(v, list)} == {
        **{k: model[k] for k in ("M-LD", "M-LVD", "F-LD", "F-LVD", "mouth_r")},
        "swap_M-LD": systems["audio_swap"]["M-LD"], "windows": 16}
    assert rec["systems"] == [{"system": s, **{k: v for k, v in m.items() if v is not None}}
                              for s, m in systems.items()]
    prov = dict(line.split(": ", 1) for line in rec["provenance"])
    assert prov["encoder"] == "whisper" and prov["encoder_fallback"] == "False"
    assert prov["encoder_sha256"] == whisper_record()["encoder_sha256"]
    assert prov["checkpoint"].endswith("best.pt") and len(prov["checkpoint_sha256"]) == 64
    # tiny_params keeps the project's departures from the paper; the record names them
    assert "'model.mel_norm': 'window'" in prov["differs_from_paper"]
    assert "not in the paper" in r["not_in_paper"]
    gt = np.load(windows / "test" / "gt_landmarks.npy").astype(np.float64)
    ref = np.load(windows / "test" / "landmarks.npy").astype(np.float64)
    demo = r["corpora"]["demo"]
    # detector floor: reference vs clean ground truth (the synthetic jitter)
    assert demo["vs_ground_truth"]["detector"]["F-LD"] == pytest.approx(_np_ld(ref, gt).mean())
    assert sum(v["windows"] for v in demo["per_emotion"].values()) == 16
    # per clip: clip means of the per-window values, 4 windows per synthetic clip
    pc = r["per_clip"]
    assert len(pc["clip_ids"]) == 16 and len(pc["model"]["M-LD"]) == 16
    assert np.mean(pc["identity"]["M-LD"]) == pytest.approx(r["systems"]["identity"]["M-LD"])
    # the emotion head's accuracy: the checkpoint's head on the test windows, counted here
    from kfusion.pipeline.training.checkpoint import emotion_head
    clf = emotion_head(torch.load(tmp_path / "models" / "best.pt", weights_only=False))
    test = windows / "test"
    with torch.no_grad():
        guess = clf.predict(torch.from_numpy(np.load(test / "mel.npy")),
                            torch.from_numpy(np.load(test / "w2v.npy")).float()).numpy()
    acc = float((guess == np.load(test / "emotion.npy")).mean())
    assert r["emotion_classifier"]["test_accuracy"] == pytest.approx(acc)
    assert r["corpora"]["demo"]["emotion_classifier_accuracy"] == pytest.approx(acc)
    rows = json.loads((out.plots_dir / "per_emotion.json").read_text())
    assert {"emotion", "M-LD", "M-LVD", "F-LD", "F-LVD", "mouth_r"} <= set(rows[0])
    png = (out.plots_dir / "qualitative.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_evaluation_never_reads_the_training_windows(trained, windows: Path, tmp_path):
    ckpt = tmp_path / "models" / "best.pt"
    before = evaluate(trained, windows, ckpt, outputs=EvalOutputs.under(tmp_path / "a"))
    shutil.rmtree(windows / "train")
    shutil.rmtree(windows / "val")
    after = evaluate(trained, windows, ckpt, outputs=EvalOutputs.under(tmp_path / "b"))
    assert after["systems"] == before["systems"]
    assert torch.load(ckpt, weights_only=False)["mean_motion"].shape == (30, 68, 2)


def test_swap_partners_are_other_clips_seeded_and_need_two_clips():
    clips = ["a"] * 5 + ["b"] * 2 + ["c"]
    j = swap_partners(clips, 0)
    assert all(clips[k] != clips[i] for i, k in enumerate(j))
    assert (swap_partners(clips, 0) == j).all() and not (swap_partners(clips, 1) == j).all()
    assert swap_partners(["a", "a"], 0) is None


def test_reference_definition_labelled_drop_last_and_batch_dependent(trained, windows, tmp_path):
    out = {}
    for bs in (4, 16, 5):
        cfg = from_dict({**yaml.safe_load(yaml.safe_dump(to_dict(trained))),
                         "metrics": {"definition": "both", "reference_batch_size": bs}})
        out[bs] = evaluate(cfg, windows, tmp_path / "models" / "last.pt",
                           outputs=EvalOutputs.under(tmp_path / f"e{bs}"))
    r4, r16, r5 = (out[b]["corpora"]["demo"]["reference_definition"] for b in (4, 16, 5))
    assert "NOT Eq. 13-15" in r4["label"] and r4["batch_size"] == 4
    # the same predictions: Eq. 14 unchanged, the authors' "LD" about doubles (sqrt(16/4))
    assert out[4]["systems"]["model"]["M-LD"] == pytest.approx(out[16]["systems"]["model"]["M-LD"])
    ratio = r16["identity"]["ref F-LD"] / r4["identity"]["ref F-LD"]
    assert 1.7 < ratio < 2.3
    # 16 windows in batches of 5: three full batches, the 16th window dropped; by hand
    assert r5["identity"]["windows_used"] == 15 and r5["identity"]["windows_dropped"] == 1
    ref = np.load(windows / "test" / "landmarks.npy").astype(np.float64)
    still = np.broadcast_to(np.load(windows / "test" / "identity.npy")[:, None], ref.shape)
    by_batch = [reference_metrics(still[i:i + 5], ref[i:i + 5]) for i in (0, 5, 10)]
    assert r5["identity"]["ref M-LVD"] == pytest.approx(np.mean([b["ref M-LVD"] for b in by_batch]))
    assert AUTHORS_MOUTH[0] == 49 and AUTHORS_MOUTH[-1] == 48



def test_the_evaluate_stage_refuses_features_of_another_encoder(trained, windows, tmp_path, capsys):
    from kfusion.config import to_dict
    from kfusion.stages import evaluate as evaluate_stage
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(trained)))
    # the test windows' features come from other weights than the checkpoint was trained on
    meta_path = windows / "test" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "encoder_sha256": "e" * 64}))
    capsys.readouterr()
    assert evaluate_stage.main(["--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: evaluate: encoder mismatch: "), err
    assert whisper_record()["encoder_sha256"][:12] in err[0] and "eeeeeeeeeeee" in err[0]
    metrics = Path(trained.evaluate.out) / "test.json"
    assert not metrics.exists()
    meta_path.write_text(json.dumps(meta))   # the same encoder: it runs
    assert evaluate_stage.main(["--params", str(params)]) == 0
    assert "encoder: whisper" in json.loads(metrics.read_text())["provenance"]


def test_reference_alone_provenance_keys_and_per_corpus_blocks(trained, windows, tmp_path):
    """`metrics.definition: reference` (not only `both`) adds the authors' numbers; the
    provenance names its fields as documented; each corpus block has every system's windows."""
    cfg = from_dict({**yaml.safe_load(yaml.safe_dump(to_dict(trained))),
                     "metrics": {"definition": "reference", "reference_batch_size": 4}})
    r = evaluate(cfg, windows, tmp_path / "models" / "last.pt",
                 outputs=EvalOutputs.under(tmp_path / "e"))
    demo = r["corpora"]["demo"]
    assert demo["reference_definition"]["batch_size"] == 4
    # 16 test windows: 4 full batches of 4, none dropped
    assert demo["reference_definition"]["model"]["windows_used"] == 16
    assert demo["reference_definition"]["model"]["windows_dropped"] == 0
    assert {s: v["windows"] for s, v in demo["vs_reference"].items()} == {
        "model": 16, "audio_swap": 16, "identity": 16, "mean_motion": 16}
    prov = r["provenance"]
    assert (prov["seed"], prov["epochs"], prov["definition"]) == (7, 2, "reference")
    assert (prov["dropout_rng"], prov["preset"]) == (trained.train.dropout_rng, trained.preset)
    assert {"split_by", "augment"} <= set(prov)
    assert prov["identity"] == "clip"               # the synthetic windows' meta.json
    epoch = torch.load(tmp_path / "models" / "last.pt", map_location="cpu", weights_only=False)["epoch"]
    assert prov["best_epoch"] == epoch
    assert set(r["emotion_classifier"]) == {"test_accuracy", "test_windows", "chance"}
    assert (r["emotion_classifier"]["test_windows"], r["emotion_classifier"]["chance"]) == (16, 1 / 8)
