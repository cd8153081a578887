"""Sharded Parquet tables: many clips per file, each shard complete or absent.

A stage that processes clips writes them in shards of `clips_per_shard` rows. A shard is
written under a temp name and renamed, so after a kill only whole shards exist; a re-run
that finds shard k (with the expected clip ids, recorded in its metadata) skips it. This is
what makes preprocessing resumable without a partial file ever being visible.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.pipeline.io import StageRun, atomic_path

SHARD_GLOB = "shard-*.parquet"


def shard_path(out_dir: str | Path, k: int) -> Path:
    return Path(out_dir) / f"shard-{k:05d}.parquet"


def plan_shards(clip_ids: list[str], clips_per_shard: int) -> list[list[str]]:
    """Deterministic assignment of clips to shards (sorted input order is kept)."""
    return [clip_ids[i:i + clips_per_shard] for i in range(0, len(clip_ids), clips_per_shard)]


def write_shard(path: str | Path, rows: list[dict[str, Any]], *, schema: pa.Schema | None = None,
                meta: dict[str, Any] | None = None, planned_ids: list[str] | None = None) -> None:
    """Write rows as one Parquet shard atomically. `meta` lands in the file's key-value metadata."""
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is None \
        else schema.empty_table()
    if not rows and schema is None:
        table = pa.table({"clip_id": pa.array([], pa.string())})
    md = dict(table.schema.metadata or {})
    md[b"kfusion"] = json.dumps({**(meta or {}), "planned_ids": planned_ids or []}).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def shard_meta(path: str | Path) -> dict[str, Any]:
    md = pq.read_schema(path).metadata or {}
    raw = md.get(b"kfusion")
    return json.loads(raw) if raw else {}


def shard_done(path: str | Path, planned_ids: list[str], expect_meta: dict[str, Any] | None = None) -> bool:
    """True when `path` exists, is readable, and was written for exactly these clips (and meta)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        meta = shard_meta(path)
    except Exception:
        return False
    if meta.get("planned_ids") != planned_ids:
        return False
    return all(meta.get(k) == v for k, v in (expect_meta or {}).items())


def iter_rows(out_dir: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of every shard in order, one at a time (memory bounded by one shard)."""
    for p in sorted(Path(out_dir).glob(SHARD_GLOB)):
        pf = pq.ParquetFile(p)
        for batch in pf.iter_batches(batch_size=8, columns=columns):
            yield from batch.to_pylist()


def read_table(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    paths = sorted(Path(out_dir).glob(SHARD_GLOB))
    if not paths:
        return pa.table({})
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths],
                            promote_options="default")


def clean_stale(out_dir: str | Path, keep: Iterable[Path]) -> None:
    """Remove shards (and stray temp files) not in `keep`, e.g. after the plan changed."""
    keep = {Path(p).resolve() for p in keep}
    for p in Path(out_dir).glob("shard-*"):
        if p.resolve() not in keep:
            p.unlink()
    for p in Path(out_dir).glob(".shard-*.tmp"):
        p.unlink()


@dataclass
class ShardTally:
    """Totals over the results of shard jobs ({rejects, n_rows, seconds, skipped} each)."""
    seconds: float = 0.0            # audio in every shard
    computed_seconds: float = 0.0   # audio in the shards this run made (not resumed)
    resumed: int = 0                # shards found complete and kept
    shards: int = 0
    # without a run: the rows and rejects of the shards counted (e.g. the features stage's
    # audio variants, whose rejects are not the stage's)
    rows: int = 0
    rejects: list = field(default_factory=list)

    def add(self, res: dict[str, Any], run: StageRun | None) -> None:
        """Count one shard's result; its rejects and processed clips go on `run`, or are
        kept here when there is none."""
        if run is None:
            self.rows += res["n_rows"]
            self.rejects += res["rejects"]
        else:
            for clip_id, reason, message in res["rejects"]:
                run.reject(clip_id, reason, message)
            run.processed += res["n_rows"]
        self.shards += 1
        self.seconds += res["seconds"]
        self.computed_seconds += 0.0 if res["skipped"] else res["seconds"]
        self.resumed += res["skipped"]
