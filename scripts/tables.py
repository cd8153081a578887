"""Every results table in README.md and docs/*.md, generated from the committed JSON files.

    python scripts/tables.py            # rewrite every table in place
    python scripts/tables.py --check    # exit 1 naming each table that differs from its JSON
    python scripts/tables.py --list     # each table: the document it sits in, the files it reads

A table sits in a document between two markers, and everything between them is this script's:

    <!-- table: demo-ablations -->
    ...
    <!-- /table -->

Its spec is a `Table` in TABLES below: which JSON files, which fields, which rows and columns,
which number format. A cell reads the file named by its column, else its row, else its table
(a glob: several matching files, e.g. one per seed, give "mean ± sd"), at the dotted key
`row.key + "." + col.key` (list items by index; an `absolute` column reads its key from the
file's top level, e.g. the machine block of a bench's JSON). A row key ending in `*` becomes one row per
entry of that object or list. A file that is absent is not an error: its cells say
"not measured yet" with the command that writes the file (RUN below), so a fresh clone or a
benchmark nobody has run yet still gets a truthful table. To add a table: add a `Table` to
TABLES, put the two markers where it belongs, run this script.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/*.md", "bench/README.md")
MARKER = re.compile(r"<!-- table: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)
METRICS = ("M-LD", "M-LVD", "F-LD", "F-LVD")   # paper Eq. 13-15, crop px, lower is better


@dataclass(frozen=True)
class Col:
    header: str
    key: str = ""      # dotted key inside the row's record
    file: str = ""     # source file (glob) for this column, when it is not the row's or table's
    fmt: str = ""      # str.format template for this column's numbers
    best: str = ""     # "min", "max" or "none": overrides the table's for this column
    absolute: bool = False   # key read from the file's top level, not under the row's key


@dataclass(frozen=True)
class Row:
    label: str         # may use {key} (the expanded key of a `*` row) and the record's fields
    key: str = ""
    file: str = ""
    fmt: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Col, ...]
    rows: tuple[Row, ...]
    file: str = ""
    fmt: str = "{:.3f}"
    label: str = ""    # header of the label column
    best: str = ""     # "min" or "max": bold the best value of each numeric column


# ---- table specs --------------------------------------------------------------------------

def metric_columns() -> tuple[Col, ...]:
    return tuple(Col(m, m) for m in METRICS)


# (row label, folder under metrics/ablations/<corpus>/ written by scripts/ablations.py)
ABLATIONS = (("w/o KFusion (`model.fusion=none`)", "wo-kfusion"),
             ("w/o LSTM (`model.lstm=false`)", "wo-lstm"),
             ("w/o Global (`model.global_domain=false`)", "wo-global"),
             ("repl MLP (`model.fusion=mlp`)", "repl-mlp"),
             ("paper-exact (`preset=paper`)", "paper"),
             ("**Proposed (ours)** (defaults)", "proposed"))
BASELINES = (("baseline: identity landmarks held still", "identity"),
             ("baseline: mean motion (identity + mean training trajectory)", "mean_motion"))


def ablation_table(name: str, corpus: str, test_set: str = "test") -> Table:
    """The paper's Table 2 from scripts/ablations.py's summary: mean ± sd over seeds, the
    controls, and Proposed - row with its paired bootstrap 95% interval (* = excludes 0)."""
    rows = [Row(label, f"rows.{slug}.{test_set}") for label, slug in (*ABLATIONS, *BASELINES)]
    cols = (*(Col(m, f"model.{m}") for m in METRICS), Col("mouth r", "model.mouth_r", best="max"),
            Col("audio-swap M-LD", "audio_swap.M-LD", best="none"),
            Col("Proposed - row, M-LD [95% CI]", "proposed_minus_row.M-LD", best="none"))
    return Table(name, cols, tuple(rows), file=f"metrics/ablations/{corpus}/summary.json",
                 label="Method", best="min")


def switches_table(name: str, corpus: str) -> Table:
    """Per ablation row, the keys where its config differs from the paper (config.PAPER)."""
    return Table(name, (Col("switches that differ from the paper", "differs_from_paper"),),
                 tuple(Row(label, f"rows.{slug}.test") for label, slug in ABLATIONS),
                 file=f"metrics/ablations/{corpus}/summary.json", label="Method")


def identity_table(name: str, corpus: str, sets: tuple[str, ...] = ("test",)) -> Table:
    """Proposed and the still-identity baseline with the identity from another clip (the
    default) and from the clip's own frame (`windows.identity=clip`, inside 1-6 of its own
    test windows): scripts/ablations.py's Proposed row in <corpus>/ and <corpus>-identity-clip/;
    M-LD and mouth r on each test set."""
    files = (("another clip of the speaker (`other_clip`, the default)", f"metrics/ablations/{corpus}/summary.json"),
             ("the clip's own frame (`windows.identity=clip`)",
              f"metrics/ablations/{corpus}-identity-clip/summary.json"))
    rows = [Row(f"{who}, identity from {src}", f"rows.{slug}", file)
            for who, slug in (("Proposed", "proposed"), ("baseline: identity held still", "identity"))
            for src, file in files]
    cols = tuple(c for st in sets for c in (
        *(Col(f"{st}: {m}" if len(sets) > 1 else m, f"{st}.model.{m}")
          for m in (METRICS if len(sets) == 1 else ("M-LD",))),
        Col(f"{st}: mouth r" if len(sets) > 1 else "mouth r", f"{st}.model.mouth_r", best="none")))
    return Table(name, cols, tuple(rows), label="mean ± sd over seeds")


# Training-time augmentation (train.augment, docs/training.md), one switch at a time and all
# together: (label, slug, the `-S` switches). Each variant is scripts/ablations.py's Proposed
# row in metrics/ablations/<corpus>-aug-<slug>/; "none" is the corpus's own Proposed row.
AUGMENTS = (("none (the default)", "", ()),
            ("mirror (`mirror_p=0.5`)", "mirror", ("train.augment.mirror_p=0.5",)),
            ("similarity (`similarity_p=0.5`)", "similarity", ("train.augment.similarity_p=0.5",)),
            ("time masks (`time_masks=2`)", "time-masks", ("train.augment.time_masks=2",)),
            ("channel masks (`channel_masks=2`)", "channel-masks", ("train.augment.channel_masks=2",)),
            ("all four", "all", ("train.augment.mirror_p=0.5", "train.augment.similarity_p=0.5",
                                 "train.augment.time_masks=2", "train.augment.channel_masks=2")),
            ("perturbed speech (`audio_p=0.5`: pitch ±2, noise 20 dB)", "speech",
             ("'features.audio_augment=[pitch+2,pitch-2,noise20]'", "train.augment.audio_p=0.5")))


def augment_folder(corpus: str, slug: str) -> str:
    return f"metrics/ablations/{corpus}-aug-{slug}" if slug else f"metrics/ablations/{corpus}"


def augment_table(name: str, corpus: str, sets: tuple[str, ...]) -> Table:
    """Proposed trained with each augmentation: M-LD and mouth r on each test set."""
    cols = tuple(c for s in sets for c in (Col(f"{s}: M-LD", f"{s}.model.M-LD"),
                                           Col(f"{s}: mouth r", f"{s}.model.mouth_r", best="max")))
    rows = tuple(Row(label, "rows.proposed", f"{augment_folder(corpus, slug)}/summary.json")
                 for label, slug, _ in AUGMENTS)
    return Table(name, cols, rows, label="Proposed, `train.augment`", best="min")


# The checkpoint evaluated (best.pt: the epoch of lowest validation loss) beside the last
# epoch's, per row, means over its seeds (scripts/checkpoint_selection.py).
SELECTION = "metrics/checkpoint_selection"


def selection_table(name: str) -> Table:
    cols = (Col("selected epochs", "selected_epochs", fmt="{}", best="none"),
            Col("best.pt: M-LD", "best.M-LD"), Col("best.pt: mouth r", "best.mouth_r", best="max"),
            Col("last.pt: M-LD", "last.M-LD"), Col("last.pt: mouth r", "last.mouth_r", best="max"))
    rows = (Row("augment: mirror", "rows.proposed", f"{SELECTION}/demo-aug-mirror.json"),
            Row("augment: all four", "rows.proposed", f"{SELECTION}/demo-aug-all.json"),
            *(Row(label, f"rows.{slug}", f"{SELECTION}/demo.json") for label, slug in ABLATIONS))
    return Table(name, cols, rows, label="demo, 20 epochs, mean over seeds", best="none")


def audio_copies_table(name: str) -> Table:
    """bench/audio_augment.py: each perturbed copy's cost and what it does to the speech."""
    cols = (Col("perturb, real-time factor", "perturb_real_time_factor", fmt="{:.4f}", best="none"),
            Col("Whisper word error rate", "whisper_word_error_rate", best="none"),
            Col("encoder cosine to clean", "encoder_cosine_to_clean", best="none"))
    return Table(name, cols, (Row("{key}", "copies.*"),), file="bench/results/audio_augment.json",
                 label="copy (24 GRID s1 clips)")


