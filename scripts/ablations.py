"""Run the paper's Table 2 ablations as DVC experiments, each row with several training seeds,
and summarise them with confidence intervals.

One command (from the repository root, after `dvc repro` has built the data once):

    python scripts/ablations.py                          # demo: 6 rows x 3 seeds
    python scripts/ablations.py --corpus grid --seeds 3 \\
        -S 'index.corpora=[grid]' -S index.roots.grid=../shared/grid -S split.by=clip \\
        -S train.dropout_rng=torch -S '+evaluate.sets.unseen={corpus: folder, root: ../shared/unseen}'
    python scripts/ablations.py --corpus grid --table-only   # re-summarise what is there
    python scripts/ablations.py --rows proposed,repl-mlp --seeds 2 -S train.epochs=2   # a smoke run

Rows (each `dvc exp run -S ... -S seed=<s>` over params.yaml; the data stages are cached, so
only train and the evaluate stages re-run):

    w/o KFusion  model.fusion=none           w/o LSTM    model.lstm=false
    w/o Global   model.global_domain=false    repl MLP    model.fusion=mlp
    paper-exact  preset=paper (kfusion/config.py PAPER: the paper's text, then the authors' code)
    Proposed (ours)  the defaults

Seeds are params.yaml's `seed` + 0, 1, ... (`--seeds N`); the base seed's Proposed runs last, so
the workspace ends at the default params and their results. After each run the evaluation
report of every test set (reports/evaluate.json, reports/sets/<set>/evaluate.json) is copied to
metrics/ablations/<corpus>/<row>/seed-<s>/<set>.json; `--resume` skips runs already there.

The summary (metrics/ablations/<corpus>/summary.json, and a Markdown table printed and written
beside it) has, per row and test set, the mean and sd over seeds of every system's metrics, and
for each metric the difference Proposed - row with a paired bootstrap 95% interval over the
test clips (each clip's value averaged over the seeds first; kfusion.pipeline.training.bootstrap);
`*` marks an interval that excludes 0. The README's tables read these files (scripts/tables.py).

One runner per repository: to run rows side by side, use separate clones (`git clone`), not
`git worktree`s. Worktrees share git's refs, and DVC keeps its experiment bookkeeping there
(refs/exps): two `dvc exp run`s in worktrees of one repository raced on its locks and applied
one workspace's results to the other (seen while running the demo table on two cores).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from kfusion.config import load
from kfusion.pipeline.training.bootstrap import mean_over_seeds, mean_sd, paired_bootstrap
from kfusion.pipeline.training.metrics import TABLE_NAMES

# (label, folder, -S overrides)
ROWS: list[tuple[str, str, list[str]]] = [
    ("w/o KFusion", "wo-kfusion", ["model.fusion=none"]),
    ("w/o LSTM", "wo-lstm", ["model.lstm=false"]),
    ("w/o Global", "wo-global", ["model.global_domain=false"]),
    ("repl MLP", "repl-mlp", ["model.fusion=mlp"]),
    ("paper-exact", "paper", ["preset=paper"]),
    ("Proposed (ours)", "proposed", []),
]
BASE_ROW = "proposed"
# the baselines, from Proposed's runs, as rows of their own (their numbers in "model")
BASELINE_ROWS = (("baseline: identity held still", "identity"), ("baseline: mean motion", "mean_motion"))
OUT = Path("metrics/ablations")
PARAMS = Path("params.yaml")
REPORTS = Path("reports")
SYSTEMS = ("model", "audio_swap", "identity", "mean_motion")


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def seed_order(base: int, n: int) -> list[int]:
    """base + 1 .. base + n - 1, then base: the default seed runs last."""
    return [base + k for k in range(1, n)] + [base]


def copy_reports(dest: Path) -> list[str]:
    """Every test set's evaluation report into dest/<set>.json; the sets copied."""
    found = {"test": REPORTS / "evaluate.json",
             **{p.parent.name: p for p in sorted((REPORTS / "sets").glob("*/evaluate.json"))}}
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in found.items():
        if src.exists():
            shutil.copyfile(src, dest / f"{name}.json")
    return [n for n, p in found.items() if p.exists()]


def run_rows(corpus: str, rows: list[tuple[str, str, list[str]]], seeds: list[int],
             extra: list[str], resume: bool) -> None:
    """Each row with each seed, sequentially in the workspace; params.yaml reset before each
    run (dvc exp run -S leaves its overrides in the workspace) and after the last."""
    base = PARAMS.read_text()
    try:
        for label, slug, sets in rows:
            for seed in seeds:
                dest = OUT / corpus / slug / f"seed-{seed}"
                if resume and (dest / "test.json").exists():
                    continue
                PARAMS.write_text(base)
                args = [a for s in [*sets, *extra, f"seed={seed}"] for a in ("-S", s)]
                _run([sys.executable, "-m", "dvc", "exp", "run", "-n", f"{corpus}-{slug}-s{seed}", *args])
                print(f"[ablations] {label}, seed {seed}: {', '.join(copy_reports(dest))} -> {dest}",
                      file=sys.stderr, flush=True)
    finally:
        PARAMS.write_text(base)


# ----------------------------------------------------------------------------- summary
def _reports(folder: Path, test_set: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"seed-*/{test_set}.json"))]


