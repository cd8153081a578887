"""A torch Dataset over one split of `data/windows/<split>/`, memory-mapped.

Arrays are opened with `np.load(mmap_mode="r")` lazily, per process (so DataLoader workers
and DistributedSampler ranks each map the files themselves instead of pickling them). An
item is the Model API batch dict plus what training and evaluation need beside it:

    mel (100, n_mels) f32, w2v (49, 768) f32, identity (68, 2) f32 crop px, emotion () long,
    target (30, 68, 2) f32 reference landmarks, gt_landmarks (30, 68, 2) f32 (NaN: none),
    index () long (row in this split), clip_id str, corpus str
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

ARRAYS = ("landmarks", "identity", "mel", "w2v", "emotion", "gt_landmarks")
SPLITS = ("train", "val", "test")


class WindowDataset(Dataset):
    def __init__(self, split_dir: str | Path, *, max_windows: int = 0):
        self.dir = Path(split_dir)
        if not (self.dir / "windows.parquet").exists():
            raise FileNotFoundError(f"{self.dir / 'windows.parquet'}: no windows table; run "
                                    f"the windows stage first (dvc repro windows)")
        table = pq.read_table(self.dir / "windows.parquet",
                              columns=["window_id", "clip_id", "corpus", "emotion"])
        self.clip_ids: list[str] = table.column("clip_id").to_pylist()
        self.corpora: list[str] = table.column("corpus").to_pylist()
        self.emotions: list[str] = table.column("emotion").to_pylist()
        self.meta: dict[str, Any] = read_meta(self.dir)
        n = len(self.clip_ids)
        self.n = min(n, max_windows) if max_windows else n
        self._arrays: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.dir / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # workers re-map the files themselves

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        a = self.arrays()
        return {
            "mel": torch.from_numpy(np.array(a["mel"][i], dtype=np.float32)),        # (100, n_mels)
            "w2v": torch.from_numpy(np.array(a["w2v"][i], dtype=np.float32)),        # (49, 768)
            "identity": torch.from_numpy(np.array(a["identity"][i], dtype=np.float32)),  # (68, 2)
            "emotion": torch.tensor(int(a["emotion"][i]), dtype=torch.long),
            "target": torch.from_numpy(np.array(a["landmarks"][i], dtype=np.float32)),  # (30, 68, 2)
            "gt_landmarks": torch.from_numpy(np.array(a["gt_landmarks"][i], dtype=np.float32)),
            "index": torch.tensor(i, dtype=torch.long),
            "clip_id": self.clip_ids[i],
            "corpus": self.corpora[i],
        }


MODEL_KEYS = ("mel", "w2v", "identity", "emotion")


def model_inputs(batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The Model API part of a collated batch, on `device`."""
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_KEYS}


def read_meta(split_dir: str | Path) -> dict[str, Any]:
    p = Path(split_dir) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}


def encoder_info(meta: dict[str, Any]) -> dict[str, Any]:
    """Which wav2vec2 produced the features, and whether it was the random-weights fallback."""
    enc = meta.get("encoder_id", meta.get("encoder", meta.get("wav2vec2", "unknown")))
    fb = meta.get("fallback", meta.get("encoder_fallback"))
    return {"encoder": str(enc), "encoder_fallback": None if fb is None else bool(fb)}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(windows_dir: str | Path) -> dict[str, Any]:
    """Window counts and a hash of each split's windows.parquet + meta.json: the data seen."""
    out: dict[str, Any] = {"windows_dir": str(windows_dir)}
    for split in SPLITS:
        d = Path(windows_dir) / split
        if not (d / "windows.parquet").exists():
            continue
        h = hashlib.sha256(file_sha256(d / "windows.parquet").encode())
        if (d / "meta.json").exists():
            h.update((d / "meta.json").read_bytes())
        out[split] = {"windows": pq.read_metadata(d / "windows.parquet").num_rows,
                      "sha256": h.hexdigest()}
    return out


