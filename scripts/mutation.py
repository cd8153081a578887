"""Mutation testing of the numeric core with mutmut: how many small code changes the tests catch.

    python scripts/mutation.py --label before     # writes the "before" block of the JSON
    python scripts/mutation.py --label after      # same command, after tests were added
    python scripts/mutation.py --label all --per-file 0   # every mutant (hours on 2 cores)

Targets (`TARGETS`): the metrics (Eq. 13-15, mouth_r, the authors' definitions), the loss, the
KAN, the evaluation (less its two drawing functions, `NOT_MUTATED`) and the paired bootstrap.
Tests (`TESTS`, globs): the fast unit tests that import them, without the `slow` ones; mutmut
runs, for each mutant, only the tests that call the mutated function.

mutmut 3 copies the source into `mutants/` and imports it from there, which needs the code in
its import layout; ours maps model/, pipeline/ and stages/ into `kfusion` (pyproject's
package-dir). So the script stages the committed tree (`--ref`, default HEAD: a commit, not
the working tree another edit may be half-way through) in that layout in a temporary folder
(kfusion/, kfusion/model/, ..., tests/, params.yaml, pyproject.toml) and runs mutmut there:
the checkout itself is never modified. mutmut is a dev tool, not a dependency: it is
installed on first use, pinned (`MUTMUT`), into build/mutmut/ (git-ignored), never at test time.

mutmut generates about 2000 mutants of these files, and a KAN or evaluation mutant costs 5-20 s
of tests on a shared 2-core machine, so by default each file is represented by a seeded random
sample of 60 of its mutants (`--per-file`, `--seed`; all of loss.py's 60), ranked by a hash of
the seed and the mutant's name, so "before" and "after" test the same mutants.

Each mutant is `killed` (a test failed; mutmut also counts a pytest internal error, e.g. an
import the mutant broke), `timeout` (counted as killed, as mutmut does), `survived`,
`no tests` (no selected test calls the function) or `equivalent` (a survivor listed in
`EQUIVALENT` with the reason no test can see it; its diff line is checked, so a renumbered
mutant is not silently excused). Score = (killed + timeout) / (mutants - equivalent).
Survivors that change no result (a message, a label) stay survivors; `NOT_RESULTS` only
records why they were left.
bench/results/mutation.json holds one block per --label; docs/reliability.md's table is
generated from it by scripts/tables.py.
"""
from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "mutation.json"
CACHE = REPO / "build" / "mutmut"
# mutmut and what it needs beyond .venv, exact versions (what pip resolved for mutmut 3.8.1);
# the rest (click, rich, pygments, platformdirs, markdown-it-py, mdurl, pyyaml, pytest) is
# .venv's, pinned by requirements.lock
MUTMUT = ("mutmut==3.8.1", "libcst==1.9.0", "coverage==7.17.5", "setproctitle==1.3.8",
          "textual==8.2.8", "mdit-py-plugins==0.7.0", "linkify-it-py==2.2.0")
# repository path -> its path in the staged `kfusion` layout
TARGETS = {"pipeline/training/metrics.py": "kfusion/pipeline/training/metrics.py",
           "model/loss.py": "kfusion/model/loss.py",
           "model/kan.py": "kfusion/model/kan.py",
           "pipeline/training/evaluation.py": "kfusion/pipeline/training/evaluation.py",
           "pipeline/training/bootstrap.py": "kfusion/pipeline/training/bootstrap.py"}
TESTS = ("tests/train/test_metrics*.py", "tests/train/test_evaluate*.py",
         "tests/train/test_bootstrap*.py", "tests/train/test_ablations.py",
         "tests/model/test_kan.py", "tests/model/test_model.py", "tests/model/test_switches.py",
         "tests/model/test_*mutants*.py")
PACKAGES = {"kfusion": "kfusion", "model": "kfusion/model", "pipeline": "kfusion/pipeline",
            "stages": "kfusion/stages"}
