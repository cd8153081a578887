"""The training loop: the paper's recipe, reproducible, resumable, single- or multi-process.

Recipe (paper Sec. 4.1): Adam (lr 3e-4), cosine annealing with T_max = epochs and
eta_min = 1e-6 stepped once per epoch, MSE loss (`model.loss.landmark_loss`: (1-w) MSE over
all points + w MSE over the mouth, w = `train.mouth_weight`).

Reproducibility: `torch.manual_seed(seed)` before the model is built; every epoch's shuffle
comes from a `DistributedSampler(seed=seed)` with `set_epoch(epoch)` (also with one process),
and the DataLoader's own generator is re-seeded with `seed + epoch`, so the data order never
depends on how many epochs ran in this process. Dropout draws from the global RNG (with
`train.dropout_rng: pcg64`, each CPU mask's seed is one draw from it: kfusion.model.dropout),
whose state (CPU, CUDA, numpy, python; per rank) is saved with every epoch's resume state.

Resume: after every epoch the full state (model, optimizer, scheduler, GradScaler, RNG states,
epoch, history) is written atomically to `train.resume_dir/state.pt`, keyed by a hash of the
config and the data fingerprint (DVC deletes a stage's outs before running it, so this cannot
live under `models/`). A re-run with the same key continues after the last finished epoch
and, on CPU, ends bit-identical to an uninterrupted run (tolerance 0; see docs/training.md).
A finished run deletes its resume state. What a checkpoint holds, and the one reader that
evaluation and predict share: `kfusion.pipeline.training.checkpoint`.

One run, in order: `_set_up` (seed, data, model, optimizer, schedule), `_resume`, then per
epoch `_run_epoch` (train, step the schedule, validate) and `_save_epoch` (best.pt, last.pt,
resume state), and `_finish` (the emotion head into both checkpoints, drop the resume state).

Distributed: under `torchrun` (WORLD_SIZE > 1) the same code wraps the model in
DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 validates, writes checkpoints and
DVCLive logs; others wait at a barrier. Mixed precision (autocast fp16 + GradScaler) on CUDA
only when `train.amp`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from kfusion.config import Config, to_dict
from kfusion.device import resolve_device
from kfusion.model.dropout import use_pcg64_dropout
from kfusion.model.kan import KAN
from kfusion.pipeline.io import StageError, atomic_write_bytes, progress, split_run_log, write_json
from kfusion.pipeline.training.checkpoint import (CHECKPOINT_VERSION, add_emotion_head,
                                                  load_checkpoint, save_checkpoint)
from kfusion.pipeline.training.dataset import (WindowDataset, check_finite_inputs, data_fingerprint,
                                               encoder_info, mean_offset, model_inputs,
                                               non_finite_error, non_finite_inputs)
from kfusion.pipeline.training.emotion import fit_emotion_head
from kfusion.pipeline.training.metrics import MetricTable

KAN_GRID_WINDOWS = 128   # training windows whose head inputs set refitted KAN grids


class NonFiniteLoss(StageError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class _Interrupt(Exception):
    """Raised by tests (via `interrupt_after_epoch`) to simulate a killed run."""


# ----------------------------------------------------------------------------- processes
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup_distributed(device_name: str) -> Dist:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); init if > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def teardown_distributed(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ... which also fills every new tensor with NaN first, to expose reads of
        # uninitialised memory: a debugging aid that costs this model about 3% of a step
        # and cannot change a result (no op reads memory it has not written)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ----------------------------------------------------------------------------- pieces
def default_builders() -> tuple[Callable[[Config, dict], nn.Module], Callable[..., torch.Tensor]]:
    from kfusion.model.build import build_model
    from kfusion.model.loss import landmark_loss
    return build_model, landmark_loss


class _Batches(Dataset):
    """A WindowDataset read a batch at a time: item = the list of rows a BatchSampler gives,
    value = `WindowDataset.batch(rows)` (what default_collate makes of the rows' items)."""

    def __init__(self, ds: WindowDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, rows: list[int]) -> dict[str, Any]:
        return self.ds.batch(rows)


def make_loader(ds: WindowDataset, cfg: Config, d: Dist, *, shuffle: bool,
                batch_size: int) -> tuple[DataLoader, DistributedSampler]:
    """The epoch's batches in the sampler's order; the same batches as
    DataLoader(ds, batch_size, sampler), read with one fancy index per array."""
    sampler = DistributedSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=shuffle,
                                 seed=cfg.seed, drop_last=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(_Batches(ds), batch_size=None,
                        sampler=BatchSampler(sampler, batch_size, drop_last=False),
                        num_workers=cfg.train.num_workers, generator=gen,
                        pin_memory=d.device.type == "cuda",
                        persistent_workers=False)
    return loader, sampler


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The paper's Adam. foreach: one multi-tensor update instead of ~10 small ops per
    parameter tensor (torch picks it on GPUs only); on CPU the same numbers, bit for bit
    (tests/train/test_throughput.py)."""
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay, foreach=True)


def resume_key(cfg: Config, fingerprint: dict[str, Any], world: int) -> str:
    """What must match for a resume state to be continued: model, recipe, seed, data, world."""
    train = {k: v for k, v in to_dict(cfg.train).items()
             if k not in ("resume", "resume_dir", "threads", "num_workers", "out")}
    blob = json.dumps({"model": to_dict(cfg.model), "train": train, "seed": cfg.seed,
                       "data": {k: v for k, v in fingerprint.items() if k != "windows_dir"},
                       "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, cfg: Config, loss_fn: Callable,
             device: torch.device, amp: bool) -> dict[str, float]:
    """Val loss (mean over windows) and the paper's metrics against the reference landmarks."""
    model.eval()
    table, loss_sum, n = MetricTable(), 0.0, 0
    for step, batch in enumerate(loader):
        check_finite_inputs(batch, f"validation, step {step}")
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            pred = model(model_inputs(batch, device))                     # (B, 30, 68, 2)
        target = batch["target"].to(device)
        pred = pred.float()
        loss_sum += float(loss_fn(pred, target, cfg.train.mouth_weight, cfg.model)) * len(target)
        n += len(target)
        table.add(pred.cpu(), batch["target"])
    s = table.summary()
    return {"val/loss": loss_sum / n if n else float("nan"),
            **{f"val/{k}": s[k] for k in ("M-LD", "M-LVD", "F-LD", "F-LVD")}}


def _check_inputs(batch: dict[str, Any], epoch: int, step: int, d: Dist) -> None:
    """Stop (every rank together) when a training batch holds NaN or inf inputs: one NaN in a
    window would otherwise surface as an index error deep in the KAN, naming no clip."""
    bad = non_finite_inputs(batch)
    flag = torch.tensor([1.0 if bad else 0.0], device=d.device)
    if d.enabled:
        dist.all_reduce(flag)
    if flag.item() > 0:
        raise non_finite_error(bad, f"training, epoch {epoch + 1}, step {step} (rank {d.rank})")


def _check_finite(loss: torch.Tensor, batch: dict[str, Any], epoch: int, step: int,
                  d: Dist) -> None:
    bad = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=d.device)
    if d.enabled:
        dist.all_reduce(bad)
    if bad.item() > 0:
        ids = list(batch["clip_id"])
        raise NonFiniteLoss(
            f"non-finite training loss ({float(loss)}) at epoch {epoch + 1}, step {step} "
            f"(rank {d.rank}); this batch's clips: {', '.join(sorted(set(ids)))}. "
            f"The last good checkpoint is kept; check these clips' landmarks/features for "
            f"NaN or extreme values, or lower train.lr")


