"""Shared test fixtures: repo paths, the read-only shared data, a git identity for DVC runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (it holds the real clips these tests read)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _git_identity() -> None:
    # DVC experiment runs commit in temp git repos; CI machines may have no git identity.
    for k, v in {"GIT_AUTHOR_NAME": "kfusion-tests", "GIT_AUTHOR_EMAIL": "tests@kfusion.invalid",
                 "GIT_COMMITTER_NAME": "kfusion-tests",
                 "GIT_COMMITTER_EMAIL": "tests@kfusion.invalid"}.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
