"""The one typed configuration of the project.

`params.yaml` is read here, once, validated against the dataclasses below, and the
resulting `Config` is passed down. No other module opens `params.yaml`.

Every key the pipeline understands is declared in this file, with its type and, where it
matters, its allowed range or values (`field(..., metadata=...)` via `_f`). A key that is
not declared, a value of the wrong type, out of range, or not among the allowed values is
an error that names the key, the file, and what would have been accepted.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

from kfusion.shapes import EMOTIONS, ENCODER_SAMPLE_RATE_HZ


CORPORA = ("demo", "mead", "cremad", "grid", "folder")   # layouts the index stage scans
TEST_SPLIT = "test"   # the name of the model's own test split among the evaluated test sets


class ConfigError(ValueError):
    """A params file that does not match the schema. The message names key and file."""


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       doc: str = "") -> Any:
    """A dataclass field with an inclusive numeric range (checked on load)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: typing.cast(Any, type(d)(d)),
                     metadata={"lo": lo, "hi": hi, "doc": doc})
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


# ----------------------------------------------------------------------------- sections
@dataclass
class PreprocessConfig:
    workers: int = _f(2, lo=1, hi=256, doc="worker processes for clip-level parallelism")
    ffmpeg: str = _f("", doc="ffmpeg binary; empty = PATH, then imageio-ffmpeg's bundled one")


@dataclass
class ScaleConfig:
    """Where the per-clip stages (landmarks, audio, features) run their shard jobs
    (docs/scale.md). Outputs do not depend on it: the stages' DVC params leave it out."""
    executor: Literal["local", "ray"] = _f(
        "local", doc="local: preprocess.workers processes here; ray: as many actors on a Ray "
                     "cluster (pip install -e '.[ray]')")
    ray_address: str = _f("", doc="the cluster's head, host:port; empty = $RAY_ADDRESS, else a "
                                   "new cluster on this machine for the stage's run")
    gpus_per_encoder: float = _f(1.0, lo=0.0, hi=64.0,
                                 doc="GPUs each features actor reserves on a cluster with GPUs "
                                     "(0.25: four encoders share one GPU; each must fit in it)")
    object_store_mb: int = _f(512, lo=75, hi=1 << 20,
                              doc="object store of a new local cluster (jobs and results are KBs)")
    rdzv_endpoint: str = _f("", doc="training with train.nnodes > 1: host:port where the "
                                    "nodes' torchrun meet (empty: this host, port 29500)")


@dataclass
class DemoConfig:
    seed: int = _f(0, lo=0)
    speakers: int = _f(6, lo=1, hi=16)
    emotions: list[str] = _f(list(EMOTIONS))
    levels: list[int] = _f([1, 2, 3])
    clips_per_condition: int = _f(1, lo=1, hi=50, doc="clips per speaker x emotion x level")
    min_duration_s: float = _f(2.0, lo=0.5, hi=30.0)
    fps: int = _f(30, lo=1, hi=120)
    frame_px: int = _f(256, lo=128, hi=1920, doc="square video size of the generated clips")
    visual_lead_ms: float = _f(40.0, lo=0.0, hi=200.0,
                               doc="how far mouth motion leads the acoustic onset")
    max_duration_s: float = _f(4.0, lo=1.0, hi=60.0,
                               doc="a longer synthesis tries the next sentence (up to 10)")
    lead_in_s: float = _f(0.25, lo=0.0, hi=5.0, doc="silence before the speech starts")
    face_fraction: float = _f(0.5, lo=0.2, hi=0.9, doc="face (jaw) width / frame width")
    crop_scale: float = _f(1.6, lo=1.0, hi=4.0,
                           doc="ground-truth crop side / mean landmark box size")
    audio_rate_hz: int = _f(48000, lo=8000, hi=96000, doc="AAC sample rate (MEAD: 48 kHz)")
    crf: int = _f(18, lo=0, hi=51, doc="x264 quality (lower = better, bigger files)")
    clips_per_shard: int = _f(256, lo=1, hi=100000, doc="ground-truth rows per Parquet shard")
    out: str = _f("data/demo")


@dataclass
class IndexConfig:
    corpora: list[str] = _f(["demo"], doc="which of `roots` to scan: demo, mead, cremad, grid, "
                                          "folder (<root>/<speaker>/<clip>.<video>, docs/data.md)")
    roots: dict[str, str] = _f({"demo": "data/demo/corpus", "mead": "", "cremad": "",
                                "grid": "", "folder": ""})
    max_reject_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    tar_cache_dir: str = _f("", doc="where members of MEAD's video.tar/audio.tar are extracted "
                                    "(only the front-camera clips used); empty = <out>/extracted")
    out: str = _f("data/index")


