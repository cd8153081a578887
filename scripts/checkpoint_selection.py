"""The last epoch's checkpoint beside the selected one, for the runs of an ablation folder.

    python scripts/checkpoint_selection.py --corpus demo-aug-mirror [--corpus demo ...]

The train stage keeps two checkpoints: `best.pt` (the epoch with the lowest validation loss,
the one every evaluation reads: `evaluate.checkpoint`) and `last.pt`. For each record of
metrics/ablations/<corpus>/<row>/seed-<s>/test.json, this finds the run's `models` folder in
the DVC cache (the folder whose best.pt has the record's checkpoint_sha256: run it where the
cache of the workspaces that made the records is), evaluates its last.pt on the same test
windows (the evaluate stage, outputs in a temporary folder), and writes metrics/checkpoint_selection/<corpus>.json: per seed, the selected epoch
and both checkpoints' M-LD, M-LVD, mouth r and audio-swap M-LD, for every row of the folder (a run
whose checkpoints are not in the cache is listed as not found), and per row the means
over its seeds (`rows`). Prints one line per run. `--summary-only` re-summarises the file.

Why it exists: with `train.augment.mirror_p`, two of three demo seeds scored worse than the
mean-motion baseline with a mouth that ignored the speech. Their best.pt was epoch 1.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from kfusion.pipeline.training.dataset import file_sha256   # the hash records name

OUT = Path("metrics/checkpoint_selection")
ABLATIONS = Path("metrics/ablations")
# what made a run, copied from its evaluation record into each run's entry
PROVENANCE = ("corpora", "encoder", "encoder_fallback", "seed", "checkpoint_sha256",
              "dropout_rng", "augment", "differs_from_paper")
FIELDS = ("M-LD", "M-LVD", "mouth_r")


def cache_file(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def cached_models(cache: Path) -> dict[str, dict]:
    """sha256 of each best.pt in the DVC cache -> {best, last (cache paths), summary}: every
    `models` folder any run in any workspace sharing this cache committed (a folder manifest
    with best.pt and last.pt)."""
    out = {}
    for manifest in sorted((cache / "files" / "md5").glob("*/*.dir")):
        try:
            entries = json.loads(manifest.read_text())
        except (ValueError, OSError):
            continue
        files = {e.get("relpath"): cache_file(cache, e.get("md5", "")) for e in entries
                 if isinstance(e, dict)}
        if files.get("best.pt", Path("-")).exists() and files.get("last.pt", Path("-")).exists():
            out[file_sha256(files["best.pt"])] = {"manifest": manifest.name, "best": files["best.pt"],
                                             "last": files["last.pt"], "summary": files.get("train.json")}
    return out


def evaluate_checkpoint(ckpt: Path, params: Path, tmp: Path) -> dict:
    """The evaluate stage on the workspace's test windows, every output under tmp."""
    p = yaml.safe_load(params.read_text())
    p["evaluate"].update(out=str(tmp / "metrics"), plots=str(tmp / "plots"))
    p["reports"], p["train"]["out"] = str(tmp / "reports"), str(tmp / "models")
    (tmp / "params.yaml").write_text(yaml.safe_dump(p))
    subprocess.run([sys.executable, "-m", "kfusion.stages.evaluate", "--params",
                    str(tmp / "params.yaml"), "--checkpoint", str(ckpt)], check=True,
                   capture_output=True, text=True)
    return json.loads((tmp / "reports" / "evaluate.json").read_text())


def figures(report: dict) -> dict:
    systems = report["systems"]
    return {**{k: round(systems["model"][k], 4) for k in FIELDS},
            "swap_M-LD": round(systems["audio_swap"]["M-LD"], 4)}


def summarise(runs: list[dict]) -> dict:
    """Per row: the selected epochs, and each checkpoint's figures averaged over the seeds."""
    out = {}
    for row in dict.fromkeys(r["row"] for r in runs):
        found = [r for r in runs if r["row"] == row and r.get("models")]
        if not found:
            continue
        out[row] = {"seeds": len(found), "selected_epochs": [r["best_epoch"] for r in found],
                    **{which: {k: round(statistics.mean(r[which][k] for r in found), 4)
                               for k in found[0][which]} for which in ("best", "last")}}
    return out


def record_provenance(rec: dict) -> dict:
    """An evaluation record's provenance (a report's dict, or a DVC record's `key: value` list)."""
    prov = rec["provenance"]
    return dict(p.split(": ", 1) for p in prov) if isinstance(prov, list) else prov


def write(corpus: str, runs: list[dict]) -> None:
    """The file, each run with its record's provenance (the test split's record)."""
    for run in runs:
        rec = json.loads((ABLATIONS / corpus / run["row"] / f"seed-{run['seed']}" / "test.json").read_text())
        run["provenance"] = {k: record_provenance(rec).get(k) for k in PROVENANCE}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{corpus}.json").write_text(json.dumps(
        {"corpus": corpus, "runs": runs, "rows": summarise(runs)}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", action="append", required=True, help="a folder of metrics/ablations")
    ap.add_argument("--cache", default="", help="the DVC cache (default: this repository's, "
                                                "or the one its .dvc/config.local names)")
    ap.add_argument("--params", default="params.yaml", help="the workspace whose test windows to use")
    ap.add_argument("--summary-only", action="store_true", help="only re-summarise the files")
    args = ap.parse_args(argv)
    if args.summary_only:
        for corpus in args.corpus:
            write(corpus, json.loads((OUT / f"{corpus}.json").read_text())["runs"])
        return 0
    cache = Path(args.cache) if args.cache else Path(".dvc") / "cache"
    local = Path(".dvc") / "config.local"
    if not args.cache and local.exists() and "dir" in local.read_text():   # a shared cache
        cache = Path(next(ln.split("=", 1)[1].strip() for ln in local.read_text().splitlines()
                          if ln.strip().startswith("dir")))
    models = cached_models(cache)
    for corpus in args.corpus:
        rows = []
        for rec_path in sorted((ABLATIONS / corpus).glob("*/seed-*/test.json")):
            rec = json.loads(rec_path.read_text())
            prov = record_provenance(rec)
            found = models.get(prov["checkpoint_sha256"])
            base = {"row": rec_path.parent.parent.name, "seed": int(prov["seed"])}
            if not found:
                print(f"[checkpoint_selection] {rec_path}: its checkpoint "
                      f"({prov['checkpoint_sha256'][:12]}) is not in {cache}", file=sys.stderr)
                rows.append({**base, "models": None})
                continue
            with tempfile.TemporaryDirectory() as tmp:
                last = figures(evaluate_checkpoint(found["last"], Path(args.params), Path(tmp)))
            summary = json.loads(found["summary"].read_text()) if found["summary"] else {}
            row = {**base, "models": found["manifest"],
                   "best_epoch": summary.get("best_epoch"), "epochs": summary.get("epochs"),
                   "best": figures(rec), "last": last}
            rows.append(row)
            print(f"[checkpoint_selection] {corpus} {row['row']} seed {row['seed']}: best.pt (epoch "
                  f"{row['best_epoch']}) M-LD {row['best']['M-LD']:.3f} r {row['best']['mouth_r']:.2f}; "
                  f"last.pt M-LD {last['M-LD']:.3f} r {last['mouth_r']:.2f}")
        write(corpus, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
