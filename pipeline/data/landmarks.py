"""68-point face landmarks per 30 fps frame, in the pixels of a square 256 crop.

One clip goes through three steps (docs/landmarks.md has the reasoning):

1. `track_clip`: detect sparsely, then track. The face detector runs on a downscaled frame
   only at the first frame, every `detect_every` frames, and whenever tracking confidence
   falls under `min_track_confidence`; in between, the shape predictor runs inside a box
   derived from the previous frame's landmarks. Landmarks are kept in source-video pixels.
2. `postprocess`: bridge dropouts of at most `max_gap_frames` by interpolation (those frames
   keep face_found False), optional temporal smoothing, then `plan_crops`: one square crop per
   clip (side = crop_scale x face size), replaced only when the head leaves it by more than
   `recrop_tolerance`.
3. `to_crop_px`: crop_px = (video_px - [x0, y0]) * crop_px / side.

Backends share one interface: `detect(gray_small) -> [(box, score)]`, `predict(image, box)
-> (68, 2)`. `dlib` (default) loads its models from the `face_recognition_models` package;
`fan` uses face-alignment's FAN where its weights exist locally (never downloads).
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from kfusion.config import LandmarksConfig
from kfusion.shapes import N_POINTS
from kfusion.pipeline.media.video import downscale

UPPER_FACE = slice(17, 48)       # brows, nose, eyes: still while the mouth speaks
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"   # face_alignment 1.x, 2D FAN, network size 4


class LandmarkError(RuntimeError):
    """A backend that cannot be used here (missing model files); the message says what to do."""


# ----------------------------------------------------------------------------- models
def dlib_model_path(name: str) -> Path:
    """A .dat shipped in `face_recognition_models`, found without importing it (its
    __init__ imports pkg_resources, which newer setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError("the package face_recognition_models is not installed; it ships "
                            f"{name} (pip install face_recognition_models)")
    for root in spec.submodule_search_locations:
        p = Path(root) / "models" / name
        if p.is_file():
            return p
    raise LandmarkError(f"{name} not found under {list(spec.submodule_search_locations)}/models")


@functools.lru_cache(maxsize=None)
def shape_predictor(path: str):
    """dlib's shape predictor from `path`, read once per process (~100 MB, about half a
    second). A worker forked from a process that read it (the landmarks stage's fork server,
    kfusion.pipeline.data.dlib_preload) shares its pages: no read per worker, and one copy of
    the model in the CPU cache that the workers share (docs/landmarks.md, Measured)."""
    import dlib
    return dlib.shape_predictor(path)


Box = tuple[float, float, float, float]   # left, top, right, bottom in source px


class DlibBackend:
    """HOG (default) or CNN (mmod) face detector + dlib's 68-point regression-tree predictor."""

    def __init__(self, detector: str = "hog", upsample: int = 0):
        import dlib
        self.dlib = dlib
        self.upsample = upsample
        self.predictor = shape_predictor(str(dlib_model_path(PREDICTOR_FILE)))
        if detector == "cnn":
            self.cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path(CNN_DETECTOR_FILE)))
            self.hog = None
        else:
            self.hog, self.cnn = dlib.get_frontal_face_detector(), None

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[tuple[Box, float]]:
        """Faces as (box, score); `upsample` (default: the constructor's) doubles the image
        that many times first, to find faces smaller than the detector's 80 px window."""
        up = self.upsample if upsample is None else upsample
        if self.cnn is not None:
            found = self.cnn(image, up)
            return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                    for d in found]
        rects, scores, _ = self.hog.run(image, up, 0.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        rect = self.dlib.rectangle(*(int(round(v)) for v in box))
        return shape_points(self.predictor(image, rect))


_POINT_PUNCTUATION = str.maketrans("(),", "   ")


def shape_points(shape) -> np.ndarray:
    """dlib's full_object_detection -> (68, 2) float32. Its text form, `points[(x, y), ...]`,
    parses in half the time of reading 68 point objects' .x and .y from Python."""
    text = str(shape.parts())
    if text.startswith("points[") and text.endswith("]"):
        values = text[7:-1].translate(_POINT_PUNCTUATION).split()
        if len(values) == 2 * N_POINTS:
            return np.fromiter(map(int, values), np.float32, 2 * N_POINTS).reshape(N_POINTS, 2)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)   # another dlib's text


