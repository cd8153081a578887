"""Training throughput (windows/s) at the default batch size, and peak RSS.

Uses data/windows/train when present (else a synthetic folder with the same shapes), the
default model from params.yaml, and times `train_epoch`-equivalent steps after a warm-up.
Also times the same steps on one preloaded batch ("compute only"), so the data-loading share
is visible. Writes bench/results/train.json and prints one summary line.

    python bench/train.py [--params params.yaml] [--steps 8] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "train"))  # the tests' synthetic windows

from kfusion.config import load  # noqa: E402
from kfusion.pipeline.training.dataset import WindowDataset, encoder_info, model_inputs  # noqa: E402
from train_helpers import write_synthetic_windows  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="default: train.threads of the params")
    args = ap.parse_args()
    cfg = load(args.params)
    args.threads = args.threads or cfg.train.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    from kfusion.model.build import build_model
    from kfusion.model.loss import landmark_loss

    src = ROOT / cfg.windows.out / "train"
    if not (src / "windows.parquet").exists():
        tmp = Path(tempfile.mkdtemp())
        write_synthetic_windows(tmp, n_train=cfg.train.batch_size * (args.steps + 2), n_val=1,
                                n_test=1, n_mels=cfg.features.n_mels)
        src, data = tmp / "train", "synthetic"
    else:
        data = str(src)
    ds = WindowDataset(src)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True,
                                         num_workers=cfg.train.num_workers, drop_last=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, encoder_info(ds))   # for the windows' content encoder
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

    def step(batch):
        loss = landmark_loss(model(model_inputs(batch, "cpu")), batch["target"],
                             cfg.train.mouth_weight, cfg.model,
                             velocity_weight=cfg.train.velocity_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()

    model.train()
    it = iter(loader)
    first = next(it)
    step(first)  # warm-up
    full, compute = [], []
    for _ in range(min(args.steps, len(loader) - 1)):
        t = time.perf_counter()
        step(next(it))
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(first)
        compute.append(time.perf_counter() - t)
    bs = cfg.train.batch_size
    res = {
        "data": data, "batch_size": bs, "threads": args.threads, "steps": len(full),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "median_step_s": statistics.median(full),
        "windows_per_s": bs / statistics.median(full),
        "compute_only_windows_per_s": bs / statistics.median(compute),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model": {k: getattr(cfg.model, k) for k in ("fusion", "global_domain", "lstm", "d_model")},
    }
    out = ROOT / "bench" / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"train: {res['windows_per_s']:.1f} windows/s at batch {bs} ({args.threads} threads, "
          f"median of {len(full)} steps; compute only {res['compute_only_windows_per_s']:.1f}), "
          f"peak RSS {res['peak_rss_mb']:.0f} MB, {res['params_M']} M params -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