# The five defaults that made the model learn audio -> mouth (docs/model.md), turned on one
# step at a time: (label, file stem, the `-S` switches that give the step; None = the defaults).
BEFORE = {"model.local_attention_s": "0", "model.mel_norm": "none", "model.token_to_frame": "conv",
          "model.head_init_scale": "1", "train.velocity_weight": "0"}
FIX_STEPS = (
    ("before the fix", "before", BEFORE),
    ("+ `mel_norm: window`", "mel_norm",
     {k: v for k, v in BEFORE.items() if k != "model.mel_norm"}),
    ("+ `local_attention_s: 0.02`", "local_attention",
     {k: BEFORE[k] for k in ("model.token_to_frame", "model.head_init_scale", "train.velocity_weight")}),
    ("+ `token_to_frame: interpolate` (aligned gate)", "interpolate",
     {k: BEFORE[k] for k in ("model.head_init_scale", "train.velocity_weight")}),
    ("+ `head_init_scale: 0.01`, `velocity_weight: 0.3`: **the defaults**", None, None),
)


def fix_table(name: str, key: str, label: str) -> Table:
    """Baselines and the fix's steps on the demo test split; `key` picks the reference."""
    rows = [Row(text, f"{key}.{b}") for text, b in BASELINES]
    rows += [Row(text, f"{key}.model", f"metrics/fix/{stem}.json" if stem else "")
             for text, stem, _ in FIX_STEPS]
    cols = (*metric_columns(), Col("mouth r", "mouth_r", best="max")) if key == "systems" \
        else metric_columns()   # mouth r: against the detector's landmarks only
    return Table(name, cols, tuple(rows), file="reports/evaluate.json", label=label, best="min")


def field_table(name: str, file: str, rows: tuple[tuple[str, str, str], ...],
                header: str = "value") -> Table:
    """One column of figures from one file: rows of (label, key, format)."""
    return Table(name, (Col(header),), tuple(Row(label, key, fmt=fmt) for label, key, fmt in rows),
                 file=file, label="what")


# Which command writes a file that a table reads (first match wins; {stem} = the file's stem;
# a file no pattern matches is written by `dvc repro`).
# every GRID row: its data, the torch dropout stream its first rows were trained with, and the
# two extra test sets (the CREMA-D-layout fixture written by scripts/cremad_fixture.py)
GRID_SETS = ("-S 'index.corpora=[grid]' -S index.roots.grid=../shared/grid -S split.by=clip "
             "-S train.dropout_rng=torch "
             "-S '+evaluate.sets.unseen={{corpus: folder, root: ../shared/unseen}}' "
             "-S '+evaluate.sets.cremad={{corpus: cremad, root: ../cremad-fixture}}'")
