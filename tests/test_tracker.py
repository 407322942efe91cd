import numpy as np
import pytest

from seld_d2.inference.postprocess import Detection
from seld_d2.inference.tracker import BASELINE_TRACKING, Tracker, box_iou, track_clip

ENERGY = np.ones((28, 28), np.float32)
# The SELD.INFER defaults (seld_d2/config.py: MIN_AGE, MAX_MISSED, TRACK_IOU).
REPORT = {"min_age": 2, "max_missed": 2, "iou_thresh": 0.3}


def det(frame, box=(100, 50, 140, 80), cls=0, score=0.9):
    return Detection(frame, np.array(box, np.float32), score, cls, ENERGY, 200.0)


def run(schedule, num_frames, **kw):
    """``schedule`` maps frame -> detections; every frame in range(num_frames) is stepped."""
    return track_clip(((f, schedule.get(f, [])) for f in range(num_frames)), **{**REPORT, **kw})


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_single_detection_is_not_exported():
    assert run({3: [det(3)]}, 10) == []
    assert run({3: [det(3)]}, 10, export_unconfirmed_history=True) == []
    out = run({3: [det(3)], 4: [det(4)]}, 10)
    assert [(tid, d.frame) for tid, d in out] == [(0, 4)]  # exported from its second hit on


def test_retroactive_history():
    tracker = Tracker(**REPORT, export_unconfirmed_history=True)
    assert tracker.step(0, [det(0)]) == []
    out = tracker.step(1, [det(1)])
    assert [(tid, d.frame) for tid, d in out] == [(0, 0), (0, 1)]
    assert [(t, d.frame) for t, d in tracker.step(2, [det(2)])] == [(0, 2)]
    assert tracker.finish() == []


def test_track_survives_two_missed_frames_and_ends_at_the_third():
    # Hits at 0, 1, 4: frames 2 and 3 missed, same track.
    out = run({0: [det(0)], 1: [det(1)], 4: [det(4)]}, 8)
    assert [(tid, d.frame) for tid, d in out] == [(0, 1), (0, 4)]
    # Hits at 0, 1, then 5, 6: three misses end the first track; the return is a new track.
    out = run({0: [det(0)], 1: [det(1)], 5: [det(5)], 6: [det(6)]}, 8)
    assert [(tid, d.frame) for tid, d in out] == [(0, 1), (1, 6)]


def test_skipped_frames_count_as_misses():
    tracker = Tracker(**REPORT)
    tracker.step(0, [det(0)])
    tracker.step(1, [det(1)])
    out = tracker.step(5, [det(5)])  # frames 2-4 never stepped
    assert out == [] and tracker.num_active == 1
    with pytest.raises(ValueError, match="frames must increase"):
        tracker.step(5, [])


def test_class_never_switches_inside_a_track():
    sched = {f: [det(f, cls=2), det(f, cls=5)] for f in range(4)}
    out = run(sched, 4)
    by_track = {}
    for tid, d in out:
        by_track.setdefault(tid, set()).add(d.category_id)
    assert len(by_track) == 2 and sorted(by_track.values(), key=min) == [{2}, {5}]
    # A class change at the same place starts a new (here never confirmed) track.
    out = run({0: [det(0, cls=1)], 1: [det(1, cls=1)], 2: [det(2, cls=3)]}, 3)
    assert [(tid, d.category_id) for tid, d in out] == [(0, 1)]


def test_hungarian_follows_boxes_and_gates_on_iou():
    a, b = (10, 10, 50, 40), (200, 60, 240, 90)
    moved_a, far = (14, 12, 54, 42), (120, 10, 160, 40)
    sched = {0: [det(0, a), det(0, b)], 1: [det(1, b), det(1, a)], 2: [det(2, moved_a), det(2, far)]}
    out = run(sched, 3)
    ids = {(d.frame, tuple(d.box.tolist())): tid for tid, d in out}
    assert ids[(1, a)] == ids[(2, moved_a)] and ids[(1, a)] != ids[(1, b)]
    assert (2, far) not in ids  # below the IoU gate: a new, unconfirmed track


def test_baseline_coasting_with_score_decay():
    out = run({0: [det(0, score=0.8)], 1: [det(1, score=0.8)]}, 12, **BASELINE_TRACKING)
    frames = [d.frame for _, d in out]
    assert frames == [1, 2, 3, 4, 5, 6]  # coasts max_missed = 5 frames, ends at the 6th miss
    assert {tid for tid, _ in out} == {0}
    np.testing.assert_allclose([d.score for _, d in out], 0.8 * 0.9 ** np.arange(6), rtol=1e-6)
    assert all(np.array_equal(d.box, out[0][1].box) for _, d in out)
    # Without decay, missed frames are not exported.
    assert [d.frame for _, d in run({0: [det(0)], 1: [det(1)]}, 12)] == [1]


def test_coasting_before_confirmation_is_retroactive_only():
    sched = {0: [det(0, score=0.5)], 2: [det(2, score=0.6)]}
    out = run(sched, 4, coast_score_decay=0.5)
    assert [(d.frame, round(d.score, 6)) for _, d in out] == [(2, 0.6), (3, 0.3)]
    out = run(sched, 4, coast_score_decay=0.5, export_unconfirmed_history=True)
    assert [(d.frame, round(d.score, 6)) for _, d in out] == [(0, 0.5), (1, 0.25), (2, 0.6), (3, 0.3)]


def test_invalid_settings():
    with pytest.raises(ValueError):
        Tracker(**{**REPORT, "min_age": 0})
    with pytest.raises(ValueError):
        Tracker(**{**REPORT, "max_missed": -1})
