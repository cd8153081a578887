"""The demo corpus, clip by clip: plan, synthesise, animate, render, encode, check.

Each clip runs in a fresh worker process (`map_shards(..., fresh_process_per_job=True)`,
forked from a clean fork server): eSpeak NG's output depends on what the same process
synthesised before, and a fresh process makes every clip bit-identical from run to run,
whatever the worker count.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kfusion.shapes import EMOTIONS
from kfusion.pipeline.data.executor import map_shards
from kfusion.pipeline.demo import render, tts, visemes
from kfusion.pipeline.media import warp
from kfusion.pipeline.demo.faces import Speaker, interocular, speakers_for
from kfusion.pipeline.demo.groundtruth import crop_box, to_crop
from kfusion.pipeline.demo.report import decode_problem
from kfusion.pipeline.demo.sentences import HARVARD
from kfusion.pipeline.io import StageRun


@dataclass(frozen=True)
class ClipSpec:
    speaker_index: int
    speaker: str
    emotion: str
    level: int
    clip: str            # MEAD's 3-digit clip id within speaker/emotion/level
    sentence_index: int  # first choice in HARVARD

    @property
    def video_rel(self) -> str:
        return f"{self.speaker}/video/front/{self.emotion}/level_{self.level}/{self.clip}.mp4"

    @property
    def audio_rel(self) -> str:
        return f"{self.speaker}/audio/{self.emotion}/level_{self.level}/{self.clip}.m4a"

    @property
    def clip_id(self) -> str:
        return f"demo:{self.speaker}:{self.emotion}:{self.level}:{self.clip}"


def plan(demo) -> list[ClipSpec]:
    """Every clip of the corpus in a fixed order. Sentences rotate through a seeded permutation,
    offset per speaker, so speakers and conditions say different things."""
    perm = np.random.default_rng([demo.seed, 7]).permutation(len(HARVARD))
    specs = []
    per_speaker = len(demo.emotions) * len(demo.levels) * demo.clips_per_condition
    for si in range(demo.speakers):
        cond = 0
        for emotion in demo.emotions:
            for level in demo.levels:
                for k in range(demo.clips_per_condition):
                    sentence = int(perm[(si * per_speaker + cond) % len(HARVARD)])
                    specs.append(ClipSpec(si, f"D{si + 1:02d}", emotion, level, f"{k + 1:03d}", sentence))
                    cond += 1
    return specs


def _clip_rng(demo, spec: ClipSpec) -> np.random.Generator:
    return np.random.default_rng([demo.seed, spec.speaker_index, EMOTIONS.index(spec.emotion),
                                  spec.level, int(spec.clip), 99])


def _speak(demo, spec: ClipSpec, speaker: Speaker) -> tuple[tts.Speech, int, tts.Prosody]:
    """Synthesise the clip's sentence; a too-long one gives way to the next sentence."""
    prosody = visemes.prosody_for(spec.emotion, spec.level, speaker.pitch_offset, speaker.rate_scale)
    for attempt in range(10):
        idx = (spec.sentence_index + attempt) % len(HARVARD)
        speech = tts.synthesize(HARVARD[idx], speaker.voice, prosody)
        if demo.lead_in_s + len(speech.samples) / tts.SAMPLE_RATE_HZ <= demo.max_duration_s:
            break
    return speech, idx, prosody


def _pad(samples: np.ndarray, lead_samples: int, min_samples: int, hop: int) -> np.ndarray:
    """Lead-in silence, then silence up to min_samples and to a whole number of frames."""
    x = np.concatenate([np.zeros(lead_samples, np.int16), samples])
    n = max(len(x), min_samples)
    n = int(np.ceil(n / hop)) * hop
    return np.concatenate([x, np.zeros(n - len(x), np.int16)])


def clip_job(args: tuple) -> dict[str, Any]:
    """Worker: one clip end to end. Returns the ground-truth row and the clip's checks, or
    {"error": ...} (the stage records it as a reject)."""
    demo, spec, speaker, corpus_dir, ffmpeg = args
    try:
        return _clip(demo, spec, speaker, Path(corpus_dir), ffmpeg)
    except Exception as e:  # a clip that fails is a reject, not a crashed stage
        return {"spec": spec, "error": f"{type(e).__name__}: {e}"}