CREMAD_FIXTURE = "python scripts/cremad_fixture.py ../cremad-fixture && "
RUN: tuple[tuple[str, str], ...] = (
    *((f"{augment_folder(corpus, slug)}/*",
       (CREMAD_FIXTURE if corpus == "grid" else "")
       + f"python scripts/ablations.py --corpus {corpus}-aug-{slug} --rows proposed "
       + " ".join(f"-S {a}" for a in sets) + (f" {GRID_SETS}" if corpus == "grid" else ""))
      for corpus in ("demo", "grid") for _, slug, sets in AUGMENTS if slug),
    ("metrics/ablations/grid/*", f"{CREMAD_FIXTURE}python scripts/ablations.py --corpus grid {GRID_SETS}"),
    ("metrics/ablations/grid-ppg/*",
     f"{CREMAD_FIXTURE}python scripts/ablations.py --corpus grid-ppg --rows proposed -S features.encoder=ppg {GRID_SETS}"),
    ("metrics/ablations/grid-random/*",
     f"{CREMAD_FIXTURE}python scripts/ablations.py --corpus grid-random --rows proposed -S features.encoder=random {GRID_SETS}"),
    ("metrics/ablations/grid-identity-clip/*",
     f"{CREMAD_FIXTURE}python scripts/ablations.py --corpus grid-identity-clip --rows proposed -S windows.identity=clip {GRID_SETS}"),
    ("metrics/ablations/demo-identity-clip/*",
     "python scripts/ablations.py --corpus demo-identity-clip --rows proposed -S windows.identity=clip"),
    ("metrics/ablations/demo/*", "python scripts/ablations.py"),
    ("metrics/ablations/demo-random/*",
     "python scripts/ablations.py --corpus demo-random --rows proposed -S features.encoder=random"),
    (f"{SELECTION}/*", "python scripts/checkpoint_selection.py --corpus {stem} (where the DVC "
                       "cache of the runs behind metrics/ablations/{stem} is)"),
    *((f"metrics/fix/{stem}.json",
       "dvc exp run " + " ".join(f"-S {k}={v}" for k, v in sets.items())
       + f" && mkdir -p metrics/fix && cp reports/evaluate.json metrics/fix/{stem}.json")
      for _, stem, sets in FIX_STEPS if stem),
    ("bench/results/landmarks_grid.json",
     "python bench/landmarks.py --corpus grid --out bench/results/landmarks_grid.json"),
    ("bench/results/landmarks.json", "python bench/landmarks.py --corpus demo"),
    ("bench/results/audio_augment.json", "python bench/audio_augment.py"),
    ("bench/results/repro_torch.json",
     "python bench/repro.py -S train.dropout_rng=torch --out bench/results/repro_torch.json"),
    ("bench/results/demo_detector.json", "python bench/demo_detector.py --stride 2"),
    ("bench/results/features_tiny.json", "python bench/features.py --tiny --sizes 30 250"),
    ("bench/results/mutation.json", "python scripts/mutation.py --label before"),
    ("bench/results/*.json", "python bench/{stem}.py"),
)


COUNT, SECONDS, PX, SHARE = "{:,}", "{:.1f}", "{:.3f}", "{:.1%}"
STAGES = ("demo", "index", "landmarks", "audio", "features", "windows")

# bench/README.md: each bench's headline figures, with the machine they were measured on.
# (label, results file stem, key, format); the targets are issue 16's.
BENCH_FIGURES = (
    ("landmarks stage, demo, frames/s", "landmarks", "throughput.stage_fps", "{:.0f}"),
    ("landmarks stage / dlib predictor-only bound (target >= 80%)", "landmarks",
     "throughput.share_of_bound", "{:.0%}"),
    ("predict, 10 s of speech, real-time factor without loading (target <= 0.05)", "predict",
     "lengths.10s.rtf", "{:.3f}"),
    ("predict, 60 s of speech, real-time factor without loading (target <= 0.05)", "predict",
     "lengths.60s.rtf", "{:.3f}"),
    ("predict, loading, s (target < 2)", "predict", "load_s", "{:.1f}"),
    ("`dvc repro` of the demo in a fresh clone, s (target <= 180)", "repro", "total_s", "{:.0f}"),
    ("... its train stage, s", "repro", "stages.train.seconds", "{:.0f}"),
    ("predict on silence, largest gap between the mouth opening and the photo's, with the gate, px", "silence",
     "max_silence_excess_px.still", "{:.2f}"),
    ("training, windows/s, batch 32, 2 threads, default params (target >= 200)", "train",
     "by_threads.2.epochs.pcg64.windows_per_s", "{:.0f}"),
    ("training, same, `train.dropout_rng: torch` (torch's own dropout draws)", "train",
     "by_threads.2.epochs.torch.windows_per_s", "{:.0f}"),
    ("training, windows/s, batch 32, 1 thread (`dvc repro`'s), default params", "train",
     "by_threads.1.epochs.pcg64.windows_per_s", "{:.0f}"),
    ("`dvc repro` of the demo with `train.dropout_rng: torch`, s", "repro_torch", "total_s", "{:.0f}"),
    ("KAN head / matched MLP, forward + backward, [68, 512, 68], 1 thread", "kan",
     "runs.0.ratios_of_median.kan_over_mlp_matched", "{:.2f}x"),
    ("Cox-de Boor KAN / ours, same", "kan", "runs.0.ratios_of_median.cox_de_boor_over_kan",
     "{:.2f}x"),
    ("{encoder}, real-time factor, {threads} thread(s), 60 s as 3 s clips", "encoders",
     "runs.4.rtf", "{:.3f}"),
    ("features stage, x real time, 24 GRID clips (default encoder)", "features",
     "sizes.1.stage.real_time_factor", "{:.1f}x"),
    ("features stage, peak RSS growth 6 -> 24 clips, MB", "features", "stage_rss_growth_mb",
     "{:+.0f}"),
    ("dlib on the demo faces: median error vs the generator, crop px", "demo_detector",
     "overall.median_error_px", "{:.2f}"),
    ("Whisper tiny.en frames late by, net of the log-mel, ms", "encoder_offsets",
     "features.whisper.net_of_log_mel_ms", "{:+.1f}"),
    ("faults corpus: exactly the corrupted clips rejected", "faults_corpus",
     "exactly_the_corrupted_rejected", "{}"),
    ("scale: landmarks, local executor, clips/s at 16x", "scale",
     "summary.landmarks.local_clips_per_s.16", "{:.2f}"),
    ("scale: Ray's fixed overhead, landmarks, s", "scale",
     "summary.landmarks.ray_fixed_overhead_s", "{:.1f}"),
    ("audio augmentation, `pitch+2` copy, real-time factor of the perturbation", "audio_augment",
     "copies.pitch+2.perturb_real_time_factor", "{:.4f}"),
    ("... Whisper tiny.en word error rate on GRID, `pitch+2` copy", "audio_augment",
     "copies.pitch+2.whisper_word_error_rate", "{:.3f}"),
)

