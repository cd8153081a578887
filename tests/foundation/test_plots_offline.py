"""Every plot `dvc plots show` lists draws with the network off (issue 14, item 5).

A temp repo holds the project's dvc.yaml, .dvc/config (plots.html_template) and the files its
plots read: the committed plots/ and DVCLive curves written by the training loop's own Logger.
`dvc plots show` renders the page; headless Chromium opens it inside an empty network
namespace (plots_offline_check.py): every Vega plot must draw its lines or bars, and a
screenshot must show the series colour. The drawing test needs Debian's chromium
(`apt-get install chromium`): it is skipped without it, except where the environment variable
CI is set (.ci/run sets it and installs chromium): there a missing browser fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kfusion import plots_template

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from plots_offline_check import check  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> str:
    """The browser, or a skip saying how to get it; in CI (env CI set) a missing one fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    why = ("chromium is not installed, so the offline plots page cannot be opened "
           "(`apt-get install -y chromium`, as root)")
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI (env CI={os.environ['CI']!r}) must run this test: .ci/run "
                    "installs it")
    pytest.skip(f"{why}; skipped outside CI")


def training_curves(live_dir: Path) -> None:
    """dvclive/train as the train stage writes it: the loop's Logger, five epochs."""
    from kfusion.pipeline.training.loop import Logger
    log = Logger(live_dir, True)
    for epoch in range(1, 6):
        log.log({"epoch": epoch, "train/loss": 0.01 / epoch, "lr": 3e-4 / epoch,
                 "val/loss": 0.012 / epoch, "val/M-LD": 6.0 - epoch / 2, "val/M-LVD": 1.5,
                 "val/F-LD": 6.0 - epoch / 3, "val/F-LVD": 1.3})
    log.end()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plots")
    repo = tmp / "repo"
    repo.mkdir()
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "plots", repo / "plots")
    training_curves(tmp / "live")                    # outside any repo: DVCLive stays quiet
    shutil.copytree(tmp / "live", repo / "dvclive" / "train")
    # what scripts/setup.sh writes, built here from this tree's code (2-6 s)
    assert plots_template.write(repo / ".dvc" / "plots_offline.html")
    out = tmp / "dvc_plots"
    r = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], cwd=repo,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "index.html"


def test_the_page_loads_nothing_from_the_network(page: Path):
    html = page.read_text(encoding="utf8")
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html.replace("'", '"')
    assert "vegaEmbed" in html and "inlined by vl-convert-python" in html


def test_every_plot_draws_offline(page: Path, tmp_path: Path, chromium: str):
    problems = check(page, tmp_path / "shot.png")
    assert not problems, problems
    html = page.read_text(encoding="utf8")
    # 7 curves (dvclive) + the per-emotion bars, each once; the three pictures once each
    assert html.count("vegaEmbed('#") == 8
    for png in ("qualitative.png", "contact_sheet.png"):
        assert html.count(png) >= 1
