"""Acceptance run for reliability: 200 demo clips, 10% corrupted in assorted ways, through
index -> landmarks -> audio -> features with default limits; exactly the corrupted clips must
be rejected, each named in a rejects table.

The clean clips are the demo corpus (data/demo/corpus, run `dvc repro demo` first) copied under
new clip ids until there are 200; every 10th clip is then corrupted with one of the faults in
tests/faults/fault_corpus.py. Features use a saved 1-layer wav2vec2 (offline, fast): the
stage's reject logic does not depend on the encoder's depth.

    python bench/faults_corpus.py [--clips 200] [--demo data/demo/corpus] [--keep DIR]

Writes bench/results/faults_corpus.json with the machine block (bench/record.py) and prints
one summary line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "faults"))
sys.path.insert(0, str(REPO / "bench"))

import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

import fault_corpus as fc  # noqa: E402
from kfusion.config import default_dict  # noqa: E402
from record import Machine, write_result  # noqa: E402

STAGES = ("index", "landmarks", "audio", "features")


def corruptions(base_audio: Path) -> list[tuple[str, str, str, callable]]:
    """(name, stage expected to reject, reason, fn(video, audio) -> new (video, audio) or None)."""
    def zero(v, a): v.write_bytes(b"")
    def truncate(v, a): v.write_bytes(v.read_bytes()[: len(v.read_bytes()) // 2])
    def text_audio(v, a): a.write_text("not audio\n" * 50)
    def no_face(v, a):   # a test pattern as long as the clip, so only the face is missing
        from kfusion.pipeline.media.container import probe
        seconds = probe(v).video_duration_s
        fc.ff("-f", "lavfi", "-i", f"testsrc=size=256x256:rate=30:duration={seconds:.3f}", *fc.X264, v)
    def silent(v, a):
        a.unlink()
        fc.ff("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "3", *fc.AAC, a)
    def short(v, a):
        for p in (v, a):
            tmp = p.with_name(".tmp" + p.suffix)
            fc.ff("-i", p, "-t", "0.6", "-c", "copy", tmp)
            tmp.replace(p)
    def long_audio(v, a):
        tmp = a.with_name(".tmp.m4a")
        fc.ff("-i", a, "-af", "apad=pad_dur=2", *fc.AAC, tmp)
        tmp.replace(a)
    def unpaired(v, a): a.unlink()
    def audio_only(v, a):
        v.unlink()
        fc.ff("-i", a, "-c", "copy", "-f", "mp4", v)
    def dir_named(v, a):
        v.unlink()
        v.mkdir()
    return [("zero_byte_video", "index", "unreadable", zero),
            ("truncated_video", "index", "unreadable", truncate),
            ("text_as_m4a", "index", "unreadable", text_audio),
            ("no_face", "landmarks", "no_face", no_face),
            ("silent_audio", "audio", "silent", silent),
            ("shorter_than_window", "audio", "too_short", short),
            ("audio_2s_longer", "audio", "av_duration_mismatch", long_audio),
            ("unpaired_video", "index", "unpaired_video", unpaired),
            ("audio_only_mp4", "index", "no_video_stream", audio_only),
            ("dir_named_like_clip", "index", "missing_file", dir_named)]


def build(demo: Path, root: Path, n: int) -> tuple[list[str], dict[str, tuple[str, str, str]]]:
    """Copy demo clips under new ids until n; corrupt every 10th. Returns (clip ids, corrupted)."""
    src = sorted(demo.glob("*/video/front/*/level_*/*.mp4"))
    if not src:
        raise SystemExit(f"{demo}: no demo clips; run `dvc repro demo` (or python -m kfusion.stages.demo)")
    ids, corrupted = [], {}
    faults = corruptions(root)
    for i in range(n):
        v0 = src[i % len(src)]
        spk, emo, lvl = v0.parts[-6], v0.parts[-3], v0.parts[-2]
        clip = f"{v0.stem}r{i // len(src)}"
        a0 = demo / spk / "audio" / emo / lvl / f"{v0.stem}.m4a"
        v = root / spk / "video" / "front" / emo / lvl / f"{clip}.mp4"
        a = root / spk / "audio" / emo / lvl / f"{clip}.m4a"
        v.parent.mkdir(parents=True, exist_ok=True)
        a.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(v0, v)
        shutil.copyfile(a0, a)
        cid = f"demo:{spk}:{emo}:{int(lvl.split('_')[1])}:{clip}"
        ids.append(cid)
        if i % 10 == 9:
            name, stage, reason, fn = faults[(i // 10) % len(faults)]
            fn(v, a)
            corrupted[cid] = (name, stage, reason)
    return ids, corrupted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--demo", default=str(REPO / "data/demo/corpus"))
    ap.add_argument("--keep", default="", help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="faults_corpus_"))
    work.mkdir(parents=True, exist_ok=True)
    machine = Machine.start(threads=default_dict()["preprocess"]["workers"])   # stage workers
    t0 = time.perf_counter()
    ids, corrupted = build(Path(args.demo), work / "corpus", args.clips)
    build_s = time.perf_counter() - t0

    sys.path.insert(0, str(REPO / "tests" / "faults"))
    from test_bad_inputs import tiny_wav2vec2
    cfg = default_dict()
    cfg["index"].update(corpora=["demo"], roots={"demo": str(work / "corpus"), "mead": "",
                                                 "cremad": "", "grid": ""}, out=str(work / "data/index"))
    for s in ("landmarks", "audio", "features"):
        cfg[s]["out"] = str(work / f"data/{s}")
    cfg["features"].update(wav2vec2=tiny_wav2vec2(work / "w2v"), threads=1)
    (work / "params.yaml").write_text(yaml.safe_dump(cfg))

    seconds, rcs, lines = {}, {}, {}
    for stage in STAGES:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", f"kfusion.stages.{stage}", "--params", str(work / "params.yaml")],
                           cwd=work, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"})
        seconds[stage], rcs[stage] = round(time.perf_counter() - t, 1), r.returncode
        lines[stage] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            break

    rejected: dict[str, list[tuple[str, str]]] = {}   # a clip may be rejected by two stages
    for stage in STAGES:
        p = work / f"data/{stage}/rejects.parquet"
        if p.exists():
            for row in pq.read_table(p).to_pylist():
                rejected.setdefault(row["clip_id"], []).append((row["stage"], row["reason"]))
    want = {cid: (stage, reason) for cid, (_, stage, reason) in corrupted.items()}
    wrong_reason = {c: (rejected[c], [want[c]]) for c in want if c in rejected and want[c] not in rejected[c]}
    result = {
        "clips": len(ids), "corrupted": len(corrupted),
        "corruptions": sorted({v[0] for v in corrupted.values()}),
        "rejected": len(rejected),
        "exactly_the_corrupted_rejected": set(rejected) == set(corrupted),
        "missed": sorted(set(corrupted) - set(rejected)),
        "false_rejects": sorted(set(rejected) - set(corrupted)),
        "wrong_stage_or_reason": {c: list(map(list, v)) for c, v in wrong_reason.items()},
        "rejects_by_stage": {s: sum(1 for v in rejected.values() for x in v if x[0] == s) for s in STAGES},
        "rejects_by_reason": {f"{s}/{r}": sum(1 for v in rejected.values() for x in v if x == (s, r))
                              for s, r in sorted({x for v in rejected.values() for x in v})},
        "rejected_by_two_stages": sorted(c for c, v in rejected.items() if len(v) > 1),
        "exit_codes": rcs, "stage_seconds": seconds, "summary_lines": lines,
        "build_seconds": round(build_s, 1), "encoder": "1-layer wav2vec2 (saved, offline)",
        "work_dir": str(work) if args.keep else "",
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ok = result["exactly_the_corrupted_rejected"] and not wrong_reason and all(v == 0 for v in rcs.values())
    write_result("faults_corpus", result, machine,
                 f"{len(ids)} clips, {len(corrupted)} corrupted, {len(rejected)} rejected, "
                 f"exactly the corrupted: {result['exactly_the_corrupted_rejected']}, reasons right: "
                 f"{not wrong_reason}, stages {'all exit 0' if all(v == 0 for v in rcs.values()) else rcs}, "
                 f"{sum(seconds.values()):.0f} s -> {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
