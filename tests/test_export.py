import inspect
import json
import logging

import numpy as np
import pytest

from seld_d2.acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from seld_d2.data.labels import Annotation, load_labels, write_labels
from seld_d2.inference.export import (
    _candidates,
    _SizeModel,
    _value_chars,
    dense_points,
    detections_to_annotations,
    encoded_size,
    paste_energy,
    sparse_peaks,
    thin_to_limit,
)
from seld_d2.inference.postprocess import Detection

# The SELD.INFER defaults (seld_d2/config.py: EXPORTER, DENSE_THRESH, NUM_PEAKS).
DENSE = {"mode": "dense", "dense_thr": 0.5, "num_peaks": 20}


def gaussian(m=28, cy=13.0, cx=13.0, sigma=4.0):
    y, x = np.mgrid[:m, :m]
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def random_exports(rng, n, size=(60, 40), flat=False):
    out = []
    for i in range(n):
        x0, y0 = rng.uniform(0, CANVAS_WIDTH - size[0]), rng.uniform(0, CANVAS_HEIGHT - size[1])
        box = np.array([x0, y0, x0 + size[0], y0 + size[1]], np.float32)
        e = (
            0.8 + 0.2 * rng.random((28, 28))
            if flat
            else gaussian(cy=rng.uniform(5, 22), cx=rng.uniform(5, 22))
        )
        out.append(
            (i % 7, Detection(i // 3, box, float(rng.uniform(0.7, 1)), i % 13, e.astype(np.float32), 150.0))
        )
    return out


def test_paste_puts_the_peak_at_its_box_position():
    e = np.full((28, 28), 0.1, np.float32)
    e[7, 20] = 1.0  # cell centre (x, y) = box origin + ((20.5, 7.5) * cell size)
    box = [100.5, 40.5, 156.5, 96.5]  # 2 px per cell: centre at pixel centre (141.5, 55.5)
    pasted = paste_energy(e, box)
    full = pasted.to_canvas()
    assert full.shape == (CANVAS_HEIGHT, CANVAS_WIDTH) and full.dtype == np.float32
    y, x = np.unravel_index(np.argmax(full), full.shape)
    assert (x, y) == (141, 55) and full[y, x] == pytest.approx(1.0)
    assert box[0] <= x < box[2] and box[1] <= y < box[3]
    assert full[:, :99].max() == 0 and full[:, 158:].max() == 0  # nothing beyond the 1 px margin


def test_paste_clips_to_the_canvas_and_handles_empty_boxes():
    pasted = paste_energy(gaussian(), [-10.0, 170.0, 20.0, 200.0])
    h, w = pasted.values.shape
    assert pasted.x0 == 0 and pasted.y0 + h <= CANVAS_HEIGHT and w <= 21
    assert pasted.to_canvas().shape == (CANVAS_HEIGHT, CANVAS_WIDTH)
    assert paste_energy(gaussian(), [50, 50, 50, 60]).values.shape == (0, 0)
    assert paste_energy(gaussian(), [400, 50, 420, 60]).values.shape == (0, 0)


def test_dense_points_keep_the_peak_and_sample_every_nth():
    pasted = paste_energy(gaussian(cy=10, cx=17), [30.0, 20.0, 100.0, 60.0])
    full = dense_points(pasted, dense_thr=0.5)
    assert full.dtype == np.float32 and full.shape[1] == 3
    peak = np.unravel_index(np.argmax(pasted.values), pasted.values.shape)
    assert full[0, :2].tolist() == [pasted.x0 + peak[1], pasted.y0 + peak[0]] and full[0, 2] == 1.0
    assert np.all(np.diff(full[:, 2]) <= 0) and full[:, 2].min() >= 0.5
    assert len(full) == np.count_nonzero(pasted.values >= 0.5 * pasted.values.max())
    thinned = dense_points(pasted, dense_thr=0.5, step=3)
    np.testing.assert_array_equal(thinned, full[::3])
    # Same result from the full canvas: the crop is only an optimisation.
    np.testing.assert_array_equal(dense_points(pasted.to_canvas(), dense_thr=0.5), full)


def test_points_in_canvas_integral_and_at_least_three():
    rng = np.random.default_rng(0)
    for box in ([-5.0, -5.0, 30.0, 20.0], [340.0, 160.0, 365.0, 185.0], [0.0, 0.0, 360.0, 180.0]):
        for e in (gaussian(sigma=1.0), rng.random((28, 28)).astype(np.float32)):
            pasted = paste_energy(e, box)
            for pts in (dense_points(pasted, dense_thr=0.5, step=50), sparse_peaks(pasted, 20)):
                assert len(pts) >= 3
                assert np.all(pts[:, 0] >= 0) and np.all(pts[:, 0] < CANVAS_WIDTH)
                assert np.all(pts[:, 1] >= 0) and np.all(pts[:, 1] < CANVAS_HEIGHT)
                assert np.all(pts[:, :2] == np.round(pts[:, :2])) and np.all(
                    (pts[:, 2] > 0) & (pts[:, 2] <= 1)
                )
    spike = np.zeros((6, 6), np.float32)
    spike[2, 3], spike[4, 4], spike[0, 0] = 1.0, 0.1, 0.05
    pts = dense_points(spike, dense_thr=0.5)
    assert pts[:, :2].tolist() == [[3, 2], [4, 4], [0, 0]]  # topped up below the threshold
    spike[0, 0] = 0
    assert len(dense_points(spike, dense_thr=0.5)) == 2
    assert dense_points(np.zeros((5, 5)), dense_thr=0.5).shape == (0, 3)


def test_sparse_peaks_finds_local_maxima_first():
    e = gaussian(cy=6, cx=6, sigma=2) + 0.6 * gaussian(cy=20, cx=21, sigma=2)
    pts = sparse_peaks(e, num_peaks=20)
    assert len(pts) == 20
    assert pts[0, :2].tolist() == [6, 6] and pts[1, :2].tolist() == [21, 20]
    assert pts[1, 2] == pytest.approx(0.6, abs=1e-3)


def test_detections_to_annotations_fields_and_fallback():
    rng = np.random.default_rng(1)
    exports = random_exports(rng, 4)
    zero = Detection(9, np.array([10, 10, 20, 20], np.float32), 0.8, 3, np.zeros((28, 28), np.float32), -5.0)
    nan = Detection(9, np.array([30, 30, 50, 50], np.float32), 0.8, 3, gaussian(), float("nan"))
    anns = detections_to_annotations(exports + [(43, nan), (42, zero)], **DENSE, step=2)
    assert anns[-2].distance == 0.0
    assert [(a.frame, a.instance_id, a.category_id) for a in anns[:4]] == [
        (d.frame, tid, d.category_id) for tid, d in exports
    ]
    assert anns[0].score == exports[0][1].score and len(anns[0].polygons) == 1
    assert anns[-1].polygons[0].tolist() == [[15, 15, 1.0]] and anns[-1].distance == 0.0
    base = detections_to_annotations(exports, **{**DENSE, "mode": "baseline", "num_peaks": 20})
    assert all(len(a.polygons[0]) == 20 for a in base)
    with pytest.raises(ValueError, match="mode"):
        detections_to_annotations(exports, **{**DENSE, "mode": "grid"})


def test_encoded_size_is_the_written_size(tmp_path):
    rng = np.random.default_rng(2)
    anns = detections_to_annotations(random_exports(rng, 12), **{**DENSE, "dense_thr": 0.3})
    anns.append(
        Annotation(0, 3, 1, 12.5, [np.array([[1, 2, 1e-5], [3, 4, 0.25], [5, 6, 1.0]], np.float32)], 0.5)
    )
    path = tmp_path / "clip.json"
    write_labels(path, anns)
    assert path.stat().st_size == encoded_size(anns)
    write_labels(path, [])
    assert path.stat().st_size == encoded_size([])


def test_size_model_matches_the_encoder():
    rng = np.random.default_rng(3)
    cand = _candidates(random_exports(rng, 10, flat=True), "dense", 0.2, 20, CANVAS_HEIGHT, CANVAS_WIDTH)
    model = _SizeModel(cand)
    for step in (1, 2, 5, 1000):
        assert model.size(step) == encoded_size(cand.annotations(step)) <= model.bound(step)


def test_value_chars_match_python_repr():
    rng = np.random.default_rng(6)
    edge = [0, 1, 1e-4, 9.9e-5, 5e-5, 1e-5, 1e-6, 4e-7, 0.9999996, 0.5, 0.1, 0.25, 0.123456, 0.0000015]
    v = np.concatenate([rng.random(20000), rng.random(2000) * 1e-3, edge]).astype(np.float32)
    chars, slack = _value_chars(v)
    exact = np.array([len(repr(round(float(x), 6))) for x in v])
    assert np.all(np.abs(chars - exact) <= slack)


def test_thinning_brings_an_oversized_clip_under_the_limit(tmp_path, caplog):
    assert inspect.signature(thin_to_limit).parameters["max_bytes"].default == 20 * 2**20
    rng = np.random.default_rng(4)
    exports = random_exports(rng, 40, flat=True)
    limit = 200_000
    full = detections_to_annotations(exports, **DENSE)
    assert encoded_size(full) > 5 * limit
    with caplog.at_level(logging.WARNING, logger="seld_d2.inference.export"):
        anns, step = thin_to_limit(exports, **DENSE, max_bytes=limit)
    assert step > 1 and "thinned" in caplog.text
    assert encoded_size(detections_to_annotations(exports, **DENSE, step=step - 1)) > limit  # smallest step
    path = tmp_path / "clip.json"
    write_labels(path, anns)
    assert path.stat().st_size == encoded_size(anns) <= limit
    back = load_labels(path, require_score=True)
    assert len(back) == len(exports) and all(len(a.polygons[0]) >= 3 for a in back)
    for a, b in zip(anns, full, strict=True):  # the peak of every detection survives
        np.testing.assert_array_equal(a.polygons[0][0], b.polygons[0][0])
    assert json.loads(path.read_text())["annotations"][0]["segmentation"][0][0][2] == 1.0


def test_thinning_is_a_no_op_when_it_fits_and_errors_when_it_cannot():
    rng = np.random.default_rng(5)
    exports = random_exports(rng, 5)
    anns, step = thin_to_limit(exports, **DENSE)
    assert step == 1 and len(anns) == 5
    with pytest.raises(ValueError, match="even with the top 3 points"):
        thin_to_limit(exports, **DENSE, max_bytes=500)


def test_no_detections_export_nothing():
    assert detections_to_annotations([], **DENSE) == []
    assert thin_to_limit([], **DENSE) == ([], 1)
