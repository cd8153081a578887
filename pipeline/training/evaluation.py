"""Evaluate a trained checkpoint on one test set, beside baselines and controls, per corpus
and emotion.

Systems, all on the same test windows (`SYSTEMS`):
  - model:       the checkpoint.
  - audio_swap:  the same model and windows, each window's audio (log-mel and wav2vec2)
                 replaced by that of a window of another clip (`swap_partners`, seeded by
                 evaluate.swap_seed). The gap to `model` is how much of the score comes from
                 the speech. A control of ours, not in the paper.
  - identity:    the identity landmarks held still for all 30 frames (LVD = the reference's
                 own mean speed, since the prediction does not move).
  - mean_motion: identity + the mean offset trajectory of the checkpoint's training windows,
                 mean_n(landmarks_n[t] - identity_n), stored in the checkpoint by the train
                 stage: what a model that ignores the audio but knows the average motion would
                 predict. Evaluation never reads training windows.
References: the landmark detector's tracks (`target`, every corpus) and, where the corpus has
it (demo), the generator's clean ground truth; against the latter the detector itself is a
fifth system (`detector`: the floor no model trained on its tracks can be expected to beat).

Metrics: kfusion.pipeline.training.metrics (Eq. 13-15 in crop px and mouth_r, per window, then
averaged over windows). `metrics.definition: reference | both` adds the authors' numbers,
labelled. Outputs (`EvalOutputs`): one compact JSON per system (the DVC metrics), a report with
every breakdown, per-clip values (for the ablations' confidence intervals) and provenance,
and the plots.
"""
from __future__ import annotations


import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from kfusion.config import Config, model_switches, paper_differences
from kfusion.device import resolve_device
from kfusion.pipeline.io import atomic_path, progress, write_json
from kfusion.pipeline.training import augment
from kfusion.pipeline.training.bootstrap import clip_means
from kfusion.pipeline.training.checkpoint import Trained, check_encoder, load_trained
from kfusion.pipeline.training.dataset import (WindowDataset, check_finite_inputs, encoder_info,
                                               model_inputs)
from kfusion.pipeline.training.metrics import (METRIC_NAMES, MOUTH_R, TABLE_NAMES, MetricTable,
                                               ReferenceAccumulator)
from kfusion.shapes import EMOTIONS

SYSTEMS = ("model", "audio_swap", "identity", "mean_motion")
NOT_IN_PAPER = ("mouth_r (the correlation of predicted and reference inner-lip opening) and "
                "audio_swap (the model on another clip's audio) are controls of this project, "
                "not in the paper")


@dataclass(frozen=True)
class EvalOutputs:
    """Where one test set's evaluation goes."""
    metrics: Path         # the compact, declared DVC metrics (`compact_record`)
    report: Path          # every breakdown, per-clip values, provenance
    plots_dir: Path       # per_emotion.json, qualitative.png

    @classmethod
    def for_set(cls, cfg: Config, name: str) -> "EvalOutputs":
        """The DAG's: <evaluate.out>/<set>.json, <reports>/evaluate.json (a test set's config
        has its own reports folder), <evaluate.plots>/<set>/."""
        return cls(Path(cfg.evaluate.out) / f"{name}.json", Path(cfg.reports) / "evaluate.json",
                   Path(cfg.evaluate.plots) / name)

    @classmethod
    def under(cls, root: str | Path) -> "EvalOutputs":
        """Everything in one folder (`kfusion evaluate --out`)."""
        root = Path(root)
        return cls(root / "metrics.json", root / "report.json", root / "plots")


def swap_partners(clip_ids: list[str], seed: int) -> np.ndarray | None:
    """For each window, the row of a window of another clip whose audio it gets in the
    audio-swap control (seeded); None when the set has fewer than two clips."""
    clips = np.asarray(clip_ids)
    if len(set(clip_ids)) < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(clips))
    partners = np.empty(len(clips), np.int64)
    for k, i in enumerate(order):       # walk the shuffled order to the next other clip
        j = k + 1
        while clips[order[j % len(order)]] == clips[i]:
            j += 1
        partners[i] = order[j % len(order)]
    return partners


