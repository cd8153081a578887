"""Identities for the demo corpus: real photographs shipped inside pip packages.

Each base photo (scikit-image's astronaut, matplotlib's Grace Hopper) gets its own 68
landmarks once, from dlib's predictor in `face_recognition_models`; it is then cropped so the
face fills `face_fraction` of a square frame. A demo speaker is a base photo, optionally
mirrored, with a consistent change of face shape (applied to its target landmarks, so the warp
reshapes the face) and of colour (applied to the photo).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Voices: eSpeak NG language + a female variant (both base photos show women) without
# `breath`: variants with breath noise (f2, f3, f5) differ from run to run even in a fresh
# process, which would break the corpus's byte-for-byte determinism.
VOICES = ("en-us+f1", "en+f4", "en-gb-scotland+Annie", "en-us+belinda", "en-029+linda",
          "en-gb-x-rp+steph", "en-us-nyc+anika", "en+f1", "en-us+f4", "en-gb-x-gbclan+belinda",
          "en+linda", "en-us+Annie", "en-029+steph", "en-gb-scotland+f4", "en+anika", "en-us+steph")


@dataclass
class BasePhoto:
    name: str
    image: np.ndarray      # (F, F, 3) uint8 RGB, face filling `face_fraction` of the width
    landmarks: np.ndarray  # (68, 2) float32, dlib's points on `image`
    mirrored_landmarks: np.ndarray  # (68, 2) dlib's points on the left-right flipped image


@dataclass
class Speaker:
    """One demo identity: how it looks (photo, shape, colour) and sounds (voice, pitch)."""
    speaker: str                     # "D01", ...
    base: str                        # base photo name
    mirrored: bool
    image: np.ndarray                # (F, F, 3) colour-varied (and mirrored) photo
    source: np.ndarray               # (68, 2) the photo's own landmarks on `image`
    neutral: np.ndarray              # (68, 2) this speaker's rest shape (targets start here)
    voice: str
    pitch_offset: int                # added to eSpeak's pitch (0-100 scale)
    rate_scale: float                # speaking-rate multiplier
    shape: dict = field(default_factory=dict)   # the face-shape variation, for the record
    colour: dict = field(default_factory=dict)  # the colour variation, for the record

    def record(self) -> dict:
        return {"base": self.base, "mirrored": self.mirrored, "voice": self.voice,
                "pitch_offset": self.pitch_offset, "rate_scale": self.rate_scale,
                "shape": self.shape, "colour": self.colour}


def predictor_path() -> Path:
    """dlib's 68-point model inside `face_recognition_models` (located without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face_recognition_models is not installed; "
                                "pip install face_recognition_models (see requirements.lock)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / \
        "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dlib's 68-point predictor is missing")
    return path


def _photo_files() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    bgr = cv2.imread(str(hopper), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{hopper}: cannot read matplotlib's sample photo")
    return {"astronaut": np.ascontiguousarray(skimage.data.astronaut()[..., :3]),
            "grace_hopper": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)}


def detect_68(image: np.ndarray, upsample: int = 1) -> np.ndarray:
    """dlib's 68 points (68, 2) of the largest face in an RGB image."""
    import dlib
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    rects = detector(image, upsample) or detector(image, upsample + 1)
    if not rects:
        raise RuntimeError("dlib finds no face in a base photo")
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def consensus_68(image: np.ndarray, n: int = 24, seed: int = 0) -> np.ndarray:
    """dlib's 68 points as the per-point median over `n` small shifts, rotations and scalings
    of the image (each answer mapped back). Where a contour is ambiguous (Grace Hopper's jaw
    against her white hair, her brows against her glasses) dlib flips between two answers
    under head-motion-sized moves; the median is the answer the rendered frames will get most."""
    import dlib
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    answers = []
    for i in range(n):
        angle, scale = (0.0, 1.0) if i == 0 else (rng.uniform(-3, 3), rng.uniform(0.97, 1.03))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        if i:
            m[:, 2] += rng.uniform(-3, 3, 2)
        moved = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        rects = detector(moved, 0) or detector(moved, 1)
        if not rects:
            continue
        shape = predictor(moved, max(rects, key=lambda r: r.width() * r.height()))
        pts = np.array([(p.x, p.y, 1.0) for p in shape.parts()])
        answers.append(pts @ cv2.invertAffineTransform(m).T)               # back to the image
    if not answers:
        raise RuntimeError("dlib finds no face in a base photo")
    return np.median(np.stack(answers), 0).astype(np.float32)


