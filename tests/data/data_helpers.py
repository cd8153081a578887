"""Fixtures shared by the data-stage tests: real clips from ../shared, laid out per corpus."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kfusion.pipeline.media.ffmpeg import ffmpeg_binary

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def realclips() -> Path:
    p = SHARED / "realclips"
    if not p.is_dir():
        pytest.skip(f"{p} is absent (real MEAD/GRID/LRS2 clips these tests decode)")
    return p


def grid_root() -> Path:
    p = SHARED / "grid"
    if not p.is_dir():
        pytest.skip(f"{p} is absent (real GRID clips of speaker s1)")
    return p


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args],
                   check=True)


def write_params(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def small_grid(dst: Path, n: int = 3) -> Path:
    """A GRID root with the first n clips of ../shared/grid (symlinked) and their alignments."""
    src = grid_root()
    ids = sorted(p.stem for p in (src / "s1").glob("*.mpg"))[:n]
    (dst / "s1").mkdir(parents=True)
    (dst / "alignments" / "s1").mkdir(parents=True)
    for i in ids:
        (dst / "s1" / f"{i}.mpg").symlink_to(src / "s1" / f"{i}.mpg")
        shutil.copy(src / "alignments" / "s1" / f"{i}.align", dst / "alignments" / "s1")
    return dst


def manifest_row(clip_id: str, **fields) -> dict:
    """A manifest row (index.MANIFEST_SCHEMA) of a 3 s neutral clip; `fields` override."""
    row = dict(clip_id=clip_id, corpus="demo", speaker="D01", emotion="neutral", emotion_id=0,
               level=1, video_path=f"/nowhere/{clip_id}.mp4", audio_path=f"/nowhere/{clip_id}.m4a",
               video_duration_s=3.0, audio_duration_s=3.0, split="train", gt_key="", text="")
    return {**row, **fields}


def write_manifest(index_dir: Path, rows: list[dict]) -> Path:
    """data/index/manifest.parquet as the index stage writes it."""
    from kfusion.pipeline.data.index import manifest_table
    from kfusion.pipeline.io import write_parquet
    write_parquet(index_dir / "manifest.parquet", manifest_table(rows))
    return index_dir / "manifest.parquet"