def per_clip(reports: list[dict], system: str, metric: str) -> dict[str, float]:
    """Each clip's value, averaged over the seeds' reports."""
    per_seed = []
    for r in reports:
        pc = r.get("per_clip", {})
        vals = pc.get(system, {}).get(metric, [])
        per_seed.append({c: v for c, v in zip(pc.get("clip_ids", []), vals) if v is not None})
    return mean_over_seeds(per_seed)


def row_summary(reports: list[dict], base: list[dict] | None) -> dict:
    """Mean/sd over seeds of each system's metrics, and (given Proposed's reports, `base`)
    Proposed - row per metric."""
    out: dict = {"seeds": [r["provenance"]["seed"] for r in reports],
                 "differs_from_paper": reports[0]["provenance"].get("differs_from_paper", {})}
    for s in SYSTEMS:
        cells = {}
        for m in TABLE_NAMES:
            mean, sd, n = mean_sd([r["systems"].get(s, {}).get(m) for r in reports])
            if n:
                cells[m] = {"mean": mean, "sd": sd if n > 1 else None, "n": n}
        if cells:
            out[s] = cells
    if base:
        out["proposed_minus_row"] = {
            m: paired_bootstrap(per_clip(base, "model", m), per_clip(reports, "model", m)).as_dict()
            for m in TABLE_NAMES}
    return out


def summarise(corpus: str) -> dict:
    """summary.json of one corpus: every row x test set found under metrics/ablations/<corpus>."""
    root = OUT / corpus
    sets = sorted({p.stem for p in root.glob("*/seed-*/*.json")})
    summary: dict = {"corpus": corpus, "sets": sets, "rows": {},
                     "note": "mean ± sd over training seeds; proposed_minus_row: Proposed - row "
                             "per metric, paired bootstrap 95% interval over test clips "
                             "(significant: the interval excludes 0); mouth_r and audio_swap "
                             "are controls of this project, not in the paper"}
    for test_set in sets:
        for label, slug, _ in ROWS:
            reports = _reports(root / slug, test_set)
            if reports:
                base = _reports(root / BASE_ROW, test_set) if slug != BASE_ROW else None
                block = row_summary(reports, base)
                summary["rows"].setdefault(slug, {"label": label})[test_set] = block
        proposed = summary["rows"].get(BASE_ROW, {}).get(test_set, {})
        for label, system in BASELINE_ROWS:
            if system in proposed:
                summary["rows"].setdefault(system, {"label": label})[test_set] = {"model": proposed[system]}
    return summary


def _cell(block: dict, system: str, metric: str) -> str:
    c = block.get(system, {}).get(metric)
    if not c:
        return "n/a"
    return f"{c['mean']:.3f}" + (f" ± {c['sd']:.3f}" if c["sd"] is not None else "")


def markdown(summary: dict, test_set: str = "test") -> str:
    """The table for one test set: rows x (metrics, mouth_r, audio-swap M-LD, Proposed - row)."""
    lines = [f"Table 2 on {summary['corpus']} / {test_set}: {summary['note']}.", "",
             "| Method | M-LD | M-LVD | F-LD | F-LVD | mouth r | audio-swap M-LD | "
             "Proposed - row, M-LD [95% CI] |", "|---|" + "---:|" * 7]
    for slug, row in summary["rows"].items():
        b = row.get(test_set)
        if not b:
            continue
        d = b.get("proposed_minus_row", {}).get("M-LD")
        ci = (f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" + (" *" if d["significant"] else "")
              if d else "")
        lines.append(f"| {row['label']} | " + " | ".join(_cell(b, "model", m) for m in TABLE_NAMES)
                     + f" | {_cell(b, 'audio_swap', 'M-LD') if 'audio_swap' in b else ''} | {ci} |")
    base = summary["rows"].get(BASE_ROW, {}).get(test_set)
    if base:
        lines += ["", "Switches that differ from the paper in Proposed (ours): "
                  + (", ".join(f"`{k}={v}`" for k, v in base["differs_from_paper"].items()) or "none")]
    return "\n".join(lines) + "\n"


def write_summary(corpus: str) -> str:
    summary = summarise(corpus)
    if not summary["rows"]:
        raise SystemExit(f"no results under {OUT / corpus}; run the ablations first")
    root = OUT / corpus
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = "\n".join(markdown(summary, s) for s in summary["sets"])
    (root / "table.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="demo", help="results folder under metrics/ablations/ "
                                                     "(the data comes from params and -S)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per row (default 3)")
    ap.add_argument("--rows", default="", help="comma-separated row folders (default: all): "
                                               + ", ".join(slug for _, slug, _ in ROWS))
    ap.add_argument("-S", "--set-param", action="append", default=[],
                    help="extra override for every row, e.g. -S train.epochs=20")
    ap.add_argument("--resume", action="store_true", help="skip row/seed runs already copied")
    ap.add_argument("--table-only", action="store_true", help="only re-summarise")
    args = ap.parse_args(argv)
    wanted = set(filter(None, args.rows.split(",")))
    unknown = wanted - {slug for _, slug, _ in ROWS}
    if unknown:
        print(f"error: --rows: unknown {sorted(unknown)}", file=sys.stderr)
        return 2
    if not args.table_only:
        rows = [r for r in ROWS if not wanted or r[1] in wanted]
        run_rows(args.corpus, rows, seed_order(load(PARAMS).seed, args.seeds), args.set_param,
                 args.resume)
    print(write_summary(args.corpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
