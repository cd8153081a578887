"""Shared plumbing for every stage: atomic writes, reject records, stage summaries.

Every file a stage writes goes to a temporary name in the same folder and is renamed into
place only when complete, so a killed process never leaves a partial file under its final
name. Rejects are recorded, never dropped: (clip_id, stage, reason, message).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

_UMASK = os.umask(0)
os.umask(_UMASK)

REJECT_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("message", pa.string()),
])


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; final files get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def fresh_dir(path: str | Path) -> Path:
    """Empty output folder for a stage (DVC removes outs before a run; we do it too)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@dataclass
class Reject:
    clip_id: str
    stage: str
    reason: str   # a reason code from docs/reliability.md, e.g. "no_audio_stream"
    message: str  # what was wrong, for a person


# What a re-run on another machine, or after an interruption, changes when no result did:
# timings, throughput, resumed work. These go to an untracked log (printed and written beside
# the report as <stage>.log.json, git-ignored), never into a DVC-tracked file.
RUN_LOG_KEYS = frozenset({"seconds", "frames_per_s", "real_time_factor", "shards_resumed",
                          "shards_reused", "threads_per_worker", "resumed_from_epoch"})


def split_run_log(counts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the stage's results, its run log): top-level RUN_LOG_KEYS move to the log."""
    return ({k: v for k, v in counts.items() if k not in RUN_LOG_KEYS},
            {k: v for k, v in counts.items() if k in RUN_LOG_KEYS})


class StageError(RuntimeError):
    """A stage-level failure a user must act on (e.g. too many rejects). One line, no traceback."""


@dataclass
class StageRun:
    """Counts, rejects and timing of one stage run; writes the rejects table and a summary."""
    stage: str
    processed: int = 0
    rejects: list[Reject] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def reject(self, clip_id: str, reason: str, message: str) -> None:
        self.rejects.append(Reject(clip_id, self.stage, reason, message))

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def counts(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.rejects:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        total = self.processed + len(self.rejects)
        return {"stage": self.stage, "processed": self.processed, "rejected": len(self.rejects),
                "reject_fraction": (len(self.rejects) / total) if total else 0.0,
                "reject_reasons": reasons, "seconds": round(self.seconds, 2), **self.extra}

    def write_rejects(self, path: str | Path) -> None:
        """Sorted by clip: workers finish in any order, the file is the same every run."""
        rejects = sorted(self.rejects, key=lambda r: (r.clip_id, r.stage, r.reason, r.message))
        cols = {k: [getattr(r, k) for r in rejects] for k in REJECT_SCHEMA.names}
        write_parquet(path, pa.table(cols, schema=REJECT_SCHEMA))

    def finish(self, *, rejects_path: str | Path | None, report_path: str | Path | None,
               max_reject_fraction: float) -> dict[str, Any]:
        """Write rejects, the report (counts and figures, no timings) and beside it the run
        log (<stage>.log.json: timings, resumed work), print the one-line summary, fail above
        the reject limit."""
        counts = self.counts()
        if rejects_path is not None:
            self.write_rejects(rejects_path)
        if report_path is not None:
            report, log = split_run_log(counts)
            write_json(report_path, report)
            write_json(Path(report_path).with_suffix(".log.json"), log)
        print(f"[{self.stage}] processed {self.processed}, rejected {len(self.rejects)}"
              + (f" ({_top_reasons(counts['reject_reasons'])})" if self.rejects else "")
              + f", {counts['seconds']:.1f} s", file=sys.stderr, flush=True)
        if counts["reject_fraction"] > max_reject_fraction:
            raise StageError(   # run_stage prefixes "error: <stage>: "
                f"{len(self.rejects)} of {self.processed + len(self.rejects)} clips "
                f"rejected ({counts['reject_fraction']:.0%}), above "
                f"{self.stage}.max_reject_fraction={max_reject_fraction}; see {rejects_path} "
                f"for each clip's reason, fix the inputs or raise the limit")
        return counts


def _top_reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))


def progress(iterable: Any = None, **kw: Any) -> Any:
    """tqdm on stderr, quiet when not a terminal unless KFUSION_PROGRESS=1."""
    from tqdm import tqdm
    disable = kw.pop("disable", None)
    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("KFUSION_PROGRESS") == "1")
    return tqdm(iterable, disable=disable, file=sys.stderr, dynamic_ncols=True, **kw)