@dataclass
class SplitConfig:
    by: Literal["speaker", "clip", "window"] = _f(
        "speaker", doc="speaker-disjoint (default); clip-disjoint; random windows "
                       "(the authors' code: leaky, labelled)")
    test_speakers: list[str] = _f(["D05", "M003", "M030", "W009", "W015"])
    val_speakers: list[str] = _f(["D04", "M005", "W011"])
    test_only_corpora: list[str] = _f(["cremad"])
    test_fraction: float = _f(0.1, lo=0.0, hi=0.9, doc="for by: clip | window")
    val_fraction: float = _f(0.1, lo=0.0, hi=0.9, doc="for by: clip | window")
    seed: int = _f(0, lo=0)


@dataclass
class LandmarksConfig:
    backend: Literal["dlib", "fan"] = _f("dlib")
    detector: Literal["hog", "cnn"] = _f("hog", doc="dlib face detector")
    fps: int = _f(30, lo=1, hi=120)
    crop_px: int = _f(256, lo=64, hi=1024)
    crop_scale: float = _f(1.6, lo=1.0, hi=4.0, doc="crop side / detected face size")
    recrop_tolerance: float = _f(0.15, lo=0.0, hi=1.0,
                                 doc="re-crop when the face centre leaves the crop by this share")
    detect_every: int = _f(30, lo=1, hi=10000, doc="frames between forced re-detections")
    detect_max_px: int = _f(480, lo=0, hi=8192,
                            doc="downscale frames to this longer side for detection (0 = never)")
    detect_upsample: int = _f(0, lo=0, hi=3, doc="dlib detector upsampling steps (small faces)")
    jpeg_quality: int = _f(92, lo=1, hi=100, doc="identity / crop frame JPEG quality")
    min_track_confidence: float = _f(0.6, lo=0.0, hi=1.0)
    smoothing: int = _f(3, lo=0, hi=15, doc="temporal smoothing window in frames (0 = off)")
    keep_frames: Literal["identity", "all"] = _f("identity")
    max_gap_frames: int = _f(5, lo=0, hi=300, doc="face dropouts bridged by interpolation")
    min_face_fraction: float = _f(0.9, lo=0.0, hi=1.0,
                                  doc="a clip with a face in fewer of its frames is trimmed to "
                                      "its longest stretch with this share (a damaged head or "
                                      "tail), or rejected when that is under min_duration_s")
    min_duration_s: float = _f(1.0, lo=0.0, hi=60.0,
                               doc="shortest kept stretch of a trimmed clip (1 s = one window)")
    max_multi_face_fraction: float = _f(
        0.5, lo=0.0, hi=1.0, doc="reject a clip where the detector saw more than one face in "
                                 "more than this share of the frames it ran on")
    fan_weights_dir: str = _f("", doc="local directory with face-alignment weights")
    max_reject_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    clips_per_shard: int = _f(64, lo=1, hi=100000)
    out: str = _f("data/landmarks")


@dataclass
class AudioConfig:
    sample_rate_hz: int = _f(16000, lo=8000, hi=48000,
                             doc="must be 16000: the speech encoders take 16 kHz audio")
    min_rms: float = _f(1e-3, lo=0.0, hi=1.0, doc="RMS below this is a `silent` reject")
    max_av_mismatch_s: float = _f(0.5, lo=0.0, hi=60.0,
                                  doc="longer audio/video mismatch is a reject; shorter is trimmed")
    min_duration_s: float = _f(1.0, lo=0.0, hi=60.0,
                               doc="shorter audio is a `too_short` reject (one window = 1 s)")
    max_reject_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    clips_per_shard: int = _f(64, lo=1, hi=100000)
    out: str = _f("data/audio")


