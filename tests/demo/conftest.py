"""A tiny demo corpus (2 speakers x 2 emotions x 1 level = 4 clips), generated once per session
by the real stage (fresh worker processes, ffmpeg), twice: the second run checks determinism."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kfusion.config import default_dict

TINY = {"speakers": 2, "emotions": ["neutral", "surprised"], "levels": [3], "clips_per_condition": 1}


def generate_tiny(root: Path, **overrides) -> Path:
    """Run `python -m kfusion.stages.demo` in-process with a tiny params file; return its folder."""
    from kfusion.stages.demo import main
    params = default_dict()
    params["demo"].update({**TINY, **overrides, "out": str(root / "demo")})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = os.getcwd()
    os.chdir(root)   # metrics/ and plots/ land beside the params, not in the repo
    try:
        assert main(["--params", str(root / "params.yaml")]) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("demo_a"))


@pytest.fixture(scope="session")
def tiny_run_again(tmp_path_factory) -> Path:
    return generate_tiny(tmp_path_factory.mktemp("demo_b"))
