"""Benchmark: features stage real-time factor and peak RSS at two corpus sizes.

The stage (sharded, worker processes, one shard in memory per worker) is measured against
the naive way in the same run: one process that reads every clip's audio, computes log-mel
and the content encoder one clip at a time, keeps all features in a list and writes them at
the end.
Each measurement runs in its own child process so its peak RSS is its own (the stage's peak
is the largest of its main process and its workers). Real speech: GRID clips from
../shared/grid. The encoder is params' default (`features.encoder: auto`: wav2vec2 where its
weights load, else the bundled Whisper tiny.en, as here); the JSON names the one measured.
--tiny: a 1-layer local wav2vec2 instead, to see how memory scales at larger sizes.

    python bench/features.py [--sizes 6 24] [--workers 2]
Writes bench/results/features.json (features_tiny.json with --tiny) with the machine block
(bench/record.py) and prints one summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from record import Machine, write_result  # noqa: E402

GRID = REPO.parent / "shared" / "grid"


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(self_kb, kids_kb) / 1024.0


def _one(mode: str, work: Path) -> None:
    """Child process: run one measurement in `work`, print JSON."""
    os.chdir(work)
    sys.path.insert(0, str(REPO))
    t0 = time.perf_counter()
    if mode == "stage":
        from kfusion.stages import features
        assert features.main(["--params", "p.yaml"]) == 0
    else:
        _naive()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}))


def _naive() -> None:
    import warnings

    import numpy as np
    import torch

    from kfusion.config import load
    from kfusion.pipeline.data.encoders import load_encoder
    from kfusion.pipeline.data.features import log_mel, mel_transform
    from kfusion.pipeline.data.shards import read_table
    cfg = load("p.yaml")
    torch.set_num_threads(cfg.preprocess.workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = load_encoder(cfg.features, threads=cfg.preprocess.workers)
    mel_tf = mel_transform(cfg.features)
    rows = read_table("data/audio").to_pylist()          # the whole corpus in memory
    out = []
    for r in rows:
        x = np.asarray(r["samples"], np.float32)
        with torch.no_grad():
            h = encoder.encode(x)
        out.append((r["clip_id"], log_mel(x, mel_tf), h))
    np.save("naive.npy", np.array(out, dtype=object), allow_pickle=True)


def _tiny_encoder(path: Path) -> str:
    """A 1-layer, narrow-conv wav2vec2 saved locally: same code path, a fraction of the compute,
    for measuring how memory scales with corpus size at sizes the base model would take long on."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=1, intermediate_size=256, conv_dim=(64,) * 7,
                                 num_conv_pos_embeddings=16)).save_pretrained(path)
    return str(path)


def _prepare(work: Path, n: int, workers: int, encoder: str) -> float:
    """A GRID corpus of n clips, indexed and decoded; returns its audio seconds."""
    import yaml
    root = work / "grid"
    (root / "s1").mkdir(parents=True)
    for p in sorted((GRID / "s1").glob("*.mpg"))[:n]:
        (root / "s1" / p.name).symlink_to(p)
    params = {"preprocess": {"workers": workers},
              "index": {"corpora": ["grid"], "roots": {"grid": str(root)}},
              "features": {"clips_per_shard": 4,
                           **({"encoder": "wav2vec2", "wav2vec2": encoder} if encoder else {})}}
    (work / "p.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stage in ("index", "audio"):
        subprocess.run([sys.executable, "-m", f"kfusion.stages.{stage}", "--params", "p.yaml"], cwd=work,
                       env=env, check=True, capture_output=True)
    m = json.loads((work / "reports/audio.json").read_text())
    return m["audio_hours"] * 3600.0


def _encoder_name(work: Path) -> str:
    """The encoder the stage used, from its features' record: name, version, fallback."""
    sys.path.insert(0, str(REPO))
    from kfusion.pipeline.data.features import read_encoder
    rec = read_encoder(work / "data/features")
    return (f"{rec['encoder']} {rec.get('encoder_version', '')} "
            f"({'random weights' if rec.get('encoder_fallback') else 'pretrained'})")


def _measure(mode: str, work: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", mode, str(work)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[6, 24])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny", action="store_true",
                    help="a 1-layer local wav2vec2 (memory scaling at larger sizes; RTF not comparable)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return _one(args.one[0], Path(args.one[1]))
    if not GRID.is_dir():
        raise SystemExit(f"{GRID} is absent: this benchmark reads real GRID clips")
    machine = Machine.start(threads=args.workers)   # worker processes; torch threads each
    results, measured = [], ""
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        encoder = _tiny_encoder(Path(tmp) / "tiny-w2v") if args.tiny else ""
        for n in args.sizes:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            audio_s = _prepare(work, n, args.workers, encoder)
            stage = _measure("stage", work)
            naive = _measure("naive", work)
            measured = _encoder_name(work)
            results.append({"clips": n, "audio_seconds": round(audio_s, 2),
                            "stage": {**stage, "real_time_factor": audio_s / stage["seconds"]},
                            "naive": {**naive, "real_time_factor": audio_s / naive["seconds"]}})
    small, big = results
    out = {"benchmark": "features", "workers": args.workers, "device": "cpu",
           "encoder": "tiny local wav2vec2 (1 layer; memory scaling only)" if args.tiny else measured,
           "sizes": results,
           "stage_rss_growth_mb": big["stage"]["peak_rss_mb"] - small["stage"]["peak_rss_mb"],
           "naive_rss_growth_mb": big["naive"]["peak_rss_mb"] - small["naive"]["peak_rss_mb"]}
    write_result(
        "features_tiny" if args.tiny else "features", out, machine,
        f"RTF stage {small['stage']['real_time_factor']:.1f}x/{big['stage']['real_time_factor']:.1f}x "
        f"vs naive {small['naive']['real_time_factor']:.1f}x/{big['naive']['real_time_factor']:.1f}x "
        f"at {small['clips']}/{big['clips']} clips; peak RSS stage {small['stage']['peak_rss_mb']:.0f}"
        f"->{big['stage']['peak_rss_mb']:.0f} MB (growth {out['stage_rss_growth_mb']:+.0f}), naive "
        f"{small['naive']['peak_rss_mb']:.0f}->{big['naive']['peak_rss_mb']:.0f} MB "
        f"(growth {out['naive_rss_growth_mb']:+.0f})")

if __name__ == "__main__":
    main()
