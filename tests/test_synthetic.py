"""The metric's generated inputs (seld_d2.evaluation.synthetic): deterministic, on the canvas, and
max_difference finds where two results differ."""

import math

import numpy as np

from seld_d2.evaluation.synthetic import max_difference, synthetic_case


def test_synthetic_case_is_deterministic_and_on_the_canvas():
    pred, gt = synthetic_case(3, clips=2, frames=8)
    again, _ = synthetic_case(3, clips=2, frames=8)
    assert list(gt) == ["fold4_room0_mix001", "fold4_room1_mix001"]
    for clip, anns in pred.items():
        assert [a.score for a in anns] == [a.score for a in again[clip]]
        assert all(0 < a.score <= 1 for a in anns)
    for anns in (*pred.values(), *gt.values()):
        for a in anns:
            for p in a.polygons:
                assert p.dtype == np.float32 and p.shape[1] == 3
                assert (p[:, 0] >= 0).all() and (p[:, 0] < 360).all() and (p[:, 1] >= 0).all()
                assert (p[:, 1] <= 179).all()


def test_max_difference_names_the_place():
    a = {"x": [1.0, 2.0], "y": {"z": None}}
    assert max_difference(a, a)[0] == 0.0
    assert max_difference({"x": [1.0, 2.5], "y": {"z": None}}, a) == (0.5, "/x[1]")
    assert max_difference({"x": [1.0]}, a)[0] == math.inf
