"""Drawing 68-point landmarks (iBUG layout) on images, for videos, contact sheets and figures."""
from __future__ import annotations

import cv2
import numpy as np

# iBUG-68 contour pieces: (first, last, closed)
PARTS: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False),   # jaw
    (17, 21, False), (22, 26, False),   # brows
    (27, 30, False), (31, 35, False),   # nose bridge, nostrils
    (36, 41, True), (42, 47, True),     # eyes
    (48, 59, True), (60, 67, True),     # outer, inner lips
)
SUBPIXEL_BITS = 4                  # cv2's `shift`: coordinates in 1/16 px (sub-pixel precision)
SUBPIXEL = 1 << SUBPIXEL_BITS


def draw_landmarks(img: np.ndarray, pts: np.ndarray, color: tuple[int, int, int] = (255, 64, 64),
                   *, thickness: int = 1, radius: int = 1) -> np.ndarray:
    """Draw (68, 2) points (x, y in img pixels) with contour lines onto an RGB uint8 copy."""
    out = np.ascontiguousarray(img.copy())
    draw_landmarks_into(out, pts, color, thickness=thickness, radius=radius)
    return out


def draw_landmarks_into(out: np.ndarray, pts: np.ndarray, color: tuple[int, int, int] = (255, 64, 64),
                        *, thickness: int = 1, radius: int = 1) -> None:
    """draw_landmarks in place, in three OpenCV calls (a video draws thousands of frames):
    the open contours, the closed ones, then every point as a one-point closed polyline of
    thickness 2 x radius, which OpenCV draws as exactly cv2.circle(radius, filled) draws it
    (the round cap of a thick line is the same filled ellipse), in the same order: the
    pixels are those of one polylines call per part and one circle call per point."""
    if not np.isfinite(pts).all():
        return
    p = np.round(pts * SUBPIXEL).astype(np.int32)
    open_parts = [p[a:b + 1] for a, b, closed in PARTS if not closed]
    closed_parts = [p[a:b + 1] for a, b, closed in PARTS if closed]
    cv2.polylines(out, open_parts, False, color, thickness, cv2.LINE_AA, shift=SUBPIXEL_BITS)
    cv2.polylines(out, closed_parts, True, color, thickness, cv2.LINE_AA, shift=SUBPIXEL_BITS)
    cv2.polylines(out, list(p[:, None]), True, color, 2 * radius, cv2.LINE_AA, shift=SUBPIXEL_BITS)


def neutral_canvas(size_px: int, gray: int = 235) -> np.ndarray:
    return np.full((size_px, size_px, 3), gray, np.uint8)


def grid(images: list[np.ndarray], cols: int, pad_px: int = 2, fill: int = 255) -> np.ndarray:
    """Tile same-size RGB images into a contact sheet, row-major; gaps and empty cells `fill`."""
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (h + pad_px) + pad_px, cols * (w + pad_px) + pad_px, 3), fill, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad_px + r * (h + pad_px), pad_px + c * (w + pad_px)
        sheet[y:y + h, x:x + w] = im
    return sheet
