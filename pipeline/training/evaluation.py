"""Evaluate a trained checkpoint on data/windows/test, beside baselines, per corpus and emotion.

Systems, all on the same test windows:
  - model:       the checkpoint (evaluate.checkpoint: best | last).
  - identity:    the identity landmarks held still for all 30 frames (LVD = the reference's
                 own mean speed, since the prediction does not move).
  - mean_motion: identity + the mean offset trajectory of the training windows,
                 mean_n(landmarks_n[t] - identity_n) for t = 0..29: what a model that ignores
                 the audio but knows the average motion (and the average pose drift from the
                 identity frame) would predict.
References: the landmark detector's tracks (`target`, every corpus) and, where the corpus has
it (demo), the generator's clean ground truth (`gt_landmarks`); against the latter, the
detector itself is a fourth system (`detector`: its error is the floor no model trained on
its tracks can be expected to beat).

Metrics: kfusion.pipeline.training.metrics (Eq. 13-15, crop px, per window then averaged over windows).
`metrics.definition: reference | both` adds the authors' batch-level numbers, labelled.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from kfusion.config import Config
from kfusion.device import resolve_device
from kfusion.pipeline.io import atomic_path, progress, write_json
from kfusion.pipeline.training.checkpoint import Trained, check_encoder, load_trained
from kfusion.pipeline.training.dataset import WindowDataset, encoder_info, model_inputs
from kfusion.pipeline.training.metrics import METRIC_NAMES, MetricTable, ReferenceAccumulator
from kfusion.shapes import EMOTIONS

SYSTEMS = ("model", "identity", "mean_motion")


def mean_offset(train_dir: str | Path) -> np.ndarray:
    """Mean over training windows of (landmarks - identity): (T, 68, 2) float64."""
    ds = WindowDataset(train_dir)
    a = ds.arrays()
    total, n = None, 0
    for i in range(0, len(ds), 1024):
        off = np.asarray(a["landmarks"][i:i + 1024], np.float64) - \
            np.asarray(a["identity"][i:i + 1024], np.float64)[:, None]     # (b, T, 68, 2)
        total = off.sum(0) if total is None else total + off.sum(0)
        n += len(off)
    if not n:
        raise FileNotFoundError(f"{train_dir}: no training windows for the mean-motion baseline")
    return total / n


def _rows(idx: np.ndarray, values: list[str]) -> np.ndarray:
    return np.asarray([values[i] for i in idx])


def evaluate(cfg: Config, windows_dir: str | Path, checkpoint: str | Path, *,
             out_json: str | Path, plots_dir: str | Path,
             build_model: Callable[[Config, dict], torch.nn.Module] | None = None) -> dict[str, Any]:
    windows_dir = Path(windows_dir)
    device = resolve_device(cfg.device)
    trained = load_trained(checkpoint, device, build_model)
    test = WindowDataset(windows_dir / "test")
    enc = encoder_info(test)
    check_encoder(trained.state, trained.path, enc, f"the test windows' features ({test.dir}) "
                                                    f"come from")
    offset = torch.from_numpy(mean_offset(windows_dir / "train")).float()   # (T, 68, 2)
    definition = cfg.metrics.definition
    want_paper, want_ref = definition in ("paper", "both"), definition in ("reference", "both")
    batch_size = cfg.metrics.reference_batch_size if want_ref else cfg.evaluate.batch_size
    loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=0)

    vs_ref = {s: MetricTable() for s in SYSTEMS}
    vs_gt = {s: MetricTable() for s in (*SYSTEMS, "detector")}
    ref_acc: dict[tuple[str, str], ReferenceAccumulator] = {}
    qual_idx = _qualitative_indices(len(test), cfg.evaluate.qualitative_windows)
    qual: dict[int, np.ndarray] = {}
    clf = trained.emotion_classifier
    clf_correct: dict[str, list[int]] = {}
    mcfg = trained.cfg.model
    with torch.no_grad():
        for batch in progress(loader, desc="evaluate"):
            idx = batch["index"].numpy()
            groups = {"corpus": _rows(idx, test.corpora), "emotion": _rows(idx, test.emotions)}
            identity, target, gt = batch["identity"], batch["target"], batch["gt_landmarks"]
            preds = {
                "model": trained.model(model_inputs(batch, device)).float().cpu(),  # (B, T, 68, 2)
                "identity": identity[:, None].expand_as(target),
                "mean_motion": identity[:, None] + offset,
            }
            for s, p in preds.items():
                vs_ref[s].add(p, target, **groups)
                vs_gt[s].add(p, gt, **groups)
                if want_ref:
                    for c in sorted(set(groups["corpus"])):
                        sel = torch.from_numpy(groups["corpus"] == c)
                        acc = ref_acc.setdefault((s, c), ReferenceAccumulator(
                            mcfg.coord_low_px, mcfg.coord_high_px))
                        acc.add(p[sel], target[sel])
            vs_gt["detector"].add(target, gt, **groups)
            for j, i in enumerate(idx):
                if int(i) in qual_idx:
                    qual[int(i)] = preds["model"][j].numpy()
            if clf is not None:
                hit = (clf.predict(batch["mel"], batch["w2v"]) == batch["emotion"]).long().tolist()
                for c, h in zip(groups["corpus"], hit):
                    clf_correct.setdefault(str(c), []).append(h)

    prov = {**{k: enc[k] for k in ("encoder", "encoder_version", "encoder_sha256",
                                   "encoder_fallback", "feature_dim")},
            "checkpoint": str(trained.path), "checkpoint_sha256": trained.sha256}
    result = _assemble(cfg, trained, test, vs_ref, vs_gt, ref_acc, clf_correct, prov,
                       want_paper, want_ref, batch_size)
    write_json(out_json, result)
    plots_dir = Path(plots_dir)
    write_json(plots_dir / "per_emotion.json", per_emotion_rows(vs_ref["model"]))
    plot_qualitative(plots_dir / "qualitative.png", test, qual,
                     Path(cfg.evaluate.landmarks_dir), cfg.evaluate.qualitative_frames)
    return result


def _assemble(cfg: Config, trained: Trained, test: WindowDataset, vs_ref, vs_gt, ref_acc,
              clf_correct, prov, want_paper: bool, want_ref: bool, batch_size: int) -> dict[str, Any]:
    tcfg = trained.cfg
    out: dict[str, Any] = {
        "definition": cfg.metrics.definition,
        "units": "pixels of the 256x256 crop (paper Eq. 13-15); per window, then mean over windows",
        **prov,
        "trained": {"seed": tcfg.seed, "epochs": tcfg.train.epochs,
                    "best_epoch": trained.state.get("epoch"),
                    "fusion": tcfg.model.fusion, "global_domain": tcfg.model.global_domain,
                    "lstm": tcfg.model.lstm},
    }
    if want_paper:
        overall = vs_ref["model"].summary()
        out.update({k: overall[k] for k in METRIC_NAMES})  # headline: model vs reference, all corpora
        out["windows"] = overall["windows"]
        out["overall"] = {s: vs_ref[s].summary() for s in SYSTEMS}
    corpora: dict[str, Any] = {}
    for c in sorted(set(test.corpora)):
        block: dict[str, Any] = {"corpus": c, **prov}
        if want_paper:
            block["vs_reference"] = {s: vs_ref[s].by("corpus").get(c, {}) for s in SYSTEMS}
            gt = {s: vs_gt[s].by("corpus").get(c) for s in vs_gt}
            if any(gt.values()):
                block["vs_ground_truth"] = {s: v for s, v in gt.items() if v}
            block["per_emotion"] = _per_emotion(vs_ref["model"], c)
        if want_ref:
            block["reference_definition"] = {
                "label": "the authors' code (metrix/LM.py): batch Frobenius norm in min-max "
                         "scaled units; 'LVD' is within-frame differences to landmark 0; "
                         "NOT Eq. 13-15",
                "batch_size": batch_size,
                **{s: ref_acc[(s, c)].summary() for s in SYSTEMS if (s, c) in ref_acc}}
        if c in clf_correct:
            hits = clf_correct[c]
            block["emotion_classifier_accuracy"] = float(np.mean(hits)) if hits else float("nan")
        corpora[c] = block
    out["corpora"] = corpora
    all_hits = [h for v in clf_correct.values() for h in v]
    if all_hits:
        out["emotion_classifier"] = {"test_accuracy": float(np.mean(all_hits)),
                                     "test_windows": len(all_hits),
                                     "chance": 1.0 / len(EMOTIONS)}
    return out


def _per_emotion(table: MetricTable, corpus: str) -> dict[str, Any]:
    vals, grps = table.per_window()
    sel_c = grps.get("corpus", np.zeros(0)) == corpus
    out = {}
    for e in EMOTIONS:
        sel = sel_c & (grps["emotion"] == e)
        if sel.any():
            out[e] = {"windows": int(sel.sum()), **{k: float(v[sel].mean()) for k, v in vals.items()}}
    return out


def per_emotion_rows(table: MetricTable) -> list[dict[str, Any]]:
    """Rows for DVC's bar plot: one per (corpus, emotion), the model vs reference landmarks."""
    vals, grps = table.per_window()
    if not len(vals["F-LD"]):
        return []
    corpora = sorted(set(grps["corpus"].tolist()))
    rows = []
    for c in corpora:
        for e, m in _per_emotion(table, c).items():
            rows.append({"emotion": e if len(corpora) == 1 else f"{c}/{e}", "corpus": c, **m})
    return rows


