"""The official metric's rendering (seld_d2.evaluation.rendering) against scipy's griddata and the
plain oracle (seld_d2.evaluation.reference)."""

import numpy as np
import pytest
from metric_cases import ann, blob, one_blas_thread  # noqa: F401  (one_blas_thread: a fixture)
from scipy.spatial import Delaunay

from seld_d2.evaluation import reference, rendering

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def test_render_peak_normalised_and_local():
    m = rendering.render_annotation([blob(180, 90, 12)])
    assert m.shape == (rendering.METRIC_H, rendering.METRIC_W)
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
    m = rendering.render_annotation([poly])
    cols = np.flatnonzero(m.any(axis=0))
    assert 0 in cols and 99 in cols  # both edges of the canvas
    assert set(cols.tolist()) <= {0, 1, 98, 99}  # and nothing across the middle
    ref = reference.render_annotation(ann(0, 0, [poly]))
    np.testing.assert_allclose(m, ref, rtol=0, atol=1e-12)
    # Drawn without the seam handling it would span the whole canvas.
    assert rendering.scale_polygon(poly)[0].max() > rendering.METRIC_W


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
        fast = rendering.render_annotation(polys)
        ref = reference.render_annotation(ann(0, 0, polys))
        assert fast.dtype == ref.dtype
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
        assert not (ref[~rendering.support_mask(polys)] > 0).any()


def test_render_follows_griddata_on_a_hull_vertex_pixel():
    # A thinned blob whose hull vertex (252, 144) lands exactly on pixel (70, 40): barycentric
    # tests put the pixel inside three triangles, but scipy's walk reaches it through a sliver
    # along the hull that rounding puts 1e-11 beside it, so griddata leaves it at 0.
    rows = {133: [251, *range(253, 260)], 134: range(247, 261), 135: range(247, 261), 136: range(245, 261)}
    rows |= {137: range(246, 261), 138: range(246, 260), 139: range(247, 260), 140: range(248, 259)}
    rows |= {141: range(250, 259), 142: range(250, 258), 143: range(252, 258), 144: range(252, 257)}
    rows |= {145: [255]}
    pts = np.array([(x, y, 0.5 + 0.02 * (x - 245)) for y, xs in rows.items() for x in xs], dtype=np.float32)
    fast = rendering.render_annotation([pts])
    ref = reference.render_annotation(ann(0, 0, [pts]))
    assert ref[40, 70] == 0.0 and fast[40, 70] == 0.0 and ref[40, 71] > 0
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)


def test_render_batching_and_scipy_fallbacks_agree():
    polys = [[blob(100, 40, 9)], [blob(3, 120, 8)], [blob(250, 90, 12)[::3], blob(20, 20, 2)]]
    batched = rendering.render_annotations(polys)
    one_by_one = rendering.render_annotations(polys, chunk=1)
    for a, b in zip(batched, one_by_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    # The two scipy paths used for hull-boundary pixels and degenerate triangles.
    xs, ys, v = rendering.scale_polygon(blob(250, 90, 12)[::3])
    tri = Delaunay(np.column_stack([xs, ys]).astype(np.float64))
    grid = rendering._griddata_grid(tri, v.astype(np.float64))
    row, col, val = rendering._griddata_bbox(tri, v.astype(np.float64))
    sparse = np.zeros_like(grid)
    sparse[row, col] = val
    np.testing.assert_array_equal(sparse, grid)
    folded = np.clip(np.maximum(grid[:, :100], grid[:, 100:]), 0, None)
    np.testing.assert_allclose(
        folded / folded.max(), rendering.render_annotation([blob(250, 90, 12)[::3]]), rtol=0, atol=1e-12
    )


def test_degenerate_polygons_become_single_pixels():
    # x = 36, 72 -> 10, 20 on the metric canvas; y = 36 -> 10.
    m = rendering.render_annotation([np.array([[36, 36, 0.5], [72, 36, 1.0]], dtype=np.float32)])
    assert m.dtype == np.float32
    assert set(zip(*np.nonzero(m), strict=True)) == {(10, 10), (10, 20)}
    assert m[10, 20] == 1.0 and m[10, 10] == 0.5
    flat = np.array([[x, 72, 1.0] for x in range(0, 40, 4)], dtype=np.float32)
    assert np.count_nonzero(rendering.render_annotation([flat])) > 0
    assert rendering.render_annotation([]).max() == 0.0