@dataclass
class FeaturesConfig:
    format: Literal["parquet", "npz"] = _f("parquet")
    n_mels: int = _f(80, lo=8, hi=256)
    n_fft: int = _f(512, lo=64, hi=4096)
    win_length: int = _f(400, lo=16, hi=4096)
    hop_length: int = _f(160, lo=16, hi=4096, doc="160 samples at 16 kHz = 100 mel frames/s")
    encoder: Literal["auto", "wav2vec2", "whisper", "ppg", "random"] = _f(
        "auto", doc="the Content Domain's speech encoder (docs/encoders.md): auto = wav2vec2 "
                    "where its weights load offline, else the bundled Whisper tiny.en; random = "
                    "wav2vec2-base with random weights (a control, recorded as encoder_fallback)")
    wav2vec2: str = _f("facebook/wav2vec2-base-960h", doc="hub id (local cache) or directory")
    whisper: str = _f("", doc="a CTranslate2 Whisper directory; empty = the bundled tiny.en")
    whisper_compute_type: Literal["int8", "float32"] = _f(
        "int8", doc="CTranslate2 on CPU (int8: 0.026 x real time on one core); CUDA runs the "
                    "same weights in torch (float16 with half_precision)")
    ppg_shift_ms: float = _f(40.0, lo=-200.0, hi=200.0,
                             doc="the PPG's frames run this late; they are moved earlier by it "
                                 "(measured on the demo corpus, docs/encoders.md)")
    random_seed: int = _f(0, lo=0, doc="seed of encoder: random's weights (not the training seed)")
    batch_seconds: float = _f(60.0, lo=1.0, hi=3600.0, doc="audio per wav2vec2 batch")
    half_precision: bool = _f(True, doc="fp16 on CUDA (ignored on CPU)")
    max_pad_fraction: float = _f(0.05, lo=0.0, hi=1.0,
                                 doc="clips batched together differ in length by at most this "
                                     "share (zero padding shifts wav2vec2's group norm)")
    threads: int = _f(0, lo=0, hi=256, doc="torch CPU threads per worker (0 = cores // workers)")
    max_reject_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    clips_per_shard: int = _f(16, lo=1, hi=100000, doc="the unit of resume and of progress")
    audio_augment: list[str] = _f([], doc="perturbed copies of the training clips' speech, "
                                          "features cached as extra shards for train.augment."
                                          "audio_p: pitch+N / pitch-N (semitones), noiseN (SNR "
                                          "dB); e.g. [pitch+2, pitch-2, noise20] "
                                          "(pipeline/data/perturb.py)")
    out: str = _f("data/features")


@dataclass
class WindowsConfig:
    frames: int = _f(30, lo=2, hi=300, doc="window length: 30 frames = 1 s at 30 fps")
    stride_frames: int = _f(5, lo=1, hi=300, doc="5: 3x the demo's training windows of 15 "
                                                  "(overlapping; docs/model.md)")
    identity: Literal["other_clip", "clip", "speaker_neutral", "window_first"] = _f(
        "other_clip", doc="other_clip: another clip of the same speaker (a neutral one first), "
                          "else a frame outside every window of the clip (no leak); clip: the "
                          "clip's own reference frame (inside some of its windows); "
                          "window_first is the authors' choice; it leaks the window's pose")
    identity_frame: int = _f(0, lo=0, doc="reference frame of a clip when the landmark shard "
                                           "names none (it names the identity JPEG's frame)")
    max_missing_frames: int = _f(5, lo=0, hi=300,
                                 doc="a window may hold this many frames without a detected face "
                                     "(bridged by the landmark stage); more drops the window")
    max_reject_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    out: str = _f("data/windows")


@dataclass
class KANConfig:
    hidden: list[int] = _f([128], doc="hidden widths; the authors' KAN is [68, 512, 68] "
                                      "(hidden: [512]); 128 keeps CPU training quick")
    grid_size: int = _f(5, lo=1, hi=100)
    spline_order: int = _f(3, lo=1, hi=5)
    grid_range: list[float] = _f([-1.0, 1.0])
    scale_noise: float = _f(0.1, lo=0.0, hi=10.0)
    scale_base: float = _f(1.0, lo=0.0, hi=10.0)
    scale_spline: float = _f(1.0, lo=0.0, hi=10.0)


