"""A piecewise-affine warp of a face photo to new landmark positions, and a painted mouth.

The warp maps every Delaunay triangle of the target points back to its triangle in the photo
(`cv2.getAffineTransform` per triangle), rasterises which triangle owns each output pixel
(`cv2.fillConvexPoly`), and samples the photo once with `cv2.remap`. Besides the 68 points,
forehead points and a ring around the head move with the head, and points on the frame's
border stay put, so the background does not move and the hair follows the face.

Used by the demo generator (pipeline/demo) to animate its photographs, and by
`kfusion predict --animate` to animate the identity photo with the predicted landmarks
(`TalkingHead`).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

_SUB = 16  # cv2 drawing with shift=4: 1/16 px precision


NECK = np.arange(4, 13)  # jaw points with a neck point just outside them


def neck_points(pts: np.ndarray) -> np.ndarray:
    """(9, 2) points just outside the lower jaw; they follow half the jaw's drop, so the skin
    under the chin stretches smoothly instead of folding at the jaw line."""
    centre = pts[[0, 16, 8, 27]].mean(0)
    return (pts[NECK] + 0.15 * (pts[NECK] - centre)).astype(np.float64)


def head_points(pts: np.ndarray, frame_px: int) -> np.ndarray:
    """Points that move rigidly with the head (K, 2): the forehead above the brows and a ring
    around face and hair, kept inside the frame."""
    s = float(np.linalg.norm(pts[42:48].mean(0) - pts[36:42].mean(0)))
    brows = pts[[17, 19, 21, 22, 24, 26]]
    forehead = brows - [0.0, 0.6 * s]
    outline = np.concatenate([pts[0:17:2], forehead[::-1]])
    centre = pts[[0, 16, 8, 27]].mean(0)
    ring = centre + 1.3 * (outline - centre)
    lo, hi = 0.05 * frame_px, 0.95 * frame_px
    return np.concatenate([forehead, np.clip(ring, lo, hi)]).astype(np.float64)


def border_points(frame_px: int, per_side: int = 4) -> np.ndarray:
    """Fixed points on the frame's edge (4 * per_side, 2)."""
    e = frame_px - 1.0
    t = np.linspace(0.0, e, per_side + 1)[:-1]
    return np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.full_like(t, e), t], 1),
                           np.stack([e - t, np.full_like(t, e)], 1), np.stack([np.zeros_like(t), e - t], 1)])


