"""Audio stage library: decode each clip's audio to 16 kHz mono float32 and check it.

Checks, in order, each a reject reason code (docs/data.md): the audio file has no audio
stream (`no_audio_stream`), ffmpeg cannot read or decode it (`unreadable`, `decode_failed`),
a sample is NaN or infinite (`non_finite`: a float WAV can hold them, and one such sample
turns every feature of the clip into NaN), it is shorter than `audio.min_duration_s` (`too_short`), it is digital silence or its RMS is
under `audio.min_rms` (`silent`), or its length differs from the video's by more than
`audio.max_av_mismatch_s` (`av_duration_mismatch`). Audio a little longer than the video
is trimmed to it, so audio frame times and video frame times share one origin and one end.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kfusion.config import AudioConfig, Config
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.data.shards import (ShardTally, clean_stale, plan_shards, shard_done, shard_meta,
                                          shard_path, write_shard)
from kfusion.pipeline.io import StageRun
from kfusion.pipeline.media.container import MediaError, decode_audio

SCHEMA_VERSION = 1
AUDIO_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("sample_rate_hz", pa.int32()),
    ("samples", pa.list_(pa.float32())), ("duration_s", pa.float64()),
])


def non_finite(values: np.ndarray) -> tuple[int, int] | None:
    """(how many values are NaN or infinite, the flat index of the first), or None if all are
    finite."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    return int(bad.sum()), int(np.argmax(bad.reshape(-1)))


def non_finite_message(samples: np.ndarray, sample_rate_hz: int) -> str | None:
    """One line naming the count and the first non-finite sample, or None."""
    found = non_finite(samples)
    if found is None:
        return None
    count, first = found
    return (f"{count} of {len(samples)} samples are NaN or infinite (the first is sample "
            f"{first}, at {first / sample_rate_hz:.3f} s, counted after decoding to "
            f"{sample_rate_hz} Hz mono)")


def check_audio(samples: np.ndarray, video_duration_s: float, cfg: AudioConfig) -> tuple[np.ndarray, tuple[str, str] | None]:
    """Trimmed samples and None, or the reject (reason, message). samples: (n,) float32."""
    sr = cfg.sample_rate_hz
    if (bad := non_finite_message(samples, sr)) is not None:
        return samples, ("non_finite", bad)
    duration_s = len(samples) / sr
    if duration_s < cfg.min_duration_s:
        return samples, ("too_short", f"{duration_s:.2f} s of audio, under "
                                      f"audio.min_duration_s={cfg.min_duration_s}")
    peak = float(np.abs(samples).max())
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if peak == 0.0:
        return samples, ("silent", "digital silence (every sample is 0)")
    if rms < cfg.min_rms:
        return samples, ("silent", f"RMS {rms:.2e} under audio.min_rms={cfg.min_rms}")
    if video_duration_s > 0:
        gap = duration_s - video_duration_s
        if abs(gap) > cfg.max_av_mismatch_s:
            return samples, ("av_duration_mismatch",
                             f"audio {duration_s:.2f} s vs video {video_duration_s:.2f} s "
                             f"(|diff| > audio.max_av_mismatch_s={cfg.max_av_mismatch_s})")
        if gap > 0:   # trim the tail so both streams end together
            samples = samples[: int(round(video_duration_s * sr))]
    return samples, None


def process_clip(row: dict, cfg: AudioConfig, ffmpeg: str = "") -> tuple[dict | None, tuple[str, str] | None]:
    """One manifest row -> (audio row, None) or (None, (reason, message))."""
    try:
        samples = decode_audio(row["audio_path"], sample_rate_hz=cfg.sample_rate_hz, ffmpeg=ffmpeg)
    except MediaError as e:
        return None, (e.reason, e.message)
    if samples.size == 0:
        return None, ("no_audio_stream" if row.get("audio_duration_s", 0.0) == 0.0 else "decode_failed",
                      f"{row['audio_path']}: ffmpeg decoded no audio samples")
    samples, problem = check_audio(samples, float(row.get("video_duration_s") or 0.0), cfg)
    if problem:
        return None, (problem[0], f"{row['audio_path']}: {problem[1]}")
    return {"clip_id": row["clip_id"], "sample_rate_hz": cfg.sample_rate_hz,
            "samples": samples, "duration_s": len(samples) / cfg.sample_rate_hz}, None


def fingerprint(cfg: AudioConfig, rows: list[dict]) -> str:
    """What a shard's content depends on: the decode/check params and its input rows."""
    params = {k: v for k, v in asdict(cfg).items()
              if k not in ("out", "max_reject_fraction", "clips_per_shard")}
    keys = [(r["clip_id"], r["audio_path"], r["video_duration_s"]) for r in rows]
    blob = json.dumps([SCHEMA_VERSION, params, keys], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def process_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Decode one shard's clips and write it; skipped when already complete (resumable)."""
    rows, cfg, path = job["rows"], job["cfg"], Path(job["path"])
    ids = [r["clip_id"] for r in rows]
    meta = {"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint(cfg, rows)}
    if shard_done(path, ids, meta):
        return {"path": str(path), "skipped": True, **_summary(shard_meta(path))}
    out, rejects, seconds = [], [], 0.0
    for r in rows:
        audio, problem = process_clip(r, cfg, job["ffmpeg"])
        if problem:
            rejects.append([r["clip_id"], *problem])
        else:
            out.append(audio)
            seconds += audio["duration_s"]
    write_shard(path, out, schema=AUDIO_SCHEMA, planned_ids=ids,
                meta={**meta, "rejects": rejects, "seconds": seconds, "n_rows": len(out)})
    return {"path": str(path), "skipped": False, "rejects": rejects, "seconds": seconds,
            "n_rows": len(out)}


def _summary(meta: dict) -> dict:
    return {"rejects": meta.get("rejects", []), "seconds": meta.get("seconds", 0.0),
            "n_rows": meta.get("n_rows", 0)}


def audio_shards(cfg: Config, rows: list[dict], out: Path, run: StageRun) -> dict[str, Any]:
    """Decode and check the manifest `rows` (sorted by clip id) into audio shards under `out`,
    a shard per worker job; a shard already complete is kept. Rejects and counts go on `run`;
    returns the figures reports/audio.json adds."""
    plan = plan_shards([r["clip_id"] for r in rows], cfg.audio.clips_per_shard)
    jobs, i = [], 0
    for k, ids in enumerate(plan):
        jobs.append({"rows": rows[i:i + len(ids)], "cfg": cfg.audio, "path": str(shard_path(out, k)),
                     "ffmpeg": cfg.preprocess.ffmpeg})
        i += len(ids)
    clean_stale(out, [j["path"] for j in jobs])
    tally = ShardTally()
    for res in map_shards(process_shard, jobs, workers=cfg.preprocess.workers, desc="audio",
                          scale=cfg.scale, shared_dir=out):
        tally.add(res, run)
    return {"audio_hours": round(tally.seconds / 3600.0, 4), "shards": len(jobs),
            "shards_resumed": tally.resumed, "sample_rate_hz": cfg.audio.sample_rate_hz}


def load_samples(row: dict) -> np.ndarray:
    """(n,) float32 from an audio-shard row as read by kfusion.pipeline.data.shards.iter_rows."""
    return np.asarray(row["samples"], dtype=np.float32)