@dataclass
class ModelConfig:
    fusion: Literal["kan", "mlp", "none"] = _f("kan", doc="Table 2: proposed / repl MLP / w/o KFusion")
    global_domain: bool = _f(True, doc="Table 2: false = w/o Global")
    lstm: bool = _f(True, doc="Table 2: false = w/o LSTM")
    global_input: Literal["mel", "wav2vec2"] = _f("mel", doc="text: raw signal (mel); code: wav2vec2")
    target: Literal["offset", "absolute"] = _f("offset",
                                               doc="predict offsets from the identity, or positions")
    d_model: int = _f(64, lo=8, hi=2048, doc="Transformer width (small: CPU-trainable default)")
    n_heads: int = _f(4, lo=1, hi=64)
    encoder_layers: int = _f(1, lo=1, hi=24, doc="the authors' code uses 1")
    decoder_layers: int = _f(1, lo=1, hi=24)
    ff_mult: int = _f(2, lo=1, hi=8, doc="Transformer feed-forward width = ff_mult * d_model")
    lstm_hidden: int = _f(64, lo=8, hi=4096, doc="per direction (the LSTMs are bidirectional)")
    fusion_channels: int = _f(32, lo=4, hi=1024,
                              doc="hidden channels of KFusion's bottleneck blocks B")
    dropout: float = _f(0.1, lo=0.0, hi=0.9)
    emotion_embedding: Literal["label"] = _f("label", doc="w of Eq. 7: a learned vector per "
                                                     "emotion label")
    coord_low_px: float = _f(56.0, doc="min-max bounds for normalised coordinates (authors' 56)")
    coord_high_px: float = _f(243.0, doc="(authors' 243) in the 256 crop")
    mel_norm: Literal["window", "none"] = _f(
        "window", doc="log-mel input standardised per window (mean/std over time and bins)")
    local_attention_s: float = _f(
        0.02, lo=0.0, hi=10.0, doc="decoders' cross-attention locality bias: head h prefers "
                                  "memory within local_attention_s * 2^h s of its query; 0 = off")
    token_to_frame: Literal["interpolate", "conv"] = _f(
        "interpolate", doc="49 tokens -> 30 frames: linear resampling of each branch before "
                           "KFusion (time-aligned gate init), or the 1x1 convs alone")
    head_init_scale: float = _f(0.01, lo=0.0, hi=1.0,
                                doc="scale of the head's last-layer initial weights (start "
                                    "near the still identity)")
    kan: KANConfig = field(default_factory=KANConfig)


@dataclass
class AugmentConfig:
    """Training-time augmentation (pipeline/training/augment.py); every switch off by default."""
    mirror_p: float = _f(0.0, lo=0.0, hi=1.0, doc="share of windows mirrored left/right "
                                                 "(landmarks re-indexed)")
    similarity_p: float = _f(0.0, lo=0.0, hi=1.0, doc="share of windows given a random "
                                                     "similarity transform (identity + target)")
    rotate_deg: float = _f(5.0, lo=0.0, hi=45.0)
    scale: float = _f(0.05, lo=0.0, hi=0.5, doc="scale drawn from 1 +- this")
    shift_px: float = _f(4.0, lo=0.0, hi=64.0)
    time_masks: int = _f(0, lo=0, hi=10, doc="spans per window blanked in mel + encoder states")
    time_mask_s: float = _f(0.1, lo=0.0, hi=1.0, doc="longest span")
    channel_masks: int = _f(0, lo=0, hi=10, doc="masks per window: a mel band + encoder channels")
    mel_band: int = _f(8, lo=0, hi=128, doc="widest masked mel band, bins")
    encoder_fraction: float = _f(0.1, lo=0.0, hi=1.0, doc="share of encoder channels masked")
    audio_p: float = _f(0.0, lo=0.0, hi=1.0, doc="share of windows whose mel and encoder states "
                                                "come from one of features.audio_augment's "
                                                "perturbed copies (drawn uniformly)")


