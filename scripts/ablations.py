"""Run the paper's Table 2 ablations as DVC experiments and write the table in its layout.

One command (from the repository root, after `dvc repro` has built the data once):

    python scripts/ablations.py                 # five `dvc exp run`, one after another
    python scripts/ablations.py --queue -j 1    # the same rows queued, then `--run-all`
    python scripts/ablations.py --table-only    # only re-collect and re-write the table
    python scripts/ablations.py -S train.epochs=20 -S seed=3   # extra overrides for every row

Rows (each one `dvc exp run -S ...` over params.yaml; the data stages are cached, so only
train + evaluate re-run):

    w/o KFusion  model.fusion=none        w/o LSTM   model.lstm=false
    w/o Global   model.global_domain=false repl MLP   model.fusion=mlp
    Proposed     (no override)

Sequential mode (default) runs each experiment in the workspace and copies its
metrics/evaluate.json to metrics/ablations/<row>.json right after, ending with "Proposed" so
the workspace is left at the default params. Queue mode reads the results back with
`dvc exp show --json`. The table (metrics/ablations.md) has the paper's columns M-LD,
M-LVD, F-LD, F-LVD (Eq. 13-15, crop px, model vs the detector's reference landmarks on the
test split) plus the two baselines, the seed and the epochs; best per column in bold,
second underlined, as in the paper.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

ROWS: list[tuple[str, list[str]]] = [
    ("w/o KFusion", ["model.fusion=none"]),
    ("w/o LSTM", ["model.lstm=false"]),
    ("w/o Global", ["model.global_domain=false"]),
    ("repl MLP", ["model.fusion=mlp"]),
    ("Proposed", []),
]
COLS = ("M-LD", "M-LVD", "F-LD", "F-LVD")
OUT_DIR = Path("metrics/ablations")
PARAMS = Path("params.yaml")


def _slug(name: str) -> str:
    return "kf-" + name.lower().replace("/", "").replace(" ", "-")


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else "dvc"


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def run_sequential(extra: list[str]) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # `dvc exp run -S` leaves its overrides in the workspace's params.yaml, so without a reset
    # every row would inherit the switches of the rows before it.
    base = PARAMS.read_text()
    try:
        for name, sets in ROWS:
            PARAMS.write_text(base)
            args = [a for s in sets + extra for a in ("-S", s)]
            _run([_dvc(), "exp", "run", "-n", _slug(name) + "-" + _stamp(), *args])
            shutil.copyfile("metrics/evaluate.json", OUT_DIR / f"{_slug(name)}.json")
    finally:
        PARAMS.write_text(base)


def run_queued(extra: list[str], jobs: int) -> dict[str, str]:
    names = {}
    for name, sets in ROWS:
        exp = _slug(name) + "-" + _stamp()
        args = [a for s in sets + extra for a in ("-S", s)]
        base = PARAMS.read_text()
        _run([_dvc(), "exp", "run", "--queue", "-n", exp, *args])
        PARAMS.write_text(base)
        names[name] = exp
    _run([_dvc(), "exp", "run", "--run-all", "-j", str(jobs)])
    return names


def _stamp() -> str:
    import time
    return time.strftime("%m%d%H%M")


def collect_queued(names: dict[str, str]) -> None:
    """Find each experiment's metrics/evaluate.json in `dvc exp show --json`."""
    out = subprocess.run([_dvc(), "exp", "show", "--json"], check=True, capture_output=True,
                         text=True).stdout
    found: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") in names.values():
                data = _find_metrics(node)
                if data:
                    found[node["name"]] = data
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(out))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for row, exp in names.items():
        if exp not in found:
            print(f"warning: no metrics for experiment {exp} ({row}) in `dvc exp show`",
                  file=sys.stderr)
            continue
        (OUT_DIR / f"{_slug(row)}.json").write_text(json.dumps(found[exp], indent=2))


def _find_metrics(node) -> dict | None:
    if isinstance(node, dict):
        m = node.get("metrics")
        if isinstance(m, dict):
            for k, v in m.items():
                if k.endswith("evaluate.json") and isinstance(v, dict):
                    return v.get("data", v)
        for v in node.values():
            r = _find_metrics(v)
            if r:
                return r
    elif isinstance(node, list):
        for v in node:
            r = _find_metrics(v)
            if r:
                return r
    return None


def _fmt(v: float, rank: int) -> str:
    s = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
    return f"**{s}**" if rank == 0 else f"<u>{s}</u>" if rank == 1 else s


def write_table(path: Path = Path("metrics/ablations.md")) -> str:
    rows: list[tuple[str, dict]] = []
    base: dict | None = None
    for name, _ in ROWS:
        f = OUT_DIR / f"{_slug(name)}.json"
        if not f.exists():
            continue
        m = json.loads(f.read_text())
        rows.append((name, {c: m.get(c) for c in COLS}))
        if name == "Proposed":
            base = m
        meta = m
    if not rows:
        raise SystemExit(f"no results under {OUT_DIR}; run the ablations first")
    if base is not None:
        for s, label in (("identity", "baseline: identity held still"),
                         ("mean_motion", "baseline: mean motion")):
            o = base.get("overall", {}).get(s)
            if o:
                rows.append((label, {c: o.get(c) for c in COLS}))
    ranks = {}
    for c in COLS:
        order = sorted(range(len(rows)), key=lambda i: (rows[i][1][c] is None, rows[i][1][c]))
        ranks[c] = {i: r for r, i in enumerate(order)}
    t = meta.get("trained", {})
    lines = [
        "**Table 2 (reproduced)**: ablations on this project's test split. Eq. 13-15 in pixels "
        "of the 256x256 crop, model vs the detector's reference landmarks, per window then "
        f"averaged over {meta.get('windows', '?')} test windows. Seed {t.get('seed')}, "
        f"{t.get('epochs')} epochs (best checkpoint by validation loss), encoder {meta.get('encoder')} (fallback: "
        f"{meta.get('encoder_fallback')}). Lower is better; bold best, underlined second.",
        "",
        "| Method | M-LD (↓) | M-LVD (↓) | F-LD (↓) | F-LVD (↓) |",
        "|---|---|---|---|---|",
    ]
    for i, (name, vals) in enumerate(rows):
        lines.append(f"| {name} | " + " | ".join(_fmt(vals[c], ranks[c][i]) for c in COLS) + " |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", action="store_true", help="queue the rows, then --run-all")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (with --queue)")
    ap.add_argument("-S", "--set-param", action="append", default=[],
                    help="extra override for every row, e.g. -S train.epochs=20")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        if args.queue:
            collect_queued(run_queued(args.set_param, args.jobs))
        else:
            run_sequential(args.set_param)
    print(write_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