def _rows(idx: np.ndarray, values: list[str]) -> np.ndarray:
    return np.asarray([values[i] for i in idx])


@dataclass
class _Scores:
    """What one pass over the test windows accumulates."""
    vs_ref: dict[str, MetricTable]
    vs_gt: dict[str, MetricTable]
    ref_acc: dict[tuple[str, str], ReferenceAccumulator] = field(default_factory=dict)
    qual: dict[int, np.ndarray] = field(default_factory=dict)
    clf_correct: dict[str, list[int]] = field(default_factory=dict)


def _predictions(trained: Trained, test: WindowDataset, batch: dict, device: torch.device,
                 offset: torch.Tensor | None, partners: np.ndarray | None) -> dict[str, torch.Tensor]:
    """Every system's (B, T, 68, 2) prediction for one batch, in crop px."""
    identity, target = batch["identity"], batch["target"]
    preds = {"model": trained.model(model_inputs(batch, device)).float().cpu()}
    if partners is not None:
        a, j = test.arrays(), partners[batch["index"].numpy()]
        swapped = {**batch, "mel": torch.from_numpy(np.asarray(a["mel"][j], np.float32)),
                   "w2v": torch.from_numpy(np.asarray(a["w2v"][j], np.float32))}
        preds["audio_swap"] = trained.model(model_inputs(swapped, device)).float().cpu()
    preds["identity"] = identity[:, None].expand_as(target)
    if offset is not None:
        preds["mean_motion"] = identity[:, None] + offset
    return preds