@dataclass
class TrainConfig:
    epochs: int = _f(20, lo=1, hi=100000, doc="paper: 200 on MEAD; 20 (with windows."
                                             "stride_frames 5) trains the demo corpus in ~3 "
                                             "min on one CPU thread (docs/model.md)")
    batch_size: int = _f(32, lo=1, hi=65536)
    lr: float = _f(3e-4, lo=0.0, hi=1.0)
    eta_min: float = _f(1e-6, lo=0.0, hi=1.0)
    weight_decay: float = _f(0.0, lo=0.0, hi=1.0)
    mouth_weight: float = _f(0.8, lo=0.0, hi=1.0, doc="loss = (1-w) MSE(all) + w MSE(mouth)")
    velocity_weight: float = _f(0.3, lo=0.0, hi=1e6,
                                doc="optional term (not in the paper): + v * the mouth-"
                                    "weighted LVD (Eq. 15) in normalised units; 0 = paper")
    grad_clip: float = _f(1.0, lo=0.0, hi=1e6, doc="0 = off")
    amp: bool = _f(True, doc="mixed precision on CUDA; ignored on CPU")
    num_workers: int = _f(0, lo=0, hi=64)
    emotion_classifier_epochs: int = _f(20, lo=0, hi=10000,
                                        doc="epochs of the small audio -> emotion head "
                                            "(for `predict --emotion auto`); 0 = none")
    emotion_classifier_hidden: int = _f(64, lo=0, hi=4096, doc="0 = a linear head")
    resume: bool = _f(True, doc="continue from the resume checkpoint of an interrupted run "
                                "with the same config and data")
    resume_dir: str = _f("data/.resume/train",
                         doc="where the per-epoch resume state lives (outside DVC outs, "
                             "which DVC deletes before a run)")
    deterministic: bool = _f(True, doc="torch deterministic algorithms (warn-only) + seeded "
                                       "loaders; bit-identical resume on CPU")
    dropout_rng: Literal["torch", "pcg64"] = _f(
        "pcg64", doc="where CPU dropout masks come from: torch (its per-element Mersenne "
                     "Twister, one thread: about a quarter of a 2-thread step) or pcg64 (numpy "
                     "PCG64DXSM streams seeded from torch's generator, kfusion.model.dropout: "
                     "same dropout, other random draws, so other weights; reproducible and "
                     "resumable alike). GPU training uses torch's either way")
    kan_update_grid_every_epochs: int = _f(
        0, lo=0, doc="refit the KAN head's spline grids to its inputs (KAN.update_grid, on 128 "
                     "training windows) after every N epochs; 0 = never (the paper names no grid "
                     "update)")
    max_windows: int = _f(0, lo=0, doc="use at most this many training windows (0 = all); "
                                       "for smoke runs and benchmarks")
    threads: int = _f(1, lo=0, hi=256,
                      doc="torch CPU threads per process (0 = torch default). 1 by default: "
                          "this model's ops are small, and on a 2-core machine with anything "
                          "else running, 2 OpenMP threads made 3 demo epochs take 71.5 s "
                          "instead of 8.5 s; on an idle machine 2 threads are 1.38x faster "
                          "(bench/train.py: 204 vs 147 windows/s)")
    nproc_per_node: int = _f(1, lo=1, hi=1024,
                             doc="training processes per node; above 1 (or nnodes above 1) the "
                                 "stage runs itself under torchrun (DDP: NCCL on GPUs, gloo on "
                                 "CPU); on GPUs one per GPU")
    nnodes: int = _f(1, lo=1, hi=4096,
                     doc="nodes; above 1 the stage launches every node's torchrun with srun "
                         "inside a SLURM allocation, else waits for the others to join "
                         "scale.rdzv_endpoint (docs/scale.md)")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    out: str = _f("models")


@dataclass
class MetricsConfig:
    definition: Literal["paper", "reference", "both"] = _f(
        "paper", doc="paper = Eq. 13-15 in px; reference = the authors' code (labelled)")
    reference_batch_size: int = _f(32, lo=1, hi=65536,
                                   doc="batch size the authors' batch-level 'LD' is taken "
                                       "over (it grows with it; recorded beside the value)")


@dataclass
class TestSetConfig:
    corpus: Literal["demo", "mead", "cremad", "grid", "folder"] = _f(
        "folder", doc="the layout of `root` (index.corpora's names)")
    root: str = _f("", doc="the corpus folder, as distributed")


@dataclass
class EvaluateConfig:
    sets: dict[str, TestSetConfig] = _f(
        {}, doc="extra test corpora beside the model's own test split, name -> {corpus, root}: "
                "each goes through the data stages into data/sets/<name>/ and is evaluated into "
                "metrics/evaluate/<name>/ (docs/training.md)")
    swap_seed: int = _f(0, lo=0, doc="which other clip's audio each window gets in the "
                                     "audio-swap control")
    batch_size: int = _f(64, lo=1, hi=65536)
    qualitative_windows: int = _f(4, lo=0, hi=64)
    qualitative_frames: int = _f(4, lo=1, hi=30, doc="frames shown per qualitative window")
    checkpoint: Literal["best", "last"] = _f("best")
    plots: str = _f("plots/evaluate", doc="per test set: <plots>/<set>/")
    out: str = _f("metrics/evaluate", doc="per test set: <out>/<set>/<system>.json, the "
                                          "declared DVC metrics")