TABLES: tuple[Table, ...] = (
    # ---- README.md: Results
    Table("stage-counts", (Col("clips processed", "processed", fmt=COUNT),
                           Col("rejected", "rejected", fmt=COUNT)),
          tuple(Row(f"`{s}`", file=f"reports/{s}.json") for s in STAGES), label="stage"),
    Table("demo-split", (Col("train", "train"), Col("val", "val"), Col("test", "test")),
          (Row("clips", "clips_per_split", "reports/index.json"),
           Row("windows (1 s, stride `windows.stride_frames`)", "windows_per_split",
               "reports/windows.json")), fmt=COUNT, label="split"),
    ablation_table("demo-ablations", "demo"),
    switches_table("demo-ablation-switches", "demo"),
    identity_table("demo-identity", "demo"),
    augment_table("demo-augment", "demo", ("test",)),
    selection_table("demo-checkpoint-selection"),
    audio_copies_table("audio-augment-copies"),
    Table("demo-groundtruth", metric_columns(),
          tuple(Row(label, f"corpora.demo.vs_ground_truth.{k}") for label, k in (
              ("Proposed", "model"), ("control: the model on another clip's audio", "audio_swap"),
              ("baseline: identity held still", "identity"),
              ("baseline: mean motion", "mean_motion"),
              ("the landmark detector (the floor for a model trained on its tracks)",
               "detector"))),
          file="reports/evaluate.json", label="vs the generator's ground truth"),
    field_table("emotion-head", "reports/evaluate.json", (
        ("test accuracy of the audio -> emotion head", "emotion_classifier.test_accuracy", SHARE),
        ("chance (1 of 8 emotions)", "emotion_classifier.chance", SHARE),
        ("test windows", "emotion_classifier.test_windows", COUNT))),
    ablation_table("grid-ablations", "grid"),
    Table("demo-encoders",
          (Col("M-LD", "test.model.M-LD"), Col("M-LVD", "test.model.M-LVD"),
           Col("mouth r", "test.model.mouth_r", best="max"),
           Col("audio-swap M-LD", "test.audio_swap.M-LD", best="none")),
          (Row("Whisper tiny.en (the default here)", "rows.proposed",
               "metrics/ablations/demo/summary.json"),
           Row("wav2vec2-base with random weights (`features.encoder=random`, the control)",
               "rows.proposed", "metrics/ablations/demo-random/summary.json")),
          label="Proposed on the demo, content encoder", best="min"),
    Table("grid-encoders",
          (Col("M-LD", "test.model.M-LD"), Col("M-LVD", "test.model.M-LVD"),
           Col("mouth r", "test.model.mouth_r", best="max"),
           Col("audio-swap M-LD", "test.audio_swap.M-LD", best="none"),
           Col("unseen speakers: M-LD", "unseen.model.M-LD"),
           Col("unseen: mouth r", "unseen.model.mouth_r", best="max")),
          (Row("Whisper tiny.en (the default here)", "rows.proposed",
               "metrics/ablations/grid/summary.json"),
           Row("hama phoneme posteriorgram (`features.encoder=ppg`)", "rows.proposed",
               "metrics/ablations/grid-ppg/summary.json"),
           Row("wav2vec2-base with random weights (`features.encoder=random`, the control)",
               "rows.proposed", "metrics/ablations/grid-random/summary.json")),
          label="Proposed on GRID s1, content encoder", best="min"),
    ablation_table("grid-unseen", "grid", "unseen"),
    ablation_table("grid-cremad", "grid", "cremad"),
    augment_table("grid-augment", "grid", ("test", "unseen")),
    identity_table("grid-identity", "grid", ("test", "unseen")),

    # ---- docs/demo.md
    field_table("demo-figures", "reports/demo.json", (
        ("clips", "clips", COUNT), ("speakers", "speakers", COUNT),
        ("emotions", "emotions", COUNT), ("levels", "levels", COUNT),
        ("frames", "frames", COUNT),
        ("total duration, s", "duration_s.total", SECONDS),
        ("clip duration, s: min", "duration_s.min", "{:.2f}"),
        ("clip duration, s: mean", "duration_s.mean", "{:.2f}"),
        ("clip duration, s: max", "duration_s.max", "{:.2f}"),
        ("clips whose decoded frame count = n_frames", "decode.frames_match", COUNT),
        ("video codec", "decode.video_codecs", "{}"), ("frame rate, fps", "decode.fps", "{:g}"),
        ("audio codec", "decode.audio_codecs", "{}"),
        ("audio sample rate, Hz", "decode.sample_rates_hz", "{}"),
        ("largest abs(audio - video duration), s", "decode.max_av_duration_diff_s", PX),
        ("energy vs mouth opening: pooled r at lag 0", "sync.corr_lag0", PX),
        ("energy vs mouth opening: pooled r at its peak", "sync.corr_peak", PX),
        ("lag of that peak, frames (positive: the mouth leads)", "sync.peak_lag_frames", "{}"),
        ("lag of that peak, sub-frame", "sync.peak_lag_frames_subframe", PX),
        ("visual lead built in (`visual_lead_ms`), frames", "sync.visual_lead_frames", "{:.2f}"),
        ("per-clip median r at the peak lag", "sync.per_clip_corr_at_peak_median", PX),
        ("p/b/m closure events", "lip_closure.bilabial_events", COUNT),
        ("largest inner-lip gap at a closure, px", "lip_closure.max_gap_px", PX),
        ("median peak mouth opening, px", "lip_closure.median_peak_opening_px", "{:.2f}"))),
    Table("demo-detector", (Col("frames", "frames", fmt=COUNT),
                            Col("found", "detection_rate", fmt="{:.2%}"),
                            Col("mean px", "mean_error_px"), Col("median px", "median_error_px"),
                            Col("p95 px", "p95_error_px"), Col("still px", "still_baseline_px")),
          (Row("all", "overall"), Row("{key}", "per_emotion.*"), Row("{key}", "per_speaker.*")),
          file="bench/results/demo_detector.json", label="group"),

    # ---- docs/landmarks.md
    Table("landmarks-bench", (Col("demo corpus", file="bench/results/landmarks.json"),
                              Col("GRID s1", file="bench/results/landmarks_grid.json")),
          tuple(Row(label, key, fmt=fmt) for label, key, fmt in (
              ("clips", "clips", COUNT), ("workers", "workers", COUNT),
              ("repeats (medians over them)", "repeats", COUNT),
              ("frames", "throughput.frames", COUNT),
              ("stage, frames/s", "throughput.stage_fps", "{:.0f}"),
              ("naive per-frame HOG detect + predict, frames/s", "throughput.naive_fps", "{:.0f}"),
              ("stage / naive", "throughput.speedup_vs_naive", "{:.1f}x"),
              ("predictor alone on the stage's frames and boxes (the bound), frames/s",
               "throughput.predictor_bound_fps", "{:.0f}"),
              ("predictor calls per frame", "throughput.predicts_per_frame", "{:.3f}"),
              ("stage / bound, wall clock", "throughput.share_of_bound", "{:.0%}"),
              ("target: stage >= 80% of the bound", "throughput.target_met", "{}"),
              ("CPU ms per frame: stage (incl. any ffmpeg)", "throughput.cpu_ms_per_frame.stage",
               "{:.2f}"),
              ("CPU ms per frame: predictor alone", "throughput.cpu_ms_per_frame.bound", "{:.2f}"),
              ("share of the bound by CPU time", "throughput.cpu_share_of_bound", "{:.0%}"),
              ("frames with a face", "throughput.face_frame_share", SHARE),
              ("still-point jitter, crop px: stage", "jitter_px.stage", PX),
              ("still-point jitter, crop px: naive", "jitter_px.naive_per_frame", PX),
              ("error vs the generator's landmarks, crop px: stage",
               "groundtruth_error_px.stage", PX),
              ("error vs the generator's landmarks, crop px: naive",
               "groundtruth_error_px.naive_per_frame", PX))),
          label="`bench/landmarks.py`"),
    field_table("landmarks-mead", "bench/results/landmarks.json", (
        ("frames", "mead_1080p.frames", COUNT),
        ("copies of the clip (one per worker)", "mead_1080p.copies", COUNT),
        ("stage, frames/s", "mead_1080p.stage_fps", "{:.0f}"),
        ("predictor alone on the stage's frames and boxes (the bound), frames/s",
         "mead_1080p.predictor_bound_fps", "{:.0f}"),
        ("stage / bound, wall clock", "mead_1080p.share_of_bound", "{:.0%}"),
        ("CPU ms per frame: stage (incl. any ffmpeg)", "mead_1080p.cpu_ms_per_frame.stage", "{:.2f}"),
        ("CPU ms per frame: predictor alone", "mead_1080p.cpu_ms_per_frame.bound", "{:.2f}"),
        ("naive full-resolution per-frame loop, frames/s", "mead_1080p.naive_fps", "{:.1f}"),
        ("stage / naive", "mead_1080p.speedup", "{:.1f}x"),
        ("frames with a face", "mead_1080p.face_frame_share", SHARE))),
    *(Table(name, tuple(c for f, corpus in files for c in (
        Col(f"{corpus}: CPU ms/frame", "cpu_ms_per_frame", file=f, fmt="{:.3f}"),
        Col(f"{corpus}: share", "share", file=f, fmt="{:.0%}"))),
        (Row("{key}", f"{prefix}.parts.*"), Row("**all**", prefix, fmt="{:.3f}")),
        label="part of the stage (one process)")
      for name, prefix, files in (
          ("landmarks-profile", "profile", (("bench/results/landmarks.json", "demo corpus"),
                                            ("bench/results/landmarks_grid.json", "GRID s1"))),
          ("landmarks-profile-mead", "mead_1080p.profile",
           (("bench/results/landmarks.json", "MEAD 1080p"),)))),
    field_table("landmarks-stage", "reports/landmarks.json", (
        ("clips", "clips", COUNT), ("rejected", "rejected", COUNT), ("frames", "frames", COUNT),
        ("frames with a face", "face_frame_share", SHARE),
        ("detector runs per frame", "detections_per_frame", PX),
        ("workers", "workers", COUNT), ("backend / detector", "backend", "{}"),
        ("still-point jitter, crop px", "jitter_px", PX),
        ("error vs the generator's landmarks, crop px", "groundtruth.mean_px", PX),
        ("  {key}", "groundtruth.per_emotion_px.*", PX))),

    # ---- docs/data.md
    *(Table(name, (Col("audio s", "audio_seconds", fmt=SECONDS),
                   Col("stage RTF", "stage.real_time_factor", fmt="{:.1f}x"),
                   Col("naive RTF", "naive.real_time_factor", fmt="{:.1f}x"),
                   Col("stage peak RSS MB", "stage.peak_rss_mb", fmt="{:,.0f}"),
                   Col("naive peak RSS MB", "naive.peak_rss_mb", fmt="{:,.0f}")),
            (Row("{clips} clips", "sizes.*"),), file=f"bench/results/{name.replace('-', '_')}.json",
            label="GRID clips") for name in ("features", "features-tiny")),

    # ---- docs/model.md
    fix_table("fix-reference", "systems", "vs the detector's landmarks"),
    fix_table("fix-groundtruth", "corpora.demo.vs_ground_truth", "vs the demo ground truth"),
    Table("kan-heads", (Col("median ms", "median_ms", fmt="{:.0f}"), Col("min ms", "min_ms", fmt="{:.0f}"),
                        Col("saved for backward MB", "memory_mb", fmt="{:.1f}"),
                        Col("params", "params", fmt=COUNT)),
          tuple(Row(f"{{threads}} thread(s): {label}", f"runs.{i}.heads.{key}")
                for i in (0, 1) for label, key in (
                    ("KAN (ours)", "kan"), ("matched MLP", "mlp_matched"),
                    ("Cox-de Boor KAN (efficient-kan style)", "kan_cox_de_boor"),
                    ("same-width MLP [68, 512, 68]", "mlp_same_width"))),
          file="bench/results/kan.json", label="head [68, 512, 68], forward + backward"),
    Table("kan-ratios", (Col("KAN / matched MLP (median)", "ratios_of_median.kan_over_mlp_matched"),
                         Col("KAN / matched MLP (min)", "ratios_of_min.kan_over_mlp_matched"),
                         Col("Cox-de Boor / KAN (median)", "ratios_of_median.cox_de_boor_over_kan"),
                         Col("training step, default model, s",
                             "train_step_batch32.model_default.median_s"),
                         Col("training step, KAN [68, 512, 68], s",
                             "train_step_batch32.model_kan512.median_s")),
          (Row("{threads} thread(s)", "runs.*"),), file="bench/results/kan.json",
          fmt="{:.2f}", label="threads"),

    # ---- docs/training.md
    field_table("train-last-epoch", "metrics/train.json", (
        ("last epoch", "final.epoch", "{}"), ("train loss", "final.train/loss", "{:.5f}"),
        ("val loss (the paper's MSE)", "final.val/loss", "{:.5f}"),
        *((f"val {m}, crop px", f"final.val/{m}", PX) for m in METRICS),
        ("learning rate", "final.lr", "{:.2e}"), ("best epoch (lowest val loss)", "best_epoch", "{}"))),
    field_table("train-throughput", "bench/results/train.json", (
        ("data", "data", "{}"), ("batch size", "batch_size", COUNT),
        ("windows per timed epoch", "windows", COUNT), ("timed epochs (median)", "repeats", COUNT),
        ("parameters, M", "params_M", "{:.2f}"),
        *((f"windows/s, {t} thread{'s' * (t > 1)}, `train.dropout_rng: {rng}`",
           f"by_threads.{t}.epochs.{rng}.windows_per_s", SECONDS)
          for t in (2, 1) for rng in ("torch", "pcg64")),
        ("200 windows/s at 2 threads met, with `torch` / `pcg64`", "target_met", "{}"),
        *((f"{t} thread{'s' * (t > 1)}: share of a step in {phase}",
           f"by_threads.{t}.profile.share.{phase}", SHARE)
          for t in (2, 1) for phase in ("data", "forward", "backward", "optimizer")),
        *((f"{t} thread{'s' * (t > 1)}: share of a step in torch's dropout masks",
           f"by_threads.{t}.profile.torch_dropout_masks_share", SHARE) for t in (2, 1)),
        ("peak RSS, MB", "peak_rss_mb", "{:,.0f}"), ("threads", "machine.threads", COUNT),
        ("load average (1 min) at start", "machine.load_average_start.0", "{:.1f}"),
        ("load average (1 min) at end", "machine.load_average_end.0", "{:.1f}"))),

    # ---- docs/predict.md
    Table("predict-speed", (Col("RTF, end to end (first call)", "rtf"),
                            Col("RTF, second call", "rtf_second_call"),
                            Col("CPU s per audio s", "cpu_rtf"),
                            Col("RTF before (merge-base)", "before.rtf"),
                            Col("speed-up", "speedup", fmt="{:.1f}x"),
                            Col("landmarks vs before, max px", "landmarks_max_abs_diff_px",
                                fmt="{:.1e}")),
          (Row("{key}", "lengths.*"),), file="bench/results/predict.json", label="audio"),
    Table("predict-steps", tuple(Col(h, f"steps_s.{k}", fmt="{:.2f}") for h, k in (
        ("decode", "decode_audio"), ("face", "face"), ("Whisper", "features"),
        ("log-mel", "log_mel"), ("emotion", "emotion"), ("model", "model"),
        ("silence gate", "silence"), ("landmark files", "write_landmarks"),
        ("video", "render_mp4"))),
          (Row("{key}", "lengths.*"),), file="bench/results/predict.json",
          label="audio: seconds per step (steps overlap)"),
    Table("predict-profile", tuple(Col(h, f"profile.{k}.cpu_s", fmt="{:.2f}") for h, k in (
        ("decode", "decode_audio"), ("face", "face"), ("Whisper", "whisper"),
        ("log-mel", "log_mel"), ("emotion", "emotion"), ("model", "model"),
        ("landmark files", "landmark_files"), ("AAC", "aac"),
        ("video (draw + I420 + H.264 + mux)", "video"))) + (
        Col("of the video: draw + I420", "profile.draw_i420.cpu_s", fmt="{:.2f}"),
        Col("total CPU s", "profile.total_cpu_s", fmt="{:.2f}")),
          (Row("{key}", "lengths.*"),), file="bench/results/predict.json",
          label="audio: CPU s per step, each alone on one core"),
    field_table("predict-run", "bench/results/predict.json", (
        ("loading (checkpoint + model, Whisper, dlib), s", "load_s", "{:.2f}"),
        ("... before (merge-base), s", "before.load_s", "{:.2f}"),
        ("... of it: checkpoint + model (while the others load), s", "load_parts_s.checkpoint",
         "{:.2f}"),
        ("... Whisper (CTranslate2), s", "load_parts_s.encoder", "{:.2f}"),
        ("... dlib's detector and 68-point predictor, s", "load_parts_s.face_models", "{:.2f}"),
        ("import (torch, kfusion), s", "import_s", "{:.2f}"),
        ("targets met: RTF <= 0.05 at every length", "met.rtf", ""),
        ("targets met: loading < 2 s", "met.load_s", ""),
        ("peak RSS, MB", "peak_rss_mb", "{:,.0f}"), ("torch threads", "threads", COUNT),
        ("stride, frames", "stride_frames", COUNT), ("repeats (worker processes)", "repeats", COUNT),
        ("before: commit", "before.commit", ""), ("commit", "machine.commit", ""),
        ("load average (1 min) at start", "machine.load_average_start.0", "{:.1f}"),
        ("... at end", "machine.load_average_end.0", "{:.1f}"))),

    Table("repro-stages", (Col("seconds", "seconds", fmt=SECONDS), Col("share", "share", fmt=SHARE)),
          (Row("`{key}`", "stages.*"),), file="bench/results/repro.json", label="stage",
          best="none"),
    field_table("repro-run", "bench/results/repro.json", (
        ("total, s (target <= 180 on an idle machine)", "total_s", SECONDS),
        ("test M-LD of the model it trained", "test_M-LD", "{:.4f}"),
        ("commit", "commit", ""), ("load average (1 min) at start", "machine.load_average_start.0",
                                   "{:.1f}"))),
    Table("silence", (Col("model alone (`--silence model`)", "model"),
                      Col("with the gate (default)", "still")),
          (Row("4 s of digital zeros", "cases.digital_zeros"),
           Row("4 s of white noise at -80 dBFS", "cases.noise_-80dBFS"),
           Row("4 s of white noise at -60 dBFS", "cases.noise_-60dBFS"),
           Row("2 s pauses of -60 dBFS noise cut into speech (inside the pauses)",
               "cases.pauses_in_speech"),
           Row("30 s of real speech, whole clip (its own pauses included)", "cases.speech"),
           Row("... its voiced frames (gate weight 1), mean", "cases.speech.voiced"),
           Row("... its voiced frames, 95th percentile", "cases.speech.voiced_p95")),
          file="bench/results/silence.json", label="audio: mean inner-lip opening, px"),
    field_table("silence-run", "bench/results/silence.json", (
        ("the identity photo's own opening, px", "identity_opening_px", PX),
        ("largest |silence opening - identity's|, model alone, px", "max_silence_excess_px.model",
         "{:.2f}"),
        ("largest |silence opening - identity's|, with the gate, px", "max_silence_excess_px.still",
         "{:.2f}"),
        ("target met (silence within 1 px, voiced speech unchanged)", "target_met", ""),
        ("checkpoint", "checkpoint", ""), ("content encoder", "encoder", ""),
        ("torch threads", "machine.threads", COUNT),
        ("load average (1 min) at start", "machine.load_average_start.0", "{:.1f}"))),

    # ---- docs/reliability.md
    field_table("faults-corpus", "bench/results/faults_corpus.json", (
        ("clips", "clips", COUNT), ("corrupted", "corrupted", COUNT),
        ("rejected", "rejected", COUNT),
        ("exactly the corrupted clips rejected", "exactly_the_corrupted_rejected", "{}"),
        ("corrupted but not rejected", "missed", "{}"),
        ("rejected but not corrupted", "false_rejects", "{}"),
        ("rejected by another stage or for another reason", "wrong_stage_or_reason", "{}"),
        ("rejected by two stages", "rejected_by_two_stages", "{}"),
        ("rejects {key}", "rejects_by_reason.*", COUNT),
        ("exit code of {key}", "exit_codes.*", "{}"),
        ("seconds in {key}", "stage_seconds.*", SECONDS),
        ("seconds to build the corpus", "build_seconds", SECONDS))),

    Table("mutation-score", (Col("mutmut's mutants (drawing code left out)", "eligible", fmt=COUNT),
                             Col("mutants tested", "mutants", fmt=COUNT),
                             Col("equivalent (excluded)", "equivalent", fmt=COUNT),
                             Col("killed", "killed", fmt=COUNT), Col("score", "score", fmt=SHARE)),
          tuple(Row(f"{label}: {name}", f"{label}.{key}")
                for label in ("before", "after")
                for name, key in (*((f"`{path}`", f"files.{Path(path).stem}") for path in (
                    "pipeline/training/metrics.py", "model/loss.py", "model/kan.py",
                    "pipeline/training/evaluation.py", "pipeline/training/bootstrap.py")),
                    ("all five", "total"))),
          file="bench/results/mutation.json", label="tests, file"),
    Table("mutation-survivors", (Col("status", "status", fmt="{}"), Col("mutant", "change", fmt="{}"),
                                 Col("why it is left", "reason", fmt="{}")),
          (Row("`{file}`:{line}", "after.not_killed.*"),), file="bench/results/mutation.json",
          label="after: not killed"),

    # ---- docs/scale.md
    Table("scale-bench", (Col("clips", "clips", fmt=COUNT), Col("wall s", "wall_s", fmt=SECONDS),
                          Col("clips/s", "clips_per_s"),
                          Col("peak worker RSS MB", "max_worker_rss_mb", fmt="{:,.0f}")),
          (Row("{stage}, {executor}, {factor}x", "runs.*"),),
          file="bench/results/scale.json", label="stage, executor, corpus size"),

    # ---- bench/README.md
    Table("bench-figures", (Col("figure"),
                            Col("threads", "machine.threads", fmt="{}", absolute=True),
                            Col("load average at start", "machine.load_average_start.0",
                                fmt="{:.1f}", absolute=True),
                            Col("at end", "machine.load_average_end.0", fmt="{:.1f}",
                                absolute=True),
                            Col("commit", "machine.commit", fmt="{}", absolute=True)),
          tuple(Row(label, key, f"bench/results/{stem}.json", fmt)
                for label, stem, key, fmt in BENCH_FIGURES), label="bench: what"),

    # ---- docs/encoders.md
    Table("encoders-bench", (Col("real-time factor", "rtf"), Col("CPU s per audio s", "cpu_rtf"),
                             Col("peak RSS MB", "peak_rss_mb", fmt=COUNT),
                             Col("load s", "load_s", fmt="{:.1f}"),
                             Col("load average", "load_average_after", fmt="{:.1f}")),
          (Row("{encoder}, {threads} thread(s), {workload}", "runs.*"),),
          file="bench/results/encoders.json", label="encoder, threads, workload"),
    Table("encoder-offsets", (Col("late by, ms (vs the frame's stamp)", "offset_ms", fmt="{:+.1f}"),
                              Col("net of the log-mel, ms", "net_of_log_mel_ms", fmt="{:+.1f}"),
                              Col("bootstrap sd, ms", "boot_sd_ms", fmt="{:.1f}"),
                              Col("onsets", "events", fmt=COUNT)),
          (Row("{key}", "features.*"),), file="bench/results/encoder_offsets.json",
          label="features (demo corpus)"),
)


