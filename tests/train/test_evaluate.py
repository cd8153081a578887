"""The evaluate stage on a tiny trained model: baselines against hand computations, the
detector floor, provenance in every record, plots; the reference definition labelled."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfusion.config import from_dict
from kfusion.shapes import MOUTH_INDICES
from kfusion.pipeline.training.evaluation import evaluate, mean_offset
from kfusion.pipeline.training.loop import train
from train_helpers import whisper_record


def _np_ld(pred, ref, pts=None):
    if pts is not None:
        pred, ref = pred[:, :, pts], ref[:, :, pts]
    return float(np.linalg.norm(pred - ref, axis=-1).mean())


def _np_lvd(pred, ref, pts=None):
    return _np_ld(np.diff(pred, axis=1), np.diff(ref, axis=1), pts)


def _write_identity_shard(windows: Path, out: Path):
    import cv2
    clip_ids = pq.read_table(windows / "test" / "windows.parquet").column("clip_id").to_pylist()
    ok, jpg = cv2.imencode(".jpg", np.full((256, 256, 3), 90, np.uint8))
    out.mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": clip_ids, "identity_jpeg": [jpg.tobytes()] * len(clip_ids)}),
                   out / "shard-00000.parquet")


@pytest.fixture
def trained(tiny_cfg, windows: Path, tmp_path):
    cfg = tiny_cfg(epochs=2)
    train(cfg, windows, tmp_path / "models")
    return cfg


def test_evaluate_against_hand_computed_baselines(trained, windows: Path, tmp_path):
    _write_identity_shard(windows, tmp_path / "landmarks")
    r = evaluate(trained, windows, tmp_path / "models" / "best.pt",
                 out_json=tmp_path / "metrics" / "evaluate.json", plots_dir=tmp_path / "plots")
    ref = np.load(windows / "test" / "landmarks.npy").astype(np.float64)
    ident = np.load(windows / "test" / "identity.npy").astype(np.float64)[:, None]
    gt = np.load(windows / "test" / "gt_landmarks.npy").astype(np.float64)
    still = np.broadcast_to(ident, ref.shape)
    mouth = list(MOUTH_INDICES)
    o = r["overall"]["identity"]
    assert o["windows"] == 16
    assert o["M-LD"] == pytest.approx(_np_ld(still, ref, mouth))
    assert o["F-LVD"] == pytest.approx(_np_lvd(still, ref))
    # held still: LVD is the reference's own mean speed
    assert o["M-LVD"] == pytest.approx(float(np.linalg.norm(np.diff(ref[:, :, mouth], axis=1), axis=-1).mean()))
    mm = ident + mean_offset(windows / "train")
    assert r["overall"]["mean_motion"]["F-LD"] == pytest.approx(_np_ld(mm, ref))
    demo = r["corpora"]["demo"]
    # detector floor: reference vs clean ground truth (the synthetic jitter)
    assert demo["vs_ground_truth"]["detector"]["F-LD"] == pytest.approx(_np_ld(ref, gt))
    assert demo["vs_ground_truth"]["identity"]["M-LD"] == pytest.approx(_np_ld(still, gt, mouth))
    for block in (r, demo):
        assert block["encoder"] == "whisper" and block["encoder_fallback"] is False
        assert block["encoder_sha256"] == whisper_record()["encoder_sha256"]
        assert block["checkpoint"].endswith("best.pt") and len(block["checkpoint_sha256"]) == 64
    assert r["M-LD"] == r["overall"]["model"]["M-LD"]
    assert sum(v["windows"] for v in demo["per_emotion"].values()) == 16
    assert 0.0 <= r["emotion_classifier"]["test_accuracy"] <= 1.0
    rows = json.loads((tmp_path / "plots" / "per_emotion.json").read_text())
    assert {"emotion", "M-LD", "M-LVD", "F-LD", "F-LVD"} <= set(rows[0])
    png = (tmp_path / "plots" / "qualitative.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_reference_definition_is_labelled_and_batch_dependent(trained, windows, tmp_path):
    out = {}
    for bs in (4, 16):
        cfg = from_dict({**yaml.safe_load(yaml.safe_dump(_as_dict(trained))),
                         "metrics": {"definition": "both", "reference_batch_size": bs}})
        out[bs] = evaluate(cfg, windows, tmp_path / "models" / "last.pt",
                           out_json=tmp_path / f"m{bs}.json", plots_dir=tmp_path / f"p{bs}")
    r4, r16 = (out[b]["corpora"]["demo"]["reference_definition"] for b in (4, 16))
    assert "NOT Eq. 13-15" in r4["label"] and r4["batch_size"] == 4
    # the same predictions: Eq. 14 unchanged, the authors' "LD" about doubles (sqrt(16/4))
    assert out[4]["M-LD"] == pytest.approx(out[16]["M-LD"])
    ratio = r16["identity"]["ref F-LD"] / r4["identity"]["ref F-LD"]
    assert 1.7 < ratio < 2.3


def _as_dict(cfg):
    from kfusion.config import to_dict
    return to_dict(cfg)


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
    assert not (tmp_path / "metrics" / "evaluate.json").exists()
    meta_path.write_text(json.dumps(meta))   # the same encoder: it runs
    assert evaluate_stage.main(["--params", str(params)]) == 0
    assert json.loads((tmp_path / "metrics" / "evaluate.json").read_text())["encoder"] == "whisper"