def fan_weights_path(weights_dir: str = "") -> Path:
    """Where FAN's weights are, in torch hub layout (`<dir>/checkpoints/<file>`), or a clear error."""
    import torch
    dirs = [Path(weights_dir)] if weights_dir else []
    dirs.append(Path(torch.hub.get_dir()))
    for d in dirs:
        for p in (d / "checkpoints" / FAN_FILE, d / FAN_FILE):
            if p.is_file():
                return p
    raise LandmarkError(
        f"landmarks.backend=fan needs face-alignment's weights {FAN_FILE}, and nothing is "
        f"downloaded here; looked in {[str(d / 'checkpoints') for d in dirs]}. Copy the file "
        f"(from https://www.adrianbulat.com/downloads/python-fan/{FAN_FILE}) to "
        f"<landmarks.fan_weights_dir>/checkpoints/{FAN_FILE}, or use landmarks.backend=dlib")


class FanBackend:
    """face_alignment.FaceAlignment (2D FAN-4), the paper's detector. Faces are found with
    dlib's detector (face-alignment's own S3FD would need a second download); FAN predicts."""

    def __init__(self, weights_dir: str = "", detector: str = "hog", upsample: int = 0,
                 device: str = "cpu"):
        weights = fan_weights_path(weights_dir)
        import torch
        import face_alignment
        hub = weights.parent.parent if weights.parent.name == "checkpoints" else None
        if hub is None:   # flat layout: FaceAlignment only looks in <hub>/checkpoints
            raise LandmarkError(f"found {weights}, but face-alignment reads it only from a "
                                f"`checkpoints` folder: move it to {weights.parent}/checkpoints/")
        old = torch.hub.get_dir()
        torch.hub.set_dir(str(hub))   # the file exists there, so load_file_from_url only opens it
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*detector is deprecated")
                # face_detector='dlib' on CPU is dlib's HOG (no file); on CUDA it needs the mmod file,
                # which we pass from face_recognition_models. We give FAN our own boxes anyway.
                self.fa = face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D, device=device, flip_input=False,
                    face_detector="dlib", compile=False,
                    face_detector_kwargs={"path_to_detector": str(dlib_model_path(CNN_DETECTOR_FILE))})
        finally:
            torch.hub.set_dir(old)
        self.finder = DlibBackend(detector, upsample)

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[tuple[Box, float]]:
        return self.finder.detect(image, upsample)

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        pts = self.fa.get_landmarks_from_image(rgb, detected_faces=[list(box)])
        return np.asarray(pts[0][:, :2], np.float32)   # (68, 2)


def make_backend(cfg: LandmarksConfig):
    if cfg.backend == "fan":
        return FanBackend(cfg.fan_weights_dir, cfg.detector, cfg.detect_upsample)
    return DlibBackend(cfg.detector, cfg.detect_upsample)


def detect_growing(backend, gray: np.ndarray, cfg: LandmarksConfig,
                   max_upsampled_px: int = 2000) -> tuple[list[tuple[Box, float]], int, int]:
    """Faces in `gray` (boxes in its pixels), found as the stage finds them (longer side
    `detect_max_px`), else at twice, four times, ... that size up to the full resolution,
    else, for an image no larger than `max_upsampled_px`, at the full resolution upsampled
    once more. A 60 px face in a 6000x4000 photo is 5 px at 480 px: no face to the detector.
    Returns (faces, the longer side that found them (0 = full resolution), upsample used);
    no faces: ([], 0, the last upsample tried)."""
    full = max(gray.shape[:2])
    sizes, px = [], cfg.detect_max_px
    while 0 < px < full:
        sizes.append(px)
        px *= 2
    tries = [(px, cfg.detect_upsample) for px in (*sizes, 0)]
    if full <= max_upsampled_px and cfg.detect_upsample < 3:
        tries.append((0, cfg.detect_upsample + 1))
    for px, up in tries:
        small, scale = downscale(gray, px)
        found = backend.detect(small, up)
        if found:
            return [(tuple(v / scale for v in box), score) for box, score in found], px, up
    return [], 0, tries[-1][1]