def train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, cfg: Config, loss_fn: Callable, d: Dist,
                epoch: int, amp: bool) -> float:
    from kfusion.pipeline.training.augment import augment_batch, enabled, step_generator, swap_audio
    model.train()
    augment_on = enabled(cfg.train.augment)
    ds = loader.dataset.ds if isinstance(loader.dataset, _Batches) else None
    audio_p = cfg.train.augment.audio_p
    mel_rate_hz = cfg.audio.sample_rate_hz / cfg.features.hop_length
    loss_sum = torch.zeros(2, dtype=torch.float64, device=d.device)  # (sum, count)
    for step, batch in enumerate(progress(loader, desc=f"epoch {epoch + 1}", leave=False,
                                          disable=None if d.main else True)):
        _check_inputs(batch, epoch, step, d)
        if augment_on:   # drawn from (seed, epoch, step, rank): a resumed run draws the same
            gen = step_generator(cfg.seed + d.rank, epoch, step)
            if audio_p > 0:
                batch = swap_audio(batch, audio_p, ds.variant_batch, len(ds.audio_variants), gen)
            batch = augment_batch(batch, cfg.train.augment, cfg.landmarks.crop_px, mel_rate_hz, gen)
        inputs, target = model_inputs(batch, d.device), batch["target"].to(d.device)
        with torch.autocast(d.device.type, dtype=torch.float16, enabled=amp):
            pred = model(inputs)                                            # (B, 30, 68, 2)
        loss = loss_fn(pred.float(), target, cfg.train.mouth_weight, cfg.model,
                       velocity_weight=cfg.train.velocity_weight)  # val loss: the paper's MSE
        _check_finite(loss.detach(), batch, epoch, step, d)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.train.grad_clip > 0:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        scaler.step(opt)
        scaler.update()
        loss_sum += torch.tensor([float(loss.detach()) * len(target), len(target)],
                                 dtype=torch.float64, device=d.device)
    if d.enabled:
        dist.all_reduce(loss_sum)
    return float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else float("nan")


