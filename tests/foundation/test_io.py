"""Atomic writes and stage summaries: no partial file under a final name, counts and limits."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kfusion.pipeline.io import StageError, StageRun, atomic_path, atomic_write_text


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_replace_keeps_old_until_done_and_uses_umask(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # still the complete old file
    assert target.read_text() == "new"
    umask = os.umask(0); os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stage_run_counts_rejects_and_limit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = StageRun("audio")
    run.processed = 3
    run.reject("c1", "silent", "RMS 0 below 0.001")
    run.extra.update(frames_per_s=12.5, clips=4)
    counts = run.finish(rejects_path=tmp_path / "rejects.parquet",
                        report_path=tmp_path / "m.json", max_reject_fraction=0.5)
    assert counts["reject_fraction"] == 0.25 and counts["reject_reasons"] == {"silent": 1}
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["rejected"] == 1 and report["clips"] == 4
    # timings and throughput never reach the tracked report: only its untracked log
    assert "seconds" not in report and "frames_per_s" not in report
    log = json.loads((tmp_path / "m.log.json").read_text())
    assert set(log) == {"seconds", "frames_per_s"} and log["frames_per_s"] == 12.5
    assert pq.read_table(tmp_path / "rejects.parquet").to_pylist() == [
        {"clip_id": "c1", "stage": "audio", "reason": "silent", "message": "RMS 0 below 0.001"}]
    assert "[audio] processed 3, rejected 1 (silent: 1)" in capsys.readouterr().err

    with pytest.raises(StageError, match="above audio.max_reject_fraction=0.2"):
        run.finish(rejects_path=None, report_path=None, max_reject_fraction=0.2)