@dataclass
class Config:
    preset: Literal["ours", "paper"] = _f(
        "ours", doc="paper: every key of PAPER (below) takes the paper's value, whatever this "
                    "file says; ours: the keys as written")
    seed: int = _f(1234, lo=0, doc="the training seed (model initialisation, data order, dropout)")
    device: Literal["auto", "cpu", "cuda"] = _f("auto")
    reports: str = _f("reports", doc="stage reports (counts; evaluation breakdowns): committed "
                                     "JSON, not DVC metrics; a test set's under <reports>/sets/<name>")
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


# ----------------------------------------------------------------------------- the paper
# The paper's value of every model and recipe choice: its text (Sec. 3-4) where it says, and
# the authors' published code where it is silent. `preset: paper` sets all of them; every
# metrics record and ablation table names the keys where the config differs from this table
# (`paper_differences`). A new switch that departs from the paper is one line here. Table 2's
# ablation switches (model.fusion, global_domain, lstm) are the experiments, not departures,
# and the training length (train.epochs; the paper: 200 on MEAD) is the corpus's budget.
PAPER: dict[str, Any] = {
    "model.local_attention_s": 0.0,     # plain cross-attention (no locality bias)
    "model.mel_norm": "none",           # the raw signal's log-mel, unstandardised
    "model.token_to_frame": "conv",     # 1x1 convs map 49 tokens to 30 frames (authors' code)
    "model.head_init_scale": 1.0,       # the head's usual initialisation
    "model.target": "absolute",         # positions, not offsets from the identity
    "model.kan.hidden": [512],          # the authors' KAN [68, 512, 68]
    "model.kan.grid_size": 5,           # efficient-kan's defaults, as the authors use them
    "model.kan.spline_order": 3,
    "model.global_input": "mel",        # text: the raw signal (the code reads wav2vec2)
    "model.coord_low_px": 56.0,         # the authors' min-max bounds in the 256 crop
    "model.coord_high_px": 243.0,
    "train.velocity_weight": 0.0,       # Sec. 4.1: MSE only
    "train.mouth_weight": 0.8,          # the authors' 0.2 all + 0.8 mouth
    "train.lr": 3e-4,                   # Sec. 4.1: Adam 3e-4, cosine to 1e-6
    "train.eta_min": 1e-6,
    "train.kan_update_grid_every_epochs": 0,   # no grid update is named
}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, key: str, value: Any) -> Any:
    """A copy of the (nested dataclass) cfg with the dotted key set."""
    head, _, rest = key.partition(".")
    new = _set(getattr(cfg, head), rest, value) if rest else value
    return dataclasses.replace(cfg, **{head: new})


def apply_preset(cfg: "Config") -> "Config":
    """preset: paper -> every PAPER key at the paper's value; preset: ours -> cfg as it is."""
    if cfg.preset == "paper":
        for key, value in PAPER.items():
            cfg = _set(cfg, key, list(value) if isinstance(value, list) else value)
    return cfg


def paper_differences(cfg: Any) -> dict[str, Any]:
    """{key: this config's value} for every PAPER key where the config departs from the paper."""
    return {k: _get(cfg, k) for k, v in PAPER.items() if _get(cfg, k) != v}


# ----------------------------------------------------------------------------- audio variants
# features.audio_augment's names (what each does: pipeline/data/perturb.py)
AUDIO_MAX_DENOMINATOR = 16   # a pitch ratio is the nearest fraction with at most this below
_AUDIO_VARIANT = re.compile(r"^(?:pitch(?P<semitones>[+-]\d+(?:\.\d+)?)|noise(?P<snr>\d+(?:\.\d+)?))$")


@dataclass(frozen=True)
class AudioVariant:
    name: str
    kind: str             # "pitch" or "noise"
    value: float          # semitones asked for, or SNR in dB

    @property
    def ratio(self) -> Fraction:
        """pitch: the frequency ratio applied (a small fraction near 2 ** (semitones / 12))."""
        return Fraction(2 ** (self.value / 12)).limit_denominator(AUDIO_MAX_DENOMINATOR)

    def record(self) -> dict:
        """What a shard's metadata and the docs say about it."""
        if self.kind == "pitch":
            r = self.ratio
            return {"name": self.name, "kind": "pitch", "ratio": f"{r.numerator}/{r.denominator}",
                    "semitones": round(12 * math.log2(float(r)), 3)}
        return {"name": self.name, "kind": "noise", "snr_db": self.value, "noise": "white"}


