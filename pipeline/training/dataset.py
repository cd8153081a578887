"""A torch Dataset over one split of `data/windows/<split>/`, memory-mapped.

Arrays are opened with `np.load(mmap_mode="r")` lazily, per process (so DataLoader workers
and DistributedSampler ranks each map the files themselves instead of pickling them). An
item is the Model API batch dict plus what training and evaluation need beside it:

    mel (100, n_mels) f32, w2v (n_tokens, feature_dim) f32 content encoder states (49 x 768
    for wav2vec2), identity (68, 2) f32 crop px, emotion () long,
    target (30, 68, 2) f32 reference landmarks, gt_landmarks (30, 68, 2) f32 (NaN: none),
    index () long (row in this split), clip_id str, corpus str
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from kfusion.pipeline.io import StageError
from kfusion.pipeline.data.encoders import record_of
from kfusion.pipeline.data.features import AUG_DIR
from kfusion.shapes import AUG_ARRAYS, SPLITS, WINDOW_ARRAYS


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
        # the training split's perturbed-speech copies (aug/<variant>/{mel,w2v}.npy), if any
        self.audio_variants: list[str] = list(self.meta.get("audio_variants", []))
        self._variant_arrays: dict[int, dict[str, np.ndarray]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.dir / f"{k}.npy", mmap_mode="r") for k in WINDOW_ARRAYS}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None,   # workers re-map the files themselves
                "_variant_arrays": {}}

    def variant_batch(self, k: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mel, w2v) float32 of these rows in audio variant k (self.audio_variants[k])."""
        if k not in self._variant_arrays:
            d = self.dir / AUG_DIR / self.audio_variants[k]
            self._variant_arrays[k] = {a: np.load(d / f"{a}.npy", mmap_mode="r") for a in AUG_ARRAYS}
        a, i = self._variant_arrays[k], np.asarray(rows, dtype=np.int64)
        return (torch.from_numpy(np.asarray(a["mel"][i], dtype=np.float32)),
                torch.from_numpy(np.asarray(a["w2v"][i], dtype=np.float32)))

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

    def batch(self, rows: Sequence[int]) -> dict[str, Any]:
        """The collated batch of these rows, in this order: what `default_collate` makes of
        `[self[i] for i in rows]`, value for value, from one read per array instead of nine
        small tensors per window (the training loader's fetch, pipeline/training/loop.py)."""
        a, i = self.arrays(), np.asarray(rows, dtype=np.int64)

        def read(name: str, dtype: type = np.float32) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a[name][i], dtype=dtype))
        return {"mel": read("mel"), "w2v": read("w2v"), "identity": read("identity"),
                "emotion": read("emotion", np.int64), "target": read("landmarks"),
                "gt_landmarks": read("gt_landmarks"), "index": torch.from_numpy(i.copy()),
                "clip_id": [self.clip_ids[r] for r in i.tolist()],
                "corpus": [self.corpora[r] for r in i.tolist()]}


MODEL_KEYS = ("mel", "w2v", "identity", "emotion")


def mean_offset(ds: WindowDataset, chunk: int = 1024) -> np.ndarray:
    """Mean over the windows of (landmarks - identity), (T, 68, 2) float64: the mean-motion
    baseline's trajectory. The train stage stores it in the checkpoint (from the training
    windows), so evaluation never reads training windows."""
    a = ds.arrays()
    total, n = None, 0
    for i in range(0, len(ds), chunk):
        j = min(i + chunk, len(ds))
        off = np.asarray(a["landmarks"][i:j], np.float64) - \
            np.asarray(a["identity"][i:j], np.float64)[:, None]          # (b, T, 68, 2)
        total = off.sum(0) if total is None else total + off.sum(0)
        n += len(off)
    if not n:
        raise FileNotFoundError(f"{ds.dir}: no windows for the mean-motion baseline")
    return total / n


def model_inputs(batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The Model API part of a collated batch, on `device`."""
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_KEYS}


# What must be finite in every window a model reads or is scored on (gt_landmarks is NaN
# where a corpus has no ground truth, by design).
FINITE_KEYS = ("mel", "w2v", "identity", "target")


class NonFiniteInput(StageError):
    """A batch holds NaN or infinite inputs; the message names the clips (one line, exit 2)."""


def non_finite_inputs(batch: dict[str, Any]) -> dict[str, list[str]]:
    """clip id -> the arrays of its windows in this batch that hold NaN or inf (FINITE_KEYS)."""
    bad: dict[str, list[str]] = {}
    for key in FINITE_KEYS:
        x = batch[key]
        rows = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)      # (B,)
        for i in torch.nonzero(rows).flatten().tolist():
            bad.setdefault(batch["clip_id"][i], []).append(key)
    return bad


def non_finite_error(bad: dict[str, list[str]], where: str) -> NonFiniteInput:
    """The one-line error for `bad` (non_finite_inputs) met `where` (e.g. 'training, epoch 1,
    step 3')."""
    clips = "; ".join(f"{c} ({', '.join(sorted(set(k)))})" for c, k in sorted(bad.items())[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return NonFiniteInput(
        f"non-finite inputs in {where}: {len(bad)} clip(s) with NaN or infinite values: "
        f"{clips or 'on another rank'}{more}. Re-run the windows stage (it rejects clips with "
        f"non-finite features: dvc repro windows), or remove these clips from the corpus")


def check_finite_inputs(batch: dict[str, Any], where: str) -> None:
    """Raise NonFiniteInput when any window of `batch` holds NaN or inf in FINITE_KEYS."""
    bad = non_finite_inputs(batch)
    if bad:
        raise non_finite_error(bad, where)


def split_speakers(split_dir: str | Path) -> str:
    """The speakers of a split's windows ("A, B"), or 'none' (the train log names them)."""
    table = Path(split_dir) / "windows.parquet"
    if not table.is_file():
        return "none"
    return ", ".join(sorted(set(pq.read_table(table, columns=["speaker"])["speaker"].to_pylist()))) \
        or "none"


def read_meta(split_dir: str | Path) -> dict[str, Any]:
    p = Path(split_dir) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}


def encoder_info(ds: "WindowDataset") -> dict[str, Any]:
    """The record of the content encoder that made a split's features (its meta.json):
    name, weights hash, width, whether it is the random-weights control."""
    return record_of(ds.meta, str(ds.dir / "meta.json"))


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
