"""Shared by the scale tests and bench/scale.py: a tiny demo project folder, stage runs in
this process, and file hashes to compare outputs byte for byte (imported by name: tests/scale
is on sys.path)."""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from kfusion.config import default_dict

# 1 speaker x 2 emotions x 1 level = 2 demo clips; 1 per shard: 2 shards per stage
TINY_DEMO = {"speakers": 1, "emotions": ["neutral", "surprised"], "levels": [3],
             "clips_per_condition": 1}


def tiny_params(clips_per_shard: int = 1, workers: int = 2, **sections) -> dict:
    """The default params with the tiny demo corpus and small shards; `sections` update
    (one level deep) what they name."""
    p = default_dict()
    p["demo"].update(TINY_DEMO)
    p["preprocess"]["workers"] = workers
    for stage in ("landmarks", "audio", "features"):
        p[stage]["clips_per_shard"] = clips_per_shard
    p["features"]["threads"] = 1   # the same torch threads in every worker, whatever the machine
    for name, values in sections.items():
        if isinstance(values, dict):
            p[name].update(values)
        else:
            p[name] = values
    return p


def write_params(folder: Path, params: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@contextmanager
def working_dir(folder: Path):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


def run_stages(folder: Path, *stages: str) -> None:
    """`python -m kfusion.stages.<name> --params params.yaml` for each, in this process, in
    `folder` (relative outs land there); fails on a non-zero exit."""
    with working_dir(folder):
        for name in stages:
            main = importlib.import_module(f"kfusion.stages.{name}").main
            assert main(["--params", "params.yaml"]) == 0, f"stage {name} failed in {folder}"


def file_hashes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (names in `skip` left out)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


# ----------------------------------------------------------------------------- DVC projects
REPO = Path(__file__).resolve().parents[2]
CODE = ("kfusion", "model", "pipeline", "stages")   # what dvc.yaml's deps name


def run(cmd: list[str], cwd: Path, timeout: float = 1800, check: bool = True,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """A command in `cwd`, the test's interpreter first on PATH (stage commands run `python`)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", **(env or {})}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)} in {cwd}: exit {r.returncode}\n" \
                                  f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def dvc_project(folder: Path, params: dict, stages: tuple[str, ...] | None = None) -> Path:
    """A git + DVC repository in `folder` holding this checkout's code, the real dvc.yaml (only
    `stages` of it when given, without the top-level metrics and plots) and `params`;
    committed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    dag = yaml.safe_load((REPO / "dvc.yaml").read_text())
    if stages is not None:
        dag = {"stages": {k: v for k, v in dag["stages"].items() if k in stages}}
    (folder / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    write_params(folder, params)
    (folder / ".gitignore").write_text("__pycache__/\n")
    for cmd in (["git", "init", "-q"], dvc("init", "-q"), ["git", "add", "-A"],
                ["git", "commit", "-qm", "project"]):
        run(cmd, folder)
    return folder


def lock_hashes(folder: Path) -> dict[str, dict[str, str]]:
    """stage -> {path: md5} of every dep and out recorded in folder/dvc.lock."""
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    return {name: {e["path"]: e["md5"] for e in [*st.get("deps", []), *st.get("outs", [])]}
            for name, st in lock["stages"].items()}