def base_photos(frame_px: int, face_fraction: float) -> list[BasePhoto]:
    """The base photos, square-cropped around the face and resized to frame_px.

    The landmarks are dlib's on the cropped photo itself, at the size the videos have (the
    predictor's answer depends on scale), as a consensus over small moves (`consensus_68`)."""
    out = []
    for name, img in _photo_files().items():
        pts = detect_68(img)
        face_w = float(pts[16, 0] - pts[0, 0])           # jaw width
        side = face_w / face_fraction
        cx = float(pts[[0, 16], 0].mean())
        cy = float(pts[27, 1] + 0.12 * side)             # face centre a little below the brows
        x0, y0 = cx - side / 2, cy - side / 2
        s = frame_px / side
        m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
        crop = cv2.warpAffine(img, m, (frame_px, frame_px), flags=cv2.INTER_AREA if s < 1
                              else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        # dlib is not mirror-symmetric: ask it about the flipped photo too
        out.append(BasePhoto(name, crop, consensus_68(crop), consensus_68(crop[:, ::-1].copy())))
    return out


def interocular(pts: np.ndarray) -> float:
    """Distance between eye centres, the face's unit length."""
    return float(np.linalg.norm(pts[42:48].mean(0) - pts[36:42].mean(0)))


def close_inner_lips(pts: np.ndarray) -> np.ndarray:
    """Rest shape: inner lips meet (upper 61-63 and lower 67-65 at their midpoints)."""
    p = pts.copy()
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        mid = (p[up] + p[lo]) / 2
        p[up], p[lo] = mid, mid
    return p


def _vary_shape(pts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A consistent face-shape change: face width, lower-face length, eye spacing, mouth width,
    brow height, nose length. Image axes: x right, y down; the face is upright."""
    s = interocular(pts)
    shape = {"face_width": float(rng.uniform(0.92, 1.08)),
             "lower_face": float(rng.uniform(0.94, 1.07)),
             "eye_spacing": float(rng.uniform(-0.05, 0.05)),
             "mouth_width": float(rng.uniform(0.92, 1.1)),
             "brow_raise": float(rng.uniform(-0.06, 0.08)),
             "nose_length": float(rng.uniform(-0.06, 0.06))}
    p = pts.copy()
    cx = pts[27:31, 0].mean()
    eye_y = pts[36:48, 1].mean()
    p[0:17, 0] = cx + (p[0:17, 0] - cx) * shape["face_width"]
    lower = np.r_[2:15, 31:36, 48:68]                       # below the eyes, chin upwards
    p[lower, 1] = eye_y + (p[lower, 1] - eye_y) * shape["lower_face"]
    for idx, sign in ((np.r_[17:22, 36:42], -1), (np.r_[22:27, 42:48], 1)):
        p[idx, 0] += sign * shape["eye_spacing"] * s
    mx = p[48:68, 0].mean()
    p[48:68, 0] = mx + (p[48:68, 0] - mx) * shape["mouth_width"]
    p[17:27, 1] -= shape["brow_raise"] * s
    p[30:36, 1] += shape["nose_length"] * s
    return p.astype(np.float32), shape


def _vary_colour(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A global colour change in Lab: lightness gain, red-green and blue-yellow shifts."""
    colour = {"lightness": float(rng.uniform(0.88, 1.1)), "a_shift": float(rng.uniform(-8, 8)),
              "b_shift": float(rng.uniform(-12, 12))}
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= colour["lightness"]
    lab[..., 1] += colour["a_shift"]
    lab[..., 2] += colour["b_shift"]
    out = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out, colour


def make_speakers(n: int, photos: list[BasePhoto], seed: int) -> list[Speaker]:
    """Speakers D01..Dnn: photos in turn, mirrored on every second pass, then shape, colour
    and voice drawn from a per-speaker seed. The first pass keeps each photo as it is."""
    speakers = []
    for i in range(n):
        photo = photos[i % len(photos)]
        rng = np.random.default_rng([seed, 1000 + i])
        mirrored = (i // len(photos)) % 2 == 1
        img, src = photo.image, photo.landmarks
        if mirrored:
            img = np.ascontiguousarray(img[:, ::-1])
            src = photo.mirrored_landmarks
        if i < len(photos):
            neutral, shape = src.copy(), {}
            colour = {}
        else:
            neutral, shape = _vary_shape(src, rng)
            img, colour = _vary_colour(img, rng)
        speakers.append(Speaker(
            speaker=f"D{i + 1:02d}", base=photo.name, mirrored=mirrored, image=img,
            source=src.astype(np.float32), neutral=close_inner_lips(neutral),
            voice=VOICES[i % len(VOICES)], pitch_offset=int(rng.integers(-8, 9)),
            rate_scale=float(rng.uniform(0.92, 1.08)), shape=shape, colour=colour))
    return speakers


def speakers_for(cfg_demo, photos: list[BasePhoto] | None = None) -> list[Speaker]:
    photos = photos or base_photos(cfg_demo.frame_px, cfg_demo.face_fraction)
    return make_speakers(cfg_demo.speakers, photos, cfg_demo.seed)
