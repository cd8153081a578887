"""scale.executor: ray runs the landmarks, audio and features stages on a real Ray cluster
(ray.init(num_cpus=2), tests/scale/conftest.py) and writes the same bytes as the local
executor, resumably. The first test runs in CI; the features one (wav2vec2 in every actor)
is slow."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scale_helpers import file_hashes, run_stages, tiny_params, write_params


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    """A folder with the tiny demo corpus (2 clips) and its index."""
    folder = tmp_path_factory.mktemp("project")
    write_params(folder, tiny_params())
    run_stages(folder, "demo", "index")
    return folder


def _outputs(folder: Path, outs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    # every file, config.yaml included (it leaves `scale` out: where the work ran)
    return {out: file_hashes(folder / out) for out in outs}


def _local_then_ray(folder: Path, stages: tuple[str, ...], outs: tuple[str, ...]) -> dict:
    """Run `stages` with the local executor, then again from scratch on Ray; both outputs."""
    write_params(folder, tiny_params())
    run_stages(folder, *stages)
    local = _outputs(folder, outs)
    for out in outs:
        assert sorted(f for f in local[out] if f.startswith("shard-")) == \
            ["shard-00000.parquet", "shard-00001.parquet"], local
        shutil.rmtree(folder / out)
    write_params(folder, tiny_params(scale={"executor": "ray"}))
    run_stages(folder, *stages)
    return {"local": local, "ray": _outputs(folder, outs)}


def _resume(folder: Path, stage: str, out: str) -> dict:
    """Delete shard 1 of `out`, run `stage` again (on Ray); its metrics."""
    (folder / out / "shard-00001.parquet").unlink()
    run_stages(folder, stage)
    assert not list(folder.glob("data/*/.probe-*"))   # the driver's probe files are gone
    counts = json.loads((folder / f"reports/{stage}.json").read_text())
    return {**counts, **json.loads((folder / f"reports/{stage}.log.json").read_text())}


def test_audio_and_landmarks_on_ray_equal_local_bytes_and_resume(demo_project: Path, ray_cluster):
    outs = ("data/audio", "data/landmarks")
    runs = _local_then_ray(demo_project, ("audio", "landmarks"), outs)
    assert runs["ray"] == runs["local"]
    metrics = _resume(demo_project, "landmarks", "data/landmarks")
    assert (metrics["shards"], metrics["shards_reused"], metrics["processed"]) == (2, 1, 2)
    assert _outputs(demo_project, outs) == runs["local"]


@pytest.mark.slow
def test_features_on_ray_equal_local_bytes_and_resume(demo_project: Path, ray_cluster):
    if not (demo_project / "data/audio/config.yaml").exists():
        run_stages(demo_project, "audio")
    runs = _local_then_ray(demo_project, ("features",), ("data/features",))
    assert runs["ray"] == runs["local"]
    metrics = _resume(demo_project, "features", "data/features")
    assert (metrics["shards"], metrics["shards_resumed"], metrics["processed"]) == (2, 1, 2)
    assert _outputs(demo_project, ("data/features",)) == runs["local"]
