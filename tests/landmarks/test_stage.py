"""The landmarks stage end to end on real clips: shards, rejects, metrics, plot, resume."""
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfusion.config import default_dict
from kfusion.pipeline.data.landmarks import read_clip
from kfusion.pipeline.data.shards import iter_rows, shard_meta

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "realclips"


def _manifest(dirpath: Path, videos: list[Path]) -> None:
    rows = [dict(clip_id=f"grid:s1:neutral:1:{p.stem}", corpus="grid", speaker="s1",
                 emotion="neutral", emotion_id=0, level=1, video_path=str(p), audio_path=str(p),
                 video_duration_s=3.0, audio_duration_s=3.0, split="train", gt_key="", text="")
            for p in videos]
    (dirpath / "data/index").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), dirpath / "data/index/manifest.parquet")


def _params(dirpath: Path, **landmarks) -> None:
    d = default_dict()
    d["landmarks"].update(landmarks)
    (dirpath / "params.yaml").write_text(yaml.safe_dump(d))


@pytest.mark.slow
def test_stage_writes_shards_rejects_metrics_plot_and_resumes(tmp_path, monkeypatch):
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (real test clips; see the README there)")
    from kfusion.stages.landmarks import main
    videos = [REAL / "other/bbaf2n.mpg", REAL / "other/lbax4n.mpg",
              REAL / "mead/M030/audio/sad/level_3/001.m4a"]      # the m4a has no video: a reject
    _manifest(tmp_path, videos)
    _params(tmp_path, clips_per_shard=2, keep_frames="all", max_reject_fraction=0.5)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0

    out = tmp_path / "data/landmarks"
    shards = sorted(out.glob("shard-*.parquet"))
    assert len(shards) == 2 and (out / "config.yaml").exists()
    rows = [read_clip(r) for r in iter_rows(out)]
    assert [r["clip_id"] for r in rows] == ["grid:s1:neutral:1:bbaf2n", "grid:s1:neutral:1:lbax4n"]
    for r in rows:
        assert r["fps"] == 30 and r["n_frames"] == 90 and r["landmarks_px"].shape == (90, 68, 2)
        assert len(r["frames_jpeg"]) == 90 and r["frames_jpeg"][r["identity_frame"]] == r["identity_jpeg"]
    rej = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(x["stage"], x["reason"]) for x in rej] == [("landmarks", "no_video_stream")]
    import json
    m = json.loads((tmp_path / "reports/landmarks.json").read_text())
    assert m["processed"] == 2 and m["rejected"] == 1 and m["frames"] == 180
    assert m["face_frame_share"] == 1.0 and 0 < m["jitter_px"] < 3
    assert (tmp_path / "plots/landmarks/contact_sheet.png").stat().st_size > 10000

    # Resume: finished shards are reused, counts and rejects come from their metadata.
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert main([]) == 0
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    m2 = {**json.loads((tmp_path / "reports/landmarks.json").read_text()),
          **json.loads((tmp_path / "reports/landmarks.log.json").read_text())}
    assert m2["shards_reused"] == 2 and m2["processed"] == 2 and m2["rejected"] == 1
    # A lost shard is redone alone; a settings change redoes all.
    shards[1].unlink()
    assert main([]) == 0
    assert shards[0].stat().st_mtime_ns == mtimes[0] and shards[1].exists()
    assert json.loads((tmp_path / "reports/landmarks.log.json").read_text())["shards_reused"] == 1
    _params(tmp_path, clips_per_shard=2, keep_frames="identity", max_reject_fraction=0.5)
    assert main([]) == 0
    assert shard_meta(shards[0])["planned_ids"] == ["grid:s1:neutral:1:001", "grid:s1:neutral:1:bbaf2n"]
    assert all(len(r["frames_jpeg"]) == 0 for r in iter_rows(out, ["frames_jpeg"]))


def test_stage_with_every_clip_rejected_still_writes_outputs(tmp_path, monkeypatch):
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (real test clips; see the README there)")
    from kfusion.stages.landmarks import main
    _manifest(tmp_path, [REAL / "mead/M030/audio/sad/level_3/001.m4a"])
    _params(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2                       # above max_reject_fraction: a clear failure ...
    assert (tmp_path / "data/landmarks/rejects.parquet").exists()   # ... with outputs written
    assert (tmp_path / "reports/landmarks.json").exists()
    assert (tmp_path / "plots/landmarks/contact_sheet.png").exists()
    assert len(list((tmp_path / "data/landmarks").glob("shard-*.parquet"))) == 1


def test_fan_backend_loads_real_weights_when_present():
    from kfusion.pipeline.data.landmarks import FanBackend, LandmarkError, fan_weights_path
    try:
        fan_weights_path("")
    except LandmarkError as e:
        pytest.skip(f"FAN weights not present here: {str(e)[:120]}...")
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent")
    from kfusion.config import LandmarksConfig
    from kfusion.pipeline.data.landmarks import process_clip
    r = process_clip("fan", str(REAL / "other/bbaf2n.mpg"), FanBackend(), LandmarksConfig())
    assert read_clip(r.row)["face_found"].mean() > 0.95


def test_stage_with_fan_and_no_weights_fails_with_one_actionable_line(tmp_path, monkeypatch, capsys):
    from kfusion.stages.landmarks import main
    _manifest(tmp_path, [Path("/nonexistent.mp4")])
    _params(tmp_path, backend="fan", fan_weights_dir=str(tmp_path / "fan"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torch
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "2DFAN4-11f355bf06.pth.tar" in err and str(tmp_path / "fan" / "checkpoints") in err


@pytest.mark.slow
def test_fan_loading_code_runs_on_a_locally_written_checkpoint(tmp_path, monkeypatch):
    # No real FAN weights here: write a seeded random FAN-4 state dict where the real file
    # would go, so the real loading path (hub folder, FaceAlignment, our boxes) runs end to end.
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent")
    import torch
    from face_alignment.models import FAN
    from kfusion.pipeline.data.landmarks import FAN_FILE, FanBackend
    torch.manual_seed(0)
    (tmp_path / "checkpoints").mkdir()
    torch.save(FAN(4).state_dict(), tmp_path / "checkpoints" / FAN_FILE)
    before = torch.hub.get_dir()
    fan = FanBackend(str(tmp_path))
    assert torch.hub.get_dir() == before           # the hub folder is restored
    from kfusion.pipeline.media.video import iter_frames
    gray = next(iter_frames(REAL / "other/bbaf2n.mpg"))
    (box, score), = fan.detect(gray)
    pts = fan.predict(gray, box)
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    # FAN's heatmap argmax lands inside its crop around the box (random weights: anywhere there)
    cx, cy, side = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0]
    assert (np.abs(pts - [cx, cy]) < 2 * side).all()