# drawing, not results: the qualitative figure and the identity images it draws on
NOT_MUTATED = ("plot_qualitative", "identity_images")
ALSO_COPY = ("tests", "scripts", "params.yaml", "pyproject.toml", "dvc.yaml")   # what tests read
KILLED = ("killed", "timeout")
# Survivors no test can tell apart from the original: mutant -> (its "+" line, why). They
# leave the score's denominator.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "kfusion.model.kan.x__span_position__mutmut_12": (
        "t = ((x - start) / step).clamp(-1, grid_size + 3 * order)  # (N, in), knot units",
        "any upper clamp >= G + 2k puts every basis column of an input beyond the grid at or "
        "past G + k, where `_columns` marks it outside and its value (and gradient) is 0"),
    "kfusion.pipeline.training.bootstrap.x_mean_over_seeds__mutmut_3": (
        "clips = sorted(set().union(*per_seed)) if (per_seed) or True else []",
        "with no seeds, set().union() is already empty: [] either way"),
    "kfusion.pipeline.training.bootstrap.x_paired_bootstrap__mutmut_22": (
        'return PairedDifference(float("NAN"), float("nan"), float("nan"), 0, level)',
        'float() parses "NAN" as "nan": the same value'),
    "kfusion.pipeline.training.bootstrap.x_paired_bootstrap__mutmut_43": (
        "means = d[rng.integers(len(d), size=(n_boot, len(d)))].mean(axis=1)   # (n_boot,)",
        "Generator.integers(n) is integers(0, n): the same range and the same draws"),
    "kfusion.pipeline.training.metrics.x_pearson__mutmut_7": (
        "a, b = a - a.mean(+1, keepdim=True), b - b.mean(-1, keepdim=True)",
        "pearson takes (N, T) rows (its contract; mouth_opening's output): dim 1 is dim -1"),
    "kfusion.pipeline.training.metrics.x_summarise__mutmut_13": (
        'out.update({k: float(vals[k].mean()) if n else float("NAN") for k in METRIC_NAMES})',
        'float() parses "NAN" as "nan": the same value'),
}
# Survivors that change no result (a message, a label, a progress bar, the device): left
# unkilled on purpose and counted as survived; the reason goes into the JSON beside them.
NOT_RESULTS: dict[str, tuple[str, str]] = {
    "kfusion.pipeline.training.evaluation.x__score__mutmut_27": (
        "loader = DataLoader(test, shuffle=False, num_workers=0)",
        "evaluate.batch_size only sets how many windows go through the model at once; every "
        "number is per window (reference batches are re-formed by ReferenceAccumulator)"),
    "kfusion.pipeline.training.evaluation.x__score__mutmut_36": (
        "for step, batch in enumerate(progress(loader, )):", "the progress bar's label"),
    "kfusion.pipeline.training.evaluation.x__score__mutmut_40": (
        "check_finite_inputs(batch, None)",
        "the non-finite error's context; tests/train/test_non_finite_batches.py checks it "
        "through the stage (a subprocess, outside the fast selection)"),
    "kfusion.pipeline.training.evaluation.x_evaluate__mutmut_3": (
        "device = None", "visible only with an accelerator: on a CPU-only machine the "
        "checkpoint and batches stay on the CPU either way"),
    "kfusion.pipeline.training.evaluation.x_evaluate__mutmut_20": (
        "raise FileNotFoundError(None)", "the message of the no-test-windows error"),
    "kfusion.pipeline.training.evaluation.x__corpus_block__mutmut_41": (
        '"label": "THE AUTHORS\' CODE (METRIX/LM.PY): BATCH FROBENIUS NORM IN MIN-MAX SCALED "',
        "the reference block's prose label"),
    "kfusion.pipeline.training.evaluation.x__corpus_block__mutmut_43": (
        '"UNITS OVER FIXED BATCHES OF ONE CORPUS (LAST PARTIAL BATCH DROPPED); "',
        "the reference block's prose label"),
}


def ensure_mutmut() -> Path:
    """build/mutmut/ with the pinned mutmut; installed once, with pip, into that folder only."""
    marker = CACHE / (MUTMUT[0] + ".ok")
    if not marker.exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        print(f"[mutation] installing {MUTMUT[0]} into {CACHE.relative_to(REPO)}/", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(CACHE), *MUTMUT], check=True)
        marker.write_text("\n".join(MUTMUT) + "\n")
    return CACHE