# ----------------------------------------------------------------------------- logging
class Logger:
    """DVCLive on rank 0: one step per epoch; a resumed run replays the saved history first
    (DVC deleted dvclive/train before the re-run), so the curves equal an uninterrupted run."""

    def __init__(self, live_dir: str | Path | None, enabled: bool):
        self.live = None
        if live_dir is not None and enabled:
            from dvclive import Live
            self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=False)

    def log(self, record: dict[str, float]) -> None:
        if self.live is None:
            return
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self.live.log_metric(k, v)
        self.live.next_step()

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    best: Path
    last: Path
    history: list[dict[str, float]]
    epochs_run: int
    resumed_from: int
    seconds: float
    emotion_classifier: dict[str, Any]


def train(cfg: Config, windows_dir: str | Path, out_dir: str | Path, *,
          live_dir: str | Path | None = None,
          builders: tuple[Callable, Callable] | None = None,
          interrupt_after_epoch: int | None = None) -> TrainResult | None:
    """Train on windows_dir/train, validate on windows_dir/val; write best.pt and last.pt.

    Returns the result on rank 0 (None on other ranks)."""
    t0 = time.perf_counter()
    build_model, loss_fn = builders or default_builders()
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, Path(windows_dir), Path(out_dir), live_dir, build_model, loss_fn, d,
                      interrupt_after_epoch, t0)
    finally:
        teardown_distributed(d)


@dataclass
class _Run:
    """What one training run holds from set-up to the last epoch."""
    cfg: Config
    d: Dist
    loss_fn: Callable[..., torch.Tensor]
    amp: bool                                 # autocast fp16 + GradScaler (CUDA only)
    train_ds: WindowDataset
    val_ds: WindowDataset | None
    model: nn.Module                          # DistributedDataParallel-wrapped when d.enabled
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    train_sampler: DistributedSampler
    val_loader: DataLoader | None
    provenance: dict[str, Any]                # what every checkpoint records beside weights
    resume_key: str
    resume_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    best_score: float = math.inf


def _train(cfg: Config, windows_dir: Path, out_dir: Path, live_dir, build_model, loss_fn,
           d: Dist, interrupt_after_epoch: int | None, t0: float) -> TrainResult | None:
    run = _set_up(cfg, windows_dir, build_model, loss_fn, d)
    _resume(run)
    if run.start_epoch and d.main:
        _restore_checkpoints(run, out_dir)
    if d.enabled:
        run.model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    logger = Logger(live_dir, d.main)
    for record in run.history:
        logger.log(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(run.start_epoch, cfg.train.epochs):
        record = _run_epoch(run, epoch)
        rngs = _rng_states(d)  # every rank's, so a resumed run continues each rank's dropout
        if d.main:
            _save_epoch(run, out_dir, record, rngs)
            logger.log(record)
            print(f"[train] epoch {epoch + 1}/{cfg.train.epochs} "
                  + " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"),
                  file=sys.stderr, flush=True)
        d.barrier()
        if interrupt_after_epoch is not None and epoch + 1 == interrupt_after_epoch:
            raise _Interrupt(f"interrupted after epoch {epoch + 1}")
    return _finish(run, out_dir, logger, t0)


def _open_windows(cfg: Config, windows_dir: Path) -> tuple[WindowDataset, WindowDataset | None]:
    """The training split (at most train.max_windows) and the validation split, if any."""
    train_ds = WindowDataset(windows_dir / "train", max_windows=cfg.train.max_windows)
    if len(train_ds) == 0:
        raise StageError(f"{windows_dir / 'train'}: no training windows; check the windows "
                         f"stage's metrics and the split settings")
    if cfg.train.augment.audio_p > 0 and not train_ds.audio_variants:
        raise StageError(f"train.augment.audio_p: {cfg.train.augment.audio_p}, but "
                         f"{windows_dir / 'train'} holds no perturbed-speech copies; re-run the "
                         f"features and windows stages with features.audio_augment set")
    val_ds = WindowDataset(windows_dir / "val") if (windows_dir / "val" / "windows.parquet").exists() \
        else None
    return train_ds, val_ds


