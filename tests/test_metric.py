"""The official metric's entry points (seld_d2.evaluation.metric: evaluate_annotations,
evaluate_folders) on hand-made cases, against the plain oracle (seld_d2.evaluation.reference) on
generated ones, plus the baseline metric's basic behaviour."""

import json

import pytest
from metric_cases import ann, as_pred, blob, gt_clip, one_blas_thread, write  # noqa: F401  (a fixture)

from seld_d2.evaluation import baseline_metric, metric, reference
from seld_d2.evaluation.synthetic import max_difference, synthetic_case

pytestmark = pytest.mark.usefixtures("one_blas_thread")


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
    res = metric.evaluate_annotations({}, gt, missing_as_empty=True)
    assert res["macro"]["mAP"] == 0.0 and res["micro"]["mAP"] == 0.0
    assert res["macro"]["pearson"] is None and res["micro"]["detections"] == 0
    assert res["clips"] == 2 and res["micro"]["gt"] == 5
    assert res["warnings"] == [
        "2 GT clips have no prediction file: scored as empty predictions (--missing-as-empty): a, b"
    ]
    # Class 0 predicted perfectly, class 5 not at all: it scores 0 and halves the macro mean.
    res = metric.evaluate_annotations({"a": as_pred(gt["a"], [0.9, 0.8, 0.7]), "b": []}, gt)
    assert rows(res)[5]["mAP"] == 0.0 and rows(res)[5]["gt"] == 2
    assert res["macro"]["mAP"] == pytest.approx(0.5)
    assert rows(res)[1]["mAP"] is None  # no GT: not part of the macro mean
    assert res["macro"]["classes"] == 2


def test_clips_without_both_sides_are_not_scored_by_default():
    # As the official evaluator: a GT clip without predictions and a prediction without GT are
    # both left out (and said so); missing_as_empty scores the former as empty.
    gt = {"a": gt_clip(3, cls=0), "b": gt_clip(2, cls=5)}
    pred = {"a": as_pred(gt["a"], [0.9, 0.8, 0.7]), "orphan": as_pred(gt["b"], [0.5, 0.5])}
    res = metric.evaluate_annotations(pred, gt)
    assert res["clips"] == 1 and res["micro"]["gt"] == 3 and res["macro"]["mAP"] == pytest.approx(1.0)
    assert res["warnings"] == [
        "1 prediction file without ground truth skipped (as the official evaluator does): orphan",
        "GT clip b has no prediction file: not scored, as the official evaluator does; "
        "--missing-as-empty scores it as an empty prediction",
    ]
    assert max_difference(res, reference.evaluate_annotations({"a": pred["a"]}, {"a": gt["a"]}))[0] == 0.0
    full = metric.evaluate_annotations(pred, gt, missing_as_empty=True)
    assert full["clips"] == 2 and full["macro"]["mAP"] == pytest.approx(0.5)


def test_unscored_and_unrendered_annotations_follow_the_official_semantics():
    gt = gt_clip(4)
    pred = as_pred(gt, [0.9, 0.8, 0.7, 0.6])
    pred[3].score = None  # missing score: ranks at 0.0
    as_zero = as_pred(gt, [0.9, 0.8, 0.7, 0.0])
    res = metric.evaluate_annotations({"c": pred}, {"c": gt})
    assert res["warnings"] == ['1 prediction without "score" (scored as 0): c']
    assert max_difference(res, reference.evaluate_annotations({"c": as_zero}, {"c": gt}))[0] <= 1e-6
    # GT without map: counts in the class total, never matched above IoU 0; a prediction without
    # map: a false positive at its score; a category outside 0-12: not counted anywhere.
    empty_gt = ann(0, 0, [])
    empty_pred = ann(1, 0, [], score=0.95)
    res = metric.evaluate_annotations(
        {"c": as_pred(gt, [0.9, 0.8, 0.7, 0.6]) + [empty_pred, ann(2, 13, [blob(9, 9, 3)], score=0.99)]},
        {"c": gt + [empty_gt, ann(3, 13, [blob(9, 9, 3)])]},
    )
    ref = reference.evaluate_annotations(
        {"c": as_pred(gt, [0.9, 0.8, 0.7, 0.6]) + [empty_pred, ann(2, 13, [blob(9, 9, 3)], score=0.99)]},
        {"c": gt + [empty_gt, ann(3, 13, [blob(9, 9, 3)])]},
    )
    assert max_difference(res, ref)[0] <= 1e-6
    assert res["micro"]["gt"] == 5 and res["micro"]["detections"] == 5
    # Four TPs (precision 1/2 .. 4/5) up to recall 0.8 behind the map-less FP ranked first (0.95);
    # the class-13 prediction at 0.99, were it not dropped, would come first in the micro ranking.
    assert res["micro"]["ap"]["0.5"] == pytest.approx(81 * 0.8 / 101, abs=1e-6)


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


# ---------------------------------------------------------------------------- folders


def test_folders_pairing_and_missing_prediction(tmp_path):
    gt = {"s1": gt_clip(2), "s2": gt_clip(3, cls=2), "s3": gt_clip(1)}
    write(tmp_path / "gt" / "sub" / "s1_std.json", gt["s1"])  # one folder below
    write(tmp_path / "gt" / "s2_std.json", gt["s2"])  # no prediction file
    write(tmp_path / "gt" / "s3.json", gt["s3"])  # a plain <clip>.json: not paired
    write(tmp_path / "pred" / "s1.json", as_pred(gt["s1"], [0.9, 0.8]))
    write(tmp_path / "pred" / "s3.json", as_pred(gt["s3"], [0.9]))
    write(tmp_path / "pred" / "s9.json", as_pred(gt["s1"], [0.9, 0.8]))  # no GT
    (tmp_path / "pred" / ".s1.json").write_text("not json")  # ignored
    res = metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert res["clip_names"] == ["s1"] and res["missing_predictions"] == ["s2"]
    assert res["unpaired_predictions"] == ["s3.json", "s9.json"]
    assert rows(res)[0]["mAP"] == pytest.approx(1.0) and rows(res)[2]["gt"] == 0
    ref = reference.evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "gt"))
    assert max_difference(res, ref)[0] == 0.0
    full = metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt", missing_as_empty=True)
    assert full["clip_names"] == ["s1", "s2"] and rows(full)[2]["mAP"] == 0.0
    ref = reference.evaluate_folders(str(tmp_path / "pred"), str(tmp_path / "gt"), missing_as_empty=True)
    assert max_difference(full, ref)[0] == 0.0
    (tmp_path / "pred" / "s1.json").unlink()
    with pytest.raises(metric.MetricError, match="nothing to score"):
        metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt")


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
