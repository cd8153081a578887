"""Generate the built-in demo corpus (MEAD layout, real media) and its ground truth."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from kfusion.config import Config, dump
from kfusion.pipeline.demo import faces, generate, sync
from kfusion.pipeline.demo.groundtruth import contact_sheet, decode_frames, write_groundtruth
from kfusion.pipeline.demo.visemes import inner_gap
from kfusion.pipeline.media.ffmpeg import ffmpeg_binary
from kfusion.pipeline.io import StageRun, atomic_path, fresh_dir, progress

METRICS = Path("metrics/demo.json")
SHEET = Path("plots/demo/contact_sheet.png")


def _expected(check: dict, demo, n_frames: int) -> str | None:
    """What is wrong with a clip's decoded files, or None."""
    want = {"video_codec": "h264", "fps": float(demo.fps), "width": demo.frame_px,
            "height": demo.frame_px, "video_audio_codec": "aac", "audio_codec": "aac",
            "sample_rate_hz": demo.audio_rate_hz, "channels": 1, "frames_decoded": n_frames}
    bad = [f"{k}={check[k]!r} (expected {v!r})" for k, v in want.items() if check[k] != v]
    if abs(check["audio_duration_s"] - n_frames / demo.fps) > 1.0 / demo.fps:
        bad.append(f"audio {check['audio_duration_s']:.3f} s vs video {n_frames / demo.fps:.3f} s")
    return "; ".join(bad) or None


def _summary(demo, results: list[dict]) -> dict:
    """Counts, durations, decode checks, sync and lip-closure figures for metrics/demo.json."""
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


def _sheet(demo, results: list[dict], corpus: Path, ffmpeg: str) -> np.ndarray:
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
        tracks = r["row"]["landmarks_video_px"].reshape(-1, 68, 2)
        k = int(np.argmax(inner_gap(tracks)))
        tiles.append((spk, emo, frames[k], tracks[k]))
    first = results[0]
    frames = decode_frames(corpus / first["spec"].video_rel, ffmpeg, demo.frame_px)
    tracks = first["row"]["landmarks_video_px"].reshape(-1, 68, 2)
    ks = list(range(0, len(frames), 3))[:max(len(demo.emotions), 8)]
    label = f"{first['spec'].clip_id} frames {ks[0]}..{ks[-1]} step 3: \"{first['row']['text']}\""
    return contact_sheet(tiles, [frames[k] for k in ks], [tracks[k] for k in ks], label)


def _run(cfg: Config, args) -> None:
    """Generate the demo corpus: speech, faces, tracks, media, ground truth, contact sheet."""
    demo = cfg.demo
    out = fresh_dir(demo.out)
    corpus, gt_dir = out / "corpus", out / "groundtruth"
    ffmpeg = ffmpeg_binary(cfg.preprocess.ffmpeg)
    run = StageRun("demo")
    speakers = faces.speakers_for(demo)
    specs = generate.plan(demo)
    results = []
    for res in generate.run_clips(demo, specs, speakers, corpus, ffmpeg, cfg.preprocess.workers,
                                  progress=lambda it, total: progress(it, total=total, desc="demo")):
        spec = res["spec"]
        problem = res.get("error") or _expected(res["check"], demo, res["row"]["n_frames"])
        if problem:
            run.reject(spec.clip_id, "generation_failed" if "error" in res else "decode_mismatch", problem)
            for rel in (spec.video_rel, spec.audio_rel):
                (corpus / rel).unlink(missing_ok=True)
            continue
        results.append(res)
        run.processed += 1
    write_groundtruth(gt_dir, [r["row"] for r in results], demo.clips_per_shard)
    sheet = _sheet(demo, results, corpus, ffmpeg) if results else np.full((64, 64, 3), 255, np.uint8)
    with atomic_path(SHEET) as tmp:
        ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(png.tobytes())
    dump(cfg, out / "config.yaml")
    run.extra.update(_summary(demo, results))
    # the generator should make every clip it plans: any failure is a bug to see, not skip
    run.finish(rejects_path=out / "rejects.parquet", metrics_path=METRICS, max_reject_fraction=0.0)


def main(argv: list[str] | None = None) -> int:
    from kfusion.stages._common import run_stage
    return run_stage("demo", _run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
