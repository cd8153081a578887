"""What the demo stage reports on its corpus: decode checks per clip, the figures of
reports/demo.json (counts, durations, codecs, audio-visual sync, lip closure) and the contact
sheet plots/demo/contact_sheet.png."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kfusion.shapes import N_POINTS
from kfusion.pipeline.demo import sync
from kfusion.pipeline.demo.groundtruth import contact_sheet, decode_frames
from kfusion.pipeline.demo.visemes import inner_gap
from kfusion.pipeline.io import atomic_path


def decode_problem(check: dict, demo, n_frames: int) -> str | None:
    """What is wrong with a clip's decoded files, or None."""
    want = {"video_codec": "h264", "fps": float(demo.fps), "width": demo.frame_px,
            "height": demo.frame_px, "video_audio_codec": "aac", "audio_codec": "aac",
            "sample_rate_hz": demo.audio_rate_hz, "channels": 1, "frames_decoded": n_frames}
    bad = [f"{k}={check[k]!r} (expected {v!r})" for k, v in want.items() if check[k] != v]
    if abs(check["audio_duration_s"] - n_frames / demo.fps) > 1.0 / demo.fps:
        bad.append(f"audio {check['audio_duration_s']:.3f} s vs video {n_frames / demo.fps:.3f} s")
    return "; ".join(bad) or None


def summary(demo, results: list[dict]) -> dict:
    """Counts, durations, decode checks, sync and lip-closure figures for reports/demo.json."""
    lead_frames = demo.visual_lead_ms / 1000 * demo.fps
    dur = np.array([r["row"]["n_frames"] / demo.fps for r in results]) if results else np.zeros(1)
    mouths = [r["gap"] for r in results]
    energies = [r["energy_db"] for r in results]
    out = {"clips": len(results), "speakers": len({r["row"]["speaker"] for r in results}),
           "emotions": len({r["row"]["emotion"] for r in results}),
           "levels": len({r["row"]["level"] for r in results}),
           "frames": int(sum(r["row"]["n_frames"] for r in results)),
           "duration_s": {"min": round(float(dur.min()), 3), "mean": round(float(dur.mean()), 3),
                          "max": round(float(dur.max()), 3), "total": round(float(dur.sum()), 2)}}
    checks = [r["check"] for r in results]
    out["decode"] = {
        "video_codecs": sorted({c["video_codec"] for c in checks}),
        "fps": sorted({c["fps"] for c in checks}),
        "audio_codecs": sorted({c["audio_codec"] for c in checks}),
        "sample_rates_hz": sorted({c["sample_rate_hz"] for c in checks}),
        "frames_match": sum(c["frames_decoded"] == r["row"]["n_frames"] for c, r in zip(checks, results)),
        "max_av_duration_diff_s": round(max((abs(c["audio_duration_s"] - c["video_duration_s"])
                                             for c in checks), default=0.0), 4)}
    if not results:
        return out
    corr = sync.lagged_correlation(mouths, energies)
    lag, lag_sub = sync.peak_lag(corr)
    per_clip = [sync.per_clip_correlation(m, e, lag) for m, e in zip(mouths, energies)]
    out["sync"] = {"energy": "frame RMS dB, 60 dB floor, z-scored per clip, pooled Pearson r",
                   "visual_lead_frames": round(lead_frames, 3),
                   "corr_lag0": round(corr[0], 4), "corr_peak": round(corr[lag], 4),
                   "peak_lag_frames": lag, "peak_lag_frames_subframe": round(lag_sub, 3),
                   "per_clip_corr_at_peak_median": round(float(np.nanmedian(per_clip)), 4),
                   "corr_by_lag": {str(k): round(v, 4) for k, v in corr.items()}}
    gaps = np.concatenate([r["bilabial_gaps"] for r in results] or [np.zeros(0)])
    peak_open = np.array([m.max() for m in mouths])
    out["lip_closure"] = {"bilabial_events": int(len(gaps)),
                          "max_gap_px": round(float(gaps.max()), 4) if len(gaps) else None,
                          "closed_fraction": round(float((gaps < 0.5).mean()), 4) if len(gaps) else None,
                          "median_peak_opening_px": round(float(np.median(peak_open)), 2)}
    return out


def sheet_image(demo, results: list[dict], corpus: Path, ffmpeg: str) -> np.ndarray:
    """Per speaker and emotion, the highest level's first clip at its widest mouth opening;
    below, every third frame of the first clip."""
    best: dict[tuple[str, str], dict] = {}
    for r in results:
        key = (r["row"]["speaker"], r["row"]["emotion"])
        if key not in best or (r["row"]["level"], -int(r["row"]["clip"])) > \
                (best[key]["row"]["level"], -int(best[key]["row"]["clip"])):
            best[key] = r
    tiles = []
    for (spk, emo), r in sorted(best.items(), key=lambda kv: (kv[0][0], demo.emotions.index(kv[0][1]))):
        frames = decode_frames(corpus / r["spec"].video_rel, ffmpeg, demo.frame_px)
        tracks = r["row"]["landmarks_video_px"].reshape(-1, N_POINTS, 2)
        k = int(np.argmax(inner_gap(tracks)))
        tiles.append((spk, emo, frames[k], tracks[k]))
    first = results[0]
    frames = decode_frames(corpus / first["spec"].video_rel, ffmpeg, demo.frame_px)
    tracks = first["row"]["landmarks_video_px"].reshape(-1, N_POINTS, 2)
    ks = list(range(0, len(frames), 3))[:max(len(demo.emotions), 8)]
    label = f"{first['spec'].clip_id} frames {ks[0]}..{ks[-1]} step 3: \"{first['row']['text']}\""
    return contact_sheet(tiles, [frames[k] for k in ks], [tracks[k] for k in ks], label)


def write_sheet(png: Path, demo, results: list[dict], corpus: Path, ffmpeg: str) -> None:
    """The contact sheet as a PNG; a blank tile when no clip was made."""
    import cv2
    sheet = sheet_image(demo, results, corpus, ffmpeg) if results else np.full((64, 64, 3), 255, np.uint8)
    with atomic_path(png) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