# ---- reading the JSON ---------------------------------------------------------------------

class Missing:
    """A cell whose file is absent: the table says so, with the command that writes it."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    @property
    def command(self) -> str:
        for glob, command in RUN:
            if fnmatch.fnmatch(self.pattern, glob):
                return command.format(stem=Path(self.pattern).stem)
        return "dvc repro"


ABSENT = object()   # the file exists but has no such key


def records(root: Path, pattern: str) -> list:
    """The parsed JSON of every file matching `pattern` under root, in sorted order."""
    return [json.loads(p.read_text()) for p in sorted(root.glob(pattern)) if p.is_file()]


def lookup(record, key: str):
    for part in filter(None, key.split(".")):
        if isinstance(record, dict) and part in record:
            record = record[part]
        elif isinstance(record, list) and part.lstrip("-").isdigit() and -len(record) <= int(part) < len(record):
            record = record[int(part)]
        else:
            return ABSENT
    return record


def source(table: Table, row: Row, col: Col) -> str:
    return col.file or row.file or table.file


def join(*keys: str) -> str:
    return ".".join(k for k in keys if k)


def expand(root: Path, table: Table) -> list[tuple[Row, str]]:
    """Rows with a `*` key become one row per entry; each with its label filled in."""
    out = []
    for row in table.rows:
        files = records(root, source(table, row, table.columns[0]))
        if not row.key.endswith("*") or not files:
            out.append((row, _label(row.label, row.key, files[0] if files else {})))
            continue
        parent = lookup(files[0], row.key[:-1].rstrip("."))
        keys = (list(parent) if isinstance(parent, dict) else
                [str(i) for i in range(len(parent))] if isinstance(parent, list) else [])
        for k in keys:
            sub = Row(row.label, row.key[:-1] + k, row.file, row.fmt)
            out.append((sub, _label(row.label, sub.key, files[0])))
    return out


class _Fields(dict):
    def __missing__(self, name: str) -> str:
        return "*"


def _label(template: str, key: str, record) -> str:
    """The row label: `{key}` is the last part of the row's key, `{name}` the field `name` of
    the nearest object along that key (e.g. `{threads}` of `runs.0` for `runs.0.heads.kan`)."""
    fields = _Fields(key=key.rsplit(".", 1)[-1])
    for part in ["", *filter(None, key.split("."))]:
        record = lookup(record, part)
        if isinstance(record, dict):
            fields.update({k: v for k, v in record.items() if not isinstance(v, (dict, list))})
    return template.format_map(fields)


def value(root: Path, table: Table, row: Row, col: Col):
    """A number, text, list, (mean, sd, n) over several files, ABSENT, or Missing."""
    pattern = source(table, row, col)
    found = records(root, pattern)
    if not found:
        return Missing(pattern)
    vals = [lookup(r, col.key if col.absolute else join(row.key, col.key)) for r in found]
    if len(vals) == 1:
        return vals[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return (statistics.mean(vals), statistics.stdev(vals), len(vals))
    return vals[-1]


# ---- formatting ---------------------------------------------------------------------------

def fmt(v, template: str) -> str:
    if v is ABSENT or v is None:
        return "n/a"
    if isinstance(v, tuple):                       # several files: seeds
        mean, sd, _ = v
        return f"{fmt(mean, template)} ± {fmt(sd, template)}"
    if isinstance(v, dict) and "ci_low" in v:      # a difference with its interval
        mark = " *" if v.get("significant") else ""
        return f"{v['mean']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]{mark}"
    if isinstance(v, dict) and "sd" in v:          # mean ± sd over seeds (no sd: one seed)
        sd = v["sd"]
        return fmt(v["mean"], template) + (f" ± {fmt(sd, template)}" if sd is not None else "")
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, dict)):
        return ", ".join(fmt(x, template) for x in v) if v else "none"
    if isinstance(v, str):
        return v
    try:
        return template.format(v)
    except (ValueError, TypeError):
        return str(v)


def numeric(v) -> float | None:
    if isinstance(v, tuple):
        return v[0]
    if isinstance(v, dict) and "mean" in v:
        return numeric(v["mean"])
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def render(root: Path, table: Table) -> str:
    """The table's Markdown (with a comment naming its sources), ending in a newline."""
    rows = expand(root, table)
    grid = [[value(root, table, row, col) for col in table.columns] for row, _ in rows]
    files = sorted({source(table, row, col) for row, _ in rows for col in table.columns})
    lines = [f"<!-- generated by `python scripts/tables.py` from {', '.join(files)}: "
             "edit its spec there, not this table -->", "",
             "| " + " | ".join([table.label] + [c.header for c in table.columns]) + " |",
             "|---|" + "---:|" * len(table.columns)]
    blank = [""] * (len(table.columns) - 1)
    missing = [v for line in grid for v in line if isinstance(v, Missing)]
    if missing and len(missing) == sum(map(len, grid)):
        commands = dict.fromkeys(m.command for m in missing)
        text = "not measured yet: run " + "; ".join(f"`{c}`" for c in commands)
        return "\n".join(lines + [f"| {text} | " + " | ".join(blank + [""]) + " |", "", ""])
    bold = _best(table, grid)
    notes = {}
    for (row, label), line in zip(rows, grid):
        if line and all(isinstance(v, Missing) for v in line):
            lines.append(f"| {label} | not measured yet: run `{line[0].command}` | "
                         + " | ".join(blank) + " |")
            continue
        cells = []
        for j, (col, v) in enumerate(zip(table.columns, line)):
            if isinstance(v, Missing):
                notes[v.pattern] = v.command
                cells.append("not measured yet")
                continue
            own = col.fmt if col.absolute else ""   # the machine's, not the row's figure
            s = fmt(v, own or row.fmt or col.fmt or table.fmt)
            cells.append(f"**{s}**" if (j, id(line)) in bold else s)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"Not measured yet: `{p}` (run `{c}`).\n" for p, c in notes.items()]
    return "\n".join(lines) + "\n"


