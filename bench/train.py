"""Training throughput (windows/s) at the default batch, against issue 16's target of 200
windows/s at 2 threads, and where a step's time goes.

Runs the training loop's own epoch (`train_epoch`: the loader's batch reads, the input and
loss checks, forward, loss, backward, gradient clipping, Adam) over `--batches` batches of
data/windows/train (else synthetic windows of the same shapes), with the default model of
params.yaml, for both `train.dropout_rng` values, their epochs alternated in one process so
machine load hits them alike (medians of `--repeats`). Then it times one step's phases
(data, forward + loss, backward, optimizer) and, with torch's profiler, the share of torch's
own dropout masks (aten::bernoulli_): the profile that says what stops the target.
`--compile` adds a torch.compile variant (its compile time reported apart).

    python bench/train.py [--threads 2,1] [--batches 8] [--repeats 5] [--windows DIR]

Writes bench/results/train.json (bench/record.py: machine block with the load averages)
and prints one line. On a shared 2-core box, 2-thread timings of many small ops are
dominated by the wait for both threads at each op's barrier; read them with the load.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")   # the profiler's stderr chatter
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "train"))  # the tests' synthetic windows
sys.path.insert(0, str(ROOT / "bench"))

from kfusion.config import Config, load  # noqa: E402
from kfusion.model.build import build_model  # noqa: E402
from kfusion.model.dropout import use_pcg64_dropout  # noqa: E402
from kfusion.model.loss import landmark_loss  # noqa: E402
from kfusion.pipeline.training.dataset import (WindowDataset, encoder_info, model_inputs,  # noqa: E402
                                               non_finite_inputs)
from kfusion.pipeline.training.loop import (Dist, make_loader, make_optimizer,  # noqa: E402
                                            seed_everything, train_epoch)
from record import Machine, write_result  # noqa: E402
from train_helpers import write_synthetic_windows  # noqa: E402

TARGET_WINDOWS_PER_S, TARGET_THREADS = 200.0, 2   # issue 16, item 4
DROPOUT_RNGS = ("torch", "pcg64")


@dataclasses.dataclass
class Variant:
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epochs_s: list[float] = dataclasses.field(default_factory=list)


def windows_split(cfg: Config, given: str, n_windows: int) -> tuple[Path, str]:
    """The training split to read (and what to call it): `given`, else the pipeline's, else
    `n_windows` synthetic windows of the same shapes."""
    src = Path(given) if given else ROOT / cfg.windows.out / "train"
    if (src / "windows.parquet").exists():
        return src, str(src)
    tmp = Path(tempfile.mkdtemp())
    write_synthetic_windows(tmp, n_train=n_windows, n_val=1, n_test=1, n_mels=cfg.features.n_mels)
    return tmp / "train", "synthetic"


def variants(cfg: Config, ds: WindowDataset, compile_model: bool) -> dict[str, Variant]:
    """The default model (seeded as training seeds it) with each dropout stream, and
    optionally compiled; each with its own Adam, all from the same initial weights."""
    seed_everything(cfg.seed, cfg.train.deterministic)
    base = build_model(cfg, encoder_info(ds))
    out = {}
    for name in DROPOUT_RNGS + (("compile",) if compile_model else ()):
        model = copy.deepcopy(base)
        if name == "pcg64":
            use_pcg64_dropout(model)
        if name == "compile":   # torch's own dropout draws, not inductor's, to compare alike
            import torch._inductor.config as inductor
            inductor.fallback_random = True
            model = torch.compile(model)
        out[name] = Variant(model, make_optimizer(model, cfg),
                            torch.amp.GradScaler("cpu", enabled=False))
    return out


def time_epochs(cfg: Config, ds: WindowDataset, vs: dict[str, Variant], repeats: int) -> dict:
    """Alternate the variants' epochs; each one's first (warm-up; compile) reported apart."""
    loader, sampler = make_loader(ds, cfg, Dist(), shuffle=True, batch_size=cfg.train.batch_size)
    first: dict[str, float] = {}
    for epoch in range(repeats + 1):
        sampler.set_epoch(epoch)
        for name, v in vs.items():
            t = time.perf_counter()
            train_epoch(v.model, loader, v.opt, v.scaler, cfg, landmark_loss, Dist(), epoch,
                        amp=False)
            seconds = time.perf_counter() - t
            if epoch:
                v.epochs_s.append(seconds)
            else:
                first[name] = seconds
    out = {}
    for name, v in vs.items():
        epoch_s = statistics.median(v.epochs_s)
        out[name] = {"windows_per_s": len(ds) / epoch_s, "median_epoch_s": epoch_s,
                     "median_step_s": epoch_s / len(loader), "first_epoch_s": first[name]}
    return out


def step_phases(cfg: Config, ds: WindowDataset, v: Variant, steps: int) -> dict[str, float]:
    """Median seconds of each phase of a training step, as train_epoch runs them."""
    loader, _ = make_loader(ds, cfg, Dist(), shuffle=True, batch_size=cfg.train.batch_size)
    phases: dict[str, list[float]] = {k: [] for k in ("data", "forward", "backward", "optimizer")}
    batches = iter(loader)
    v.model.train()
    for _ in range(min(steps, len(loader))):
        t0 = time.perf_counter()
        batch = next(batches)
        non_finite_inputs(batch)
        t1 = time.perf_counter()
        loss = landmark_loss(v.model(model_inputs(batch, "cpu")), batch["target"],
                             cfg.train.mouth_weight, cfg.model,
                             velocity_weight=cfg.train.velocity_weight)
        float(loss.detach())
        t2 = time.perf_counter()
        v.opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(v.model.parameters(), cfg.train.grad_clip)
        v.opt.step()
        t4 = time.perf_counter()
        for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("backward", t2, t3),
                        ("optimizer", t3, t4)):
            phases[k].append(b - a)
    return {k: statistics.median(x) for k, x in phases.items()}


def dropout_mask_share(cfg: Config, ds: WindowDataset, v: Variant, steps: int) -> float:
    """Share of a step's CPU time in torch's dropout masks (aten::bernoulli_, serial)."""
    from torch.profiler import ProfilerActivity, profile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Profiler clears events at the end of each cycle"
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step_phases(cfg, ds, v, steps)
        events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    masks = sum(e.self_cpu_time_total for e in events if e.key == "aten::bernoulli_")
    return masks / total if total else float("nan")


def at_threads(cfg: Config, ds: WindowDataset, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    vs = variants(cfg, ds, args.compile)
    res = {"epochs": time_epochs(cfg, ds, vs, args.repeats)}
    default = vs[cfg.train.dropout_rng]
    phases = step_phases(cfg, ds, default, args.batches)
    step = sum(phases.values())
    res["profile"] = {
        "dropout_rng": cfg.train.dropout_rng, "step_s": step,
        "share": {k: x / step for k, x in phases.items()},
        "compute_only_windows_per_s": cfg.train.batch_size / (step - phases["data"]),
        "torch_dropout_masks_share": dropout_mask_share(cfg, ds, vs["torch"], 3)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--windows", default="", help="a windows split folder (default: "
                                                  "<windows.out>/train, else synthetic)")
    ap.add_argument("--threads", default=f"{TARGET_THREADS},1", help="comma-separated")
    ap.add_argument("--batches", type=int, default=8, help="batches per timed epoch")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per variant")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--out", default="", help="default bench/results/train.json")
    args = ap.parse_args()
    cfg = load(args.params)
    bs = cfg.train.batch_size
    src, data = windows_split(cfg, args.windows, bs * args.batches)
    ds = WindowDataset(src, max_windows=bs * args.batches)
    threads = [int(t) for t in args.threads.split(",")]
    machine = Machine.start(threads=threads[0])
    figures = {"data": data, "batch_size": bs, "windows": len(ds), "repeats": args.repeats,
               "dropout_rng": cfg.train.dropout_rng, "threads_measured": threads,
               "target": {"windows_per_s": TARGET_WINDOWS_PER_S, "threads": TARGET_THREADS},
               "model": {k: getattr(cfg.model, k) for k in ("fusion", "global_domain", "lstm",
                                                            "d_model")},
               "by_threads": {str(t): at_threads(cfg, ds, t, args) for t in threads}}
    figures["params_M"] = round(sum(p.numel() for p in build_model(cfg, encoder_info(ds))
                                    .parameters()) / 1e6, 3)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    head = figures["by_threads"][str(threads[0])]["epochs"]
    figures["windows_per_s"] = head[cfg.train.dropout_rng]["windows_per_s"]   # the headline
    figures["target_met"] = {name: threads[0] == TARGET_THREADS and
                             head[name]["windows_per_s"] >= TARGET_WINDOWS_PER_S
                             for name in DROPOUT_RNGS}
    write_result("train", figures, machine, summary(figures), args.out or None)
    return 0


def summary(f: dict) -> str:
    """One line: both dropout streams at each thread count, and the verdict."""
    rates = "; ".join(f"{t} thread{'s' * (t > 1)}: " + ", ".join(
        f"{n} {f['by_threads'][str(t)]['epochs'][n]['windows_per_s']:.0f}" for n in DROPOUT_RNGS)
        for t in f["threads_measured"])
    default = f["dropout_rng"]
    verdict = "met" if f["target_met"][default] else "NOT met"
    also = [n for n in DROPOUT_RNGS if n != default and f["target_met"][n]]
    return (f"train windows/s at batch {f['batch_size']} by dropout_rng, {rates}; target "
            f"{TARGET_WINDOWS_PER_S:.0f} at {TARGET_THREADS} threads {verdict} with the default "
            f"({default}){''.join(f', met with {n}' for n in also)}")


if __name__ == "__main__":
    sys.exit(main())
