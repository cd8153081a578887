"""Post-processing of landmark tracks, checked against hand-computed numbers."""
import numpy as np
import pytest

from kfusion.pipeline.data.landmarks import (bridge_gaps, iou, landmark_box, plan_crops, smooth,
                                still_point_jitter, to_crop_px, to_video_px)
from kfusion.pipeline.media.video import crop_square, downscale


def _square_face(cx, cy, size):
    """68 points whose bounding box is the square (cx, cy, size): corners plus the centre."""
    pts = np.full((68, 2), (cx, cy), np.float32)
    pts[0] = (cx - size / 2, cy - size / 2)
    pts[1] = (cx + size / 2, cy + size / 2)
    return pts


def test_bridge_gaps_interpolates_short_gaps_and_leaves_long_ones():
    T = 10
    pts = np.zeros((T, 68, 2), np.float32)
    pts[:, :, 0] = np.arange(T)[:, None] * 10.0
    found = np.ones(T, bool)
    found[[2, 3]] = False          # gap of 2, between 10 and 40 -> 20, 30
    found[6:9] = False              # gap of 3 (> max_gap=2): left alone
    pts[~found] = np.nan
    out = bridge_gaps(pts, found, max_gap=2)
    assert out[2, 0, 0] == pytest.approx(20.0) and out[3, 5, 0] == pytest.approx(30.0)
    assert np.isnan(out[6:9]).all()
    # clip edges: hold the nearest face
    found2 = np.ones(T, bool)
    found2[:2] = False
    out2 = bridge_gaps(np.where(found2[:, None, None], np.float32(7), np.nan), found2, max_gap=2)
    assert (out2[:2] == 7).all()


def test_smooth_is_a_centred_mean_within_runs():
    pts = np.zeros((6, 68, 2), np.float32)
    pts[:, 0, 0] = [0, 3, 6, 9, np.nan, 100]
    pts[4] = np.nan
    out = smooth(pts, 3)
    # run [0, 3, 6, 9] padded by repetition: (0+0+3)/3, (0+3+6)/3, (3+6+9)/3, (6+9+9)/3
    assert out[:4, 0, 0] == pytest.approx([1, 3, 6, 8])
    assert np.isnan(out[4]).all() and out[5, 0, 0] == pytest.approx(100)   # never mixes across a gap
    assert smooth(pts, 0) is pts


def test_plan_crops_fixed_while_still_and_recrops_after_a_move():
    frames = [_square_face(100 + (t % 2), 120, 50) for t in range(10)]    # 1 px wobble: one crop
    frames += [_square_face(200, 120, 50) for _ in range(5)]              # head moved 100 px
    boxes = plan_crops(np.stack(frames), crop_scale=2.0, tolerance=0.15)
    # side = 2 x 50 = 100; median centre x = 100.5, so x0 = round(50.5): 50 or 51
    assert (boxes[:10] == boxes[0]).all() and boxes[0, 2] == 100 and boxes[0, 1] == 70
    assert boxes[0, 0] in (50, 51)
    assert (boxes[10:] == [150, 70, 100]).all()


def test_crop_px_mapping_hand_values_and_roundtrip():
    boxes = np.array([[100, 50, 512]], np.float32)
    pts = np.array([[[100, 50], [356, 306], [612, 562]]], np.float32)
    crop = to_crop_px(pts, boxes, 256)
    assert crop[0].tolist() == [[0, 0], [128, 128], [256, 256]]
    assert np.allclose(to_video_px(crop, boxes, 256), pts)


def test_landmark_box_iou_and_jitter():
    pts = _square_face(10, 20, 8)
    assert landmark_box(pts).tolist() == [10, 20, 8]
    assert iou(np.array([0, 0, 2.0]), np.array([1, 0, 2.0])) == pytest.approx(2 / 6)
    track = np.zeros((4, 68, 2), np.float32)
    track[:, 27, 0] = [0, 1, 0, 1]              # second differences -2, +2 on one of 6 points
    assert still_point_jitter(track) == pytest.approx(2 / 6)


def test_crop_square_pads_outside_the_frame():
    frame = np.full((10, 10), 200, np.uint8)
    out = crop_square(frame, np.array([-5, 0, 10]), 10)   # left half outside: black
    assert (out[:, :5] == 0).all() and (out[:, 5:] == 200).all()
    small, s = downscale(np.zeros((1080, 1920), np.uint8), 480)
    assert small.shape == (270, 480) and s == 0.25