def _best(table: Table, grid: list[list]) -> set[tuple[int, int]]:
    out = set()
    for j, col in enumerate(table.columns):
        rule = col.best or table.best
        if rule not in ("min", "max"):
            continue
        nums = [(numeric(line[j]), id(line)) for line in grid]
        nums = [(x, i) for x, i in nums if x is not None]
        if nums:
            best = (min if rule == "min" else max)(x for x, _ in nums)
            out |= {(j, i) for x, i in nums if x == best}
    return out


# ---- documents ----------------------------------------------------------------------------

class TableError(Exception):
    """A document's markers cannot be filled: exit 2 with one line."""


def documents(root: Path) -> list[Path]:
    return [p for pattern in DOCUMENTS for p in sorted(root.glob(pattern))]


def regenerate(root: Path, text: str, where: str) -> tuple[str, list[str]]:
    """The document with every table rewritten, and the names of those that changed."""
    specs = {t.name: t for t in TABLES}
    changed = []

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in specs:
            raise TableError(f"{where}: no table spec named {name!r} in scripts/tables.py "
                             f"(known: {', '.join(specs)})")
        body = render(root, specs[name])
        if body != m["body"]:
            changed.append(name)
        return f"<!-- table: {name} -->\n{body}<!-- /table -->"

    out = MARKER.sub(sub, text)
    opened = text.count("<!-- table: ")
    if opened != len(MARKER.findall(text)):
        raise TableError(f"{where}: a `<!-- table: NAME -->` marker without its "
                         "`<!-- /table -->` (or with text the markers cannot hold)")
    return out, changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 naming each table that differs from its JSON")
    ap.add_argument("--list", action="store_true", help="each table, where it sits, what it reads")
    ap.add_argument("--root", type=Path, default=REPO, help="repository root (default: this one)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    stale, placed = [], {}
    for doc in documents(root):
        rel = doc.relative_to(root).as_posix()
        text = doc.read_text()
        try:
            new, changed = regenerate(root, text, rel)
        except TableError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for m in MARKER.finditer(text):
            placed.setdefault(m["name"], []).append(rel)
        stale += [f"{rel}: table {name}" for name in changed]
        if changed and not args.check and not args.list:
            doc.write_text(new)
    if args.list:
        for t in TABLES:
            files = sorted({source(t, r, c) for r in t.rows for c in t.columns})
            print(f"{t.name}: in {', '.join(placed.get(t.name, ['(not placed)']))}; reads {', '.join(files)}")
        return 0
    unplaced = [t.name for t in TABLES if t.name not in placed]
    if unplaced:
        print(f"warning: table specs not placed in any document: {', '.join(unplaced)}",
              file=sys.stderr)
    if args.check and stale:
        print("stale tables (run `python scripts/tables.py` and commit):\n  " + "\n  ".join(stale),
              file=sys.stderr)
        return 1
    verb = "stale" if args.check else "rewritten"
    print(f"tables: {len(placed)} placed, {len(stale)} {verb}"
          + (f" ({', '.join(s.split(': table ')[1] for s in stale)})" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
