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
SOURCES = ("README.md", "docs", "metrics", "reports", "bench/results", "bench/README.md")


def _docs(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]


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


ROWS = ("wo-kfusion", "wo-lstm", "wo-global", "repl-mlp", "paper", "proposed")


def _summary(root: Path, corpus: str = "demo") -> Path:
    """A summary.json as scripts/ablations.py writes it: Proposed best everywhere."""
    cell = lambda v, sd=0.01: {"mean": v, "sd": sd, "n": 3}   # noqa: E731
    rows = {}
    for k, slug in enumerate(ROWS):
        v = 6.0 - k
        block = {"model": {"M-LD": cell(v), "M-LVD": cell(v / 2), "F-LD": cell(v / 3),
                           "F-LVD": cell(v / 4), "mouth_r": cell(0.1 * k)},
                 "audio_swap": {"M-LD": cell(v + 1)},
                 "differs_from_paper": {} if slug == "paper" else {"model.mel_norm": "window"}}
        if slug != "proposed":
            block["proposed_minus_row"] = {"M-LD": {"mean": k - 5.0, "ci_low": k - 5.5,
                                                    "ci_high": k - 4.5, "significant": True}}
        rows[slug] = {"label": slug, "test": block}
    rows["identity"] = {"label": "identity", "test": {"model": {"M-LD": cell(9.0), "M-LVD": cell(0.1)}}}
    path = root / "metrics/ablations" / corpus / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"corpus": corpus, "sets": ["test"], "rows": rows}))
    return path


def test_check_names_the_table_whose_number_was_edited_by_hand(scratch):
    _summary(scratch)
    assert _tables(scratch).returncode == 0
    readme = scratch / "README.md"
    text = readme.read_text()
    block = _block(text, "demo-ablations")
    assert "| **Proposed (ours)** (defaults) | **1.000 ± 0.010** |" in block
    readme.write_text(text.replace(block, block.replace("**1.000 ± 0.010**", "**0.500 ± 0.010**")))
    r = _tables(scratch, "--check")
    assert r.returncode == 1
    assert "README.md: table demo-ablations" in r.stderr
    assert "demo-split" not in r.stderr   # only the edited table is named
    assert _tables(scratch).returncode == 0       # regenerating restores it
    assert readme.read_text() == text


def test_ablation_table_cells_mean_sd_interval_and_best(scratch):
    path = _summary(scratch)
    s = json.loads(path.read_text())
    s["rows"]["wo-lstm"]["test"]["model"]["F-LVD"] = {"mean": 0.125, "sd": None, "n": 1}
    s["rows"]["repl-mlp"]["test"]["proposed_minus_row"]["M-LD"] = {
        "mean": 0.012, "ci_low": -0.02, "ci_high": 0.04, "significant": False}
    path.write_text(json.dumps(s))
    assert _tables(scratch).returncode == 0
    block = _block((scratch / "README.md").read_text(), "demo-ablations")
    lines = {ln.split(" | ")[0]: ln for ln in block.splitlines() if ln.startswith("| ")}
    # one seed: no sd; best of the column in bold (F-LVD: lowest; mouth r: highest)
    assert "| **0.125** |" in lines["| w/o LSTM (`model.lstm=false`)"]
    assert "| **0.500 ± 0.010** |" in lines["| **Proposed (ours)** (defaults)"]   # mouth r
    assert lines["| w/o LSTM (`model.lstm=false`)"].endswith("| -4.000 [-4.500, -3.500] * |")
    assert lines["| repl MLP (`model.fusion=mlp`)"].endswith("| +0.012 [-0.020, +0.040] |")
    assert lines["| baseline: identity landmarks held still"].startswith(
        "| baseline: identity landmarks held still | 9.000 ± 0.010 | **0.100 ± 0.010** |")
    sw = _block((scratch / "README.md").read_text(), "demo-ablation-switches")
    assert "| paper-exact (`preset=paper`) | none |" in sw
    assert "| w/o LSTM (`model.lstm=false`) | model.mel_norm |" in sw


def test_an_absent_file_says_not_measured_yet_with_its_command(scratch):
    shutil.rmtree(scratch / "metrics/ablations", ignore_errors=True)
    _tables(scratch)
    rows = [line for line in _block((scratch / "README.md").read_text(), "demo-ablations")
            .splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| not measured yet: run `python scripts/ablations.py` |" + "  |" * 7]


def test_the_grid_tables_read_their_own_corpus_folder(scratch):
    shutil.rmtree(scratch / "metrics/ablations/grid", ignore_errors=True)   # not run yet:
    _tables(scratch)                                                        # says how to run it
    block = _block((scratch / "README.md").read_text(), "grid-ablations")
    assert "not measured yet" in block and "--corpus grid" in block
    path = _summary(scratch, "grid")
    s = json.loads(path.read_text())
    s["rows"]["proposed"]["unseen"] = {"model": {"M-LD": {"mean": 9.87654, "sd": None, "n": 1}}}
    path.write_text(json.dumps(s))
    _tables(scratch)
    text = (scratch / "README.md").read_text()
    assert "| **9.877** |" in _block(text, "grid-unseen")
    assert "9.877" not in _block(text, "grid-ablations") + _block(text, "demo-ablations")


def test_several_files_for_one_row_give_mean_and_sd(tables, tmp_path):
    for seed, v in ((1, 1.0), (2, 3.0)):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}/m.json").write_text(json.dumps({"a": {"M-LD": v}}))
    t = tables.Table("t", (tables.Col("M-LD", "M-LD"),), (tables.Row("x", "a", "seed*/m.json"),))
    assert "| x | 2.000 ± 1.414 |" in tables.render(tmp_path, t)   # mean 2, sd sqrt(2)


def test_bench_figures_carry_the_machine_they_were_measured_on(scratch):
    results = scratch / "bench/results"
    (results / "train.json").write_text(json.dumps({
        "by_threads": {"2": {"epochs": {"torch": {"windows_per_s": 187.4},
                                        "pcg64": {"windows_per_s": 231.6}}}},
        "machine": {"threads": 2, "load_average_start": [0.42, 1, 1],
                    "load_average_end": [1.06, 1, 1], "commit": "abc1234"}}))
    (results / "kan.json").unlink(missing_ok=True)
    (results / "scale.json").write_text(json.dumps(   # written before the machine block
        {"summary": {"landmarks": {"local_clips_per_s": {"16": 1.149},
                                   "ray_fixed_overhead_s": 7.24}}}))
    assert _tables(scratch).returncode == 0
    rows = {ln.split(" | ")[0][2:]: ln for ln in
            _block((scratch / "bench/README.md").read_text(), "bench-figures").splitlines()
            if ln.startswith("| ")}
    # the figure in the row's format; threads and loads in the machine's (not "187%")
    assert rows["training, windows/s, batch 32, 2 threads, default params (target >= 200)"] \
        .endswith("| 232 | 2 | 0.4 | 1.1 | abc1234 |")   # the default stream: pcg64
    assert rows["training, same, `train.dropout_rng: torch` (torch's own dropout draws)"].endswith(
        "| 187 | 2 | 0.4 | 1.1 | abc1234 |")
    assert rows["training, windows/s, batch 32, 1 thread (`dvc repro`'s), default params"].endswith(
        "| n/a | 2 | 0.4 | 1.1 | abc1234 |")   # this file measured 2 threads only
    assert rows["scale: Ray's fixed overhead, landmarks, s"].endswith("| 7.2 | n/a | n/a | n/a | n/a |")
    assert "not measured yet: run `python bench/kan.py`" in \
        rows["Cox-de Boor KAN / ours, same"]


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
