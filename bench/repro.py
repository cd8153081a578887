"""The README's main job timed: `dvc repro` of the demo pipeline in a fresh clone, each stage's
wall time and share, the environment build excluded.

A clone of this repository's HEAD goes to a temp folder, with a venv layered on this
interpreter's packages and the clone installed editable (so the stages run the clone's code);
then `dvc repro` runs once and each stage's time is the gap between DVC's "Running stage"
lines (DVC's own hashing and locking between stages included, in the stage it follows).
The demo's test M-LD comes with it, so a faster pipeline with worse results shows.

    python bench/repro.py            # bench/results/repro.json, ~3-5 min on 2 cores
    python bench/repro.py --rev f643037 --out /tmp/before.json   # the same for another commit
    python bench/repro.py -S train.dropout_rng=pcg64 --out bench/results/repro_pcg64.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import Machine, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 180.0
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def fresh_clone(tmp: Path, rev: str) -> tuple[Path, dict]:
    """A clone at `rev` with its own venv (this interpreter's packages + the clone, editable)."""
    clone = tmp / "kfusion"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    if sys.prefix != sys.base_prefix:
        # this interpreter is itself a venv (.venv of scripts/setup.sh): --system-site-packages
        # layers on the base Python, not on it, so put its site-packages on the new venv's path
        new_site = next(venv.glob("lib/python*/site-packages"))
        (new_site / "_kfusion_layer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # the venv's own (bundled) setuptools cannot build this pyproject editable: use the layered one
    subprocess.run([str(venv / "bin/pip"), "uninstall", "-q", "-y", "setuptools"], check=True,
                   capture_output=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-deps", "--no-build-isolation",
                    "-e", str(clone)], check=True, capture_output=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    return clone, env


def timed_repro(clone: Path, env: dict, sets: list[str]) -> tuple[float, dict[str, float], str]:
    """(total s, {stage: s}, DVC's output) of one `dvc repro`, or of `dvc exp run -S ...` when
    `sets` overrides params (the way a user runs one variant)."""
    cmd = ["dvc", "exp", "run", *[a for s in sets for a in ("-S", s)]] if sets else ["dvc", "repro"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marks, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if m := STAGE_LINE.search(line):
            marks.append((m.group(1), time.perf_counter()))
    total = time.perf_counter() - t0
    if proc.wait() != 0:
        raise SystemExit(f"bench/repro: {' '.join(cmd)} failed:\n{''.join(lines[-20:])}")
    stages = {}
    for (name, t), nxt in zip(marks, [t for _, t in marks[1:]] + [t0 + total]):
        stages[name] = round(nxt - t, 2)
    return total, stages, "".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the clone (printed)")
    ap.add_argument("--rev", default="HEAD", help="the commit to time (e.g. an earlier one, for "
                                                  "a before/after pair on one machine)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override, as `dvc exp run -S` (repeatable), "
                         "e.g. -S train.dropout_rng=pcg64")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-repro-"))
    t_env = time.perf_counter()
    clone, env = fresh_clone(tmp, args.rev)
    env_s = time.perf_counter() - t_env
    import yaml
    threads = yaml.safe_load((clone / "params.yaml").read_text())["train"]["threads"]
    threads = next((int(s.split("=", 1)[1]) for s in args.set if s.startswith("train.threads=")),
                   threads)
    machine = Machine.start(threads)
    total, stages, _ = timed_repro(clone, env, args.set)
    ev = json.loads((clone / "metrics/evaluate/test.json").read_text())
    windows = json.loads((clone / "reports/windows.json").read_text())
    figures = {"total_s": round(total, 1), "target_s": TARGET_S, "target_met": total <= TARGET_S,
               "clone_and_venv_s": round(env_s, 1), "params_overrides": args.set,
               "stages": {k: {"seconds": v, "share": round(v / total, 4)} for k, v in stages.items()},
               "test_M-LD": round(ev["M-LD"], 4), "test_mouth_r": round(ev["mouth_r"], 4),
               "train_windows": windows["windows_per_split"]["train"],
               "commit": subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip()}
    top = sorted(stages.items(), key=lambda kv: -kv[1])[:3]
    summary = (f"dvc repro (demo, fresh clone) {total:.0f} s, target {TARGET_S:.0f} s "
               f"{'met' if figures['target_met'] else 'NOT met'}; "
               + ", ".join(f"{k} {v:.0f} s" for k, v in top)
               + f"; test M-LD {figures['test_M-LD']}"
               + (f"; with {' '.join(args.set)}" if args.set else ""))
    write_result("repro", figures, machine, summary, args.out)
    if args.keep:
        print(f"clone kept: {clone}")
    else:
        subprocess.run(["rm", "-rf", str(tmp)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