def _qualitative_indices(n: int, k: int) -> set[int]:
    if n == 0 or k == 0:
        return set()
    return set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist())


def identity_images(landmarks_dir: Path, clip_ids: set[str]) -> dict[str, np.ndarray]:
    """clip_id -> the identity frame's crop (RGB uint8), from the landmark shards."""
    import cv2
    out: dict[str, np.ndarray] = {}
    for shard in sorted(landmarks_dir.glob("shard-*.parquet")):
        t = pq.read_table(shard, columns=["clip_id", "identity_jpeg"],
                          filters=[("clip_id", "in", sorted(clip_ids))])
        for cid, jpg in zip(t.column("clip_id").to_pylist(), t.column("identity_jpeg").to_pylist()):
            img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR) if jpg else None
            if img is not None:
                out[cid] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return out


def plot_qualitative(path: Path, test: WindowDataset, preds: dict[int, np.ndarray],
                     landmarks_dir: Path, n_frames: int) -> None:
    """Reference (red, as in the paper's Fig. 4) vs predicted (cyan) over the identity image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(preds)
    a = test.arrays()
    try:
        images = identity_images(landmarks_dir, {test.clip_ids[i] for i in rows})
    except Exception as e:  # the plot is a picture, not a metric: say why and draw without
        print(f"[evaluate] identity images unavailable ({e}); drawing on grey", file=sys.stderr)
        images = {}
    T = a["landmarks"].shape[1] if len(test) else 30
    frames = np.linspace(0, T - 1, n_frames).round().astype(int)
    fig, axes = plt.subplots(max(len(rows), 1), n_frames, squeeze=False,
                             figsize=(2.2 * n_frames, 2.3 * max(len(rows), 1)))
    for r, i in enumerate(rows):
        img = images.get(test.clip_ids[i])
        ref = np.asarray(a["landmarks"][i])
        for c, t in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(img if img is not None else np.full((256, 256, 3), 200, np.uint8))
            ax.scatter(ref[t, :, 0], ref[t, :, 1], s=3, c="red", label="reference")
            ax.scatter(preds[i][t, :, 0], preds[i][t, :, 1], s=3, c="cyan", label="predicted")
            ax.set_xticks([]); ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(test.clip_ids[i].split(":", 1)[-1][:28], fontsize=6)
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no test windows", ha="center")
    else:
        axes[0, 0].legend(loc="lower left", fontsize=5, markerscale=2)
    fig.suptitle("red: reference landmarks, cyan: predicted (over the clip's identity frame)",
                 fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
