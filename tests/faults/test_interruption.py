"""SIGKILL the landmarks and features stages partway, re-run, and get exactly what an
uninterrupted run writes; while they run, every shard visible under its final name is a
complete, readable Parquet file. (Training: tests/train/test_stages.py::
test_sigkill_mid_run_then_rerun_matches_uninterrupted and tests/train/test_training.py.)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfusion.config import default_dict
from kfusion.pipeline.data.audio import AUDIO_SCHEMA
from kfusion.pipeline.data.index import MANIFEST_SCHEMA
from kfusion.pipeline.media.container import decode_audio
from kfusion.pipeline.data.shards import shard_meta, write_shard
from fault_corpus import REAL, REPO, X264, ff

pytestmark = pytest.mark.slow
N_CLIPS = 8


def _clips(dst: Path) -> list[Path]:
    """N_CLIPS distinct 2 s clips of two real GRID speakers' videos (different offsets)."""
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (real face video these tests cut clips from)")
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(N_CLIPS):
        src = REAL / "other" / ("bbaf2n.mpg" if i % 2 == 0 else "lbax4n.mpg")
        p = dst / f"c{i}.mp4"
        ff("-ss", f"{0.1 * (i // 2):.1f}", "-i", src, "-t", "2", "-vf", "fps=30", *X264, "-c:a", "aac", p)
        out.append(p)
    return out


def _stage_cmd(stage: str, params: Path) -> list[str]:
    return [sys.executable, "-m", f"kfusion.stages.{stage}", "--params", str(params)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def _run(stage: str, cwd: Path) -> None:
    r = subprocess.run(_stage_cmd(stage, cwd / "params.yaml"), cwd=cwd, env=_env(),
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]


def _kill_after_first_shard(stage: str, cwd: Path, out: Path) -> list[str]:
    """Start the stage, read every final-named shard as soon as it appears (a partial one would
    fail to read), SIGKILL once the first exists; return the shard names present at the kill."""
    proc = subprocess.Popen(_stage_cmd(stage, cwd / "params.yaml"), cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)   # its pool workers die with it
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for p in sorted(out.glob("shard-*")):
                if p.name not in seen:
                    seen[p.name] = pq.read_table(p).num_rows   # raises on a partial file
            if seen:
                break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{stage} ended before the kill: make it slower"
    present = sorted(p.name for p in out.glob("shard-*"))
    for name in present:   # everything under a final name is complete, with its planned ids
        t = pq.read_table(out / name)
        meta = shard_meta(out / name)
        assert len(meta["planned_ids"]) == 1 and t.num_rows <= 1
    assert 1 <= len(present) < N_CLIPS, f"killed with {len(present)} shards of {N_CLIPS}"
    # a kill that lands mid-write leaves a temp file like this one; the re-run must remove it
    (out / f".{present[-1]}.killed.tmp").write_bytes(b"PAR1 half a shard")
    return present


def _rows(out: Path, cols: list[str]) -> dict[str, dict]:
    rows = {}
    for p in sorted(out.glob("shard-*.parquet")):
        for r in pq.read_table(p, columns=cols).to_pylist():
            rows[r["clip_id"]] = r
    return rows


def _same(a: dict, b: dict, cols: list[str]) -> None:
    assert sorted(a) == sorted(b)
    for cid in a:
        for c in cols:
            x, y = a[cid][c], b[cid][c]
            if isinstance(x, list) and x and isinstance(x[0], float):
                assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True), (cid, c)
            else:
                assert x == y, (cid, c)


# ----------------------------------------------------------------------------- landmarks
def _landmarks_dir(d: Path, clips: list[Path]) -> Path:
    rows = [dict(clip_id=f"grid:s1:neutral:1:{p.stem}", corpus="grid", speaker="s1",
                 emotion="neutral", emotion_id=0, level=1, video_path=str(p), audio_path=str(p),
                 video_duration_s=2.0, audio_duration_s=2.0, split="train", gt_key="", text="")
            for p in clips]
    (d / "data/index").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), d / "data/index/manifest.parquet")
    cfg = default_dict()
    cfg["preprocess"]["workers"] = 1
    cfg["landmarks"].update(clips_per_shard=1)
    (d / "params.yaml").write_text(yaml.safe_dump(cfg))
    return d


def _straight_and_killed(tmp_path: Path, stage: str, make_dir) -> tuple:
    """`stage` run straight through in one folder; in another, SIGKILLed after its first shard
    and run again. (clips, the straight folder, the killed one's output folder, the shards
    present at the kill, the re-run's metrics.) The shards present at the kill are kept, not
    redone, and no temp file of the killed run is left behind."""
    clips = _clips(tmp_path / "clips")
    straight = make_dir(tmp_path / "straight", clips)
    killed = make_dir(tmp_path / "killed", clips)
    _run(stage, straight)
    out = killed / f"data/{stage}"
    present = _kill_after_first_shard(stage, killed, out)
    before = {n: (out / n).stat().st_mtime_ns for n in present}
    _run(stage, killed)
    assert all((out / n).stat().st_mtime_ns == t for n, t in before.items())
    assert not list(out.glob(".shard-*"))
    return clips, straight, out, present, {**json.loads((killed / f"reports/{stage}.json").read_text()),
                                                 **json.loads((killed / f"reports/{stage}.log.json").read_text())}


def test_landmarks_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    clips, straight, out, present, m = _straight_and_killed(tmp_path, "landmarks", _landmarks_dir)
    assert m["shards_reused"] == len(present) and m["processed"] == N_CLIPS
    cols = ["clip_id", "n_frames", "landmarks_px", "confidence", "face_found", "crop_box",
            "identity_frame", "identity_jpeg"]
    _same(_rows(straight / "data/landmarks", cols), _rows(out, cols), cols)


# ----------------------------------------------------------------------------- features
def _features_dir(d: Path, clips: list[Path]) -> Path:
    """Audio shards (one clip each) of real speech, as the audio stage writes them."""
    (d / "data/audio").mkdir(parents=True)
    for k, p in enumerate(clips):
        x = decode_audio(p)
        write_shard(d / f"data/audio/shard-{k:05d}.parquet",
                    [{"clip_id": p.stem, "sample_rate_hz": 16000, "samples": x,
                      "duration_s": len(x) / 16000}],
                    schema=AUDIO_SCHEMA, meta={"fingerprint": f"f{k}"}, planned_ids=[p.stem])
    (d / "data/audio/config.yaml").write_text("{}")
    cfg = default_dict()
    cfg["preprocess"]["workers"] = 1
    # wav2vec2-base with random weights: slow enough per shard to be killed between shards
    cfg["features"].update(clips_per_shard=1, threads=1, encoder="random")
    (d / "params.yaml").write_text(yaml.safe_dump(cfg))
    return d


def test_features_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    clips, straight, out, present, m = _straight_and_killed(tmp_path, "features", _features_dir)
    assert m["shards_resumed"] == len(present) and m["processed"] == N_CLIPS and m["encoder_fallback"]
    from kfusion.pipeline.data.features import iter_features
    a = {r["clip_id"]: r for r in iter_features(straight / "data/features")}
    b = {r["clip_id"]: r for r in iter_features(out)}
    assert sorted(a) == sorted(b) == sorted(p.stem for p in clips)
    for cid in a:
        assert np.array_equal(a[cid]["mel"], b[cid]["mel"]), cid
        assert np.array_equal(a[cid]["w2v"], b[cid]["w2v"]), cid
