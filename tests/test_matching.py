"""The official metric's pair measures and AP (seld_d2.evaluation.matching) on hand-made cases and
against the plain oracle (seld_d2.evaluation.reference); whole matchings are in test_metric."""

import math

import numpy as np
import pytest
from metric_cases import blob, one_blas_thread  # noqa: F401  (one_blas_thread: a fixture)

from seld_d2.evaluation import matching, reference, rendering

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def test_pearson_and_iou_edge_cases():
    a = rendering.render_annotation([blob(180, 90, 12)])
    assert matching.pearson(a, a) == pytest.approx(1.0)
    assert matching.soft_iou(a, a) == pytest.approx(1.0)
    assert math.isnan(matching.pearson(a, np.zeros_like(a)))  # zero variance
    one = np.zeros_like(a)
    one[3, 3] = 1.0
    assert math.isnan(matching.pearson(one, a))  # fewer than 2 GT pixels
    assert matching.soft_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0


def test_average_precision_by_hand():
    # Ranked: FP (0.95), TP (0.9), TP (0.8) against 4 GT: precision 2/3 up to recall 0.5.
    ap = matching.average_precision(np.array([0.9, 0.95, 0.8]), np.array([True, False, True]), 4)
    assert ap == pytest.approx(51 * (2 / 3) / 101, abs=1e-6)
    assert matching.average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert math.isnan(matching.average_precision(np.ones(2), np.ones(2, bool), 0))
    for scores, tp, n in [([0.5, 0.5, 0.5], [True, False, True], 3), ([0.1, 0.9], [False, True], 1)]:
        s, t = np.array(scores), np.array(tp)
        assert matching.average_precision(s, t, n) == reference.average_precision(scores, tp, n)
