"""The README's comparison commands (`dvc metrics show`, `dvc metrics diff`, `dvc exp show`),
run as written on a DVC project with this repository's params.yaml and metrics layout (the
evaluate stage's compact record, DVCLive's metrics) and two experiments: every line of their
output fits in 120 columns, and it shows the model's metrics and the switches that changed."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WIDTH = 120
# writes the evaluate stage's compact record from a report whose numbers follow the params
STAGE = '''
import yaml
from kfusion.config import load, paper_differences
from kfusion.pipeline.io import write_json
from kfusion.pipeline.training.evaluation import compact_record
cfg = load("params.yaml")
bump = 0.3 * (cfg.model.fusion == "mlp") + 0.2 * (not cfg.model.lstm)
def m(x): return {"windows": 224, "M-LD": 2.7 + x, "M-LVD": 0.72 + x / 10, "F-LD": 2.56 + x,
                  "F-LVD": 0.49 + x / 10, "mouth_r": 0.41 - x}
report = {"systems": {"model": m(bump), "audio_swap": m(0.5), "identity": {**m(1.6), "mouth_r": None},
                      "mean_motion": m(0.26)},
          "provenance": {"set": "test", "encoder": "facebook/wav2vec2-base-960h",
                         "encoder_fallback": True, "checkpoint": "models/best.pt",
                         "differs_from_paper": paper_differences(cfg)}}
write_json("metrics/evaluate/test.json", compact_record(report))
'''


def readme_commands() -> list[str]:
    """The commands of the README's 'compact comparisons' block, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(# compact comparisons.*?)```", text, re.S)
    assert block, "README.md: the ```bash block starting '# compact comparisons' is missing"
    cmds = [ln.split("  #")[0].strip() for ln in block[1].splitlines()
            if ln.startswith(("dvc metrics", "dvc exp"))]
    assert {" ".join(c.split()[:3]) for c in cmds} >= {"dvc metrics show", "dvc metrics diff",
                                                       "dvc exp show"}
    return cmds


@pytest.mark.slow
def test_readme_comparison_commands_fit_120_columns(tmp_path: Path):
    repo = tmp_path / "p"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo)
    (repo / "dvclive/train").mkdir(parents=True)
    # DVCLive's last-epoch summary, as the train stage writes it (dvclive/train is a cached
    # out, not in git): its nested keys are the 8 columns DVC adds per experiment
    (repo / "dvclive/train/metrics.json").write_text(json.dumps(
        {"step": 11, "train": {"loss": 0.0123, "lr": 1.2e-05},
         "val": {"loss": 0.0101, "M-LD": 2.91, "M-LVD": 0.71, "F-LD": 2.48, "F-LVD": 0.47}}))
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python stage.py\n    deps: [stage.py]\n"
        "    params: [preset, seed, model, train]\n"
        "    metrics:\n      - metrics/evaluate/test.json:\n          cache: false\n"
        "metrics:\n  - dvclive/train/metrics.json\n")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "COLUMNS": "400"}
    dvc = [sys.executable, "-m", "dvc"]
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "repro", "-q"],
                ["git", "add", "-A"], [*git, "commit", "-qm", "base"],
                [*dvc, "exp", "run", "-q", "-S", "model.fusion=mlp"],
                [*dvc, "exp", "run", "-q", "-S", "model.lstm=false", "-S", "seed=7"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    outputs = {}
    for cmd in readme_commands():
        r = subprocess.run([*dvc, *shlex.split(cmd)[1:]], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
        wide = [ln for ln in r.stdout.splitlines() if len(ln.rstrip()) > WIDTH]
        assert not wide, f"{cmd}: {len(wide)} lines over {WIDTH} columns, e.g.\n{wide[0]}"
        outputs[" ".join(cmd.split()[:3])] = r.stdout
    show, exp = outputs["dvc metrics show"], outputs["dvc exp show"]
    assert "metrics/evaluate/test.json" in show and "swap_M-LD" in show and "mouth_r" in show
    for column in ("M-LD", "M-LVD", "mouth_r", "model.fusion", "model.lstm", "seed"):
        assert column in exp, f"dvc exp show lacks {column}:\n{exp}"
    assert "mlp" in exp and "False" in exp
    assert "model.d_model" not in exp and "data/" not in exp     # unchanged params, deps
