"""Scan corpora as distributed into one manifest of paired clips, with splits.

Layouts (see docs/data.md):
- MEAD / demo: `<SPK>/video/front/<emotion>/level_<n>/<id>.mp4` + `<SPK>/audio/<emotion>/level_<n>/<id>.m4a`,
  extracted, or MEAD's per-speaker `<SPK>/video.tar` / `<SPK>/audio.tar` (members extracted on
  demand, front camera only, into a cache folder).
- CREMA-D: `VideoFlash/<actor>_<sentence>_<EMO>_<LVL>.flv` with `AudioWAV/<same>.wav`, or the
  .flv's own audio track where there is no .wav (a copy of VideoFlash/ alone works).
- GRID: `s<N>/<id>.mpg` (audio in the same container), optional `alignments/s<N>/<id>.align`.
- folder (a user's own recordings): `<root>/<speaker>/<clip>.<video ext>`, with an optional
  audio file of the same stem beside it (any container ffmpeg reads; else the video's own
  audio track). Emotion neutral (level 1) unless `<root>/labels.csv` (columns `clip`, as
  `<speaker>/<clip>`, and `emotion`, optional `level`) says otherwise.

A clip is a (corpus, speaker, emotion, level, id) key with one video and one audio file.
Anything that cannot become one (no partner, unknown emotion, unreadable file) is a reject.

Paths in the manifest are portable: relative to the corpus root named in params
(`index.roots.<corpus>`), POSIX style, so a clone in another folder, or a teammate who pulls
data/index, gets the same bytes and finds the clips under its own roots. A MEAD member
extracted from a tar lives in the tar cache at the same relative path (`<tar cache>/<corpus>/`),
used where the corpus root has no such file. The manifest's metadata names both folders as
params gave them; `read_manifest` joins them back (`clip_file`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from kfusion.config import Config, SplitConfig
from kfusion.shapes import EMOTIONS
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.io import StageError, StageRun, atomic_path
from kfusion.pipeline.media.container import MediaError, probe

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("corpus", pa.string()), ("speaker", pa.string()),
    ("emotion", pa.string()), ("emotion_id", pa.int64()), ("level", pa.int64()),
    ("video_path", pa.string()), ("audio_path", pa.string()),
    ("video_duration_s", pa.float64()), ("audio_duration_s", pa.float64()),
    ("split", pa.string()), ("gt_key", pa.string()), ("text", pa.string()),
])

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fear", "HAP": "happy",
                   "NEU": "neutral", "SAD": "sad"}
# LO/MD/HI map onto MEAD's levels 1-3; XX ("unspecified", every sentence but IEO) is 0.
CREMAD_LEVELS = {"LO": 1, "MD": 2, "HI": 3, "XX": 0}
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
# Containers the index pairs in the MEAD and folder layouts: MEAD ships .mp4, home-made corpora
# bring what their cameras and tools write; ffmpeg decodes them all. Any other file in a clip's
# folder is an `unsupported_file` reject (not silently skipped, leaving its partner
# `unpaired`); hidden files (.DS_Store, ._*) are ignored.
VIDEO_EXT = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".mpg", ".mpeg", ".webm", ".flv")
AUDIO_EXT = (".m4a", ".aac", ".wav", ".mp3", ".flac", ".ogg", ".opus")
FOLDER_LABELS = "labels.csv"
# What each corpus' scan looks for under its root (the message when it finds nothing).
LAYOUTS = {
    "mead": "<SPK>/video/front/<emotion>/level_<n>/<id>.mp4 with <SPK>/audio/<emotion>/level_<n>/"
            "<id>.m4a (or the per-speaker video.tar and audio.tar as downloaded)",
    "demo": "<SPK>/video/front/<emotion>/level_<n>/<id>.mp4 with <SPK>/audio/<emotion>/level_<n>/"
            "<id>.m4a (the demo stage writes it)",
    "cremad": "VideoFlash/<actor>_<sentence>_<EMO>_<LVL>.flv (its own audio, or AudioWAV/<same "
              "name>.wav beside it)",
    "grid": "s<N>/<id>.mpg (video and audio in one file), optionally alignments/s<N>/<id>.align",
    "folder": "<speaker>/<clip>.<video> with an optional same-stem audio file, and an optional "
              f"{FOLDER_LABELS} (clip,emotion[,level])",
}


@dataclass
class Candidate:
    """One clip found on disk, before probing."""
    corpus: str
    speaker: str
    emotion: str
    level: int
    clip: str
    video_path: str = ""
    audio_path: str = ""
    text: str = ""
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)

    @property
    def clip_id(self) -> str:
        return f"{self.corpus}:{self.speaker}:{self.emotion}:{self.level}:{self.clip}"

    @property
    def gt_key(self) -> str:
        return f"{self.speaker}|{self.emotion}|{self.level}|{self.clip}" if self.corpus == "demo" else ""


# ----------------------------------------------------------------------------- MEAD layout
_LEVEL = re.compile(r"level_(\d+)$")


def _mead_key(parts: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(emotion, level folder, id) from the tail `<emotion>/level_<n>/<id>.<ext>`."""
    if len(parts) < 3:
        return None
    emotion, level_dir, name = parts[-3], parts[-2], parts[-1]
    return emotion, level_dir, name.rsplit(".", 1)[0]


