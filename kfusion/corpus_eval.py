"""Evaluate any checkpoint on any corpus, outside the DVC pipeline (`kfusion evaluate`).

The corpus goes through the same data stages the pipeline runs (index, landmarks, audio,
features, windows), with the preprocessing settings the checkpoint was trained with, each as
its own process in a cache folder: `<cache>/<name>-<key>/`, where the key hashes the corpus
root and every preprocessing setting, so a second evaluation of the same corpus with a
checkpoint of the same preprocessing reuses it (`done.json` marks a finished one). Then the
checkpoint is evaluated as the evaluate stage does, into `--out` (metrics/, report.json,
plots/). Nothing of the training pipeline (metrics/, reports/, models/, dvclive/) is touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kfusion.config import Config, TestSetConfig, dump, test_set_config, to_dict

DATA_STAGES = ("index", "landmarks", "audio", "features", "windows")
# settings that change what the data stages produce (paths, workers and threads do not)
PREPROCESSING = {"landmarks": ("out", "workers"), "audio": ("out",), "features": ("out", "threads"),
                 "windows": ("out",), "split": (), "index": ("out", "corpora", "roots", "tar_cache_dir")}


def preprocessing_key(cfg: Config, corpus: str, root: Path) -> str:
    """A hash of the corpus (layout and absolute root) and every preprocessing setting."""
    d = to_dict(cfg)
    blob = {"corpus": corpus, "root": str(root.resolve()), "ffmpeg": cfg.preprocess.ffmpeg,
            **{s: {k: v for k, v in d[s].items() if k not in skip} for s, skip in PREPROCESSING.items()}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def _absolute(path: str) -> str:
    """A path setting that names an existing file or folder, made absolute (the stages run in
    the cache folder); anything else (a hub id, '') as it is."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def set_up(cfg: Config, name: str, corpus: str, root: Path, cache_root: Path, *,
           device: str, workers: int) -> tuple[Config, Path]:
    """The config the data stages run with (relative to the cache folder) and that folder."""
    base = dataclasses.replace(
        cfg, device=device, reports="reports",
        preprocess=dataclasses.replace(cfg.preprocess, workers=workers,
                                       ffmpeg=_absolute(cfg.preprocess.ffmpeg)),
        features=dataclasses.replace(cfg.features, wav2vec2=_absolute(cfg.features.wav2vec2)),
        demo=dataclasses.replace(cfg.demo, out=_absolute(cfg.demo.out)),
        evaluate=dataclasses.replace(cfg.evaluate, sets={name: TestSetConfig(corpus, str(root.resolve()))}))
    cache = cache_root / f"{name}-{preprocessing_key(base, corpus, root)}"
    return base, cache


def prepare(base: Config, name: str, cache: Path) -> Config:
    """Run the data stages for test set `name` in `cache` unless a finished run is there; the
    set's config with absolute paths (for evaluation from anywhere)."""
    done = cache / "done.json"
    if not done.exists():
        cache.mkdir(parents=True, exist_ok=True)
        dump(base, cache / "params.yaml")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
        for stage in DATA_STAGES:
            r = subprocess.run([sys.executable, "-m", f"kfusion.stages.{stage}", "--params",
                                "params.yaml", "--set", name], cwd=cache, env=env)
            if r.returncode != 0:
                raise PrepareError(f"the {stage} stage failed on {name} (its message is above; "
                                   f"its files are in {cache})")
        done.write_text(json.dumps({"set": name, "stages": list(DATA_STAGES)}) + "\n")
    else:
        print(f"[evaluate] {name}: preprocessed data reused from {cache}", file=sys.stderr, flush=True)
    scfg = test_set_config(base, name)
    return _under(scfg, cache)


def _under(cfg: Config, cache: Path) -> Config:
    """cfg with its stage outputs and reports made absolute under `cache`."""
    rep = dataclasses.replace
    at = lambda p: str(cache / p)   # noqa: E731
    return rep(cfg, reports=at(cfg.reports),
               index=rep(cfg.index, out=at(cfg.index.out)),
               landmarks=rep(cfg.landmarks, out=at(cfg.landmarks.out)),
               audio=rep(cfg.audio, out=at(cfg.audio.out)),
               features=rep(cfg.features, out=at(cfg.features.out)),
               windows=rep(cfg.windows, out=at(cfg.windows.out)))


class PrepareError(RuntimeError):
    """A data stage failed on the corpus (it printed why)."""


def evaluate_corpus(checkpoint: str | Path, corpus: str, root: str | Path, *, name: str = "",
                    out: str | Path | None = None, cache_root: str | Path = "data/cache/evaluate",
                    device: str = "auto", workers: int = 2) -> tuple[dict[str, Any], Path]:
    """Preprocess (cached) and evaluate; (the report, the output folder)."""
    from kfusion.pipeline.training.checkpoint import checkpoint_config, read_checkpoint
    from kfusion.pipeline.training.evaluation import EvalOutputs, evaluate
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root}: not a folder")
    state = read_checkpoint(checkpoint)
    cfg = checkpoint_config(state, checkpoint)
    name = name or corpus
    base, cache = set_up(cfg, name, corpus, root, Path(cache_root), device=device, workers=workers)
    scfg = prepare(base, name, cache)
    out = Path(out) if out is not None else Path("eval") / name
    report = evaluate(scfg, scfg.windows.out, checkpoint, outputs=EvalOutputs.under(out),
                      set_name=name)
    return report, out
