"""KAN head speed: our closed-form B-spline KAN vs a matched-parameter MLP vs the
efficient-kan formulation (Cox-de Boor over all G + k bases, written here), forward +
backward at KAN [68, 512, 68] over 1920 rows (batch 32 x 30 frames x 2 coordinates);
plus the whole model's training step at batch 32 (default config, and with the authors'
[68, 512, 68] head).

Memory: on CUDA the peak allocated bytes of one forward+backward; on CPU the bytes of the
tensors autograd saves for backward (activation memory, unique storages), since the CPU
allocator keeps no peak counter. All variants are timed round-robin in one run, so machine
load (this box is shared) hits them alike; medians are reported, with minima (the least
disturbed run). Writes bench/results/kan.json with the machine block (bench/record.py: load
averages at start and end, threads) and prints one line.

    python bench/kan.py [--repeats 11] [--threads 1,2] [--device cpu]

Run at 1 and 2 threads: on a shared box, 2-thread timings of many small ops are dominated
by the wait for both threads at each op's barrier; single-thread ratios are the stable ones.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kfusion.config import load  # noqa: E402
from kfusion.model.build import build_model  # noqa: E402
from kfusion.model.kan import KAN, MLP, KANLinear, matched_mlp_widths  # noqa: E402
from kfusion.model.loss import landmark_loss  # noqa: E402
from record import Machine, write_result  # noqa: E402

# the paper's content encoder (wav2vec2 base: 49 tokens x 768 per 1 s window): the fields of
# its record the model reads, so the bench measures the paper's shapes whatever encoder is on
PAPER_ENCODER = {"encoder": "wav2vec2", "feature_dim": 768}


class CoxDeBoorKANLinear(KANLinear):
    """The efficient-kan formulation: the k-round Cox-de Boor recursion over all G + 2k
    order-0 indicators of every input, then the same two matmuls. Shares our parameters,
    so outputs must agree."""

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.knots()  # (in, G + 2k + 1)
        x = x.unsqueeze(-1)  # (N, in, 1)
        bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)  # (N, in, G + 2k)
        for k in range(1, self.spline_order + 1):
            bases = ((x - grid[:, :-(k + 1)]) / (grid[:, k:-1] - grid[:, :-(k + 1)])
                     * bases[:, :, :-1]
                     + (grid[:, k + 1:] - x) / (grid[:, k + 1:] - grid[:, 1:-k])
                     * bases[:, :, 1:])
        return bases  # (N, in, G + k)


def cox_de_boor_kan(widths: list[int]) -> nn.Module:
    kan = KAN(widths)
    kan.layers = nn.ModuleList(CoxDeBoorKANLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))
    return kan


def saved_bytes(fn) -> int:
    """Bytes of unique storages autograd saves during fn() (activation memory)."""
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cases: dict, repeats: int, device) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():  # round-robin: load spikes hit every variant
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def head_cases(device, rows: int) -> tuple[dict, dict, dict]:
    widths = [68, 512, 68]
    torch.manual_seed(0)
    heads = {"kan": KAN(widths), "mlp_matched": MLP(matched_mlp_widths(widths, 5, 3)),
             "kan_cox_de_boor": cox_de_boor_kan(widths), "mlp_same_width": MLP(widths)}
    heads["kan_cox_de_boor"].load_state_dict(heads["kan"].state_dict())
    heads = {k: v.to(device) for k, v in heads.items()}
    x = torch.randn(rows, 68, device=device) * 0.6

    def fwd_bwd(m):
        def run():
            xx = x.clone().requires_grad_()
            m(xx).square().mean().backward()
        return run

    with torch.no_grad():
        agree = (heads["kan"](x) - heads["kan_cox_de_boor"](x)).abs().max().item()
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in heads.items()}
    return {k: fwd_bwd(m) for k, m in heads.items()}, params, {"max_abs_diff_kan_vs_cdb": agree}


def model_cases(device, batch_size: int) -> dict:
    cases = {}
    for name, hidden in (("model_default", None), ("model_kan512", [512])):
        cfg = load(ROOT / "params.yaml")
        cfg.device = device.type
        if hidden is not None:
            cfg.model.kan.hidden = hidden
        model = build_model(cfg, PAPER_ENCODER).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
        g = torch.Generator().manual_seed(0)
        b = batch_size
        batch = {"mel": torch.randn(b, 100, cfg.features.n_mels, generator=g),
                 "w2v": torch.randn(b, 49, 768, generator=g).half(),
                 "identity": 100 + 60 * torch.rand(b, 68, 2, generator=g),
                 "emotion": torch.randint(0, 8, (b,), generator=g)}
        batch = {k: v.to(device) for k, v in batch.items()}
        target = batch["identity"][:, None] + torch.randn(b, 30, 68, 2, device=device)

        def step(model=model, opt=opt, batch=batch, target=target, cfg=cfg):
            loss = landmark_loss(model(batch), target, cfg.train.mouth_weight, cfg.model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases[name] = (step, sum(p.numel() for p in model.parameters()), cfg.model.kan.hidden)
    return cases


def run_once(device, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    heads, params, check = head_cases(device, args.rows)
    times = measure(heads, args.repeats, device)
    memory = {}
    for name, fn in heads.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            fn()
            memory[name] = torch.cuda.max_memory_allocated()
        else:
            memory[name] = saved_bytes(fn)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    models = model_cases(device, 32)
    mtimes = measure({k: v[0] for k, v in models.items()}, args.model_repeats, device)
    return {
        "threads": threads,
        "heads": {k: {"median_ms": round(med[k] * 1e3, 2), "min_ms": round(low[k] * 1e3, 2),
                      "params": params[k], "memory_mb": round(memory[k] / 2 ** 20, 2),
                      "all_ms": [round(t * 1e3, 2) for t in times[k]]} for k in heads},
        "ratios_of_median": {
            "kan_over_mlp_matched": round(med["kan"] / med["mlp_matched"], 3),
            "cox_de_boor_over_mlp_matched": round(med["kan_cox_de_boor"] / med["mlp_matched"], 3),
            "cox_de_boor_over_kan": round(med["kan_cox_de_boor"] / med["kan"], 3),
            "kan_over_mlp_same_width": round(med["kan"] / med["mlp_same_width"], 3)},
        "ratios_of_min": {
            "kan_over_mlp_matched": round(low["kan"] / low["mlp_matched"], 3),
            "cox_de_boor_over_kan": round(low["kan_cox_de_boor"] / low["kan"], 3)},
        "check": check,
        "train_step_batch32": {
            k: {"median_s": round(statistics.median(mtimes[k]), 4),
                "min_s": round(min(mtimes[k]), 4), "params": models[k][1],
                "kan_hidden": models[k][2], "all_s": [round(t, 4) for t in mtimes[k]]}
            for k in models},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--model-repeats", type=int, default=7)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rows", type=int, default=1920)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="", help="default bench/results/kan.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    threads = [int(n) for n in args.threads.split(",")]
    machine = Machine.start(threads=max(threads))   # the box is shared: record how busy it was
    runs = [run_once(device, n, args) for n in threads]
    res = {"device": str(device), "rows": args.rows, "widths": [68, 512, 68],
           "repeats": args.repeats,
           "memory_kind": "cuda_peak_allocated" if device.type == "cuda" else "saved_for_backward",
           "runs": runs}
    parts = []
    for r in runs:
        h, q, m = r["heads"], r["ratios_of_median"], r["train_step_batch32"]
        parts.append(f"{r['threads']} thr: KAN {h['kan']['median_ms']:.0f} ms, matched MLP "
                     f"{h['mlp_matched']['median_ms']:.0f} ms ({q['kan_over_mlp_matched']}x), "
                     f"Cox-de Boor {h['kan_cox_de_boor']['median_ms']:.0f} ms "
                     f"({q['cox_de_boor_over_kan']}x ours), step b32 "
                     f"{m['model_default']['median_s']:.3f} s")
    write_result("kan", res, machine, f"KAN [68,512,68] x {args.rows} rows fwd+bwd, medians: "
                 + "; ".join(parts), args.out or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