def _parse_level(level_dir: str) -> int | None:
    m = _LEVEL.match(level_dir)
    return int(m.group(1)) if m else None


def _add(found: dict, corpus: str, speaker: str, key: tuple[str, str, str], kind: str,
         path: str) -> None:
    emotion, level_dir, clip = key
    level = _parse_level(level_dir)
    k = (speaker, emotion, level_dir, clip)
    c = found.get(k)
    if c is None:
        c = found[k] = Candidate(corpus, speaker, emotion, level if level is not None else -1, clip)
        if emotion not in EMOTIONS:
            c.problems.append(("unknown_emotion", f"emotion folder {emotion!r} is not one of "
                                                  f"{list(EMOTIONS)}"))
        if level is None or not 1 <= level <= 3:
            c.problems.append(("unknown_level", f"level folder {level_dir!r} is not level_1..3"))
    other = getattr(c, f"{kind}_path")
    if other and other != path:   # e.g. 001.m4a and 001.wav: which one is the clip's is unknowable
        c.problems.insert(0, ("duplicate_clip", f"two {kind} files for one clip: {other} and {path}; "
                                                f"keep one"))
    setattr(c, f"{kind}_path", path)


def scan_mead_tree(spk_dir: Path, corpus: str, found: dict, kinds: Iterable[str]) -> None:
    """Extracted `<SPK>/video/front/...` and `<SPK>/audio/...` folders."""
    speaker = spk_dir.name
    for kind, folder, ext in (("video", spk_dir / "video" / "front", VIDEO_EXT),
                              ("audio", spk_dir / "audio", AUDIO_EXT)):
        if kind not in kinds:
            continue
        for p in sorted(folder.glob("*/*/*")):
            if p.name.startswith("."):
                continue
            key = _mead_key(p.parts)
            _add(found, corpus, speaker, key, kind, str(p))
            if p.suffix.lower() not in ext:
                c = found[(speaker, key[0], key[1], key[2])]
                c.problems.insert(0, ("unsupported_file", f"{p}: {p.suffix or 'no extension'} is "
                                      f"not a {kind} container the index reads "
                                      f"({', '.join(ext)}); convert it or remove it"))


def _tar_members(tar_path: Path, kind: str) -> list[tarfile.TarInfo]:
    """Front-camera video members (`.../video/front/<emo>/level_<n>/<id>.mp4`) or audio members."""
    ext = VIDEO_EXT if kind == "video" else AUDIO_EXT
    out = []
    with tarfile.open(tar_path) as tf:
        for m in tf:   # streams headers; no member data is read
            if not m.isfile() or not m.name.lower().endswith(ext):
                continue
            parts = Path(m.name).parts
            if kind == "video" and (len(parts) < 4 or parts[-4] != "front"):
                continue   # MEAD ships seven camera views; the paper uses the front one
            out.append(m)
    return out