def _score(cfg: Config, trained: Trained, test: WindowDataset, device: torch.device,
           offset: torch.Tensor | None, partners: np.ndarray | None) -> _Scores:
    """One pass over the test windows: every system against the references."""
    want_ref = cfg.metrics.definition in ("reference", "both")
    mcfg = trained.cfg.model
    sc = _Scores({s: MetricTable() for s in SYSTEMS}, {s: MetricTable() for s in (*SYSTEMS, "detector")})
    qual_idx = _qualitative_indices(len(test), cfg.evaluate.qualitative_windows)
    clf = trained.emotion_classifier
    loader = DataLoader(test, batch_size=cfg.evaluate.batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for step, batch in enumerate(progress(loader, desc="evaluate")):
            check_finite_inputs(batch, f"evaluation of {test.dir}, batch {step}")
            idx = batch["index"].numpy()
            groups = {"corpus": _rows(idx, test.corpora), "emotion": _rows(idx, test.emotions),
                      "clip": _rows(idx, test.clip_ids)}
            target, gt = batch["target"], batch["gt_landmarks"]
            preds = _predictions(trained, test, batch, device, offset, partners)
            for s, p in preds.items():
                sc.vs_ref[s].add(p, target, **groups)
                sc.vs_gt[s].add(p, gt, **groups)
                for c in sorted(set(groups["corpus"])) if want_ref else ():
                    sel = torch.from_numpy(groups["corpus"] == c)   # a batch never mixes corpora
                    sc.ref_acc.setdefault((s, c), ReferenceAccumulator(
                        cfg.metrics.reference_batch_size, mcfg.coord_low_px,
                        mcfg.coord_high_px)).add(p[sel], target[sel])
            sc.vs_gt["detector"].add(target, gt, **groups)
            sc.qual.update({int(i): preds["model"][j].numpy() for j, i in enumerate(idx)
                            if int(i) in qual_idx})
            if clf is not None:
                hit = (clf.predict(batch["mel"], batch["w2v"]) == batch["emotion"]).long().tolist()
                for c, h in zip(groups["corpus"], hit):
                    sc.clf_correct.setdefault(str(c), []).append(h)
    return sc


def evaluate(cfg: Config, windows_dir: str | Path, checkpoint: str | Path, *,
             outputs: EvalOutputs, set_name: str = "test", landmarks_dir: str | Path | None = None,
             build_model: Callable[[Config, dict], torch.nn.Module] | None = None) -> dict[str, Any]:
    """Evaluate `checkpoint` on windows_dir/test; write the compact metrics, the report and
    the plots (`outputs`); return the report."""
    device = resolve_device(cfg.device)
    trained = load_trained(checkpoint, device, build_model)
    test = WindowDataset(Path(windows_dir) / "test")
    if len(test) == 0:
        raise FileNotFoundError(f"{Path(windows_dir) / 'test'}: no test windows to evaluate")
    check_encoder(trained.state, trained.path, encoder_info(test),
                  f"the test windows' features ({test.dir}) come from")
    mm = trained.state.get("mean_motion")
    offset = torch.as_tensor(mm).float() if mm is not None else None     # (T, 68, 2)
    partners = swap_partners(test.clip_ids, cfg.evaluate.swap_seed)
    sc = _score(cfg, trained, test, device, offset, partners)
    report = _report(cfg, trained, test, sc, set_name)
    write_json(outputs.report, report)
    write_json(outputs.metrics, compact_record(report))
    write_json(outputs.plots_dir / "per_emotion.json", per_emotion_rows(sc.vs_ref["model"]))
    plot_qualitative(outputs.plots_dir / "qualitative.png", test, sc.qual,
                     Path(landmarks_dir or cfg.landmarks.out), cfg.evaluate.qualitative_frames)
    return report


def compact_record(report: dict[str, Any]) -> dict[str, Any]:
    """A test set's DVC metrics, narrow enough for `dvc metrics show` and `dvc exp show`: the
    model's four metrics, mouth_r, the audio-swap control's M-LD (`swap_M-LD`) and the window
    count as numbers; every system's numbers and the provenance (`key: value` lines) as lists,
    which DVC's tables skip, so the record is complete and the tables stay narrow."""
    systems, rec = report["systems"], {}
    rec.update({k: v for k, v in systems["model"].items() if k != "windows" and v is not None})
    if "audio_swap" in systems:
        rec["swap_M-LD"] = systems["audio_swap"]["M-LD"]
    rec["windows"] = systems["model"]["windows"]
    rec["systems"] = [{"system": s, **{k: v for k, v in m.items() if v is not None}}
                      for s, m in systems.items()]
    rec["provenance"] = [f"{k}: {v}" for k, v in report["provenance"].items()]
    return rec


def provenance(cfg: Config, trained: Trained, test: WindowDataset, set_name: str) -> dict[str, Any]:
    """How the numbers were made: checkpoint, encoder, training, data, departures from the paper."""
    tcfg, enc = trained.cfg, encoder_info(test)
    return {"set": set_name, "corpora": sorted(set(test.corpora)),
            **{k: enc[k] for k in ("encoder", "encoder_version", "encoder_sha256",
                                   "encoder_fallback", "feature_dim")},
            "checkpoint": str(trained.path), "checkpoint_sha256": trained.sha256,
            "seed": tcfg.seed, "epochs": tcfg.train.epochs,
            # which random stream drew the dropout masks (records written before this field
            # existed were all `torch`): two streams' weights differ as two seeds' do
            "dropout_rng": tcfg.train.dropout_rng,
            "augment": augment.settings_on(tcfg.train.augment, tcfg.features.audio_augment),   # what it was trained with, if any
            "best_epoch": trained.state.get("epoch"), "preset": tcfg.preset,
            **model_switches(tcfg.model),   # fusion, ablation switches, inputs, target
            "differs_from_paper": paper_differences(tcfg),
            "identity": test.meta.get("identity"), "split_by": test.meta.get("split_by"),
            "definition": cfg.metrics.definition}


def _report(cfg: Config, trained: Trained, test: WindowDataset, sc: _Scores,
            set_name: str) -> dict[str, Any]:
    prov = provenance(cfg, trained, test, set_name)
    present = [s for s in SYSTEMS if sc.vs_ref[s].count]
    out: dict[str, Any] = {
        "units": "pixels of the 256x256 crop (paper Eq. 13-15); per window, then mean over "
                 "windows; mouth_r: Pearson r per window, then mean",
        "not_in_paper": NOT_IN_PAPER, "provenance": prov,
        "systems": {s: sc.vs_ref[s].summary() for s in present},
        "corpora": {c: _corpus_block(cfg, sc, c, present) for c in sorted(set(test.corpora))},
        "per_clip": _per_clip(sc, present),
    }
    hits = [h for v in sc.clf_correct.values() for h in v]
    if hits:
        out["emotion_classifier"] = {"test_accuracy": float(np.mean(hits)), "test_windows": len(hits),
                                     "chance": 1.0 / len(EMOTIONS)}
    return out


def _corpus_block(cfg: Config, sc: _Scores, corpus: str, present: list[str]) -> dict[str, Any]:
    block: dict[str, Any] = {"vs_reference": {s: sc.vs_ref[s].by("corpus").get(corpus, {})
                                              for s in present}}
    gt = {s: sc.vs_gt[s].by("corpus").get(corpus) for s in sc.vs_gt}
    if any(gt.values()):
        block["vs_ground_truth"] = {s: v for s, v in gt.items() if v}
    block["per_emotion"] = _per_emotion(sc.vs_ref["model"], corpus)
    if cfg.metrics.definition in ("reference", "both"):
        block["reference_definition"] = {
            "label": "the authors' code (metrix/LM.py): batch Frobenius norm in min-max scaled "
                     "units over fixed batches of one corpus (last partial batch dropped); "
                     "'LVD' is within-frame differences to the first listed landmark (mouth in "
                     "their order 49..67, 48); NOT Eq. 13-15",
            "batch_size": cfg.metrics.reference_batch_size,
            **{s: sc.ref_acc[(s, corpus)].summary() for s in present if (s, corpus) in sc.ref_acc}}
    if corpus in sc.clf_correct:
        block["emotion_classifier_accuracy"] = float(np.mean(sc.clf_correct[corpus]))
    return block


def _per_clip(sc: _Scores, present: list[str]) -> dict[str, Any]:
    """Each clip's mean of each metric per system: what the ablations' paired bootstrap
    resamples. Columnar: clip_ids, then system -> metric -> values in that order."""
    out: dict[str, Any] = {}
    for s in present:
        vals, grps = sc.vs_ref[s].per_window()
        per = {k: clip_means(vals[k], grps["clip"]) for k in TABLE_NAMES}
        if "clip_ids" not in out:
            out["clip_ids"] = sorted(per["F-LD"])
        out[s] = {k: [per[k].get(c) for c in out["clip_ids"]] for k in TABLE_NAMES}
    return out


def _per_emotion(table: MetricTable, corpus: str) -> dict[str, Any]:
    _, grps = table.per_window()
    sel_c = grps.get("corpus", np.zeros(0)) == corpus
    return {e: table.summary(sel_c & (grps["emotion"] == e))
            for e in EMOTIONS if (sel_c & (grps["emotion"] == e)).any()}


def per_emotion_rows(table: MetricTable) -> list[dict[str, Any]]:
    """Rows for DVC's bar plot: one per (corpus, emotion), the model vs reference landmarks."""
    vals, grps = table.per_window()
    if not len(vals["F-LD"]):
        return []
    corpora = sorted(set(grps["corpus"].tolist()))
    rows = []
    for c in corpora:
        for e, m in _per_emotion(table, c).items():
            rows.append({"emotion": e if len(corpora) == 1 else f"{c}/{e}", "corpus": c,
                         **{k: m[k] for k in ("windows", *METRIC_NAMES)}, MOUTH_R: m[MOUTH_R]})
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


def summary_line(report: dict[str, Any]) -> str:
    """One line: windows, then M-LD / M-LVD / mouth_r of each system, and the encoder."""
    systems = report["systems"]
    n = next(iter(systems.values()))["windows"] if systems else 0
    parts = []
    for s, m in systems.items():
        r = m.get(MOUTH_R)
        parts.append(f"{s} {m['M-LD']:.3f}/{m['M-LVD']:.3f}" + (f"/r {r:.2f}" if r is not None else ""))
    p = report["provenance"]
    return (f"{n} windows; M-LD/M-LVD px: " + ", ".join(parts)
            + f" (encoder {p['encoder']}, fallback {p['encoder_fallback']})")
