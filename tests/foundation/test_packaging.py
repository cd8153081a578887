"""The installed distribution is one namespace, `kfusion`, and carries every module."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The repository folders and the installed names they map to (pyproject.toml package-dir).
FOLDERS = {"kfusion": "kfusion", "model": "kfusion/model", "pipeline": "kfusion/pipeline",
           "stages": "kfusion/stages"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # Build from a copy: setuptools keeps a build/ folder beside the sources, and a stale one
    # would hide a module the package list no longer names.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("kfusion-*.whl")
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_the_only_top_level_name_is_kfusion(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"kfusion"}


def test_every_module_of_the_repository_folders_is_installed(wheel_names):
    want = set()
    for folder, installed in FOLDERS.items():
        for py in (REPO / folder).rglob("*.py"):
            want.add(f"{installed}/{py.relative_to(REPO / folder).as_posix()}")
    missing = sorted(want - wheel_names)
    assert not missing, f"pyproject.toml [tool.setuptools] packages misses: {missing}"