def scan_mead_tar(spk_dir: Path, corpus: str, found: dict, kind: str, cache_dir: Path) -> None:
    """Members of `<SPK>/<kind>.tar`, extracted (once) under `cache_dir/<SPK>/`."""
    tar_path = spk_dir / f"{kind}.tar"
    speaker = spk_dir.name
    members = _tar_members(tar_path, kind)
    with tarfile.open(tar_path) as tf:
        for m in members:
            key = _mead_key(Path(m.name).parts)
            rel = Path(kind, "front", *key[:2], Path(m.name).name) if kind == "video" \
                else Path(kind, *key[:2], Path(m.name).name)
            dest = cache_dir / speaker / rel
            if not (dest.exists() and dest.stat().st_size == m.size):
                src = tf.extractfile(m)
                with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                    while chunk := src.read(1 << 20):
                        fh.write(chunk)
            _add(found, corpus, speaker, key, kind, str(dest))


def scan_mead(root: Path, corpus: str, cache_dir: Path) -> list[Candidate]:
    found: dict = {}
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for kind in ("video", "audio"):
            if (spk_dir / kind).is_dir():          # the extracted tree wins over the archive
                scan_mead_tree(spk_dir, corpus, found, [kind])
            elif (spk_dir / f"{kind}.tar").is_file():
                scan_mead_tar(spk_dir, corpus, found, kind, cache_dir / corpus)
    return list(found.values())


# ----------------------------------------------------------------------------- CREMA-D, GRID
_CREMAD = re.compile(r"^(\d+)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def scan_cremad(root: Path) -> list[Candidate]:
    found: dict = {}
    for kind, folder, ext in (("audio", "AudioWAV", ".wav"), ("video", "VideoFlash", ".flv")):
        for p in sorted((root / folder).glob(f"*{ext}")):
            m = _CREMAD.match(p.stem)
            if not m:
                c = found.setdefault(p.stem, Candidate("cremad", "?", "?", -1, p.stem))
                c.problems.append(("bad_name", f"{p.name}: not <actor>_<sentence>_<EMO>_<LVL>"))
                setattr(c, f"{kind}_path", str(p))
                continue
            actor, sentence, emo, lvl = m.groups()
            c = found.get(p.stem)
            if c is None:
                emotion = CREMAD_EMOTIONS.get(emo, emo)
                c = found[p.stem] = Candidate("cremad", actor, emotion, CREMAD_LEVELS.get(lvl, -1),
                                              sentence, text=CREMAD_SENTENCES.get(sentence, ""))
                if emo not in CREMAD_EMOTIONS:
                    c.problems.append(("unknown_emotion", f"{p.name}: emotion code {emo!r} is not "
                                                          f"one of {sorted(CREMAD_EMOTIONS)}"))
                if lvl not in CREMAD_LEVELS:
                    c.problems.append(("unknown_level", f"{p.name}: level {lvl!r} is not one of "
                                                        f"{sorted(CREMAD_LEVELS)}"))
            setattr(c, f"{kind}_path", str(p))
    for c in found.values():   # no .wav: the .flv carries the clip's own audio track
        if c.video_path and not c.audio_path:
            c.audio_path = c.video_path
    return list(found.values())


def read_grid_alignment(path: Path) -> str:
    """Words of a GRID `.align` file (`start end word` lines), silences dropped."""
    words = [ln.split()[2] for ln in path.read_text().splitlines() if len(ln.split()) == 3]
    return " ".join(w for w in words if w not in ("sil", "sp"))


def scan_grid(root: Path) -> list[Candidate]:
    out = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)):
        for p in sorted(spk_dir.rglob("*.mpg")):
            align = root / "alignments" / spk_dir.name / f"{p.stem}.align"
            text = read_grid_alignment(align) if align.is_file() else ""
            path = str(p)
            out.append(Candidate("grid", spk_dir.name, "neutral", 1, p.stem, path, path, text))
    return out


def read_folder_labels(root: Path) -> dict[str, tuple[str, int]]:
    """`<speaker>/<clip>` -> (emotion, level) from <root>/labels.csv (absent: {})."""
    import csv
    path = root / FOLDER_LABELS
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"clip", "emotion"} <= set(rows[0]):
        raise FileNotFoundError(f"{path}: expected the columns clip (<speaker>/<clip>) and "
                                f"emotion (optional: level); got {', '.join(rows[0])}")
    return {r["clip"].strip(): (r["emotion"].strip(), int(r.get("level") or 1)) for r in rows}