def _clip(demo, spec: ClipSpec, speaker: Speaker, corpus_dir: Path, ffmpeg: str) -> dict[str, Any]:
    import cv2
    cv2.setNumThreads(1)   # parallel over clips, not inside one
    sr, fps = tts.SAMPLE_RATE_HZ, demo.fps
    if sr % fps:
        raise ValueError(f"demo.fps={fps} must divide {sr} (eSpeak's rate) for exact frame timing")
    hop = sr // fps
    speech, sentence_idx, prosody = _speak(demo, spec, speaker)
    lead_in = int(round(demo.lead_in_s * sr))
    samples = _pad(speech.samples, lead_in, int(round(demo.min_duration_s * sr)), hop)
    n_frames = len(samples) // hop
    tl = visemes.timeline(speech.phonemes, len(samples), sr, pad_samples=lead_in)

    energy = visemes.energy_envelope(samples, sr, n_frames, fps)
    motion = visemes.animate(speaker.neutral, tl, energy, emotion=spec.emotion, level=spec.level,
                             fps=fps, frame_px=demo.frame_px, lead_s=demo.visual_lead_ms / 1000,
                             rng=_clip_rng(demo, spec))
    tracks = motion.tracks                                             # (T, 68, 2) video px

    audio_path, video_path = corpus_dir / spec.audio_rel, corpus_dir / spec.video_rel
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    render.encode_audio(audio_path, samples, sr, demo.audio_rate_hz, ffmpeg)
    render.encode_video(video_path, frames(speaker, motion, demo.frame_px), frame_px=demo.frame_px,
                        fps=fps, audio=audio_path, ffmpeg=ffmpeg, crf=demo.crf)

    box = crop_box(tracks, demo.crop_scale)
    check = decode_check(video_path, audio_path, ffmpeg, fps, demo.audio_rate_hz, n_frames)
    phonemes = [[name, round(t0, 5), round(t1, 5)] for name, t0, t1 in tl]
    params = {"sentence_index": sentence_idx, "voice": speaker.voice,
              "prosody": vars(prosody), "speaker": speaker.record(),
              "visual_lead_ms": demo.visual_lead_ms, "lead_in_s": demo.lead_in_s,
              "blink_onsets_s": [round(t, 4) for t in motion.blink_onsets_s],
              "level_gain": visemes.LEVEL_GAIN[spec.level], "seed": demo.seed,
              "tts_sample_rate_hz": sr, "n_tts_samples": int(len(samples))}
    row = {"speaker": spec.speaker, "emotion": spec.emotion, "level": spec.level, "clip": spec.clip,
           "n_frames": n_frames, "fps": fps, "frame_w": demo.frame_px, "frame_h": demo.frame_px,
           "landmarks_video_px": tracks.reshape(-1).astype(np.float32),
           "landmarks_crop_px": to_crop(tracks, box).reshape(-1),
           "crop_box": box, "text": HARVARD[sentence_idx],
           "phonemes": json.dumps(phonemes), "params": json.dumps(params, sort_keys=True)}
    return {"spec": spec, "row": row, "check": check,
            "gap": visemes.inner_gap(tracks), "energy_db": check.pop("energy_db"),
            "bilabial_gaps": bilabial_gaps(tl, tracks, fps, demo.visual_lead_ms / 1000),
            "mouth_width": float(np.linalg.norm(speaker.neutral[54] - speaker.neutral[48])),
            "interocular": interocular(speaker.neutral)}


def frames(speaker: Speaker, motion: visemes.Motion, frame_px: int):
    """Rendered RGB frames (F, F, 3), one per track row."""
    rest = speaker.neutral
    border = warp.border_points(frame_px)
    source = np.concatenate([speaker.source, warp.neck_points(speaker.source),
                             warp.head_points(speaker.source, frame_px), border])
    open_mouth = visemes.mouth(rest, np.array([[0.6, 0, 0, 0, 0]]))[0]
    layout = np.concatenate([open_mouth, warp.neck_points(open_mouth),
                             warp.head_points(rest, frame_px), border])
    warper = warp.Warper(speaker.image, source, layout)
    T = len(motion.tracks)
    still = lambda p: visemes.apply_head(np.broadcast_to(p, (T, *p.shape)), motion.head, rest[30])  # noqa: E731
    head_pts = still(warp.head_points(rest, frame_px))
    jaw_drop = motion.tracks[:, warp.NECK] - still(rest[warp.NECK])
    neck = still(warp.neck_points(rest)) + 0.5 * jaw_drop
    for t in range(T):
        target = np.concatenate([motion.tracks[t], neck[t], head_pts[t], border])
        yield warp.paint_mouth(warper.frame(target), motion.tracks[t])