# ----------------------------------------------------------------------------- synthetic
def write_synthetic_windows(root: str | Path, *, n_train: int = 64, n_val: int = 16,
                            n_test: int = 16, n_mels: int = 16, frames: int = 30,
                            seed: int = 0, corpus: str = "demo", with_gt: bool = True) -> Path:
    """A tiny `data/windows`-like folder with a learnable audio -> mouth relation.

    For tests and benchmarks only. Each window has a loudness track a(t) in [0, 1]; the mel
    and wav2vec2 arrays carry it (plus noise), and the reference landmarks are the identity
    with the mouth points opened by 6 px * a(t) and a small emotion-dependent smile. The
    ground truth is the reference minus a fixed per-window detector jitter (when `with_gt`).
    """
    import pyarrow as pa
    from kfusion.shapes import EMOTIONS, MOUTH_INDICES

    root = Path(root)
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    template = np.stack([128 + 50 * np.cos(theta), 128 + 60 * np.sin(theta)], -1).astype(np.float32)
    mouth = np.array(MOUTH_INDICES)
    open_dir = np.zeros((68, 2), np.float32)
    open_dir[mouth, 1] = np.where(np.arange(20) % 2 == 0, 1.0, -1.0)  # lips part vertically
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for s, (split, n) in enumerate(counts.items()):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        t_audio = np.linspace(0, 1, 100)
        t_video = np.linspace(0, 1, frames)
        t_w2v = np.linspace(0, 1, 49)
        freq = rng.uniform(1.0, 4.0, n)
        phase = rng.uniform(0, 2 * np.pi, n)
        amp = lambda t: 0.5 + 0.5 * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])
        a_audio, a_video, a_w2v = amp(t_audio), amp(t_video), amp(t_w2v)
        emotion = rng.integers(0, len(EMOTIONS), n)
        identity = template[None] + rng.normal(0, 2.0, (n, 1, 2)).astype(np.float32)
        mel = rng.normal(0, 0.1, (n, 100, n_mels)).astype(np.float32)
        mel += a_audio[:, :, None].astype(np.float32) * np.linspace(1, 0.2, n_mels, dtype=np.float32)
        mel[:, :, -1] += emotion[:, None] / len(EMOTIONS)
        w2v = rng.normal(0, 0.1, (n, 49, 768)).astype(np.float32)
        w2v[:, :, :8] += a_w2v[:, :, None]
        w2v[:, :, 8:16] += (emotion[:, None, None] / len(EMOTIONS))
        smile = np.zeros((len(EMOTIONS), 68, 2), np.float32)
        smile[:, [48, 54], 1] = -np.linspace(0, 2, len(EMOTIONS))[:, None]
        landmarks = (identity[:, None] + 6.0 * a_video[:, :, None, None] * open_dir
                     + smile[emotion][:, None]).astype(np.float32)              # (n, T, 68, 2)
        jitter = rng.normal(0, 0.5, (n, 1, 68, 2)).astype(np.float32)
        gt = (landmarks - jitter) if (with_gt and corpus == "demo") else \
            np.full_like(landmarks, np.nan)
        np.save(d / "landmarks.npy", landmarks)
        np.save(d / "identity.npy", identity.astype(np.float32))
        np.save(d / "mel.npy", mel)
        np.save(d / "w2v.npy", w2v.astype(np.float16))
        np.save(d / "emotion.npy", emotion.astype(np.int64))
        np.save(d / "gt_landmarks.npy", gt.astype(np.float32))
        clip = [f"{corpus}:S{s}{i // 4:02d}:{EMOTIONS[e]}:1:{i:03d}" for i, e in enumerate(emotion)]
        table = pa.table({
            "window_id": [f"{c}@{0}" for c in clip], "clip_id": clip,
            "corpus": [corpus] * n, "speaker": [c.split(":")[1] for c in clip],
            "emotion": [EMOTIONS[e] for e in emotion], "emotion_id": emotion.astype(np.int64),
            "level": np.ones(n, np.int64), "start_frame": np.zeros(n, np.int64),
            "split": [split] * n})
        import pyarrow.parquet as pq_
        pq_.write_table(table, d / "windows.parquet")
        (d / "meta.json").write_text(json.dumps({
            "encoder": "synthetic", "fallback": True, "fps": 30, "corpora": [corpus],
            "identity": "clip", "split": "speaker", "leaky": False}))
    return root
