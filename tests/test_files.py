"""Prediction and ground-truth files read as the official evaluator reads them
(seld_d2.evaluation.files), against the plain oracle (seld_d2.evaluation.reference)."""

import json
import re
from pathlib import Path

import pytest
from metric_cases import as_pred, gt_clip, one_blas_thread, write  # noqa: F401  (one_blas_thread: a fixture)

from seld_d2.data.labels import LabelError, LabelNotes
from seld_d2.evaluation import files, metric, reference

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _raw(tmp_path: Path, name: str, anns: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"annotations": anns}))
    return path


def test_frame_and_category_are_read_with_int(tmp_path):
    seg = [[[10, 20, 0.5], [11, 20, 1.0], [10, 21, 0.3]]]
    base = {"instance_id": 0, "distance": 100, "segmentation": seg, "score": 0.5}
    anns = [
        {**base, "metadata_frame_index": 3.0, "category_id": 2},
        {**base, "metadata_frame_index": "3", "category_id": 2.7},
        {**base, "metadata_frame_index": 3.7, "category_id": " 2 "},
        {**base, "metadata_frame_index": -1, "category_id": True},
    ]
    notes = LabelNotes()
    back = files.load_predictions(_raw(tmp_path, "p.json", anns), notes=notes)
    assert [(a.frame, a.category_id) for a in back] == [(3, 2), (3, 2), (3, 2), (-1, 1)]
    assert [(r.frame, r.category_id) for r in reference.read_file(str(tmp_path / "p.json"), True)] == [
        (a.frame, a.category_id) for a in back
    ]
    assert notes["cast"] == 6 and notes["negative_frame"] == 1
    for bad, what in [("3.5", "'3.5'"), (None, "None"), ([3], "[3]"), (float("inf"), "inf")]:
        path = _raw(tmp_path, "bad.json", [{**base, "metadata_frame_index": bad, "category_id": 0}])
        with pytest.raises(
            LabelError, match=rf"annotations\[0\]\.metadata_frame_index: int\(\) rejects {re.escape(what)}"
        ):
            files.load_predictions(path)
        with pytest.raises((ValueError, TypeError, OverflowError)):
            reference.read_file(str(path), True)


def test_bad_prediction_file_rejected(tmp_path):
    gt = gt_clip(1)
    write(tmp_path / "gt" / "s_std.json", gt)
    bad = as_pred(gt, [0.9])
    bad[0].polygons[0][0, 0] = 360.5  # off the canvas
    write(tmp_path / "pred" / "s.json", bad)
    with pytest.raises(ValueError, match=r"s\.json.*x=360\.5 outside the canvas"):
        metric.evaluate_folders(tmp_path / "pred", tmp_path / "gt", workers=1)
    path = _raw(
        tmp_path, "n.json", [{"metadata_frame_index": 0, "category_id": 0, "segmentation": [[[1, 2]]]}]
    )
    with pytest.raises(LabelError, match=r"segmentation\[0\]: must be an N x 3 array"):
        files.load_ground_truth(path)
    big = tmp_path / "big.json"
    big.write_text('{"annotations": []}' + " " * files.MAX_FILE_BYTES)
    with pytest.raises(files.MetricError, match=r"exceeds the 20 MiB \(20971520-byte\) limit"):
        files.load_predictions(big)
    assert files.load_ground_truth(big) == []  # the limit is on prediction files
