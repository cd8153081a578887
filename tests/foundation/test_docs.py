"""Docs that cannot go stale: every results table in README.md and docs/*.md equals what
scripts/tables.py generates from the committed JSON, every file and `kfusion.*` name the docs
mention exists, and the model's parameter table matches the code."""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "tables.py"
# What the tables read, copied into a scratch root so tests can change it.
SOURCES = ("README.md", "docs", "metrics", "dvclive", "bench/results")


def _docs(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _tables(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True)


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("img"))
        elif src.exists():
            shutil.copy(src, tmp_path / name)
    return tmp_path


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("tables", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tables"] = mod          # dataclasses look their module up while defining
    spec.loader.exec_module(mod)
    return mod


def test_every_committed_table_equals_its_json():
    r = _tables(REPO, "--check")
    assert r.returncode == 0, r.stderr + "\nrun `python scripts/tables.py` and commit the result"


def _block(text: str, name: str) -> str:
    return re.search(rf"<!-- table: {name} -->\n(.*?)<!-- /table -->", text, re.S)[1]


def test_check_names_the_table_whose_number_was_edited_by_hand(scratch):
    readme = scratch / "README.md"
    text = readme.read_text()
    proposed = json.loads((scratch / "metrics/ablations/kf-proposed.json").read_text())
    cell = f"{proposed['overall']['model']['M-LD']:.3f}"
    block = _block(text, "demo-ablations")
    assert f"**{cell}**" in block
    readme.write_text(text.replace(block, block.replace(f"**{cell}**", "**1.000**")))
    r = _tables(scratch, "--check")
    assert r.returncode == 1
    assert "README.md: table demo-ablations" in r.stderr
    assert "demo-split" not in r.stderr   # only the edited table is named
    assert _tables(scratch).returncode == 0       # regenerating restores it
    assert readme.read_text() == text


def test_a_changed_json_value_reaches_its_table_formatted(scratch):
    path = scratch / "metrics/ablations/kf-wo-lstm.json"
    m = json.loads(path.read_text())
    m["overall"]["model"]["F-LVD"] = 0.25        # better than every other row: bold
    path.write_text(json.dumps(m))
    assert _tables(scratch, "--check").returncode == 1
    assert _tables(scratch).returncode == 0
    row = next(line for line in _block((scratch / "README.md").read_text(), "demo-ablations")
               .splitlines() if line.startswith("| w/o LSTM"))
    assert row.endswith("| **0.250** |")


def test_an_absent_file_says_not_measured_yet_with_its_command(scratch):
    (scratch / "metrics/ablations/kf-wo-lstm.json").unlink()
    assert _tables(scratch).returncode == 0
    block = _block((scratch / "README.md").read_text(), "demo-ablations")
    assert ("| w/o LSTM (`model.lstm=false`) | not measured yet: run `python scripts/ablations.py` |"
            in block)
    shutil.rmtree(scratch / "metrics/ablations")
    _tables(scratch)
    rows = [line for line in _block((scratch / "README.md").read_text(), "demo-ablations")
            .splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| not measured yet: run `python scripts/ablations.py` |  |  |  |  |"]


def test_the_grid_table_reads_its_own_corpus_folder(scratch):
    block = _block((scratch / "README.md").read_text(), "grid-ablations")
    assert "not measured yet" in block
    grid = scratch / "metrics/ablations/grid"
    shutil.copytree(scratch / "metrics/ablations", grid)
    m = json.loads((grid / "kf-proposed.json").read_text())
    m["overall"]["model"]["M-LD"] = 9.87654
    (grid / "kf-proposed.json").write_text(json.dumps(m))
    _tables(scratch)
    text = (scratch / "README.md").read_text()
    assert "| 9.877 |" in _block(text, "grid-ablations")
    assert "9.877" not in _block(text, "demo-ablations")


def test_several_files_for_one_row_give_mean_and_sd(tables, tmp_path):
    for seed, v in ((1, 1.0), (2, 3.0)):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}/m.json").write_text(json.dumps({"a": {"M-LD": v}}))
    t = tables.Table("t", (tables.Col("M-LD", "M-LD"),), (tables.Row("x", "a", "seed*/m.json"),))
    assert "| x | 2.000 ± 1.414 |" in tables.render(tmp_path, t)   # mean 2, sd sqrt(2)


def test_an_unknown_table_name_is_a_one_line_error(scratch):
    (scratch / "docs/extra.md").write_text("<!-- table: no-such-table -->\n<!-- /table -->\n")
    r = _tables(scratch, "--check")
    assert r.returncode == 2
    assert "docs/extra.md: no table spec named 'no-such-table'" in r.stderr
    assert "Traceback" not in r.stderr


# ---- names and paths the docs mention ---------------------------------------------------

PATH = re.compile(r"`((?:kfusion|model|pipeline|stages|tests|bench|scripts|docs|\.ci)/[\w./-]*)"
                  r"(?:::(\w+))?")
DOTTED = re.compile(r"`(kfusion(?:\.\w+)+)")


def test_every_repository_path_in_the_docs_exists():
    missing = []
    for doc in _docs():
        for m in PATH.finditer(doc.read_text()):
            path, test = m[1].rstrip("."), m[2]
            if path.startswith("bench/results/"):
                continue   # benchmark outputs: their tables say when one is absent
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
            elif test and f"def {test}(" not in (REPO / path).read_text():
                missing.append(f"{doc.name}: {path}::{test}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)


def _params_keys(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(k)
            _params_keys(v, out)
    return out


def test_every_test_the_docs_cite_exists():
    defined = {n for f in (REPO / "tests").rglob("*.py")
               for n in re.findall(r"def (test_\w+)\(", f.read_text())}
    keys = _params_keys(yaml.safe_load((REPO / "params.yaml").read_text()), set())
    cited = {(doc.name, n) for doc in _docs()
             for n in re.findall(r"`(?:[\w/.]+::)?(test_\w+)", doc.read_text())}
    missing = sorted(f"{d}: {n}" for d, n in cited if n not in defined and n not in keys)
    assert not missing, "the docs cite tests that do not exist:\n" + "\n".join(missing)


def test_every_kfusion_name_in_the_docs_resolves():
    bad = []
    for doc in _docs():
        for name in set(DOTTED.findall(doc.read_text())):
            parts = name.split(".")
            for i in range(len(parts), 0, -1):   # longest importable prefix, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                try:
                    for attr in parts[i:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    bad.append(f"{doc.name}: {name}")
                break
            else:
                bad.append(f"{doc.name}: {name}")
    assert not bad, "the docs name kfusion modules or objects that do not exist:\n" + "\n".join(bad)


def test_the_parameter_table_in_model_md_matches_the_model():
    from kfusion.config import load
    from kfusion.model.build import build_model, parameter_counts
    wav2vec2 = {"encoder": "wav2vec2", "feature_dim": 768}   # the table's content encoder
    counts = parameter_counts(build_model(load(REPO / "params.yaml"), wav2vec2))
    text = (REPO / "docs/model.md").read_text()
    section = text[text.index("## Parameters per block (defaults)"):]
    rows = dict(re.findall(r"^\| (?:[├└] )?\**([^|*]+?)\** \| \**([\d,]+)\** \|$", section, re.M))
    want = {"Global Domain": "global_domain", "Content Domain": "content_domain",
            "KFusion": "kfusion", "KAN head [68, 128, 68]": "kfusion.head", "total": "total"}
    for label, key in want.items():
        assert int(rows[label].replace(",", "")) == counts[key], (label, rows[label], counts[key])