def scan_folder(root: Path) -> list[Candidate]:
    """`<root>/<speaker>/<clip>.<video>` + optional `<clip>.<audio>`; labels from labels.csv."""
    labels = read_folder_labels(root)
    out = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in spk_dir.iterdir() if p.is_file())
        audio = {p.stem: p for p in files if p.suffix.lower() in AUDIO_EXT}
        for p in (p for p in files if p.suffix.lower() in VIDEO_EXT):
            emotion, level = labels.get(f"{spk_dir.name}/{p.stem}", ("neutral", 1))
            video = str(p)
            c = Candidate("folder", spk_dir.name, emotion, level, p.stem, video,
                          str(audio[p.stem]) if p.stem in audio else video)
            if emotion not in EMOTIONS:
                c.problems.append(("unknown_emotion", f"{root / FOLDER_LABELS}: emotion {emotion!r} "
                                                      f"of {spk_dir.name}/{p.stem} is not one of {list(EMOTIONS)}"))
            out.append(c)
    return out


def scan(corpus: str, root: Path, cache_dir: Path) -> list[Candidate]:
    if not root.is_dir():
        raise FileNotFoundError(f"index.roots.{corpus}: {root} is not a folder (set it in "
                                f"params.yaml, or drop {corpus!r} from index.corpora)")
    if corpus in ("mead", "demo"):
        return scan_mead(root, corpus, cache_dir)
    if corpus == "cremad":
        return scan_cremad(root)
    if corpus == "grid":
        return scan_grid(root)
    if corpus == "folder":
        return scan_folder(root)
    raise ValueError(f"unknown corpus {corpus!r}")


# ----------------------------------------------------------------------------- probe + split
def check(c: Candidate, ffmpeg: str = "") -> tuple[dict | None, tuple[str, str] | None]:
    """(manifest row, None) for a usable clip or (None, (reason, message)) for a reject."""
    if c.problems:
        return None, c.problems[0]
    if not c.video_path:
        return None, ("unpaired_audio", f"{c.audio_path}: no video for this audio")
    if not c.audio_path:
        return None, ("unpaired_video", f"{c.video_path}: no audio file for this video")
    try:
        v = probe(c.video_path, ffmpeg)
        a = v if c.audio_path == c.video_path else probe(c.audio_path, ffmpeg)
    except MediaError as e:
        return None, (e.reason, e.message)
    if not v.has_video:
        return None, ("no_video_stream", f"{c.video_path}: no video stream")
    row = {"clip_id": c.clip_id, "corpus": c.corpus, "speaker": c.speaker, "emotion": c.emotion,
           "emotion_id": EMOTIONS.index(c.emotion), "level": c.level,
           "video_path": c.video_path, "audio_path": c.audio_path,
           "video_duration_s": v.video_duration_s,
           # a missing audio stream is the audio stage's reject (no_audio_stream), not ours
           "audio_duration_s": a.audio_duration_s if a.has_audio else 0.0,
           "split": "", "gt_key": c.gt_key, "text": c.text}
    return row, None