def variant_error(name: str) -> str | None:
    """Why `name` is not a variant (None when it is one)."""
    m = _AUDIO_VARIANT.match(name) if isinstance(name, str) else None
    if not m:
        return (f"{name!r} is not an audio variant; expected pitch+N / pitch-N (semitones, "
                f"e.g. pitch+2) or noiseN (SNR in dB, e.g. noise20)")
    if m["semitones"] is not None:
        s = float(m["semitones"])
        if not 0 < abs(s) <= 12:
            return f"{name!r}: a pitch shift of 0 < |semitones| <= 12"
        if AudioVariant(name, "pitch", s).ratio == 1:
            return f"{name!r}: too small to move the pitch (ratio 1 at denominator {AUDIO_MAX_DENOMINATOR})"
    elif not 0 <= float(m["snr"]) <= 60:
        return f"{name!r}: an SNR between 0 and 60 dB"
    return None


def parse_variant(name: str) -> AudioVariant:
    err = variant_error(name)
    if err:
        raise ValueError(err)
    m = _AUDIO_VARIANT.match(name)
    if m["semitones"] is not None:
        return AudioVariant(name, "pitch", float(m["semitones"]))
    return AudioVariant(name, "noise", float(m["snr"]))


# ----------------------------------------------------------------------------- checks
_CROSS_CHECKS: list[typing.Callable[[Config], str | None]] = [
    # wav2vec2 (and every content encoder) was trained on 16 kHz audio: features at another
    # rate would be computed on the wrong time base and misalign audio and landmarks.
    lambda c: None if c.audio.sample_rate_hz == ENCODER_SAMPLE_RATE_HZ
    else f"audio.sample_rate_hz: {c.audio.sample_rate_hz} is not supported; the speech "
         f"encoders take {ENCODER_SAMPLE_RATE_HZ} Hz audio (the audio stage resamples every "
         f"clip to it), so it must be {ENCODER_SAMPLE_RATE_HZ}",
    lambda c: None if set(c.demo.emotions) <= set(EMOTIONS)
    else f"demo.emotions: unknown emotion in {c.demo.emotions}; allowed: {list(EMOTIONS)}",
    lambda c: None if set(c.demo.levels) <= {1, 2, 3}
    else f"demo.levels: {c.demo.levels}; allowed: subsets of [1, 2, 3]",
    lambda c: None if set(c.index.corpora) <= set(CORPORA)
    else f"index.corpora: {c.index.corpora}; allowed: {', '.join(CORPORA)}",
    lambda c: None if set(c.index.roots) <= set(CORPORA)
    else f"index.roots: unknown corpus in {sorted(c.index.roots)}; allowed: {', '.join(CORPORA)}",
    lambda c: next((f"evaluate.sets.{n}: the name {n!r} is taken (the model's own test split "
                    f"is {TEST_SPLIT!r}); choose another" for n in c.evaluate.sets
                    if n == TEST_SPLIT), None),
    lambda c: None if len(c.model.kan.grid_range) == 2 and c.model.kan.grid_range[0] < c.model.kan.grid_range[1]
    else f"model.kan.grid_range: {c.model.kan.grid_range}; expected [low, high] with low < high",
    lambda c: None if c.model.d_model % c.model.n_heads == 0
    else f"model.d_model: {c.model.d_model} is not divisible by model.n_heads={c.model.n_heads}",
    lambda c: None if c.model.coord_low_px < c.model.coord_high_px
    else "model.coord_low_px must be below model.coord_high_px",
    lambda c: None if c.features.win_length <= c.features.n_fft
    else f"features.win_length: {c.features.win_length} exceeds features.n_fft={c.features.n_fft}",
    lambda c: next((f"features.audio_augment: {e}" for e in map(variant_error, c.features.audio_augment)
                    if e), None),
    lambda c: None if len(set(c.features.audio_augment)) == len(c.features.audio_augment)
    else f"features.audio_augment: {c.features.audio_augment} names a variant twice",
    lambda c: None if c.train.augment.audio_p == 0 or c.features.audio_augment
    else f"train.augment.audio_p: {c.train.augment.audio_p} draws from features.audio_augment, "
         f"which is empty; name the variants there, e.g. [pitch+2, pitch-2, noise20]",
    lambda c: None if all(h >= 1 for h in c.model.kan.hidden)
    else f"model.kan.hidden: {c.model.kan.hidden}; widths must be >= 1",
]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check `value` against annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{src}: {key}: expected {_type_name(tp)}, got {value!r} "
                      f"({type(value).__name__})")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{src}: {key}: {value!r} is not allowed; allowed values: "
                              + ", ".join(repr(a) for a in allowed))
        return value
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, item_tp, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad
        return {_coerce(k, k_tp, f"{key} (a key)", src): _coerce(v, v_tp, f"{key}.{k}", src)
                for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, key, src)
            except ConfigError:
                continue
        raise bad
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", src)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"schema error: unsupported annotation {tp!r} for {key}")


