"""Bad inputs, built here with ffmpeg and Python, each with the outcome docs/reliability.md promises.

`build_corpus(root, base)` writes a MEAD-layout corpus (corpus name `mead`) in which every
clip is one fault case, plus a CREMA-D-layout corpus beside it; `CASES` lists what each case
must become: `processed` (kept as is), `resampled` / `trimmed` (kept, repaired), or
`rejected` by a named stage with a reason code.

The good material is real: a GRID clip of a real speaker (../shared/realclips/other), re-cut
to an H.264 mp4 at 30 fps plus a 48 kHz AAC m4a, as MEAD ships it. The faults are what
users of MEAD, CREMA-D and home-made corpora meet: empty and cut-off files, wrong
extensions, faceless video, odd sample rates and channel counts, frame rate changes,
mismatched streams, odd paths, unknown labels, duplicates, links and folders where files
should be.
"""
from __future__ import annotations

import math
import os
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kfusion.pipeline.media.ffmpeg import ffmpeg_binary

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
REAL = SHARED / "realclips"
SPK = "M001"
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "96k"]


def ff(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error", "-y", *map(str, args)],
                   check=True, stdin=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- base media
@dataclass
class Base:
    """Good material every case starts from (a real face and real speech, 3 s)."""
    video: Path        # H.264 30 fps 360x288, no audio, moov at the end (ffmpeg's default)
    video_fs: Path     # the same with the moov atom first (-movflags +faststart)
    audio: Path        # AAC 48 kHz stereo m4a, same 3 s
    video_25: Path     # the same frames at 25 fps (GRID's rate)
    wav: Path          # 16-bit PCM 48 kHz mono (CREMA-D ships wav)
    flv: Path          # FLV1 + MP3 (CREMA-D's VideoFlash)
    seconds: float = 3.0


def make_base(cache: Path, src: Path | None = None) -> Base:
    src = src or REAL / "other" / "bbaf2n.mpg"
    cache.mkdir(parents=True, exist_ok=True)
    b = Base(cache / "base.mp4", cache / "base_fs.mp4", cache / "base.m4a", cache / "base25.mp4",
             cache / "base.wav", cache / "base.flv")
    if not b.video.exists():
        ff("-i", src, "-t", "3", "-an", "-vf", "fps=30", *X264, b.video)
        ff("-i", b.video, "-c", "copy", "-movflags", "+faststart", b.video_fs)
        ff("-i", src, "-t", "3", "-vn", "-ar", "48000", "-ac", "2", *AAC, b.audio)
        ff("-i", src, "-t", "3", "-an", "-vf", "fps=25", *X264, b.video_25)
        ff("-i", src, "-t", "3", "-vn", "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le", b.wav)
        ff("-i", src, "-t", "3", "-vf", "fps=30", "-c:v", "flv", "-q:v", "4", "-ar", "44100",
           "-c:a", "libmp3lame", b.flv)
    return b


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    what: str                 # the fault, for the docs table
    outcome: str              # processed | resampled | trimmed | rejected
    stage: str = ""           # the stage that rejects (or repairs) it
    reason: str = ""          # reject reason code
    corpus: str = "mead"
    speaker: str = SPK
    emotion: str = "neutral"
    level: int = 1
    clip: str = ""            # id on disk; default = name
    build: Callable[[Path, Base, "Case"], None] | None = None

    @property
    def clip_id(self) -> str:
        return f"{self.corpus}:{self.speaker}:{self.emotion}:{self.level}:{self.clip or self.name}"


def mead_paths(root: Path, c: Case, *, vext: str = ".mp4", aext: str = ".m4a") -> tuple[Path, Path]:
    lvl = f"level_{c.level}"
    v = root / c.speaker / "video" / "front" / c.emotion / lvl / f"{c.clip or c.name}{vext}"
    a = root / c.speaker / "audio" / c.emotion / lvl / f"{c.clip or c.name}{aext}"
    v.parent.mkdir(parents=True, exist_ok=True)
    a.parent.mkdir(parents=True, exist_ok=True)
    return v, a


def _link(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    os.link(src, dst) if src.stat().st_dev == dst.parent.stat().st_dev else dst.write_bytes(src.read_bytes())


def good(root: Path, b: Base, c: Case) -> None:
    v, a = mead_paths(root, c)
    _link(b.video, v)
    _link(b.audio, a)


def with_video(fn: Callable[[Path, Base], None]) -> Callable[[Path, Base, Case], None]:
    """Good audio; the video made by fn(path, base)."""
    def build(root: Path, b: Base, c: Case) -> None:
        v, a = mead_paths(root, c)
        _link(b.audio, a)
        fn(v, b)
    return build


def in_container(vext: str, *ffargs: str) -> Callable[[Path, Base, Case], None]:
    """Good audio; the base video re-encoded (ffargs) or copied into a `vext` file."""
    def build(root: Path, b: Base, c: Case) -> None:
        v, a = mead_paths(root, c, vext=vext)
        _link(b.audio, a)
        if ffargs:
            ff("-i", b.video, *ffargs, v)
        else:
            _link(b.video, v)
    return build


def _nan_wav(path: Path, b: Base) -> None:
    """The speech as a 16 kHz float WAV with 25 NaN samples at 0.5 s and one +inf at 1.875 s."""
    import soundfile as sf
    from kfusion.pipeline.media.container import decode_audio
    x = decode_audio(b.audio)
    x[8000:8025] = np.nan
    x[30000] = np.inf
    sf.write(path, x, 16000, subtype="FLOAT")


def with_audio(fn: Callable[[Path, Base], None], aext: str = ".m4a") -> Callable[[Path, Base, Case], None]:
    """Good video; the audio made by fn(path, base)."""
    def build(root: Path, b: Base, c: Case) -> None:
        v, a = mead_paths(root, c, aext=aext)
        _link(b.video, v)
        fn(a, b)
    return build


def _truncate(src: Path, dst: Path, share: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])


def _tone_m4a(path: Path, *, seconds: float, rate: int, channels: int = 2) -> None:
    ff("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate={rate}:duration={seconds}",
       "-ac", str(channels), "-ar", str(rate), *AAC, path)


def _speech(b: Base, path: Path, *extra: str) -> None:
    ff("-i", b.audio, *extra, *AAC, path)


def _six_channels(path: Path, b: Base) -> None:
    # 5.1 with the speech on the front left only: the mono downmix must still carry it
    ff("-i", b.audio, "-filter_complex",
       "[0:a]pan=5.1|FL=c0|FR=0*c0|FC=0*c0|LFE=0*c0|BL=0*c0|BR=0*c0[a]", "-map", "[a]", *AAC, path)


def _silence(path: Path, b: Base) -> None:
    ff("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "3", *AAC, path)


def _empty_audio_stream(path: Path, b: Base) -> None:
    # an m4a whose audio track holds no samples at all (a recorder stopped at once)
    ff("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-frames:a", "0", *AAC, path)


def _no_face(path: Path, b: Base) -> None:
    ff("-f", "lavfi", "-i", "testsrc=size=360x288:rate=30:duration=3", *X264, path)


def _short(seconds: float) -> Callable[[Path, Base, Case], None]:
    def build(root: Path, b: Base, c: Case) -> None:
        v, a = mead_paths(root, c)
        ff("-i", b.video, "-t", str(seconds), *X264, v)
        ff("-i", b.audio, "-t", str(seconds), *AAC, a)
    return build


def _longer_audio(extra_s: float) -> Callable[[Path, Base, Case], None]:
    def build(root: Path, b: Base, c: Case) -> None:
        v, a = mead_paths(root, c)
        _link(b.video, v)
        ff("-i", b.audio, "-af", f"apad=pad_dur={extra_s}", "-ar", "48000", *AAC, a)
    return build


def _vfr(root: Path, b: Base, c: Case) -> None:
    v, a = mead_paths(root, c)
    src = REAL / "other" / "vfr_talking_head.mp4"
    ff("-i", src, "-t", "3", "-map", "0:v:0", "-c", "copy", v)     # keeps the variable timing
    ff("-i", src, "-t", "3", "-map", "0:a:0", "-c", "copy", a)


def _odd_size(path: Path, b: Base) -> None:
    # 4:4:4 H.264 accepts odd sizes (4:2:0 does not): 361x287, as cameras and crops produce
    ff("-i", b.video, "-vf", "scale=361:287", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv444p", path)


def _tiny_frames(path: Path, b: Base) -> None:
    ff("-i", b.video, "-vf", "scale=48:38", *X264, path)


def _audio_only_mp4(path: Path, b: Base) -> None:
    ff("-i", b.audio, "-c", "copy", path)


def _text_m4a(path: Path, b: Base) -> None:
    path.write_text("this is not audio\n" * 20)


def _directory(path: Path, b: Base) -> None:
    path.mkdir()


def _symlink_loop(path: Path, b: Base) -> None:
    os.symlink(path.name, path)   # points at itself


def _dangling(path: Path, b: Base) -> None:
    os.symlink(path.parent / "gone.mp4", path)


def _fifo(path: Path, b: Base) -> None:
    os.mkfifo(path)   # opening it would block: a file that is no regular file


def _duplicate(root: Path, b: Base, c: Case) -> None:
    v, a = mead_paths(root, c)
    _link(b.video, v)
    _link(b.audio, a)
    _link(b.audio, a.with_suffix(".wav"))   # two audio files claim one clip


def _unpaired_video(root: Path, b: Base, c: Case) -> None:
    v, _ = mead_paths(root, c)
    _link(b.video, v)


def _unpaired_audio(root: Path, b: Base, c: Case) -> None:
    _, a = mead_paths(root, c)
    _link(b.audio, a)


def _wav_8k(path: Path, b: Base) -> None:
    # PCM wav at 8 kHz, computed here: a 440 Hz tone, so the resampled rate can be checked
    t = np.arange(3 * 8000) / 8000
    x = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(x.tobytes())


CASES: list[Case] = [
    Case("good", "a clean clip (H.264 30 fps + AAC 48 kHz stereo)", "processed", build=good),
    Case("zero_byte", "zero-byte .mp4", "rejected", "index", "unreadable",
         build=with_video(lambda p, b: p.write_bytes(b""))),
    Case("truncated_moov_end", "mp4 cut at 60% of its bytes, index (moov) at the end",
         "rejected", "index", "unreadable",
         build=with_video(lambda p, b: _truncate(b.video, p, 0.6))),
    Case("truncated_mid_stream", "mp4 cut at 50% of its bytes mid-stream (moov first): video "
         "ends early", "rejected", "audio", "av_duration_mismatch",
         build=with_video(lambda p, b: _truncate(b.video_fs, p, 0.5))),
    Case("text_as_m4a", "a text file named .m4a", "rejected", "index", "unreadable",
         build=with_audio(_text_m4a)),
    Case("no_face", "video of a test pattern (no face in any frame)", "rejected", "landmarks",
         "no_face", build=with_video(_no_face)),
    Case("shorter_than_window", "0.6 s clip, shorter than one 1 s window", "rejected", "audio",
         "too_short", build=_short(0.6)),
    Case("audio_8k", "8 kHz PCM wav audio", "resampled", "audio",
         build=with_audio(_wav_8k, aext=".wav")),
    Case("audio_96k", "96 kHz AAC audio", "resampled", "audio",
         build=with_audio(lambda p, b: _speech(b, p, "-ar", "96000"))),
    Case("six_channels", "6-channel (5.1) AAC audio, speech on one channel", "resampled", "audio",
         build=with_audio(_six_channels)),
    Case("fps_25", "25 fps video", "resampled", "landmarks",
         build=with_video(lambda p, b: _link(b.video_25, p))),
    Case("vfr", "variable frame rate video (22 fps average, real)", "resampled", "landmarks",
         build=_vfr),
    Case("audio_longer_2s", "audio 2 s longer than the video", "rejected", "audio",
         "av_duration_mismatch", build=_longer_audio(2.0)),
    Case("audio_longer_0.3s", "audio 0.3 s longer than the video", "trimmed", "audio",
         build=_longer_audio(0.3)),
    Case("path_spaces", "spaces and non-ASCII characters in speaker folder and file name",
         "processed", speaker="Spk ñ 02", clip="clip été 01", build=good),
    Case("unknown_emotion", "MEAD emotion folder not among MEAD's 8 ('bored')", "rejected",
         "index", "unknown_emotion", emotion="bored", build=good),
    Case("unknown_level", "MEAD level folder level_7", "rejected", "index", "unknown_level",
         level=7, build=good),
    Case("silent", "audio of digital silence", "rejected", "audio", "silent",
         build=with_audio(_silence)),
    Case("empty_audio_stream", "m4a written with zero audio frames (a recorder stopped at "
         "once: no stream left in the container)", "rejected", "index", "unreadable",
         build=with_audio(_empty_audio_stream)),
    Case("audio_only_mp4", "the .mp4 holds only an audio stream", "rejected", "index",
         "no_video_stream", build=with_video(_audio_only_mp4)),
    Case("odd_size", "odd frame size 361x287 (H.264 4:4:4)", "processed",
         build=with_video(_odd_size)),
    Case("tiny_frames", "48x38 px frames (a face too small to find)", "rejected", "landmarks",
         "no_face", build=with_video(_tiny_frames)),
    Case("dir_named_mp4", "a directory named like a clip (<id>.mp4/)", "rejected", "index",
         "missing_file", build=with_video(_directory)),
    Case("symlink_loop", "a symlink loop named like a clip", "rejected", "index",
         "missing_file", build=with_video(_symlink_loop)),
    Case("dangling_symlink", "a symlink to a file that is gone", "rejected", "index",
         "missing_file", build=with_video(_dangling)),
    Case("fifo", "a named pipe named like a clip (not a regular file)", "rejected", "index",
         "missing_file", build=with_video(_fifo)),
    Case("duplicate", "two audio files (.m4a and .wav) for one clip id", "rejected", "index",
         "duplicate_clip", build=_duplicate),
    Case("unpaired_video", "a video with no audio file", "rejected", "index", "unpaired_video",
         build=_unpaired_video),
    Case("unpaired_audio", "an audio file with no video", "rejected", "index", "unpaired_audio",
         build=_unpaired_audio),
    Case("mov_video", "H.264 video in a .mov container (MEAD layout)", "processed",
         build=in_container(".mov", "-c", "copy")),
    Case("mpg_video", "MPEG-1 video in an .mpg container (MEAD layout)", "processed",
         build=in_container(".mpg", "-c:v", "mpeg1video", "-q:v", "4")),
    Case("unsupported_video", "a video file with an extension the index does not read (.xyz)",
         "rejected", "index", "unsupported_file", build=in_container(".xyz")),
    Case("nan_audio", "float WAV audio with 25 NaN samples and one +inf", "rejected", "audio",
         "non_finite", build=with_audio(_nan_wav, aext=".wav")),
]

CREMAD_CASES: list[Case] = [
    Case("cremad_good", "a CREMA-D clip (FLV1/MP3 .flv + PCM .wav)", "processed",
         corpus="cremad", speaker="1001", emotion="happy", level=3, clip="IEO"),
    Case("cremad_unknown_emotion", "CREMA-D file with emotion code XYZ", "rejected", "index",
         "unknown_emotion", corpus="cremad", speaker="1002", emotion="XYZ", level=3, clip="IEO"),
    Case("cremad_bad_name", "CREMA-D file name not <actor>_<sentence>_<EMO>_<LVL>", "rejected",
         "index", "bad_name", corpus="cremad", speaker="?", emotion="?", level=-1,
         clip="take_2_final"),
]
CREMAD_FILES = {"cremad_good": "1001_IEO_HAP_HI", "cremad_unknown_emotion": "1002_IEO_XYZ_HI",
                "cremad_bad_name": "take_2_final"}


def build_cremad(root: Path, b: Base) -> None:
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (root / "VideoFlash").mkdir(parents=True, exist_ok=True)
    for stem in CREMAD_FILES.values():
        _link(b.wav, root / "AudioWAV" / f"{stem}.wav")
        _link(b.flv, root / "VideoFlash" / f"{stem}.flv")


def build_corpus(root: Path, b: Base, cases: list[Case] | None = None) -> list[Case]:
    """Write every case into `root/mead` (MEAD layout) and `root/cremad`; return the cases."""
    cases = CASES if cases is None else cases
    for c in cases:
        c.build(root / "mead", b, c)
    build_cremad(root / "cremad", b)
    return cases + CREMAD_CASES


def all_cases() -> list[Case]:
    return CASES + CREMAD_CASES