# ----------------------------------------------------------------------------- geometry
def landmark_box(pts: np.ndarray) -> np.ndarray:
    """(cx, cy, size) of the landmarks' bounding box; size = its longer side."""
    lo, hi = pts.min(0), pts.max(0)
    c = (lo + hi) / 2
    return np.array([c[0], c[1], max(hi[0] - lo[0], hi[1] - lo[1])], np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two squares given as (cx, cy, size)."""
    (ax, ay, asz), (bx, by, bsz) = map(float, a), map(float, b)
    ix = max(0.0, min(ax + asz / 2, bx + bsz / 2) - max(ax - asz / 2, bx - bsz / 2))
    iy = max(0.0, min(ay + asz / 2, by + bsz / 2) - max(ay - asz / 2, by - bsz / 2))
    inter = ix * iy
    return inter / (asz ** 2 + bsz ** 2 - inter) if inter > 0 else 0.0


def upper_face_patch(gray: np.ndarray, pts: np.ndarray, px: int = 24) -> np.ndarray | None:
    """Zero-mean unit-norm px x px patch of the brows-eyes-nose box, or None off-frame."""
    import cv2
    upper = pts[UPPER_FACE]
    (lx, ly), (hx, hy) = upper.min(0).tolist(), upper.max(0).tolist()
    x0, y0 = int(max(lx, 0)), int(max(ly, 0))
    x1, y1 = int(min(hx, gray.shape[1])), int(min(hy, gray.shape[0]))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    p = cv2.resize(gray[y0:y1, x0:x1], (px, px), interpolation=cv2.INTER_AREA).astype(np.float32)
    p -= p.mean()
    flat = p.reshape(-1)
    n = float(np.sqrt(flat.dot(flat)))    # np.linalg.norm's own steps, without its checks
    return p / n if n > 1e-6 else None


def detection_confidence(score: float, detector: str) -> float:
    """Detector score -> [0, 1]. HOG scores are SVM margins (0 = decision boundary, faces
    typically 0.5-3); mmod confidences are on a similar scale. logistic(2 * score)."""
    return float(1.0 / (1.0 + np.exp(-2.0 * score)))


# ----------------------------------------------------------------------------- tracking
@dataclass
class Track:
    """Per-frame result of `track_clip`, in source-video pixels."""
    points: np.ndarray       # (T, 68, 2) float32, NaN where no face
    confidence: np.ndarray   # (T,) float32 in [0, 1]; 0 where no face
    found: np.ndarray        # (T,) bool: a face was detected or tracked in this frame
    detected: np.ndarray     # (T,) bool: ... by the detector (the identity frame is one of these)
    detections: int          # how many frames ran the detector
    width: int
    height: int
    multi_face_detections: int = 0   # ... and found more than one face there


class Tracker:
    """Detect sparsely, then track. Confidence on a tracked frame is
        min(IoU(landmark box now, landmark box before), NCC(upper-face patch now, at last detection))
    IoU catches a predictor that jumped (it always returns *some* face shape inside its box);
    NCC of the still upper face catches a box that no longer holds the face (cut, occlusion,
    the face left), which the predictor alone cannot tell. On a detection frame it is the
    detector's score through `detection_confidence`."""

    def __init__(self, backend, cfg: LandmarksConfig):
        self.backend, self.cfg = backend, cfg
        self.prev: np.ndarray | None = None          # (68, 2) last landmarks
        self.prev_box: np.ndarray | None = None      # their landmark_box (computed once)
        self.ref_patch: np.ndarray | None = None     # upper-face patch at the last detection
        self.rel = np.array([0.0, 0.0, 1.0])         # detector box vs landmark box (dx, dy, scale)
        self.since_detect = 0
        self.detections = 0
        self.multi_face_detections = 0

    def _box_from_landmarks(self, box: np.ndarray) -> Box:
        # Seed the predictor with a box in the *detector's* convention (it was trained on
        # detector boxes): the offset/scale between the two is measured at each detection.
        (cx, cy, s), (dx, dy, scale) = map(float, box), map(float, self.rel)
        cx, cy, s = cx + dx * s, cy + dy * s, s * scale
        return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)

    def _detect(self, gray: np.ndarray) -> tuple[np.ndarray, float, np.ndarray] | None:
        """-> (landmarks, confidence, their landmark_box), or None without a face."""
        self.detections += 1
        small, scale = downscale(gray, self.cfg.detect_max_px)
        found = self.backend.detect(small, self.cfg.detect_upsample)
        if not found:
            return None
        self.multi_face_detections += len(found) > 1
        if self.prev is not None:   # several faces: keep the one we were following
            c = self.prev_box[:2]
            box, score = min(found, key=lambda f: np.hypot((f[0][0] + f[0][2]) / 2 / scale - c[0],
                                                           (f[0][1] + f[0][3]) / 2 / scale - c[1]))
        else:                       # otherwise the largest
            box, score = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        box = tuple(v / scale for v in box)
        pts = self.backend.predict(gray, box)
        lb = landmark_box(pts)
        side = ((box[2] - box[0]) + (box[3] - box[1])) / 2
        self.rel = np.array([((box[0] + box[2]) / 2 - lb[0]) / lb[2],
                             ((box[1] + box[3]) / 2 - lb[1]) / lb[2], side / lb[2]])
        self.ref_patch = upper_face_patch(gray, pts)
        self.since_detect = 0
        return pts, detection_confidence(score, self.cfg.detector), lb

    def _track(self, gray: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """-> (landmarks, confidence, their landmark_box) from the previous frame's."""
        pts = self.backend.predict(gray, self._box_from_landmarks(self.prev_box))
        lb = landmark_box(pts)
        geometric = iou(lb, self.prev_box)
        patch = upper_face_patch(gray, pts)
        appearance = float((patch * self.ref_patch).sum()) if patch is not None \
            and self.ref_patch is not None else 0.0
        return pts, max(0.0, min(geometric, appearance)), lb

    def step(self, gray: np.ndarray) -> tuple[np.ndarray | None, float]:
        cfg = self.cfg
        self.last_detected = False
        tracked = None
        if self.prev is not None and self.since_detect < cfg.detect_every:
            tracked = self._track(gray)
            self.since_detect += 1
            if tracked[1] >= cfg.min_track_confidence:
                self.prev, self.prev_box = tracked[0], tracked[2]
                return tracked[:2]
        detected = self._detect(gray)
        if detected is not None:
            self.prev, self.prev_box = detected[0], detected[2]
            self.last_detected = True
            return detected[:2]
        if tracked is not None and tracked[1] >= cfg.min_track_confidence:
            return tracked[:2]   # scheduled re-detection missed a face we track confidently
        self.prev = self.prev_box = None
        return None, 0.0


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two frames hold the same pixels. A repeated frame is often the same array; else
    the middle row tells almost every pair of different frames apart, without reading both
    whole (np.array_equal compares every pixel: 0.1 ms for a 1080p frame)."""
    if a is b:
        return True
    mid = a.shape[0] // 2
    return a.shape == b.shape and np.array_equal(a[mid], b[mid]) and np.array_equal(a, b)


def track_clip(frames: Iterable[np.ndarray], backend, cfg: LandmarksConfig,
               on_detection=None) -> Track:
    """Run the tracker over gray frames (H, W). Repeated frames (fps upsampling duplicates
    every 6th frame of 25 fps video) reuse the previous result instead of re-running.
    `on_detection(t, confidence)` is called on each frame where the detector found the face."""
    tracker = Tracker(backend, cfg)
    pts_list, conf, found, detected = [], [], [], []
    last, last_out, shape = None, None, (0, 0)
    for t, gray in enumerate(frames):
        shape = gray.shape
        if last is not None and same_pixels(gray, last):
            out, det = last_out, False
        else:
            out = tracker.step(gray)
            det = tracker.last_detected
            if det and on_detection is not None:
                on_detection(t, out[1])
        last, last_out = gray, out
        pts_list.append(out[0] if out[0] is not None else np.full((N_POINTS, 2), np.nan, np.float32))
        conf.append(out[1])
        found.append(out[0] is not None)
        detected.append(det)
    T = len(pts_list)
    return Track(points=np.stack(pts_list).astype(np.float32) if T else np.zeros((0, N_POINTS, 2), np.float32),
                 confidence=np.asarray(conf, np.float32), found=np.asarray(found, bool),
                 detected=np.asarray(detected, bool),
                 detections=tracker.detections, width=shape[1], height=shape[0],
                 multi_face_detections=tracker.multi_face_detections)


# ----------------------------------------------------------------------------- post-processing
def bridge_gaps(points: np.ndarray, found: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of missing frames no longer than `max_gap`: linearly between the faces on
    both sides, or by holding the nearest face at the clip's start or end. Longer runs stay NaN.
    points (T, 68, 2) -> (T, 68, 2)."""
    out = points.copy()
    T = len(found)
    t = 0
    while t < T:
        if found[t]:
            t += 1
            continue
        end = t
        while end < T and not found[end]:
            end += 1
        gap, left, right = end - t, t - 1, end      # missing frames t .. end-1
        if gap <= max_gap and (left >= 0 or right < T):
            if left >= 0 and right < T:
                w = (np.arange(1, gap + 1) / (gap + 1))[:, None, None]
                out[t:end] = (1 - w) * points[left] + w * points[right]
            else:
                out[t:end] = points[left] if left >= 0 else points[right]
        t = end
    return out


def smooth(points: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` frames within each run of valid (non-NaN) frames,
    edges padded by repetition, so smoothing never mixes across a gap. (T, 68, 2)."""
    if window <= 1:
        return points
    out = points.copy()
    valid = ~np.isnan(points[:, 0, 0])
    half_l, half_r = (window - 1) // 2, window // 2
    t, T = 0, len(valid)
    while t < T:
        if not valid[t]:
            t += 1
            continue
        end = t
        while end < T and valid[end]:
            end += 1
        run = points[t:end].astype(np.float64)
        padded = np.concatenate([np.repeat(run[:1], half_l, 0), run, np.repeat(run[-1:], half_r, 0)])
        c = np.cumsum(np.concatenate([np.zeros_like(run[:1]), padded]), axis=0)
        out[t:end] = ((c[window:] - c[:-window]) / window).astype(points.dtype)
        t = end
    return out


def plan_crops(points: np.ndarray, crop_scale: float, tolerance: float) -> np.ndarray:
    """One square crop per stretch of frames where the head stays put: a stretch starts at a
    frame and goes on while the face centre stays within tolerance x side of that frame's and
    its size within (1 +- tolerance); the stretch's crop is its median face, side = crop_scale
    x face size, in integer px. Frames without landmarks take the neighbouring stretch's box.
    points (T, 68, 2) -> boxes (T, 3) float32 (x0, y0, side)."""
    T = len(points)
    valid = ~np.isnan(points[:, 0, 0])
    boxes = np.full((T, 3), np.nan)
    faces = np.array([landmark_box(p) if v else (np.nan,) * 3 for p, v in zip(points, valid)])
    idx = np.flatnonzero(valid)
    i = 0
    while i < len(idx):
        ref = faces[idx[i]]
        j = i + 1
        while j < len(idx):
            f = faces[idx[j]]
            if np.hypot(*(f[:2] - ref[:2])) > tolerance * crop_scale * ref[2] \
                    or abs(f[2] / ref[2] - 1) > tolerance:
                break
            j += 1
        med = np.median(faces[idx[i:j]], axis=0)
        side = int(round(crop_scale * med[2]))
        box = (int(round(med[0] - side / 2)), int(round(med[1] - side / 2)), side)
        stop = idx[j] if j < len(idx) else T
        start = idx[i] if i > 0 else 0
        boxes[start:stop] = box
        i = j
    return boxes.astype(np.float32)


def to_crop_px(points: np.ndarray, boxes: np.ndarray, crop_px: int) -> np.ndarray:
    """crop_px = (video_px - [x0, y0]) * crop_px / side. (T, 68, 2), (T, 3) -> (T, 68, 2)."""
    return ((points - boxes[:, None, :2]) * (crop_px / boxes[:, None, 2:3])).astype(np.float32)


def to_video_px(points: np.ndarray, boxes: np.ndarray, crop_px: int) -> np.ndarray:
    return (points * (boxes[:, None, 2:3] / crop_px) + boxes[:, None, :2]).astype(np.float32)


@dataclass
class ClipLandmarks:
    landmarks_px: np.ndarray   # (T, 68, 2) crop px; NaN where no face and not bridged
    confidence: np.ndarray     # (T,)
    face_found: np.ndarray     # (T,) bool
    crop_box: np.ndarray       # (T, 3) x0, y0, side in source px
    identity_frame: int


def identity_frame(detected: np.ndarray, confidence: np.ndarray, fps: int) -> int:
    """The most confident detector frame of the first second (else the first detector frame)."""
    first = np.flatnonzero(detected[:fps])
    if len(first):
        return int(first[np.argmax(confidence[first])])
    return int(np.flatnonzero(detected)[0]) if detected.any() else 0


def postprocess(track: Track, cfg: LandmarksConfig) -> ClipLandmarks:
    pts = bridge_gaps(track.points, track.found, cfg.max_gap_frames)
    pts = smooth(pts, cfg.smoothing)
    boxes = plan_crops(pts, cfg.crop_scale, cfg.recrop_tolerance)
    ident = identity_frame(track.detected, track.confidence, cfg.fps)
    return ClipLandmarks(landmarks_px=to_crop_px(pts, boxes, cfg.crop_px),
                         confidence=track.confidence, face_found=track.found,
                         crop_box=boxes, identity_frame=ident)


def still_point_jitter(points: np.ndarray, indices=(27, 28, 29, 30, 39, 42)) -> float:
    """Mean |second difference| over time of still-head points (nose bridge 27-30, inner eye
    corners 39 and 42), in the points' pixels: a measure of frame-to-frame landmark noise."""
    p = points[:, list(indices)]
    d2 = p[2:] - 2 * p[1:-1] + p[:-2]          # (T-2, k, 2)
    mag = np.linalg.norm(d2, axis=-1)
    return float(np.nanmean(mag)) if np.isfinite(mag).any() else float("nan")


# ----------------------------------------------------------------------------- good span
def good_span(found: np.ndarray, min_fraction: float) -> tuple[int, int]:
    """The longest span [a, b) of frames whose face share is at least `min_fraction`, shrunk to
    start and end on a frame with a face; (0, 0) when no frame has one. A clip with a damaged
    head or tail (grey MPEG garbage, a cut before the speaker sits down) keeps its good part.

    Longest subarray with mean(found) >= p: with x_t = found_t - p and prefix sums P, the
    longest [a, b) with P[b] >= P[a]; a runs over the prefix minima from the left, b over
    the frames from the right (O(T))."""
    T = len(found)
    if not found.any():
        return 0, 0
    P = np.concatenate([[0.0], np.cumsum(found.astype(np.float64) - min_fraction)])
    tol = 1e-9 * (T + 1)
    lows = [0]                                  # indices where P reaches a new minimum
    for i in range(1, T + 1):
        if P[i] < P[lows[-1]] - tol:
            lows.append(i)
    best, b = (0, 0), T
    for a in reversed(lows):                    # later minima first: they pair with later b
        while b > a and P[b] < P[a] - tol:
            b -= 1
        if b - a > best[1] - best[0]:
            best = (a, b)
    a, b = best
    hits = np.flatnonzero(found[a:b])
    return (a + int(hits[0]), a + int(hits[-1]) + 1) if len(hits) else (0, 0)


def keep_span(track: Track, cfg: LandmarksConfig) -> tuple[int, int]:
    """The frames [a, b) of a tracked clip to keep: all of them when the face is in at least
    `min_face_fraction` of its frames, else its longest good span (good_span). NoFace when
    that span is shorter than `landmarks.min_duration_s`."""
    T = len(track.found)
    share = float(track.found.mean()) if T else 0.0
    if share >= cfg.min_face_fraction:
        return 0, T
    a, b = good_span(track.found, cfg.min_face_fraction)
    if (b - a) < cfg.min_duration_s * cfg.fps or b == a:
        raise NoFace(f"a face in {int(track.found.sum())} of {T} frames ({share:.0%}), below "
                     f"landmarks.min_face_fraction={cfg.min_face_fraction}, and no stretch with "
                     f"that share lasts landmarks.min_duration_s={cfg.min_duration_s} s (the "
                     f"longest: frames {a}-{b}, {(b - a) / cfg.fps:.2f} s)")
    return a, b


def postprocess_span(track: Track, cfg: LandmarksConfig, a: int, b: int) -> ClipLandmarks:
    """postprocess on frames [a, b) only; the frames outside keep the clip's length (so video
    and audio stay aligned) with no landmarks (NaN), no face, and the nearest crop box."""
    T = len(track.found)
    if (a, b) == (0, T):
        return postprocess(track, cfg)
    part = Track(points=track.points[a:b], confidence=track.confidence[a:b],
                 found=track.found[a:b], detected=track.detected[a:b], detections=track.detections,
                 width=track.width, height=track.height)
    c = postprocess(part, cfg)
    lm = np.full((T, N_POINTS, 2), np.nan, np.float32)
    lm[a:b] = c.landmarks_px
    conf, found = np.zeros(T, np.float32), np.zeros(T, bool)
    conf[a:b], found[a:b] = c.confidence, c.face_found
    boxes = np.concatenate([np.repeat(c.crop_box[:1], a, 0), c.crop_box,
                            np.repeat(c.crop_box[-1:], T - b, 0)])
    return ClipLandmarks(landmarks_px=lm, confidence=conf, face_found=found, crop_box=boxes,
                         identity_frame=c.identity_frame + a)


# ----------------------------------------------------------------------------- one clip
@dataclass
class ClipResult:
    row: dict                 # one landmark-shard row (see SCHEMA)
    frames: int
    face_frames: int          # frames where the face was detected or tracked
    detections: int
    seconds: float
    multi_face_detections: int = 0   # detector runs that found more than one face
    kept: tuple[int, int] = (0, 0)   # frames [a, b) kept; (0, frames) when not trimmed


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def _track_video(video_path: str, backend, cfg: LandmarksConfig,
                 ffmpeg: str) -> tuple[Track, dict]:
    """One decode: in this process where its frames are certain to be the pipe's (most clips:
    no ffmpeg process to start, docs/landmarks.md), else through ffmpeg's pipe, from the start
    again. -> (track, {t, colour} of the identity candidate), see _track_frames."""
    from kfusion.pipeline.media.video import NotInProcess, decode_in_process, pipe_frames
    try:
        return _track_frames(decode_in_process(video_path, cfg.fps), backend, cfg)
    except NotInProcess:
        return _track_frames(pipe_frames(video_path, ffmpeg=ffmpeg, fps=cfg.fps), backend, cfg)


def _track_frames(frames, backend, cfg: LandmarksConfig) -> tuple[Track, dict]:
    """Track over decoded Frames (kfusion.pipeline.media.video.Frame): the gray image is what
    the detector and predictor read, and the colour of the identity candidate (the best
    detection of the first second) is kept as it passes, so keep_frames=identity needs no
    second decode. -> (track, {t, colour}: the candidate's frame index and colour getter)."""
    current: list = [None]
    best: dict = {"conf": -1.0, "t": -1, "colour": None}

    def gray_frames():
        for frame in frames:
            current[0] = frame
            yield frame.gray

    def on_detection(t: int, conf: float) -> None:
        if (t < cfg.fps and conf > best["conf"]) or best["t"] < 0:
            best.update(conf=conf if t < cfg.fps else -1.0, t=t, colour=current[0].colour)

    return track_clip(gray_frames(), backend, cfg, on_detection), best


def _identity_rgb(video_path: str, best: dict, identity: int, cfg: LandmarksConfig,
                  ffmpeg: str) -> np.ndarray:
    """The identity frame in colour: the candidate's, kept while tracking; the pipe's 4:2:0
    frame where only ffmpeg's conversion gives that colour (a 4:4:4 source); or, for a clip
    trimmed to its good span, the frame decoded again in RGB."""
    from kfusion.pipeline.media.video import read_frame, yuv_rgb
    if best["t"] != identity:
        return read_frame(video_path, identity, ffmpeg=ffmpeg, fps=cfg.fps, threads=1)
    rgb = best["colour"]()
    if rgb is None:
        rgb = yuv_rgb(read_frame(video_path, identity, ffmpeg=ffmpeg, fps=cfg.fps,
                                 pix_fmt="yuv420p", threads=1))
    return rgb


def _check_multi_face(track: Track, cfg: LandmarksConfig, video_path: str) -> None:
    share = track.multi_face_detections / track.detections if track.detections else 0.0
    if share > cfg.max_multi_face_fraction:
        raise MultipleFaces(f"{video_path}: more than one face in {track.multi_face_detections} "
                            f"of the {track.detections} frames the detector ran on ({share:.0%}), "
                            f"above landmarks.max_multi_face_fraction={cfg.max_multi_face_fraction}")


def process_clip(clip_id: str, video_path: str, backend, cfg: LandmarksConfig,
                 ffmpeg: str = "") -> ClipResult:
    """Decode at cfg.fps, track, keep the good span, post-process, crop; one shard row. Raises
    MediaError on an unreadable video, NoFace when no stretch of min_duration_s has a face in
    min_face_fraction of its frames, MultipleFaces above max_multi_face_fraction."""
    import time

    from kfusion.pipeline.media.video import crop_square, iter_frames
    t0 = time.perf_counter()
    track, best = _track_video(video_path, backend, cfg, ffmpeg)
    T = len(track.found)
    try:
        a, b = keep_span(track, cfg)
    except NoFace as e:
        raise NoFace(f"{video_path}: {e}") from None
    _check_multi_face(track, cfg, video_path)
    clip = postprocess_span(track, cfg, a, b)
    rgb = _identity_rgb(video_path, best, clip.identity_frame, cfg, ffmpeg)
    identity_jpeg = _jpeg(crop_square(rgb, clip.crop_box[clip.identity_frame], cfg.crop_px),
                          cfg.jpeg_quality)
    frames_jpeg = []
    if cfg.keep_frames == "all":   # crops need the whole clip's crop plan: a second decode
        for t, rgb in enumerate(iter_frames(video_path, ffmpeg=ffmpeg, fps=cfg.fps,
                                            pix_fmt="rgb24", max_frames=T)):
            frames_jpeg.append(_jpeg(crop_square(rgb, clip.crop_box[t], cfg.crop_px),
                                     cfg.jpeg_quality))
        frames_jpeg = (frames_jpeg + frames_jpeg[-1:] * T)[:T]   # same count as the first pass
        identity_jpeg = frames_jpeg[clip.identity_frame]   # the same pixels as frames_jpeg
    row = {"clip_id": clip_id, "fps": cfg.fps, "n_frames": T,
           "landmarks_px": clip.landmarks_px.reshape(-1), "confidence": clip.confidence,
           "face_found": clip.face_found, "crop_box": clip.crop_box.reshape(-1),
           "src_w": track.width, "src_h": track.height, "identity_frame": clip.identity_frame,
           "identity_jpeg": identity_jpeg, "frames_jpeg": frames_jpeg}
    return ClipResult(row=row, frames=T, face_frames=int(clip.face_found.sum()),
                      detections=track.detections, seconds=time.perf_counter() - t0,
                      multi_face_detections=track.multi_face_detections, kept=(a, b))


class NoFace(RuntimeError):
    reason = "no_face"


class MultipleFaces(RuntimeError):
    reason = "multiple_faces"


def shard_schema():
    import pyarrow as pa
    return pa.schema([
        ("clip_id", pa.string()), ("fps", pa.int32()), ("n_frames", pa.int32()),
        ("landmarks_px", pa.list_(pa.float32())), ("confidence", pa.list_(pa.float32())),
        ("face_found", pa.list_(pa.bool_())), ("crop_box", pa.list_(pa.float32())),
        ("src_w", pa.int32()), ("src_h", pa.int32()), ("identity_frame", pa.int32()),
        ("identity_jpeg", pa.binary()), ("frames_jpeg", pa.list_(pa.binary())),
    ])


def rows_to_table(rows: list[dict]):
    """Rows with numpy columns -> a pyarrow Table of shard_schema (lists built from flat buffers)."""
    import pyarrow as pa
    schema = shard_schema()
    cols = {}
    for f in schema:
        vals = [r[f.name] for r in rows]
        if pa.types.is_list(f.type) and f.type.value_type != pa.binary():
            flat = np.concatenate([np.asarray(v).reshape(-1) for v in vals]) if vals else np.zeros(0)
            offsets = np.cumsum([0] + [np.asarray(v).size for v in vals]).astype(np.int32)
            cols[f.name] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(flat.astype(f.type.value_type.to_pandas_dtype())))
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=schema)


def read_clip(row: dict) -> dict:
    """A shard row (as from kfusion.pipeline.data.shards.iter_rows) with arrays in their shapes."""
    T = row["n_frames"]
    return {**row, "landmarks_px": np.asarray(row["landmarks_px"], np.float32).reshape(T, N_POINTS, 2),
            "confidence": np.asarray(row["confidence"], np.float32),
            "face_found": np.asarray(row["face_found"], bool),
            "crop_box": np.asarray(row["crop_box"], np.float32).reshape(T, 3)}