def _build(cls: type, data: Any, prefix: str, src: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: {prefix.rstrip('.') or '(top level)'}: expected a mapping, "
                          f"got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{src}: unknown key {prefix}{unknown[0]!s}; allowed keys under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f, tp, key = fields[name], hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key + ".", src)
            continue
        value = _coerce(value, tp, key, src)
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ConfigError(f"{src}: {key}: {value!r} is out of range; allowed: {rng}")
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: dict, source: str = "<dict>") -> Config:
    cfg = apply_preset(_build(Config, data, "", source))
    for check in _CROSS_CHECKS:
        msg = check(cfg)
        if msg:
            raise ConfigError(f"{source}: {msg}")
    return cfg


def load(path: str | Path = "params.yaml") -> Config:
    """Read and validate a params file. Raises ConfigError naming key and file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the repository root, "
                          f"or pass --params)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return from_dict(data, str(path))


def test_set_config(cfg: Config, name: str, data_dir: str | Path | None = None) -> Config:
    """The config the data stages and evaluate run with for the extra test set `name`
    (evaluate.sets): its corpus at its root, every clip in the test split, every stage's
    output under `data_dir` (default data/sets/<name>), reports under <reports>/sets/<name>."""
    if name not in cfg.evaluate.sets:
        raise ConfigError(f"evaluate.sets: no test set named {name!r}; declared: "
                          f"{', '.join(sorted(cfg.evaluate.sets)) or 'none'}")
    ts = cfg.evaluate.sets[name]
    base = Path(data_dir) if data_dir is not None else Path("data") / "sets" / name
    rep = dataclasses.replace
    return rep(cfg, reports=str(Path(cfg.reports) / "sets" / name),
               index=rep(cfg.index, corpora=[ts.corpus], roots={**cfg.index.roots, ts.corpus: ts.root},
                         out=str(base / "index")),
               split=rep(cfg.split, test_only_corpora=[ts.corpus]),   # every clip is test
               landmarks=rep(cfg.landmarks, out=str(base / "landmarks")),
               audio=rep(cfg.audio, out=str(base / "audio")),
               # a test set is never trained on: no perturbed copies of its speech
               features=rep(cfg.features, out=str(base / "features"), audio_augment=[]),
               windows=rep(cfg.windows, out=str(base / "windows")))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Any, path: str | Path) -> None:
    """Write the config a stage ran with beside its outputs (atomically). `scale` (where the
    work ran: local pool or Ray cluster, torchrun sizes) is left out: outputs do not depend on
    it, so a Ray run's folders hash as a local run's."""
    from kfusion.pipeline.io import atomic_write_text
    d = {k: v for k, v in to_dict(cfg).items() if k != "scale"}
    atomic_write_text(Path(path), yaml.safe_dump(d, sort_keys=False))


def default_dict() -> dict:
    return to_dict(Config())


# ----------------------------------------------------------------------------- naming a model
# The switches the paper's Table 2 ablates, and the inputs the docs compare: what
# `kfusion report` and predict's JSON name as "the model's configuration".
MODEL_SWITCHES = ("fusion", "global_domain", "lstm", "global_input", "target")


def model_switches(model: ModelConfig) -> dict[str, Any]:
    return {k: getattr(model, k) for k in MODEL_SWITCHES}


def describe_model(switches: dict[str, Any], encoder: str | None = None,
                   encoder_fallback: bool | None = None) -> str:
    """One line: 'fusion kan, global_domain on, lstm on, global_input mel, target offset;
    encoder NAME (random-weights fallback)'. Missing keys are left out."""
    def show(v: Any) -> str:
        return "on" if v is True else "off" if v is False else str(v)
    line = ", ".join(f"{k} {show(switches[k])}" for k in MODEL_SWITCHES if k in switches)
    if encoder:
        line += f"; encoder {encoder}" + (" (random-weights fallback)" if encoder_fallback else "")
    return line
