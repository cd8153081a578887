"""What the training speed-ups of issue 16 must not change: the batches the loader yields
(read a batch at a time) are the ones a per-window DataLoader would collate, and the
multi-tensor Adam moves the weights exactly as the per-tensor one."""
import copy
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from kfusion.model.build import build_model
from kfusion.model.loss import landmark_loss
from kfusion.pipeline.training.dataset import WindowDataset, encoder_info, model_inputs
from kfusion.pipeline.training.loop import Dist, make_loader, make_optimizer


def _same(a: dict, b: dict) -> bool:
    """Same keys in the same order, same values, dtypes and shapes."""
    if list(a) != list(b):
        return False
    return all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype
               if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_batch_reads_what_default_collate_makes(windows: Path):
    ds = WindowDataset(windows / "train")
    rows = [5, 0, 17, 5, 47, 3]   # any order, repeats allowed
    got = ds.batch(rows)
    assert _same(got, default_collate([ds[i] for i in rows]))
    assert got["index"].tolist() == rows and got["w2v"].dtype == torch.float32   # f16 on disk


def test_training_loader_yields_a_per_window_loaders_batches(tiny_cfg, windows: Path):
    cfg = tiny_cfg()
    ds = WindowDataset(windows / "train")   # 48 windows, batch 16: three per epoch
    fast, sampler = make_loader(ds, cfg, Dist(), shuffle=True, batch_size=cfg.train.batch_size)
    plain_sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
    plain = DataLoader(ds, batch_size=cfg.train.batch_size, sampler=plain_sampler,
                       generator=torch.Generator())
    orders = []
    for epoch in range(2):
        for s, loader in ((sampler, fast), (plain_sampler, plain)):
            s.set_epoch(epoch)
            loader.generator.manual_seed(cfg.seed + epoch)
        pairs = list(zip(fast, plain, strict=True))
        assert len(pairs) == len(fast) == 3 and all(_same(a, b) for a, b in pairs)
        orders.append([a["index"].tolist() for a, _ in pairs])
    assert orders[0] != orders[1]   # shuffled anew each epoch, both loaders alike


def test_the_optimizer_updates_as_plain_adam_does_bit_for_bit(tiny_cfg, windows: Path):
    # make_optimizer's multi-tensor Adam must move every weight as the per-tensor loop would:
    # trained checkpoints (and the published numbers) depend on it
    cfg = tiny_cfg(weight_decay=0.01)
    ds = WindowDataset(windows / "train")
    torch.manual_seed(0)
    ours = build_model(cfg, encoder_info(ds))
    plain = copy.deepcopy(ours)
    opts = (make_optimizer(ours, cfg),
            torch.optim.Adam(plain.parameters(), lr=cfg.train.lr,
                             weight_decay=cfg.train.weight_decay, foreach=False))
    for step in range(4):
        batch = ds.batch(list(range(step * 12, step * 12 + 12)))
        for model, opt in zip((ours, plain), opts):
            torch.manual_seed(step)   # the same dropout masks for both
            loss = landmark_loss(model(model_inputs(batch, "cpu")), batch["target"],
                                 cfg.train.mouth_weight, cfg.model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 plain.state_dict().values()))
    assert not torch.equal(ours.state_dict()["content_domain.proj.weight"],
                           build_model(cfg, encoder_info(ds)).state_dict()["content_domain.proj.weight"])