def bilabial_gaps(tl, tracks: np.ndarray, fps: int, lead_s: float) -> list[float]:
    """Smallest inner-lip gap (px) during each p/b/m, its interval moved `lead_s` earlier."""
    gap = visemes.inner_gap(tracks)
    out = []
    for name, t0, t1 in tl:
        if visemes.normalise(name) in visemes.BILABIALS:
            k0 = int(np.floor((t0 - lead_s) * fps))
            k1 = int(np.ceil((t1 - lead_s) * fps))
            seg = gap[max(k0, 0):min(k1 + 1, len(gap))]
            if len(seg):
                out.append(float(seg.min()))
    return out


# ----------------------------------------------------------------------------- checks
def decode_check(video: Path, audio: Path, ffmpeg: str, fps: int, rate_hz: int,
                 n_frames: int) -> dict[str, Any]:
    """Decode both files with ffmpeg: codecs, rates, frame count, durations, and the m4a's
    per-frame energy (dB) for the sync figures."""
    from kfusion.pipeline.media.container import parse_header
    r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(video), "-map", "0:v",
                        "-f", "null", "-"], capture_output=True)
    err = r.stderr.decode(errors="replace").replace("\r", "\n")
    vinfo = parse_header(err, str(video))
    frames_decoded = [int(x) for x in re.findall(r"frame=\s*(\d+)", err)]
    a = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(audio), "-f", "f32le",
                        "-ac", "1", "-"], capture_output=True)
    ainfo = parse_header(a.stderr.decode(errors="replace"), str(audio))
    pcm = np.frombuffer(a.stdout, "<f4")
    hop = rate_hz // fps
    energy = np.array([np.sqrt(np.mean(pcm[max(0, k * hop - hop // 2):k * hop + hop // 2] ** 2) + 1e-12)
                       for k in range(n_frames)])
    return {"video_codec": vinfo.video_codec, "fps": vinfo.fps, "width": vinfo.width,
            "height": vinfo.height, "video_audio_codec": vinfo.audio_codec,
            "frames_decoded": frames_decoded[-1] if frames_decoded else 0,
            "audio_codec": ainfo.audio_codec, "sample_rate_hz": ainfo.sample_rate_hz,
            "channels": ainfo.channels, "audio_duration_s": len(pcm) / rate_hz if rate_hz else 0.0,
            "video_duration_s": (frames_decoded[-1] / fps) if frames_decoded else 0.0,
            "energy_db": 20 * np.log10(np.maximum(energy, 1e-6))}


# ----------------------------------------------------------------------------- pool
def run_clips(demo, specs: list[ClipSpec], speakers: list[Speaker], corpus_dir: Path,
              ffmpeg: str, workers: int):
    """Yield each clip's result (in plan order), each clip in a fresh process."""
    jobs = [(demo, s, speakers[s.speaker_index], str(corpus_dir), ffmpeg) for s in specs]
    yield from map_shards(clip_job, jobs, workers=workers, ordered=True, fresh_process_per_job=True,
                          preload=["numpy", "cv2", "scipy.spatial", "kfusion.pipeline.demo.render", "kfusion.pipeline.media.warp",
                                   "kfusion.pipeline.demo.visemes", "kfusion.pipeline.media.container"],
                          desc="demo", unit="clip")


def generate_corpus(demo, corpus_dir: Path, ffmpeg: str, workers: int, run: StageRun) -> list[dict]:
    """Make every planned clip under `corpus_dir`; return the results of the good ones. A clip
    that failed, or whose files do not decode as planned, is a reject on `run`, its files removed."""
    results = []
    for res in run_clips(demo, plan(demo), speakers_for(demo), corpus_dir, ffmpeg, workers):
        spec = res["spec"]
        problem = res.get("error") or decode_problem(res["check"], demo, res["row"]["n_frames"])
        if problem:
            run.reject(spec.clip_id, "generation_failed" if "error" in res else "decode_mismatch", problem)
            for rel in (spec.video_rel, spec.audio_rel):
                (corpus_dir / rel).unlink(missing_ok=True)
            continue
        results.append(res)
        run.processed += 1
    return results