def stage(root: Path, ref: str) -> list[str]:
    """The committed tree at `ref` in the installed `kfusion` layout, plus mutmut's setup.cfg;
    returns the test files selected. Committed, not the working tree: what is measured is
    what a commit holds, whatever else is being edited in the checkout."""
    src = root / "_src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, *PACKAGES, *ALSO_COPY],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    for name, dst in PACKAGES.items():
        shutil.copytree(src / name, root / dst, dirs_exist_ok=True)
    for name in ALSO_COPY:
        shutil.move(src / name, root / name)
    shutil.rmtree(src)
    tests = sorted({t for g in TESTS for t in glob.glob(g, root_dir=root)})
    lines = ["[mutmut]", "source_paths = kfusion/", "only_mutate =",
             *(f"    {p}" for p in TARGETS.values()),
             "also_copy =", *(f"    {p}" for p in ALSO_COPY),
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -m", "    not slow"]
    (root / "setup.cfg").write_text("\n".join(lines) + "\n")
    return tests


# Run inside the staged folder with mutmut importable (its internals, hence the exact pin).
# GENERATE: what `mutmut run` does first (copy, generate mutants), then every mutant's name.
GENERATE = r"""
import json, sys
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.data import SourceFileMutationData
from mutmut.utils.format_utils import orig_function_and_class_names_from_key
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(int(sys.argv[1]))
out = {}
for path in sys.argv[2:]:
    d = SourceFileMutationData(path=path)
    d.load()
    out[path] = [[k, orig_function_and_class_names_from_key(k)[0]] for k in d.exit_code_by_key]
print(json.dumps(out))
"""
# COLLECT: every tested mutant's exit code and diff.
COLLECT = r"""
import json, sys
from pathlib import Path
from mutmut.stats import status_by_exit_code
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.utils.format_utils import orig_function_and_class_names_from_key
out = []
for path in sys.argv[1:]:
    d = SourceFileMutationData(path=path)
    d.load()
    for key, code in d.exit_code_by_key.items():
        if code is None:
            continue   # not in the sample
        fn, cls = orig_function_and_class_names_from_key(key)
        out.append({"mutant": key, "path": path, "function": fn, "class": cls,
                    "status": status_by_exit_code[code],
                    "diff": get_diff_for_mutant(key, path=path)})
print(json.dumps(out))
"""


def _function_lines(source: str, function: str, cls: str | None) -> tuple[int, int, int]:
    """(first line of the function's text as mutmut prints it, `def` line, last line) in the
    original file. mutmut's text starts at the comments and decorators directly above."""
    body = ast.parse(source).body
    if cls is not None:
        body = next(n.body for n in body if isinstance(n, ast.ClassDef) and n.name == cls)
    node = next(n for n in body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function)
    lines = source.splitlines()
    top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    while top > 1 and lines[top - 2].strip().startswith("#"):
        top -= 1
    return top, node.lineno, node.end_lineno


def locate(diff: str, source: str, top: int, end: int) -> tuple[int, str]:
    """(file line of the first changed line, "- old / + new" in one string) from mutmut's
    diff of the function alone (its line 1 is the function text's first line, `top`)."""
    lines = diff.splitlines()
    hunk = next(i for i, ln in enumerate(lines) if ln.startswith("@@"))
    rel, changed = int(lines[hunk].split()[1].split(",")[0][1:]), None
    for ln in lines[hunk + 1:]:
        if ln[:1] in "-+" and changed is None:
            changed = rel
        if ln[:1] in " -":
            rel += 1
    old = [ln[1:] for ln in lines[hunk + 1:] if ln.startswith("-")]
    new = [ln[1:] for ln in lines[hunk + 1:] if ln.startswith("+")]
    line = top + changed - 1
    if old:   # check against the file (a method's text is printed dedented)
        file_lines = source.splitlines()
        hits = [i + 1 for i in range(top - 1, end) if file_lines[i].strip() == old[0].strip()]
        if hits and line not in hits:
            line = min(hits, key=lambda h: abs(h - line))
    change = " / ".join([*(f"- {o.strip()}" for o in old), *(f"+ {n.strip()}" for n in new)])
    return line, change


def collect(root: Path, cache: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(cache)}
    r = subprocess.run([sys.executable, "-c", COLLECT, *TARGETS.values()], cwd=root, env=env,
                       capture_output=True, text=True, check=True)
    rows = json.loads(r.stdout)
    by_staged = {v: k for k, v in TARGETS.items()}
    for row in rows:
        path = by_staged[row.pop("path")]
        source = (root / TARGETS[path]).read_text()   # the staged (committed) file
        top, _, end = _function_lines(source, row["function"], row.pop("class"))
        text = row["diff"].splitlines()
        row["file"] = path
        row["line"], row["change"] = locate(row["diff"], source, top, end)
        added = {ln[1:].strip() for ln in text if ln.startswith("+") and not ln.startswith("+++")}
        for table, status in ((EQUIVALENT, "equivalent"), (NOT_RESULTS, "survived")):
            note = table.get(row["mutant"])
            if row["status"] == "survived" and note and note[0] in added:
                row["status"], row["reason"] = status, note[1]
        del row["diff"]
    return rows


def summarise(rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    n, eq = len(rows), counts.get("equivalent", 0)
    killed = sum(counts.get(s, 0) for s in KILLED)
    return {"mutants": n, "killed": killed, "equivalent": eq, "scored": n - eq,
            "score": round(killed / (n - eq), 4) if n - eq else None,
            "killed_of_scored": f"{killed}/{n - eq}", "by_status": dict(sorted(counts.items()))}


def sample(names: dict[str, list[list[str]]], per_file: int, seed: int) -> dict[str, dict]:
    """Per target file: every mutant outside NOT_MUTATED, and a seeded sample of `per_file`
    of them (all when per_file is 0 or the file has fewer): the `per_file` names that come
    first in the order of sha256(seed:name). A name's rank does not depend on the others, so
    "before" and "after" test the same mutants, and an edit elsewhere in a file (which
    renumbers only its own function's mutants) leaves the rest of the sample as it was."""
    out = {}
    for staged, keys in names.items():
        pool = sorted(k for k, fn in keys if fn not in NOT_MUTATED)
        rank = sorted(pool, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        pick = sorted(rank[:per_file]) if per_file else pool
        out[staged] = {"generated": len(keys), "eligible": len(pool), "sampled": pick}
    return out


def _mutmut(root: Path, cache: Path, args: list[str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        return subprocess.run([sys.executable, *args], cwd=root, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(cache)}, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="the block of the JSON to write (before, after)")
    ap.add_argument("--per-file", type=int, default=60,
                    help="mutants tested per file, a seeded sample (0: all; default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed")
    ap.add_argument("--ref", default="HEAD", help="the commit to measure (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="mutmut's --max-children")
    ap.add_argument("--keep", action="store_true", help="keep the staged folder (prints it)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--collect-from", type=Path, metavar="DIR",
                    help="re-read a --keep'd run's folder into the label's existing block "
                         "(after editing EQUIVALENT / NOT_RESULTS); nothing is re-run")
    args = ap.parse_args(argv)
    if args.collect_from:
        return recollect(args)

    cache = ensure_mutmut()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="kfusion-mutation-"))
    log = root / "mutmut.log"
    t0 = time.time()
    try:
        tests = stage(root, commit)
        gen = subprocess.run([sys.executable, "-c", GENERATE, str(args.jobs), *TARGETS.values()],
                             cwd=root, env={**os.environ, "PYTHONPATH": str(cache)},
                             capture_output=True, text=True, check=True)
        picked = sample(json.loads(gen.stdout.splitlines()[-1]), args.per_file, args.seed)
        names = [k for v in picked.values() for k in v["sampled"]]
        print(f"[mutation] {len(names)} mutants to test ({args.jobs} at a time); log: {log}",
              file=sys.stderr)
        r = _mutmut(root, cache, ["-m", "mutmut", "run", "--max-children", str(args.jobs), *names], log)
        if r.returncode != 0:
            print(log.read_text()[-3000:], file=sys.stderr)
            print(f"[mutation] mutmut failed (exit {r.returncode}); log: {log}", file=sys.stderr)
            args.keep = True
            return 1
        rows = collect(root, cache)
    finally:
        if args.keep:
            print(f"[mutation] staged copy kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    command = f"python scripts/mutation.py --label {args.label}" + (
        f" --per-file {args.per_file}" if args.per_file != 60 else "") + (
        f" --seed {args.seed}" if args.seed else "")
    block = {"tool": MUTMUT[0], "command": command, "commit": commit,
             "seconds": round(time.time() - t0), "per_file": args.per_file, "seed": args.seed,
             "not_mutated": list(NOT_MUTATED), "tests": tests,
             # keyed by the file's stem: scripts/tables.py reads dotted keys
             "files": {Path(p).stem: {"path": p, **summarise([r for r in rows if r["file"] == p]),
                                      "generated": picked[TARGETS[p]]["generated"],
                                      "eligible": picked[TARGETS[p]]["eligible"]} for p in TARGETS},
             "total": summarise(rows),
             **_results(rows)}
    write(args, block)
    return 0


def _results(rows: list[dict]) -> dict:
    """The survivors in full, and every tested mutant in one line (to compare two runs)."""
    order = sorted(rows, key=lambda r: (r["file"], r["line"], r["mutant"]))
    return {"not_killed": [r for r in order if r["status"] not in KILLED],
            "tested": [f"{r['status']} {r['file']}:{r['line']} {r['change']}" for r in order]}


def recollect(args: argparse.Namespace) -> int:
    data = json.loads(args.out.read_text())
    block = data[args.label]
    rows = collect(args.collect_from, ensure_mutmut())
    for stem, f in block["files"].items():
        f.update(summarise([r for r in rows if r["file"] == f["path"]]))
    block.update(total=summarise(rows), **_results(rows))
    write(args, block)
    return 0


def write(args: argparse.Namespace, block: dict) -> None:
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[args.label] = block
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")
    t = block["total"]
    shown = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
    print(f"[mutation] {args.label}: {t['killed_of_scored']} killed = {t['score']:.1%} "
          f"({t['equivalent']} equivalent excluded; "
          + ", ".join(f"{k} {v['killed_of_scored']}" for k, v in block["files"].items())
          + f"; {block['seconds']} s) -> {shown}")


if __name__ == "__main__":
    sys.exit(main())