class Warper:
    """Warps one photo from its source points to per-frame target points."""

    def __init__(self, image: np.ndarray, source: np.ndarray, layout: np.ndarray):
        """image (H, W, 3); source (N, 2) points on it; layout (N, 2) a target configuration
        (mouth open, eyes open) whose Delaunay triangulation is used for every frame."""
        self.image = image
        self.source = source.astype(np.float64)
        self.triangles = Delaunay(layout).simplices.astype(np.int32)     # (M, 3)
        h, w = image.shape[:2]
        self.xx, self.yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def affines(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, 2, 3) target->source affine per triangle, and which triangles are non-degenerate."""
        d = target[self.triangles]                                         # (M, 3, 2)
        s = self.source[self.triangles]
        D = np.concatenate([d.transpose(0, 2, 1), np.ones((len(d), 1, 3))], 1)   # (M, 3, 3)
        det = np.linalg.det(D)
        ok = np.abs(det) > 1e-3
        D[~ok] = np.eye(3)
        A = s.transpose(0, 2, 1) @ np.linalg.inv(D)                         # (M, 2, 3)
        return A, ok

    def frame(self, target: np.ndarray) -> np.ndarray:
        A, ok = self.affines(target.astype(np.float64))
        h, w = self.image.shape[:2]
        owner = np.zeros((h, w), np.uint16)                                # 0: identity
        tri = np.round(target[self.triangles] * _SUB).astype(np.int32)
        for m in np.flatnonzero(ok):
            cv2.fillConvexPoly(owner, tri[m], int(m) + 1, cv2.LINE_8, 4)
        A_all = np.concatenate([np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), A]).astype(np.float32)
        a = A_all[owner]                                                   # (H, W, 2, 3)
        map_x = a[..., 0, 0] * self.xx + a[..., 0, 1] * self.yy + a[..., 0, 2]
        map_y = a[..., 1, 0] * self.xx + a[..., 1, 1] * self.yy + a[..., 1, 2]
        return cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def paint_mouth(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Fill the inner-lip polygon (60-67) with a dark cavity and a band of upper teeth.

    The photo's closed mouth has no interior to stretch, so the opening is painted."""
    inner = pts[60:68]
    x0, y0 = np.floor(inner.min(0)).astype(int) - 2
    x1, y1 = np.ceil(inner.max(0)).astype(int) + 3
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return img
    off = np.array([x0, y0], np.float64)
    cavity = np.zeros((y1 - y0, x1 - x0), np.uint8)
    poly = np.round((inner - off) * _SUB).astype(np.int32)
    cv2.fillPoly(cavity, [poly], 255, cv2.LINE_AA, 4)
    if cavity.max() == 0:
        return img
    mw = float(np.linalg.norm(pts[54] - pts[48]))
    upper = pts[[60, 61, 62, 63, 64]] - off
    teeth_h = 0.06 * mw
    band = np.concatenate([upper, (upper + [0.0, teeth_h])[::-1]])
    teeth = np.zeros_like(cavity)
    cv2.fillPoly(teeth, [np.round(band * _SUB).astype(np.int32)], 255, cv2.LINE_AA, 4)
    m = cavity.astype(np.float32)[..., None] / 255
    t = (teeth.astype(np.float32)[..., None] / 255) * m
    roi = img[y0:y1, x0:x1].astype(np.float32)
    roi = roi * (1 - m) + np.array([52, 20, 26], np.float32) * m
    roi = roi * (1 - t) + np.array([206, 200, 186], np.float32) * t
    out = img.copy()
    out[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- a talking head
UPPER_FACE = np.r_[17:48]   # brows, nose, eyes: where the head's own motion shows
LOWER_INNER_LIP, LOWER_OUTER_LIP = [65, 66, 67], [55, 56, 57, 58, 59]
CLOSED_MOUTH = 0.05   # inner-lip gap / mouth width below which a photo's mouth counts as closed


def inner_lip_gap(pts: np.ndarray) -> float:
    """Mean distance between the upper (61-63) and lower (67-65) inner lip, in pts' pixels."""
    return float(np.linalg.norm(pts[[61, 62, 63]] - pts[[67, 66, 65]], axis=-1).mean())


def open_mouth_layout(pts: np.ndarray) -> np.ndarray:
    """(68, 2) a copy of `pts` with the lower lip dropped by a quarter of the mouth width, so the
    Delaunay triangulation has triangles between the lips that stay valid as the mouth opens
    (a closed mouth's inner-lip points nearly coincide)."""
    out = np.array(pts, np.float64)
    drop = 0.25 * float(np.linalg.norm(out[54] - out[48]))
    out[LOWER_INNER_LIP, 1] += drop
    out[LOWER_OUTER_LIP, 1] += drop
    out[5:12, 1] += 0.5 * drop   # the chin follows
    return out


class TalkingHead:
    """Animate one face photo (H, W, 3) with its landmarks `identity` (68, 2) to new landmark
    positions, as the demo generator animates its photographs: the 68 points, neck points that
    follow half the jaw's drop, forehead and ring points that follow the upper face, fixed
    border points. A photo with a closed mouth has no interior to stretch, so its opening is
    painted (paint_mouth); an open one's own teeth and cavity are stretched instead."""

    def __init__(self, image: np.ndarray, identity: np.ndarray):
        self.identity = np.asarray(identity, np.float64)
        self.px = image.shape[0]
        self.border = border_points(self.px)
        source = np.concatenate([self.identity, neck_points(self.identity),
                                 head_points(self.identity, self.px), self.border])
        layout = open_mouth_layout(self.identity)
        layout = np.concatenate([layout, neck_points(layout), head_points(self.identity, self.px),
                                 self.border])
        self.warper = Warper(image, source, layout)
        self.head = head_points(self.identity, self.px)
        self.neck = neck_points(self.identity)
        width = float(np.linalg.norm(self.identity[54] - self.identity[48]))
        self.paint = inner_lip_gap(self.identity) < CLOSED_MOUTH * width

    def frame(self, pts: np.ndarray) -> np.ndarray:
        """The photo warped to landmarks `pts` (68, 2), in the photo's pixels."""
        pts = np.asarray(pts, np.float64)
        shift = (pts[UPPER_FACE] - self.identity[UPPER_FACE]).mean(0)     # the head's motion
        neck = self.neck + shift + 0.5 * (pts[NECK] - self.identity[NECK] - shift)
        target = np.concatenate([pts, neck, self.head + shift, self.border])
        out = self.warper.frame(target)
        return paint_mouth(out, pts) if self.paint else out
