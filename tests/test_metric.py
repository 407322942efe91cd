"""The official metric (seld_d2.evaluation.metric) on hand-made cases, against its plain oracle
(seld_d2.evaluation.reference) on generated ones, plus the baseline metric's basic behaviour."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import Delaunay

from seld_d2.data.labels import Annotation, LabelError, write_labels
from seld_d2.data.synth.blas import blas_threads
from seld_d2.evaluation import baseline_metric, metric, reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_metric import max_difference, synthetic_case  # noqa: E402


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Renders called directly (not through evaluate_*) still want single-threaded LAPACK."""
    with blas_threads(1):
        yield


def blob(cx: int, cy: int, r: int, seed: int = 0) -> np.ndarray:
    """STAIRS26-like polygon: integer pixels of a disc on the 360x180 canvas (x wrapped), values
    peaking at the centre with a little noise; float32 (K, 3)."""
    xs, ys = np.meshgrid(np.arange(cx - r, cx + r + 1), np.arange(cy - r, cy + r + 1))
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    x, y = xs[inside], ys[inside]
    rho2 = ((x - cx) ** 2 + (y - cy) ** 2) / r**2
    v = 0.24 + 0.76 * np.exp(-2 * rho2) * np.random.default_rng(seed).uniform(0.95, 1.0, len(x))
    return np.column_stack([np.mod(x, 360), y, v]).astype(np.float32)


def ann(frame: int, cls: int, polys: list[np.ndarray], score: float | None = None, dist: float = 200.0):
    return Annotation(frame, 0, cls, dist, polys, score)


def gt_clip(n: int = 4, cls: int = 0) -> list[Annotation]:
    """n frames, one event each, at different places."""
    return [ann(f, cls, [blob(40 + 60 * f, 60 + 10 * f, 10, seed=f)]) for f in range(n)]


def as_pred(anns: list[Annotation], scores: list[float], dx: int = 0) -> list[Annotation]:
    out = []
    for a, s in zip(anns, scores, strict=True):
        polys = [p.copy() for p in a.polygons]
        for p in polys:
            p[:, 0] = np.mod(p[:, 0] + dx, 360)
        out.append(Annotation(a.frame, a.instance_id, a.category_id, a.distance, polys, s))
    return out


# ---------------------------------------------------------------------------- rendering


def test_render_peak_normalised_and_local():
    m = metric.render_annotation([blob(180, 90, 12)])
    assert m.shape == (metric.CANVAS_H, metric.CANVAS_W)
    assert m.max() == pytest.approx(1.0)
    ys, xs = np.nonzero(m)
    # 12 px of radius on the 360-wide canvas is 3.3 px on the 100-wide one, around (50, 25).
    assert xs.min() >= 46 and xs.max() <= 54 and ys.min() >= 21 and ys.max() <= 29


def test_render_seam_is_one_blob_at_both_edges():
    # One polygon around x = 0: points at x = 358..359 and 0..2 (a lattice strip, 6 rows).
    x = np.array([356, 357, 358, 359, 0, 1, 2, 3, 4], dtype=np.float32)
    xs, ys = np.meshgrid(x, np.arange(85, 96, dtype=np.float32))
    v = np.exp(-(((xs + 180) % 360 - 180) ** 2) / 20.0)
    poly = np.column_stack([xs.ravel(), ys.ravel(), v.ravel()]).astype(np.float32)
    m = metric.render_annotation([poly])
    cols = np.flatnonzero(m.any(axis=0))
    assert 0 in cols and 99 in cols  # both edges of the canvas
    assert set(cols.tolist()) <= {0, 1, 98, 99}  # and nothing across the middle
    ref = reference.render_annotation(ann(0, 0, [poly]))
    np.testing.assert_allclose(m, ref, rtol=0, atol=1e-12)
    # Drawn without the seam handling it would span the whole canvas.
    assert metric.scale_polygon(poly)[0].max() > metric.CANVAS_W


def test_render_matches_griddata_on_varied_polygons():
    rng = np.random.default_rng(3)
    cases = [
        [blob(100, 40, 9)],
        [blob(3, 120, 8)],  # crossing the seam
        [blob(200, 170, 11)],  # clipped at the bottom edge
        [blob(250, 90, 12)[::3]],  # thinned like the dense exporter
        [blob(10, 10, 3), blob(300, 100, 5)],  # two polygons
        [np.column_stack([rng.uniform(0, 360, 40), rng.uniform(0, 180, 40), rng.uniform(-0.2, 1, 40)])],
        [np.array([[10, 10, 0.5], [20, 10, 0.7], [30, 10, 0.2]])],  # collinear: qhull refuses
        [np.array([[100, 50, 0.5], [101.4, 50.6, 0.9]])],  # two points
        [np.array([[360, 180, 0.9], [0, 0, 0.1], [180, 90, 0.4]])],  # canvas corners
    ]
    for polys in cases:
        polys = [np.asarray(p, dtype=np.float32) for p in polys]
        fast = metric.render_annotation(polys)
        ref = reference.render_annotation(ann(0, 0, polys))
        assert fast.dtype == ref.dtype
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
        assert not (ref[~metric.support_mask(polys)] > 0).any()