def _set_up(cfg: Config, windows_dir: Path, build_model: Callable[[Config, dict], nn.Module],
            loss_fn: Callable[..., torch.Tensor], d: Dist) -> _Run:
    """Seed, open the data, build the model and the recipe (Adam, cosine schedule)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed, cfg.train.deterministic)
    train_ds, val_ds = _open_windows(cfg, windows_dir)
    fingerprint = data_fingerprint(windows_dir)
    amp = cfg.train.amp and d.device.type == "cuda"
    encoder = encoder_info(train_ds)   # the content encoder: the model's input width and tokens
    model = build_model(cfg, encoder).to(d.device)
    if cfg.train.dropout_rng == "pcg64":
        use_pcg64_dropout(model)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs,
                                                       eta_min=cfg.train.eta_min)
    train_loader, train_sampler = make_loader(train_ds, cfg, d, shuffle=True,
                                              batch_size=cfg.train.batch_size)
    val_loader = make_loader(val_ds, cfg, Dist(), shuffle=False,
                             batch_size=cfg.train.batch_size)[0] if val_ds and len(val_ds) else None
    # the mean-motion baseline's trajectory travels with the weights: evaluating this
    # checkpoint on any corpus never needs its training windows
    provenance = {"config": to_dict(cfg), "encoder": encoder,
                  "data": fingerprint, "world_size": d.world, "device": d.device.type,
                  "amp": amp, "version": CHECKPOINT_VERSION,
                  "mean_motion": torch.from_numpy(mean_offset(train_ds)).float()}   # (T, 68, 2)
    return _Run(cfg=cfg, d=d, loss_fn=loss_fn, amp=amp, train_ds=train_ds, val_ds=val_ds,
                model=model, opt=opt, sched=sched,
                scaler=torch.amp.GradScaler(d.device.type, enabled=amp),
                train_loader=train_loader, train_sampler=train_sampler, val_loader=val_loader,
                provenance=provenance, resume_key=resume_key(cfg, fingerprint, d.world),
                resume_path=Path(cfg.train.resume_dir) / "state.pt")


def _resume(run: _Run) -> None:
    """Continue after the last finished epoch of an interrupted run with the same key."""
    path, main = run.resume_path, run.d.main
    if not (run.cfg.train.resume and path.exists()):
        return
    state = load_checkpoint(path)
    if state.get("resume_key") != run.resume_key:
        if main:
            print(f"[train] ignoring {path}: it was written for another config or data",
                  file=sys.stderr, flush=True)
        return
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][run.d.rank])
    run.history, run.start_epoch, run.best_score = state["history"], state["epoch"], state["best_score"]
    if main:
        print(f"[train] resuming from {path} after epoch {run.start_epoch}",
              file=sys.stderr, flush=True)


def _best_copy(run: _Run) -> Path:
    """best.pt as of the resume state: DVC deletes models/ before a re-run, and a resumed run
    writes best.pt again only when it beats the best epoch so far."""
    return run.resume_path.with_name("best.pt")


def _restore_checkpoints(run: _Run, out_dir: Path) -> None:
    """models/best.pt and last.pt as the interrupted run left them (the resume state is
    last.pt's content, saved from the same dict)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "last.pt", run.resume_path.read_bytes())
    if _best_copy(run).exists():
        atomic_write_bytes(out_dir / "best.pt", _best_copy(run).read_bytes())


def _run_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """Train one epoch, step the schedule, validate on rank 0; the epoch's record."""
    cfg, d = run.cfg, run.d
    run.train_sampler.set_epoch(epoch)
    run.train_loader.generator.manual_seed(cfg.seed + epoch)
    train_loss = train_epoch(run.model, run.train_loader, run.opt, run.scaler, cfg, run.loss_fn,
                             d, epoch, run.amp)
    every = cfg.train.kan_update_grid_every_epochs
    if every and (epoch + 1) % every == 0:
        update_kan_grid(run)
    lr = run.opt.param_groups[0]["lr"]
    run.sched.step()
    record: dict[str, float] = {"epoch": epoch + 1, "train/loss": train_loss, "lr": lr}
    if d.main and run.val_loader is not None:
        record.update(validate(_unwrap(run.model), run.val_loader, cfg, run.loss_fn, d.device,
                               run.amp))
    run.history.append(record)
    return record


@torch.no_grad()
def update_kan_grid(run: _Run) -> None:
    """Refit the KAN head's grids (KAN.update_grid) to what it reads on a seeded sample of
    KAN_GRID_WINDOWS training windows; the same sample on every rank keeps ranks identical.
    The grids are buffers of the model, so checkpoints and the resume state carry them."""
    model = _unwrap(run.model)
    head = getattr(getattr(model, "kfusion", None), "head", None)
    if not isinstance(head, KAN):
        return   # fusion: mlp or none has no grid
    rows = torch.randperm(len(run.train_ds), generator=torch.Generator().manual_seed(run.cfg.seed))
    batch = run.train_ds.batch(rows[:KAN_GRID_WINDOWS].tolist())
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.eval()
    try:
        with torch.autocast(run.d.device.type, dtype=torch.float16, enabled=run.amp):
            model(model_inputs(batch, run.d.device))
    finally:
        hook.remove()
    head.update_grid(seen[0].float())   # x'_f (B, n_frames, 2, 68): rows of 68 points


def _rng_states(d: Dist) -> list[dict[str, Any] | None]:
    """Every rank's RNG states, indexed by rank (collective: all ranks must call it)."""
    if not d.enabled:
        return [rng_state()]
    rngs: list[dict[str, Any] | None] = [None] * d.world
    dist.all_gather_object(rngs, rng_state())
    return rngs


def _save_epoch(run: _Run, out_dir: Path, record: dict[str, float],
                rngs: list[dict[str, Any] | None]) -> None:
    """best.pt when the epoch's val loss (train loss without val) is the lowest yet;
    last.pt and the resume state always, with everything a resume needs."""
    score = record.get("val/loss", record["train/loss"])
    is_best = score < run.best_score
    run.best_score = min(run.best_score, score)
    state = {**run.provenance, "model": _unwrap(run.model).state_dict(), "epoch": record["epoch"],
             "history": run.history, "metrics": record, "best_score": run.best_score}
    if is_best:
        save_checkpoint(out_dir / "best.pt", state)
        if run.cfg.train.resume:
            save_checkpoint(_best_copy(run), state)
    full = {**state, "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "scaler": run.scaler.state_dict(), "rng": rngs, "resume_key": run.resume_key}
    save_checkpoint(out_dir / "last.pt", full)
    if run.cfg.train.resume:   # last: the resume state is complete only with best.pt beside it
        save_checkpoint(run.resume_path, full)


def _finish(run: _Run, out_dir: Path, logger: Logger, t0: float) -> TrainResult | None:
    """Rank 0: fit the emotion head into both checkpoints, close the logs, drop the resume
    state. Other ranks wait and return None."""
    d = run.d
    if not d.main:
        d.barrier()
        return None
    report = _train_emotion_head(run.cfg, run.train_ds, run.val_ds, out_dir)
    logger.end()
    run.resume_path.unlink(missing_ok=True)
    _best_copy(run).unlink(missing_ok=True)
    d.barrier()
    return TrainResult(best=out_dir / "best.pt", last=out_dir / "last.pt", history=run.history,
                       epochs_run=run.cfg.train.epochs - run.start_epoch,
                       resumed_from=run.start_epoch, seconds=time.perf_counter() - t0,
                       emotion_classifier=report)


def _train_emotion_head(cfg: Config, train_ds: WindowDataset, val_ds: WindowDataset | None,
                        out_dir: Path) -> dict[str, Any]:
    """Fit the audio -> emotion head and store it in both checkpoints; its report."""
    if cfg.train.emotion_classifier_epochs == 0:
        return {}
    clf, report = fit_emotion_head(cfg, train_ds, val_ds)
    add_emotion_head([out_dir / "best.pt", out_dir / "last.pt"], clf, report)
    return report


def write_summary(result: TrainResult, path: str | Path, log_path: str | Path) -> dict[str, Any]:
    """The run's results in `path` (beside the checkpoints: DVC-tracked), its timing and
    resumption in the untracked `log_path`; returns both together."""
    last = result.history[-1] if result.history else {}
    best = min(result.history, key=lambda r: r.get("val/loss", r["train/loss"])) if result.history else {}
    # the wall time and the resumption go to the untracked log (split_run_log): models/ is a
    # DVC out, and the same run must give the same bytes
    summary = {"epochs": len(result.history), "resumed_from_epoch": result.resumed_from,
               "seconds": round(result.seconds, 1),
               "final": last,
               "best_epoch": best.get("epoch"), "best": best,
               "emotion_classifier": result.emotion_classifier}
    results, log = split_run_log(summary)
    write_json(path, results)
    write_json(log_path, log)
    return summary