def seeded_split(seed: int, key: str, test_fraction: float, val_fraction: float) -> str:
    """"test", "val" or "train" for `key` (a clip or window id), drawn from a uniform number in
    [0, 1) fixed by (seed, key): stable when other clips are added."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0 ** 64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def assign_split(row: dict, cfg: SplitConfig) -> str:
    if row["corpus"] in cfg.test_only_corpora:
        return "test"
    if cfg.by == "speaker":
        names = {row["speaker"], f"{row['corpus']}:{row['speaker']}"}
        if names & set(cfg.test_speakers):
            return "test"
        if names & set(cfg.val_speakers):
            return "val"
        return "train"
    if cfg.by == "clip":
        return seeded_split(cfg.seed, row["clip_id"], cfg.test_fraction, cfg.val_fraction)
    return "train"   # by: window — the windows stage splits windows at random (leaky)


def path_bases(cfg: Config, cache_dir: Path) -> dict[str, dict[str, str]]:
    """Per corpus, the folders its manifest paths are relative to, as params name them:
    {"root": index.roots.<corpus>, "tar_cache": <tar cache>/<corpus>}."""
    return {c: {"root": cfg.index.roots.get(c, ""), "tar_cache": str(cache_dir / c)}
            for c in cfg.index.corpora}


def portable_path(path: str, bases: dict[str, str]) -> str:
    """`path` relative to the corpus root, else to the tar cache (POSIX); else as it is."""
    for base in (bases["root"], bases["tar_cache"]):
        if base:
            try:
                return Path(path).relative_to(base).as_posix()
            except ValueError:
                continue
    return path


def clip_file(path: str, bases: dict[str, str] | None) -> str:
    """A manifest path as a path to open: under the corpus root, else under the tar cache
    (where MEAD's tar members were extracted), else as written (absolute, or no bases)."""
    if not bases or Path(path).is_absolute():
        return path
    in_root = Path(bases["root"], path)
    if in_root.exists() or not Path(bases["tar_cache"], path).exists():
        return str(in_root)
    return str(Path(bases["tar_cache"], path))


def index_corpora(cfg: Config, cache_dir: Path, run: StageRun) -> list[dict]:
    """Scan every corpus of `index.corpora` and check each candidate (in workers): the usable
    clips' manifest rows, each with its split and its paths relative to its corpus root (see
    `portable_path`). Every other candidate is a reject on `run`."""
    candidates = []
    for corpus in cfg.index.corpora:
        root = Path(cfg.index.roots.get(corpus, ""))
        found = scan(corpus, root, cache_dir)
        if not found:
            raise StageError(empty_root_message(corpus, root))
        candidates += found
    candidates.sort(key=lambda c: c.clip_id)
    results = map_shards(functools.partial(check, ffmpeg=cfg.preprocess.ffmpeg), candidates,
                         workers=cfg.preprocess.workers, ordered=True, desc="index", unit="clip")
    rows = []
    for (row, problem), c in zip(results, candidates):   # results first: zip ends the pool
        if problem:
            run.reject(c.clip_id, *problem)
            continue
        row["split"] = assign_split(row, cfg.split)
        bases = path_bases(cfg, cache_dir)[row["corpus"]]
        row.update(video_path=portable_path(row["video_path"], bases),
                   audio_path=portable_path(row["audio_path"], bases))
        rows.append(row)
        run.processed += 1
    return rows


def empty_root_message(corpus: str, root: Path, examples: int = 3) -> str:
    """index.roots.<corpus> found no clip: the layout the scan expected, and what is there."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    seen = (f"it holds {len(files)} file(s), e.g. {', '.join(files[:examples])}" if files
            else "it holds no files")
    return (f"index.roots.{corpus}: {root} holds no clips in the {corpus} layout, "
            f"{LAYOUTS[corpus]}; {seen}. Point index.roots.{corpus} at the corpus root, or list "
            f"the corpus whose layout this is in index.corpora")


def index_metrics(cfg: Config, rows: list[dict]) -> dict:
    """What reports/index.json adds to the counts: clips per split and corpus, speakers, hours."""
    return {
        "corpora": list(cfg.index.corpora), "split_by": cfg.split.by,
        "split_leaky": cfg.split.by == "window",
        "clips_per_split": dict(Counter(r["split"] for r in rows)),
        "clips_per_corpus": dict(Counter(r["corpus"] for r in rows)),
        "speakers": len({(r["corpus"], r["speaker"]) for r in rows}),
        "hours": round(sum(r["video_duration_s"] for r in rows) / 3600.0, 4),
    }


def read_manifest(index_out: str | Path) -> list[dict]:
    """The manifest's rows, sorted by clip id, with paths to open (`clip_file`);
    FileNotFoundError naming the stage to run."""
    path = Path(index_out) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; run the index stage first (dvc repro index)")
    table = pq.read_table(path)
    bases = json.loads((table.schema.metadata or {}).get(b"kfusion", b"{}")).get("path_bases", {})
    rows = table.to_pylist()
    for r in rows:
        b = bases.get(r["corpus"])
        r.update(video_path=clip_file(r["video_path"], b), audio_path=clip_file(r["audio_path"], b))
    return sorted(rows, key=lambda r: r["clip_id"])


def manifest_table(rows: list[dict], bases: dict[str, dict[str, str]] | None = None) -> pa.Table:
    """The manifest: rows sorted by clip id; `bases` (path_bases) in its metadata."""
    rows = sorted(rows, key=lambda r: r["clip_id"])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    if bases is None:
        return table
    return table.replace_schema_metadata({b"kfusion": json.dumps({"path_bases": bases}).encode()})


def candidate_dict(c: Candidate) -> dict:
    return asdict(c)