def test_render_follows_griddata_on_a_hull_vertex_pixel():
    # A thinned blob whose hull vertex (252, 144) lands exactly on pixel (70, 40): barycentric
    # tests put the pixel inside three triangles, but scipy's walk reaches it through a sliver
    # along the hull that rounding puts 1e-11 beside it, so griddata leaves it at 0.
    rows = {133: [251, *range(253, 260)], 134: range(247, 261), 135: range(247, 261), 136: range(245, 261)}
    rows |= {137: range(246, 261), 138: range(246, 260), 139: range(247, 260), 140: range(248, 259)}
    rows |= {141: range(250, 259), 142: range(250, 258), 143: range(252, 258), 144: range(252, 257)}
    rows |= {145: [255]}
    pts = np.array([(x, y, 0.5 + 0.02 * (x - 245)) for y, xs in rows.items() for x in xs], dtype=np.float32)
    fast = metric.render_annotation([pts])
    ref = reference.render_annotation(ann(0, 0, [pts]))
    assert ref[40, 70] == 0.0 and fast[40, 70] == 0.0 and ref[40, 71] > 0
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)


def test_render_batching_and_scipy_fallbacks_agree():
    polys = [[blob(100, 40, 9)], [blob(3, 120, 8)], [blob(250, 90, 12)[::3], blob(20, 20, 2)]]
    batched = metric.render_annotations(polys)
    one_by_one = metric.render_annotations(polys, chunk=1)
    for a, b in zip(batched, one_by_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # The two scipy paths used for hull-boundary pixels and degenerate triangles.
    xs, ys, v = metric.scale_polygon(blob(250, 90, 12)[::3])
    tri = Delaunay(np.column_stack([xs, ys]).astype(np.float64))
    grid = metric._griddata_grid(tri, v.astype(np.float64))
    row, col, val = metric._griddata_bbox(tri, v.astype(np.float64))
    sparse = np.zeros_like(grid)
    sparse[row, col] = val
    np.testing.assert_array_equal(sparse, grid)
    folded = np.clip(np.maximum(grid[:, :100], grid[:, 100:]), 0, None)
    np.testing.assert_allclose(
        folded / folded.max(), metric.render_annotation([blob(250, 90, 12)[::3]]), rtol=0, atol=1e-12
    )


def test_degenerate_polygons_become_single_pixels():
    # x = 36, 72 -> 10, 20 on the metric canvas; y = 36 -> 10.
    m = metric.render_annotation([np.array([[36, 36, 0.5], [72, 36, 1.0]], dtype=np.float32)])
    assert m.dtype == np.float32
    assert set(zip(*np.nonzero(m), strict=True)) == {(10, 10), (10, 20)}
    assert m[10, 20] == 1.0 and m[10, 10] == 0.5
    flat = np.array([[x, 72, 1.0] for x in range(0, 40, 4)], dtype=np.float32)
    assert np.count_nonzero(metric.render_annotation([flat])) > 0
    assert metric.render_annotation([]).max() == 0.0


# ---------------------------------------------------------------------------- measures


def test_pearson_and_iou_edge_cases():
    a = metric.render_annotation([blob(180, 90, 12)])
    assert metric.pearson(a, a) == pytest.approx(1.0)
    assert metric.soft_iou(a, a) == pytest.approx(1.0)
    assert math.isnan(metric.pearson(a, np.zeros_like(a)))  # zero variance
    one = np.zeros_like(a)
    one[3, 3] = 1.0
    assert math.isnan(metric.pearson(one, a))  # fewer than 2 GT pixels
    assert metric.soft_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0


def test_average_precision_by_hand():
    # Ranked: FP (0.95), TP (0.9), TP (0.8) against 4 GT: precision 2/3 up to recall 0.5.
    ap = metric.average_precision(np.array([0.9, 0.95, 0.8]), np.array([True, False, True]), 4)
    assert ap == pytest.approx(51 * (2 / 3) / 101, abs=1e-6)
    assert metric.average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert math.isnan(metric.average_precision(np.ones(2), np.ones(2, bool), 0))
    for scores, tp, n in [([0.5, 0.5, 0.5], [True, False, True], 3), ([0.1, 0.9], [False, True], 1)]:
        s, t = np.array(scores), np.array(tp)
        assert metric.average_precision(s, t, n) == reference.average_precision(scores, tp, n)


# ---------------------------------------------------------------------------- whole evaluations


def rows(result: dict) -> dict[int, dict]:
    return {c["id"]: c for c in result["classes"]}


def test_perfect_prediction_scores_one():
    gt = {"clip": gt_clip(4)}
    res = metric.evaluate_annotations({"clip": as_pred(gt["clip"], [0.9, 0.8, 0.7, 0.6])}, gt)
    for row in (rows(res)[0], res["macro"], res["micro"]):
        assert all(v == pytest.approx(1.0) for v in row["ap"].values())
        assert row["mAP"] == pytest.approx(1.0)
        assert row["pearson"] == pytest.approx(1.0)
        assert row["distance_error"] == 0.0
    assert res["micro"]["gt"] == 4 and res["micro"]["detections"] == 4 and res["macro"]["classes"] == 1
    json.dumps(res)


def test_shifted_prediction_passes_low_thresholds_only():
    gt = {"clip": gt_clip(2)}
    pred = {"clip": as_pred(gt["clip"], [0.9, 0.8], dx=6)}
    iou = metric.soft_iou(
        metric.render_annotation(pred["clip"][0].polygons), metric.render_annotation(gt["clip"][0].polygons)
    )
    assert 0.25 < iou < 0.75
    res = metric.evaluate_annotations(pred, gt)
    for t in (0.25, 0.5, 0.75):
        assert res["micro"]["ap"][metric.threshold_key(t)] == (1.0 if iou >= t else 0.0)
    assert 0 < res["micro"]["pearson"] < 1


def test_missing_and_extra_predictions():
    gt = {"clip": gt_clip(4)}
    two = as_pred(gt["clip"][:2], [0.9, 0.8])
    res = metric.evaluate_annotations({"clip": two}, gt)
    assert res["micro"]["ap"]["0.5"] == pytest.approx(51 / 101, abs=1e-6)  # recall stops at 0.5
    extra = ann(9, 0, [blob(300, 30, 8)], score=0.95)  # a frame without GT
    res = metric.evaluate_annotations({"clip": two + [extra]}, gt)
    assert res["micro"]["ap"]["0.5"] == pytest.approx(51 * (2 / 3) / 101, abs=1e-6)
    assert res["micro"]["detections"] == 3 and res["micro"]["matched"] == 2
    low = ann(9, 0, [blob(300, 30, 8)], score=0.1)  # ranked after every TP: no effect
    res = metric.evaluate_annotations({"clip": two + [low]}, gt)
    assert res["micro"]["ap"]["0.5"] == pytest.approx(51 / 101, abs=1e-6)


def test_seam_crossing_prediction_matches():
    g = [ann(0, 3, [blob(2, 90, 10)])]
    p = as_pred(g, [0.7], dx=-3)  # now mostly left of the seam, still one blob
    res = metric.evaluate_annotations({"c": p}, {"c": g})
    assert rows(res)[3]["ap"]["0.5"] == 1.0
    assert rows(res)[3]["pearson"] > 0.5


def test_empty_predictions_and_class_without_detection():
    gt = {"a": gt_clip(3, cls=0), "b": gt_clip(2, cls=5)}
    res = metric.evaluate_annotations({}, gt)
    assert res["macro"]["mAP"] == 0.0 and res["micro"]["mAP"] == 0.0
    assert res["macro"]["pearson"] is None and res["micro"]["detections"] == 0
    assert res["clips"] == 2 and res["micro"]["gt"] == 5
    # Class 0 predicted perfectly, class 5 not at all: it scores 0 and halves the macro mean.
    res = metric.evaluate_annotations({"a": as_pred(gt["a"], [0.9, 0.8, 0.7]), "b": []}, gt)
    assert rows(res)[5]["mAP"] == 0.0 and rows(res)[5]["gt"] == 2
    assert res["macro"]["mAP"] == pytest.approx(0.5)
    assert rows(res)[1]["mAP"] is None  # no GT: not part of the macro mean
    assert res["macro"]["classes"] == 2


def test_prediction_without_ground_truth_clip_is_an_error():
    with pytest.raises(metric.MetricError, match="orphan"):
        metric.evaluate_annotations({"orphan": []}, {"clip": gt_clip(1)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_equals_reference_on_generated_clips(seed):
    pred, gt = synthetic_case(seed, clips=2, frames=10)
    fast = metric.evaluate_annotations(pred, gt)
    ref = reference.evaluate_annotations(pred, gt)
    diff, where = max_difference(fast, ref)
    assert diff <= 1e-6, where
    assert fast["micro"]["matched"] > 0 and fast["micro"]["detections"] > fast["micro"]["matched"]


def test_fast_equals_reference_with_tied_scores_and_process_pool():
    pred, gt = synthetic_case(5, clips=3, frames=6)
    for anns in pred.values():
        for i, a in enumerate(anns):
            a.score = 0.5 if i % 3 else 0.75  # many ties: the ranking must follow the same order
    ref = reference.evaluate_annotations(pred, gt)
    fast = metric.evaluate_annotations(pred, gt, workers=2)
    assert max_difference(fast, ref)[0] <= 1e-6
    assert fast == metric.evaluate_annotations(pred, gt, workers=1)


def test_curve_thresholds_agree_with_main_thresholds():
    pred, gt = synthetic_case(4, clips=1, frames=8)
    res = metric.evaluate_annotations(pred, gt, curve_thresholds=metric.CURVE_THRESHOLDS)
    assert res["micro"]["ap_curve"]["0.5"] == res["micro"]["ap"]["0.5"]
    assert res["macro"]["ap_curve"]["0.25"] == res["macro"]["ap"]["0.25"]
    curve = [res["micro"]["ap_curve"][metric.threshold_key(t)] for t in metric.CURVE_THRESHOLDS]
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))  # AP falls as t rises


# ---------------------------------------------------------------------------- files


def write(path: Path, anns: list[Annotation]) -> Path:
    write_labels(path, anns)
    return path


def test_folders_pairing_and_missing_prediction(tmp_path):
    gt = {"s1": gt_clip(2), "s2": gt_clip(3, cls=2)}
    write(tmp_path / "gt" / "s1_std.json", gt["s1"])
    write(tmp_path / "gt" / "s2.json", gt["s2"])  # a plain <clip>.json is accepted too
    write(tmp_path / "pred" / "s1.json", as_pred(gt["s1"], [0.9, 0.8]))
    res = metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert res["clip_names"] == ["s1", "s2"] and res["missing_predictions"] == ["s2"]
    assert rows(res)[0]["mAP"] == pytest.approx(1.0) and rows(res)[2]["mAP"] == 0.0
    write(tmp_path / "pred" / "s9.json", as_pred(gt["s1"], [0.9, 0.8]))
    with pytest.raises(metric.MetricError, match="s9.json"):
        metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt")


def test_bad_prediction_file_rejected(tmp_path):
    gt = gt_clip(1)
    write(tmp_path / "gt" / "s_std.json", gt)
    bad = as_pred(gt, [0.9])
    bad[0].polygons[0][0, 0] = 360.5  # off the canvas
    write(tmp_path / "pred" / "s.json", bad)
    with pytest.raises(ValueError, match=r"s\.json.*x=360\.5 outside the canvas"):
        metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt", workers=1)
    with pytest.raises(LabelError, match="missing key 'score'"):
        metric.load_predictions(write(tmp_path / "noscore.json", gt))
    big = tmp_path / "big.json"
    big.write_text('{"annotations": []}' + " " * (metric.MAX_FILE_BYTES + 1))
    with pytest.raises(metric.MetricError, match="bytes exceeds the limit of 20971520 bytes \\(20 MiB\\)"):
        metric.load_predictions(big)


# ---------------------------------------------------------------------------- baseline metric


def test_baseline_metric_perfect_and_far_predictions():
    gt = {"c": gt_clip(3)}
    res = baseline_metric.evaluate_annotations({"c": as_pred(gt["c"], [0.9, 0.8, 0.7])}, gt)
    assert res["metric"] == "baseline" and len(res["thresholds"]) == 10
    assert res["macro"]["mAP"] == pytest.approx(1.0) and res["micro"]["pearson"] == pytest.approx(1.0)
    far = baseline_metric.evaluate_annotations({"c": as_pred(gt["c"], [0.9, 0.8, 0.7], dx=40)}, gt)
    assert far["macro"]["mAP"] == 0.0
    assert far["micro"]["matched"] == 0  # 40 deg apart: beyond the 20 deg gate
    emap = baseline_metric.energy_map([blob(1, 90, 3)])
    assert emap[90, 0] > 0 and emap[90, 359] > 0 and emap[90, 180] == 0  # wraps the seam
