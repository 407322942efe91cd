"""The official DCASE2026 Task 3 metric (SPEC §2), fast: pure numpy/scipy, no Detectron2.

Each annotation is rendered on a 100x50 canvas by linear Delaunay interpolation of its
``[x, y, v]`` triplets and normalised by its maximum; per (frame, class) predictions are matched to
ground truth by Hungarian matching on soft IoU ``sum(min) / sum(max)``; AP (101-point
interpolated precision) is computed per class at IoU thresholds 0.25, 0.5 and 0.75 over the
records pooled across frames and clips, with Pearson r of the matched maps and the relative distance
error as further per-pair measures. :mod:`seld_d2.evaluation.reference` computes the same numbers
the straightforward way and is the oracle this module is tested against.

Conventions fixed here (the official evaluator's behaviour, see SPEC §2.5):

* **Pixel grid**: canvas pixel ``(i, j)`` is the point ``x = i, y = j`` of the scaled plane
  (``i = 0..99``, ``j = 0..49``), so the scaled coordinate ``x = 360 * 100/360 = 100`` folds onto
  column 0. Interpolation runs on a doubled canvas (``i = 0..199``) and is folded back with max.
* **Interpolation** is scipy's ``griddata(method="linear")``, reproduced pixel for pixel: the
  same ``Delaunay`` of the same float64 points and the same inside tolerance (``100 *
  DBL_EPSILON`` on barycentric coordinates), evaluated only at the pixels in each triangle's
  bounding box (outside the convex hull is the fill value 0). Where rounding could tip a decision
  (a pixel within rounding of the tolerance on a sliver triangle, or a pixel on the convex hull's
  boundary, where scipy's answer depends on the path its point-location walk takes) scipy's own
  transforms and walk decide. Values agree with ``griddata`` to ~1e-12.
* **Record order**: clips sorted by ``<clip>.json``; per clip the (frame, class) buckets in the
  iteration order of ``set(pred_groups) | set(gt_groups)``, where both are dicts grouping the
  clip's annotations (in file order) by ``(frame, category_id)`` tuples of Python ints (tuple
  hashes of ints do not depend on ``PYTHONHASHSEED``, so the order is reproducible); per bucket
  the matched pairs in ``linear_sum_assignment`` order, then the unmatched predictions in file order.
  Records are ranked by ``np.argsort(-scores)`` (numpy's default, unstable sort), so ties are broken
  exactly as the official evaluator breaks them.
* **AP arithmetic** follows the official code under NumPy 2 promotion rules: cumulative TP/FP,
  recall and precision (``tp / (tp + fp + 1e-9)``) in float32, recall compared to
  ``linspace(0, 1, 101)`` in float64, the 101 precisions summed in float32 and divided by 101.
* **Deviations** (SPEC §2.3): a class with ground truth but no detection scores AP 0 (the official
  code of 2026-06 returned NaN there and so dropped the class from the macro mean); relative
  distance errors skip ground truth at distance 0.

Work that changes no number is skipped: buckets with only predictions or only ground truth are not
rendered, and a pair whose possible supports (the pixels of its points' bounding box) do not
intersect has IoU exactly 0 and Pearson NaN without rendering either side.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import LinearNDInterpolator
from scipy.optimize import linear_sum_assignment
from scipy.spatial import Delaunay, QhullError

from ..data.classes import CLASS_NAMES
from ..data.labels import CANVAS_H as LABEL_H
from ..data.labels import CANVAS_W as LABEL_W
from ..data.labels import Annotation, LabelError, LabelNotes, check_on_canvas

CANVAS_W, CANVAS_H = 100, 50  # the metric's canvas; labels live on LABEL_W x LABEL_H = 360 x 180
THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95
MAX_FILE_BYTES = 20 * 1024 * 1024  # the official evaluator refuses larger prediction files (20 MiB)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_INSIDE_EPS = 100 * np.finfo(np.float64).eps  # scipy's LinearNDInterpolator inside tolerance
_UNMATCHED = np.float32(-1.0)  # IoU stored for unmatched predictions: below every threshold


class MetricError(ValueError):
    """Bad evaluation input (unpaired, oversized or unreadable files); the message is one line."""


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def scale_polygon(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale ``(K, 3)`` triplets to the metric canvas and unwrap the azimuth seam.

    Returns float32 ``xs, ys, v`` of shape (K,); ``xs`` lies in [0, 200) once points left of a
    gap wider than half the canvas have been shifted right by one canvas width.
    """
    pts = np.asarray(poly, dtype=np.float32)
    # Same float32 arithmetic as the official code: the Python-float factor is applied in float32.
    xs = pts[:, 0] * (CANVAS_W / LABEL_W)
    ys = pts[:, 1] * (CANVAS_H / LABEL_H)
    if len(xs) > 1:
        sorted_xs = np.sort(xs)
        gaps = np.diff(sorted_xs)
        k = int(np.argmax(gaps))
        if gaps[k] > CANVAS_W / 2:
            xs = np.where(xs <= sorted_xs[k], xs + CANVAS_W, xs)
    return xs, ys, pts[:, 2]


def _barycentric_transforms(points: np.ndarray, simplices: np.ndarray) -> np.ndarray:
    """scipy's own barycentric transforms (S, 3, 2) of ``simplices`` (S, 3) over ``points``
    (N, 2): ``T^-1`` in ``[:, :2]``, the last vertex in ``[:, 2]``, NaN when degenerate. The
    private helper is what ``Delaunay.transform`` calls; it treats each simplex on its own, so
    this is bit-identical to ``Delaunay(points).transform`` for those simplices."""
    simplices = np.ascontiguousarray(simplices, dtype=np.int32)
    try:
        from scipy.spatial._qhull import _get_barycentric_transforms
    except ImportError:  # pragma: no cover - a scipy without the helper: same numbers, slower
        out = np.full((len(simplices), 3, 2), np.nan)
        for i, s in enumerate(simplices):
            with contextlib.suppress(QhullError):
                out[i] = Delaunay(points[s]).transform[0]
        return out
    return _get_barycentric_transforms(np.ascontiguousarray(points), simplices, np.finfo(np.float64).eps)


@dataclass
class _Triangulated:
    """The polygons of a batch that qhull triangulated, concatenated: ``points`` (N, 2) float64,
    ``values`` (N,) float64, ``simplices`` (S, 3) into ``points``, ``hull`` (S, 3) bool (the face
    opposite vertex m lies on the convex hull), ``owner`` (S,) polygon index."""

    points: np.ndarray
    values: np.ndarray
    simplices: np.ndarray
    hull: np.ndarray
    owner: np.ndarray


def _interpolate_batch(
    batch: _Triangulated,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of every triangulated polygon at the integer pixels of the doubled
    canvas inside its triangles: ``(polygon, row, col, value)`` arrays, one entry per (triangle,
    pixel) hit (pixels not listed are 0, griddata's fill value outside the convex hull); then the
    polygons with a pixel on their convex hull's boundary, which need :func:`_griddata_bbox`, and
    those with a degenerate triangle (scipy's walk then tests its neighbours with a looser
    tolerance), which need :func:`_griddata_grid`.

    Triangles are tiny next to the pixel spacing, so a pixel is tested only against the triangles
    whose bounding box holds it, with scipy's inside tolerance on barycentric coordinates. Those come
    from a closed-form 2x2 inverse; where that could decide differently from scipy's LU-based
    transform (a pixel within rounding of the tolerance, typically on the sliver triangles qhull
    leaves along lattice edges) the test is redone with scipy's own transform and formula.

    That reproduces scipy's decision for every pixel but those on the hull's boundary (a lattice
    point or edge exactly on an integer pixel is common): there scipy's walk towards the pixel may
    stop at a sliver triangle along the hull whose rounding puts the pixel 1e-11 outside, and the
    answer depends on the path the walk took from the previous pixel.
    """
    simplices = batch.simplices
    xv, yv = batch.points[:, 0][simplices], batch.points[:, 1][simplices]  # (S, 3) each
    # Degenerate triangles: scipy's transform is NaN when cond(T) > 1/DBL_EPSILON.
    a, b = xv[:, 0] - xv[:, 2], xv[:, 1] - xv[:, 2]
    c, d = yv[:, 0] - yv[:, 2], yv[:, 1] - yv[:, 2]
    suspect = np.flatnonzero(~(np.abs(a * d - b * c) > 1e-9 * (a * a + b * b + c * c + d * d)))
    degenerate = np.zeros(0, dtype=np.intp)
    if len(suspect):
        nan = np.isnan(_barycentric_transforms(batch.points, simplices[suspect])).any(axis=(1, 2))
        degenerate = np.unique(batch.owner[suspect[nan]])
    lox = np.maximum(np.ceil(np.minimum(np.minimum(xv[:, 0], xv[:, 1]), xv[:, 2])), 0.0)
    hix = np.minimum(np.floor(np.maximum(np.maximum(xv[:, 0], xv[:, 1]), xv[:, 2])), 2 * CANVAS_W - 1)
    loy = np.maximum(np.ceil(np.minimum(np.minimum(yv[:, 0], yv[:, 1]), yv[:, 2])), 0.0)
    hiy = np.minimum(np.floor(np.maximum(np.maximum(yv[:, 0], yv[:, 1]), yv[:, 2])), CANVAS_H - 1)
    nx = (hix - lox + 1).clip(min=0).astype(np.intp)
    ny = (hiy - loy + 1).clip(min=0).astype(np.intp)
    count = nx * ny
    cand = np.flatnonzero(count)
    reps = count[cand]
    sid = np.repeat(cand, reps)  # the triangle of each (triangle, pixel) test
    offset = np.arange(len(sid)) - np.repeat(np.cumsum(reps) - reps, reps)
    px = lox[sid] + offset % nx[sid]
    py = loy[sid] + offset // nx[sid]

    # T = [p0 - p2, p1 - p2] as columns (scipy's layout); c = T^-1 (x - p2), c2 = 1 - c0 - c1.
    xs, ys = xv[sid], yv[sid]
    a, b, c, d = a[sid], b[sid], c[sid], d[sid]
    dx, dy = px - xs[:, 2], py - ys[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        det = a * d - b * c
        c0 = (d * dx - b * dy) / det
        c1 = (a * dy - c * dx) / det
        kappa = np.maximum(np.abs(a) + np.abs(c), np.abs(b) + np.abs(d)) ** 2 / np.abs(det)
    cs = np.stack([c0, c1, 1.0 - c0 - c1])
    # A bound on the difference to scipy's coordinates (both are backward-stable 2x2 solves).
    tol = 16 * np.finfo(np.float64).eps * kappa * (1.0 + np.abs(cs).max(axis=0))
    lo_ok, hi_ok = -_INSIDE_EPS, 1.0 + _INSIDE_EPS
    inside = ((cs >= lo_ok + tol) & (cs <= hi_ok - tol)).all(axis=0)
    unsure = np.flatnonzero(~inside & ~((cs < lo_ok - tol) | (cs > hi_ok + tol)).any(axis=0))
    if len(unsure):
        us, inv = np.unique(sid[unsure], return_inverse=True)
        t = _barycentric_transforms(batch.points, simplices[us])[inv]
        # scipy's _barycentric_coordinates, operation for operation.
        ux, uy = px[unsure] - t[:, 2, 0], py[unsure] - t[:, 2, 1]
        e0 = t[:, 0, 0] * ux + t[:, 0, 1] * uy
        e1 = t[:, 1, 0] * ux + t[:, 1, 1] * uy
        e = np.stack([e0, e1, 1.0 - e0 - e1])
        cs[:, unsure] = e
        inside[unsure] = ((e >= lo_ok) & (e <= hi_ok)).all(axis=0)  # NaN (degenerate): never
    sv = batch.values[simplices[sid[inside]]]  # (M, 3)
    ci = cs[:, inside]
    val = ci[0] * sv[:, 0] + ci[1] * sv[:, 1] + ci[2] * sv[:, 2]

    # Pixels within 1e-9 of a hull edge (the rounding that misleads scipy's walk is < 1e-14).
    on_hull = np.zeros(len(sid), dtype=bool)
    for m in range(3):
        t = np.flatnonzero(batch.hull[sid, m])
        i, j = (m + 1) % 3, (m + 2) % 3
        ax, ay, bx, by = xs[t, i], ys[t, i], xs[t, j], ys[t, j]
        ex, ey = bx - ax, by - ay
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.clip(((px[t] - ax) * ex + (py[t] - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dist = np.hypot(px[t] - ax - u * ex, py[t] - ay - u * ey)
        on_hull[t[~(dist > 1e-9)]] = True
    risky = np.setdiff1d(batch.owner[sid[on_hull]], degenerate)
    owner = batch.owner[sid[inside]]
    return owner, py[inside].astype(np.intp), px[inside].astype(np.intp), val, risky, degenerate


def _griddata_bbox(tri: Delaunay, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``griddata``'s own evaluation, bit for bit, of the pixels that can be inside: ``(row, col,
    value)`` of the pixels found in a triangle. scipy walks from each pixel's triangle to the next
    one's, in row-major order, but skips pixels outside the points' bounding box without moving,
    so walking the bounding-box pixels alone retraces its steps exactly."""
    eps = _INSIDE_EPS
    cols = np.arange(2 * CANVAS_W)
    rows = np.arange(CANVAS_H)
    cols = cols[(cols >= tri.min_bound[0] - eps) & (cols <= tri.max_bound[0] + eps)]
    rows = rows[(rows >= tri.min_bound[1] - eps) & (rows <= tri.max_bound[1] + eps)]
    gy, gx = np.meshgrid(rows, cols, indexing="ij")
    xi = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
    found = tri.find_simplex(xi)  # the same walk and tolerance as LinearNDInterpolator's
    ok = found >= 0
    t = tri.transform[found[ok]]
    dx, dy = xi[ok, 0] - t[:, 2, 0], xi[ok, 1] - t[:, 2, 1]
    c0 = t[:, 0, 0] * dx + t[:, 0, 1] * dy
    c1 = t[:, 1, 0] * dx + t[:, 1, 1] * dy
    c2 = 1.0 - c0 - c1
    sv = values[tri.simplices[found[ok]]]
    return gy.ravel()[ok], gx.ravel()[ok], c0 * sv[:, 0] + c1 * sv[:, 1] + c2 * sv[:, 2]


def _griddata_grid(tri: Delaunay, values: np.ndarray) -> np.ndarray:
    """``griddata``'s evaluation on the whole doubled canvas (50, 200), reusing the triangulation."""
    gx, gy = np.meshgrid(np.arange(2 * CANVAS_W), np.arange(CANVAS_H))
    return LinearNDInterpolator(tri, values, fill_value=0.0)(gx, gy)


def render_annotations(annotations: Sequence[Sequence[np.ndarray]], chunk: int = 200_000) -> list[np.ndarray]:
    """Maps of many annotations (each a list of (K, 3) polygons), all interpolations batched.

    Each map is (50, 100): the polygons' linear interpolations (clipped at 0; drawn as single
    pixels when a polygon has < 3 points or qhull refuses it) folded from the doubled canvas and
    combined by max, divided by the maximum when that exceeds 1e-8 (the official guard). Like the
    official code's, a map is float64 when a polygon was interpolated, else float32.
    ``chunk`` bounds the triangles interpolated at once (memory). Run it with single-threaded
    OpenBLAS (as ``evaluate_*`` do) when calling it many times: see :func:`_one_blas_thread`.
    """
    return _render_scaled([_scale_all(polygons) for polygons in annotations], chunk)


Scaled = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # an annotation's scale_polygon outputs


def _scale_all(polygons: Sequence[np.ndarray]) -> Scaled:
    return [scale_polygon(poly) for poly in polygons if len(poly)]


def _render_scaled(annotations: Sequence[Scaled], chunk: int = 200_000) -> list[np.ndarray]:
    """:func:`render_annotations` of annotations whose polygons are already scaled."""
    n = len(annotations)
    interpolated = np.zeros(n, dtype=bool)
    singles: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    pending: list[tuple[int, Delaunay, np.ndarray]] = []  # (annotation, triangulation, values)
    for i, polygons in enumerate(annotations):
        for xs, ys, v in polygons:
            tri = None
            if len(xs) >= 3:
                points = np.column_stack([xs, ys]).astype(np.float64)
                with contextlib.suppress(QhullError, ValueError):
                    tri = Delaunay(points)
            if tri is None:
                singles.append((i, xs, ys, v))
                continue
            interpolated[i] = True
            pending.append((i, tri, v.astype(np.float64)))

    # One flat canvas per annotation (float64 where interpolated), maxima scattered into it.
    maps64 = np.zeros((n, CANVAS_H * CANVAS_W), dtype=np.float64)
    maps32 = np.zeros((n, CANVAS_H * CANVAS_W), dtype=np.float32)

    def scatter(owner: np.ndarray, row: np.ndarray, col: np.ndarray, val: np.ndarray, target) -> None:
        # Folding the doubled canvas and combining polygons are both pixel maxima; the zero the
        # canvas starts from is the clip at 0.
        np.maximum.at(target, (owner, row * CANVAS_W + col % CANVAS_W), val)

    poly_owner = np.array([p[0] for p in pending], dtype=np.intp)
    start = 0
    while start < len(pending):
        stop, size = start, 0
        while stop < len(pending) and (size == 0 or size + pending[stop][1].nsimplex <= chunk):
            size += pending[stop][1].nsimplex
            stop += 1
        group = pending[start:stop]
        offsets = np.cumsum([0] + [tri.npoints for _, tri, _ in group])
        batch = _Triangulated(
            points=np.concatenate([tri.points for _, tri, _ in group]),
            values=np.concatenate([v for _, _, v in group]),
            simplices=np.concatenate(
                [tri.simplices + o for (_, tri, _), o in zip(group, offsets, strict=False)]
            ),
            hull=np.concatenate([tri.neighbors == -1 for _, tri, _ in group]),
            owner=np.repeat(np.arange(start, stop), [tri.nsimplex for _, tri, _ in group]),
        )
        poly, row, col, val, risky, degenerate = _interpolate_batch(batch)
        keep = ~np.isin(poly, np.concatenate([risky, degenerate]))
        scatter(poly_owner[poly[keep]], row[keep], col[keep], val[keep], maps64)
        for k in risky:  # scipy's walk over the bounding box decides (see _interpolate_batch)
            row, col, val = _griddata_bbox(pending[k][1], pending[k][2])
            scatter(np.full(len(row), pending[k][0]), row, col, val, maps64)
        for k in degenerate:  # scipy's evaluation of the whole grid decides
            ext = _griddata_grid(pending[k][1], pending[k][2])
            row, col = np.nonzero(ext > 0)
            scatter(np.full(len(row), pending[k][0]), row, col, ext[row, col], maps64)
        start = stop
    for i, xs, ys, v in singles:
        col = np.clip(np.rint(xs), 0, 2 * CANVAS_W - 1).astype(np.intp)
        row = np.clip(np.rint(ys), 0, CANVAS_H - 1).astype(np.intp)
        scatter(np.full(len(row), i), row, col, v, maps64 if interpolated[i] else maps32)

    out = []
    for i in range(n):
        canvas = (maps64[i] if interpolated[i] else maps32[i]).reshape(CANVAS_H, CANVAS_W)
        peak = canvas.max()
        if peak > 1e-8:
            canvas /= peak
        out.append(canvas)
    return out


def render_annotation(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """One annotation's (50, 100) map; see :func:`render_annotations`."""
    return render_annotations([polygons])[0]


def support_mask(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Pixels an annotation's map can be non-zero on, (50, 100) bool: per polygon the integer
    pixels of its scaled points' bounding box (widened to floor/ceil: it also holds every
    single-pixel fallback), folded back from the doubled canvas."""
    return _support_scaled(_scale_all(polygons))


def _support_scaled(polygons: Scaled) -> np.ndarray:
    mask = np.zeros((CANVAS_H, CANVAS_W), dtype=bool)
    for xs, ys, _ in polygons:
        x0 = max(int(math.floor(xs.min())), 0)
        x1 = min(int(math.ceil(xs.max())), 2 * CANVAS_W - 1)
        y0 = max(int(math.floor(ys.min())), 0)
        y1 = min(int(math.ceil(ys.max())), CANVAS_H - 1)
        if x1 < x0 or y1 < y0:
            continue
        cols = np.arange(x0, x1 + 1) % CANVAS_W
        mask[y0 : y1 + 1, cols] = True
    return mask


# --------------------------------------------------------------------------------------------
# Pair measures and AP
# --------------------------------------------------------------------------------------------


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(min(a, b)) / sum(max(a, b))`` of two maps; 0 when the union is below 1e-8."""
    union = np.maximum(a, b).sum()
    if union < 1e-8:
        return 0.0
    return float(np.minimum(a, b).sum() / union)


def pearson(gt: np.ndarray, pred: np.ndarray) -> float:
    """Pearson r over the pixels where ``gt > 0`` (float64, population std); NaN with fewer than
    two such pixels or a standard deviation below 1e-12 on either side."""
    active = gt > 0
    if active.sum() < 2:
        return math.nan
    g = gt[active].astype(np.float64)
    p = pred[active].astype(np.float64)
    g_std, p_std = g.std(), p.std()
    if g_std < 1e-12 or p_std < 1e-12:
        return math.nan
    return float(np.mean((g - g.mean()) / g_std * ((p - p.mean()) / p_std)))


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP of detections ``scores`` (R,) float64 with flags ``tp`` (R,)
    against ``n_gt`` ground-truth instances: NaN without ground truth, 0 without detections."""
    if n_gt == 0:
        return math.nan
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores)
    tp_sorted = tp[order].astype(np.float32)
    tp_cum = np.cumsum(tp_sorted)
    fp_cum = np.cumsum(1.0 - tp_sorted)
    recall = tp_cum / n_gt
    precision = tp_cum / (tp_cum + fp_cum + 1e-9)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at recall >= r
    first = np.searchsorted(recall.astype(np.float64), RECALL_POINTS, side="left")
    points = np.zeros(len(RECALL_POINTS), dtype=np.float32)
    found = first < len(recall)
    points[found] = envelope[first[found]]
    total = np.add.accumulate(points, dtype=np.float32)[-1]  # sequential float32, as the loop
    return float(total / np.float32(101.0))


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@dataclass
class ClipRecords:
    """One clip's matching outcome, in official record order.

    ``det_*`` (R,): one record per prediction (class, score, IoU of its match as float32, or -1
    when unmatched); ``pair_*`` (M,): one per matched pair (class, Pearson r, relative distance
    error, NaN where undefined); ``gt_count`` (num_classes,).
    """

    det_cls: np.ndarray
    det_score: np.ndarray
    det_iou: np.ndarray
    pair_cls: np.ndarray
    pair_pearson: np.ndarray
    pair_dist: np.ndarray
    gt_count: np.ndarray


def _queue(queue: list, item) -> int:
    """Append ``item`` and return its index."""
    queue.append(item)
    return len(queue) - 1


def group_buckets(annotations: Iterable[Annotation]) -> dict[tuple[int, int], list[Annotation]]:
    """Annotations grouped by ``(frame, category_id)`` in first-appearance order."""
    groups: dict[tuple[int, int], list[Annotation]] = {}
    for ann in annotations:
        groups.setdefault((int(ann.frame), int(ann.category_id)), []).append(ann)
    return groups


def match_clip(pred: Sequence[Annotation], gt: Sequence[Annotation], num_classes: int) -> ClipRecords:
    """Match one clip's predictions to its ground truth bucket by bucket; see :class:`ClipRecords`."""
    pred_groups, gt_groups = group_buckets(pred), group_buckets(gt)
    gt_count = np.zeros(num_classes, dtype=np.int64)
    for (_, cls), anns in gt_groups.items():
        if 0 <= cls < num_classes:
            gt_count[cls] += len(anns)

    # Pass 1: the buckets in official order, and which annotations need a map. A pair whose
    # possible supports do not intersect has IoU exactly 0 and needs neither map.
    buckets = []  # (class, predictions, GT, overlap (P, G) bool, map indices of preds, of GTs)
    to_render: list[Scaled] = []
    # The official iteration order (module docstring): keep this exact expression.
    for key in set(pred_groups.keys()) | set(gt_groups.keys()):
        cls = key[1]
        preds, gts = pred_groups.get(key, []), gt_groups.get(key, [])
        if not 0 <= cls < num_classes or not preds:
            continue
        if not gts:
            buckets.append((cls, preds, gts, None, None, None))
            continue
        p_scaled = [_scale_all(p.polygons) for p in preds]
        g_scaled = [_scale_all(g.polygons) for g in gts]
        ps = np.stack([_support_scaled(sc).ravel() for sc in p_scaled]).astype(np.float32)
        gs = np.stack([_support_scaled(sc).ravel() for sc in g_scaled]).astype(np.float32)
        overlap = (ps @ gs.T) > 0  # shared pixel counts (exact in float32)
        p_idx = [_queue(to_render, sc) if overlap[i].any() else -1 for i, sc in enumerate(p_scaled)]
        g_idx = [_queue(to_render, sc) if overlap[:, j].any() else -1 for j, sc in enumerate(g_scaled)]
        buckets.append((cls, preds, gts, overlap, p_idx, g_idx))
    maps = _render_scaled(to_render)

    # Pass 2: IoU, Hungarian matching and records, in the same order.
    dets: list[tuple[int, float, np.float32]] = []  # (class, score, IoU or _UNMATCHED)
    pairs: list[tuple[int, float, float]] = []  # (class, Pearson r, relative distance error)
    for cls, preds, gts, overlap, p_idx, g_idx in buckets:
        if overlap is None:
            dets.extend((cls, float(p.score), _UNMATCHED) for p in preds)
            continue
        iou = np.zeros(overlap.shape, dtype=np.float32)
        for i, j in zip(*np.nonzero(overlap), strict=True):
            iou[i, j] = soft_iou(maps[p_idx[i]], maps[g_idx[j]])
        rows, cols = linear_sum_assignment(-iou)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            dets.append((cls, float(preds[i].score), iou[i, j]))
            # Disjoint supports: the prediction is 0 wherever the GT is > 0, so r is NaN.
            r = pearson(maps[g_idx[j]], maps[p_idx[i]]) if overlap[i, j] else math.nan
            d_gt = gts[j].distance
            pairs.append((cls, r, abs(preds[i].distance - d_gt) / d_gt if d_gt > 0 else math.nan))
        matched = set(rows.tolist())
        dets.extend((cls, float(p.score), _UNMATCHED) for i, p in enumerate(preds) if i not in matched)
    det_cls, det_score, det_iou = zip(*dets, strict=True) if dets else ((), (), ())
    pair_cls, pair_pearson, pair_dist = zip(*pairs, strict=True) if pairs else ((), (), ())
    return ClipRecords(
        det_cls=np.asarray(det_cls, dtype=np.int64),
        det_score=np.asarray(det_score, dtype=np.float64),
        det_iou=np.asarray(det_iou, dtype=np.float32),
        pair_cls=np.asarray(pair_cls, dtype=np.int64),
        pair_pearson=np.asarray(pair_pearson, dtype=np.float64),
        pair_dist=np.asarray(pair_dist, dtype=np.float64),
        gt_count=gt_count,
    )


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def threshold_key(t: float) -> str:
    """The JSON key of an IoU threshold: ``0.5 -> "0.5"``."""
    return f"{t:g}"


def class_name(c: int) -> str:
    return CLASS_NAMES[c] if c < len(CLASS_NAMES) else f"class {c}"


def _none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarize(
    records: Sequence[ClipRecords],
    thresholds: Sequence[float] = THRESHOLDS,
    num_classes: int = len(CLASS_NAMES),
    curve_thresholds: Sequence[float] = (),
) -> dict:
    """Per-class, macro and micro results of clips' records (in clip order); JSON-serialisable,
    undefined values are ``None``."""
    n_clips = len(records)
    if not records:  # nothing to evaluate: every count 0, every value undefined
        records = [match_clip([], [], num_classes)]
    cat = {name: np.concatenate([getattr(r, name) for r in records]) for name in ClipRecords.__annotations__}
    cat["gt_count"] = np.sum([r.gt_count for r in records], axis=0)
    iou64 = cat["det_iou"].astype(np.float64)

    def aps(mask: np.ndarray, n_gt: int, ts: Sequence[float]) -> dict[str, float]:
        scores, ious = cat["det_score"][mask], iou64[mask]
        return {threshold_key(t): average_precision(scores, ious >= t, n_gt) for t in ts}

    classes, active = [], []
    for c in range(num_classes):
        det, pair = cat["det_cls"] == c, cat["pair_cls"] == c
        n_gt = int(cat["gt_count"][c])
        ap = aps(det, n_gt, thresholds)
        pear = cat["pair_pearson"][pair]
        dist = cat["pair_dist"][pair]
        row = {
            "id": c,
            "name": class_name(c),
            "gt": n_gt,
            "detections": int(det.sum()),
            "matched": int(pair.sum()),
            "ap": ap,
            "mAP": float(np.mean(list(ap.values()))) if n_gt else math.nan,
            "pearson": _mean(pear),
            "pearson_pairs": int(np.isfinite(pear).sum()),
            "distance_error": _mean(dist),
            "distance_pairs": int(np.isfinite(dist).sum()),
        }
        if curve_thresholds:
            row["ap_curve"] = aps(det, n_gt, curve_thresholds)
        classes.append(row)
        if n_gt:
            active.append(row)

    def macro_of(key: str, ts: Sequence[float]) -> dict[str, float]:
        return {threshold_key(t): _mean(r[key][threshold_key(t)] for r in active) for t in ts}

    macro = {
        "classes": len(active),
        "ap": macro_of("ap", thresholds),
        "mAP": _mean(r["mAP"] for r in active),
        "pearson": _mean(r["pearson"] for r in active),
        "distance_error": _mean(r["distance_error"] for r in active),
    }
    all_det = np.ones(len(cat["det_cls"]), dtype=bool)
    n_gt = int(cat["gt_count"].sum())
    micro_ap = aps(all_det, n_gt, thresholds)
    micro = {
        "gt": n_gt,
        "detections": int(all_det.sum()),
        "matched": len(cat["pair_cls"]),
        "ap": micro_ap,
        "mAP": float(np.mean(list(micro_ap.values()))) if n_gt else math.nan,
        "pearson": _mean(cat["pair_pearson"]),
        "pearson_pairs": int(np.isfinite(cat["pair_pearson"]).sum()),
        "distance_error": _mean(cat["pair_dist"]),
        "distance_pairs": int(np.isfinite(cat["pair_dist"]).sum()),
    }
    if curve_thresholds:
        macro["ap_curve"] = macro_of("ap_curve", curve_thresholds)
        micro["ap_curve"] = aps(all_det, n_gt, curve_thresholds)
    result = {
        "metric": "official",
        "thresholds": [float(t) for t in thresholds],
        "clips": n_clips,
        "classes": classes,
        "macro": macro,
        "micro": micro,
    }
    if curve_thresholds:
        result["curve_thresholds"] = [float(t) for t in curve_thresholds]
    return _jsonable(result)


def _jsonable(obj):
    """NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _none(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def clip_order(names: Iterable[str]) -> list[str]:
    """Clips in the official order: sorted by their prediction file name ``<clip>.json``."""
    return sorted(names, key=lambda n: f"{n}.json")


def _check_thresholds(thresholds: Sequence[float]) -> None:
    if not thresholds or any(not 0.0 < float(t) <= 1.0 for t in thresholds):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {list(thresholds)}")


def _pool_map(fn: Callable, items: list, workers: int, progress: bool, desc: str) -> Iterable:
    """``map(fn, items)`` in order, over a fork-based process pool when ``workers > 1``."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="clip")
    try:
        if workers > 1 and len(items) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(workers, len(items))) as pool:
                for out in pool.imap(fn, items):
                    if bar is not None:
                        bar.update()
                    yield out
        else:
            for item in items:
                out = fn(item)
                if bar is not None:
                    bar.update()
                yield out
    finally:  # also when the caller stops early on a bad file
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Single-threaded OpenBLAS for the block: scipy's barycentric transforms are thousands of tiny
    LAPACK calls, and with OpenBLAS's threads spinning against each other on a small busy machine
    griddata is ~50x slower (process-pool workers inherit the setting)."""
    from ..data.synth.blas import blas_threads  # lazily: it imports the synthesis package

    with blas_threads(1):
        yield


def _match_item(item: tuple[list[Annotation], list[Annotation], int]) -> ClipRecords:
    return match_clip(*item)


def evaluate_annotations(
    pred: Mapping[str, Sequence[Annotation]],
    gt: Mapping[str, Sequence[Annotation]],
    thresholds: Sequence[float] = THRESHOLDS,
    num_classes: int = len(CLASS_NAMES),
    *,
    missing_as_empty: bool = False,
    curve_thresholds: Sequence[float] = (),
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Official metric of predictions against ground truth, both keyed by clip name.

    As the official evaluator: a clip is scored when it has both; a predicted clip without ground
    truth is skipped and a ground-truth clip without predictions is not scored (with
    ``missing_as_empty`` it counts as an empty prediction); a prediction without score ranks at 0;
    annotations of a class outside ``[0, num_classes)`` are ignored. Each leniency is one line of
    ``result["warnings"]``. ``curve_thresholds`` adds ``ap_curve`` rows (AP at more IoU
    thresholds, e.g. for a plot); ``workers > 1`` matches clips in processes. Returns the dict
    described in :func:`summarize`.
    """
    _check_thresholds(thresholds)
    if curve_thresholds:
        _check_thresholds(curve_thresholds)
    notes = LabelNotes()
    for clip in sorted(set(pred) - set(gt)):
        notes.add("unpaired_prediction", clip)
    missing = [c for c in clip_order(gt) if c not in pred]
    for clip in missing:
        notes.add("empty_prediction" if missing_as_empty else "missing_prediction", clip, detail=clip)
    clips = [c for c in clip_order(gt) if c in pred or missing_as_empty]
    items = []
    for c in clips:
        anns = list(pred.get(c, []))
        unscored = [a for a in anns if a.score is None]
        if unscored:
            notes.add("no_score", c, n=len(unscored))
            anns = [replace(a, score=0.0) if a.score is None else a for a in anns]
        items.append((anns, list(gt[c]), num_classes))
    with _one_blas_thread():
        records = list(_pool_map(_match_item, items, workers, progress, "evaluate"))
    result = summarize(records, thresholds, num_classes, curve_thresholds)
    result["warnings"] = notes.lines()
    return result


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _official_int(ann: dict, key: str, path: str, where: str, notes: LabelNotes) -> int:
    """``int(ann[key])`` as the official evaluator reads it (``int(3.7) == 3``, ``int("3") == 3``);
    a value ``int()`` rejects, or a missing key, stops the evaluation (LabelError)."""
    if key not in ann:
        raise LabelError(path, where, f"missing key {key!r} (the official evaluator stops here)")
    value = ann[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise LabelError(
            path, f"{where}.{key}", f"int() rejects {value!r} (the official evaluator stops here)"
        ) from None
    notes.add("cast", path, detail=key)
    return out


def _official_polygon(poly: Any, path: str, where: str) -> np.ndarray:
    """One polygon read as the official evaluator reads it: float32 (K, 3), every x in [0, 360]
    and y in [0, 180]; anything else stops the evaluation (LabelError)."""
    try:
        arr = np.asarray(poly, dtype=np.float32)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 3:
        shape = "ragged or not numeric" if arr is None else f"shape {arr.shape}"
        raise LabelError(path, where, f"must be an N x 3 array of [x, y, v], got {shape}")
    check_on_canvas(arr, path, where)
    return arr


def read_official(
    path: str | os.PathLike,
    *,
    predictions: bool,
    num_classes: int = len(CLASS_NAMES),
    notes: LabelNotes | None = None,
) -> list[Annotation]:
    """A prediction or ground-truth file read exactly as the official evaluator reads it.

    Stops (raises :class:`MetricError` / :class:`LabelError`, one line naming the file) where it
    stops: a prediction file over 20 MiB, unreadable JSON, no ``annotations`` list, a frame or
    category that ``int()`` rejects, a polygon that is not N x 3, a coordinate off the canvas.
    Otherwise it reads on, counting in ``notes``: ``score`` missing (0.0), frame or category
    values that are not plain integers (``int()``), categories outside ``[0, num_classes)``
    (dropped), missing / empty segmentations and empty polygons (nothing rendered). ``v`` is not
    range-checked; ``instance_id`` and ``distance`` are kept when they are numbers (distance NaN
    otherwise: only the distance diagnostic uses it). Other keys are ignored.
    """
    notes = LabelNotes() if notes is None else notes
    path = os.fspath(path)
    if predictions:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise MetricError(
                f"{path}: {size / 2**20:.1f} MiB ({size} bytes) exceeds the 20 MiB "
                f"({MAX_FILE_BYTES}-byte) limit of the official evaluator"
            )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LabelError(path, "", "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelError(path, "", f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise LabelError(path, "", 'top level must be an object with an "annotations" list')
    out = []
    for k, ann in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise LabelError(path, where, f"must be an object, got {type(ann).__name__}")
        frame = _official_int(ann, "metadata_frame_index", path, where, notes)
        cat = _official_int(ann, "category_id", path, where, notes)
        if not 0 <= cat < num_classes:
            notes.add("category", path, detail=cat)
            continue
        if frame < 0:
            notes.add("negative_frame", path)
        score = None
        if predictions:
            score = ann.get("score")
            if score is None and "score" not in ann:
                notes.add("no_score", path)
                score = 0.0
            elif not isinstance(score, int | float) or isinstance(score, bool):
                raise LabelError(path, f"{where}.score", f"must be a number, got {score!r}")
        seg = ann.get("segmentation", [])
        if not isinstance(seg, list):
            raise LabelError(path, f"{where}.segmentation", f"must be a list of polygons, got {seg!r:.40}")
        polygons = []
        for i, poly in enumerate(seg):
            if isinstance(poly, list) and not poly:
                notes.add("empty_polygon", path)
                continue
            polygons.append(_official_polygon(poly, path, f"{where}.segmentation[{i}]"))
        if not polygons:
            notes.add("no_map", path)
        dist = ann.get("distance")
        if not isinstance(dist, int | float) or isinstance(dist, bool) or not math.isfinite(dist):
            notes.add("no_distance", path)
            dist = math.nan
        inst = ann.get("instance_id")
        inst = inst if isinstance(inst, int) and not isinstance(inst, bool) else -1
        out.append(
            Annotation(frame, inst, cat, float(dist), polygons, None if score is None else float(score))
        )
    return out


def load_predictions(
    path: str | os.PathLike, num_classes: int = len(CLASS_NAMES), notes: LabelNotes | None = None
) -> list[Annotation]:
    """A submission file read as the official evaluator reads it (:func:`read_official`)."""
    return read_official(path, predictions=True, num_classes=num_classes, notes=notes)


def load_ground_truth(
    path: str | os.PathLike, num_classes: int = len(CLASS_NAMES), notes: LabelNotes | None = None
) -> list[Annotation]:
    """A label file read as the official evaluator reads it (:func:`read_official`; ``v`` is not
    range-checked, ``score`` not read)."""
    return read_official(path, predictions=False, num_classes=num_classes, notes=notes)


GT_SUFFIX = "_std.json"


def _gt_candidates(gt_dir: Path) -> dict[str, list[Path]]:
    """``<clip>_std.json`` files of a ground-truth folder and its subfolders (not deeper; names
    starting with "." skipped), by clip: the folder's own file first, then subfolders by name."""
    found: dict[str, list[Path]] = {}
    for pattern in (f"*{GT_SUFFIX}", f"*/*{GT_SUFFIX}"):
        for path in sorted(gt_dir.glob(pattern)):
            if any(part.startswith(".") for part in path.relative_to(gt_dir).parts) or not path.is_file():
                continue
            found.setdefault(path.name[: -len(GT_SUFFIX)], []).append(path)
    return found


@dataclass
class ClipFiles:
    """How a prediction folder pairs with ground truth: ``pairs`` (clip, prediction, GT) and
    ``gt_only`` (clip, GT) in official clip order, ``unpaired`` prediction files."""

    pairs: list[tuple[str, Path, Path]]
    gt_only: list[tuple[str, Path]]
    unpaired: list[Path]


def find_clip_files(
    pred_dir: str | os.PathLike,
    gt_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    notes: LabelNotes | None = None,
) -> ClipFiles:
    """Pair every ``<pred_dir>/<clip>.json`` (names starting with "." ignored) with
    ``<clip>_std.json`` in a ground-truth folder or one level below it, as the official evaluator
    does (several ``gt_dirs`` are searched in order; the first file found wins). A prediction
    without ground truth is skipped, a plain ``<clip>.json`` ground truth is not paired; both are
    counted in ``notes``. Raises :class:`MetricError` when a folder is missing or nothing pairs."""
    notes = LabelNotes() if notes is None else notes
    if isinstance(gt_dirs, str | os.PathLike):
        gt_dirs = [gt_dirs]
    gt_dirs = [Path(d) for d in gt_dirs]
    pred_dir = Path(pred_dir)
    for folder in (pred_dir, *gt_dirs):
        if not folder.is_dir():
            raise MetricError(f"{folder}: not a directory")
    gt_files: dict[str, list[Path]] = {}
    for gt_dir in gt_dirs:
        for clip, paths in _gt_candidates(gt_dir).items():
            gt_files.setdefault(clip, []).extend(paths)
    for paths in gt_files.values():
        if len(paths) > 1:
            notes.add("gt_twice", paths[0])
    preds = {p.stem: p for p in sorted(pred_dir.glob("*.json")) if not p.name.startswith(".") and p.is_file()}
    pairs, unpaired = [], []
    for clip in clip_order(preds):
        if clip in gt_files:
            pairs.append((clip, preds[clip], gt_files[clip][0]))
            continue
        unpaired.append(preds[clip])
        notes.add("unpaired_prediction", preds[clip])
        for gt_dir in gt_dirs:
            for plain in (gt_dir / f"{clip}.json", *sorted(gt_dir.glob(f"*/{clip}.json"))):
                if plain.is_file():
                    notes.add("plain_gt", plain)
    gt_only = [(c, gt_files[c][0]) for c in clip_order(gt_files) if c not in preds]
    if not pairs and not gt_only:
        names = ", ".join(map(str, gt_dirs))
        raise MetricError(f"{pred_dir}: no prediction file pairs with a <clip>{GT_SUFFIX} in {names}")
    return ClipFiles(pairs, gt_only, unpaired)


def select_clips(
    files: ClipFiles, missing_as_empty: bool, notes: LabelNotes
) -> list[tuple[str, Path | None, Path]]:
    """The clips to score, in official order: the pairs, and with ``missing_as_empty`` the
    ground-truth clips without prediction file (as ``None``); the others are counted in ``notes``."""
    for clip, gt_path in files.gt_only:
        notes.add("empty_prediction" if missing_as_empty else "missing_prediction", gt_path, detail=clip)
    chosen = [(c, p, g) for c, p, g in files.pairs]
    if missing_as_empty:
        chosen += [(c, None, g) for c, g in files.gt_only]
    chosen = sorted(chosen, key=lambda item: f"{item[0]}.json")
    if not chosen:
        raise MetricError("no prediction file pairs with ground truth: nothing to score")
    return chosen


def load_clip_files(
    pred_path: Path | None,
    gt_path: Path,
    num_classes: int = len(CLASS_NAMES),
    notes: LabelNotes | None = None,
) -> tuple[list[Annotation], list[Annotation]]:
    """One clip's predictions (none without a prediction file) and ground truth, both read as the
    official evaluator reads them (:func:`read_official`)."""
    pred = load_predictions(pred_path, num_classes, notes) if pred_path is not None else []
    return pred, load_ground_truth(gt_path, num_classes, notes)


def _load_and_match(item: tuple[str, Path | None, Path, int]) -> tuple[ClipRecords, LabelNotes] | str:
    """Worker: load one clip's files and match them; a bad file comes back as its error line."""
    clip, pred_path, gt_path, num_classes = item
    notes = LabelNotes()
    try:
        pred, gt = load_clip_files(pred_path, gt_path, num_classes, notes)
    except (ValueError, OSError) as err:  # LabelError and MetricError are ValueErrors
        return str(err)
    return match_clip(pred, gt, num_classes), notes


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    thresholds: Sequence[float] = THRESHOLDS,
    num_classes: int = len(CLASS_NAMES),
    *,
    missing_as_empty: bool = False,
    curve_thresholds: Sequence[float] = (),
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Official metric of a submission folder against ground-truth folder(s), with the official
    evaluator's pairing (:func:`find_clip_files`) and reading (:func:`read_official`): a
    ground-truth clip without prediction file is not scored unless ``missing_as_empty``. Raises
    :class:`MetricError` naming the first file where the official evaluator stops. The result (see
    :func:`summarize`) adds ``clip_names`` (scored), ``missing_predictions`` (ground-truth clips
    without prediction file), ``unpaired_predictions`` and ``warnings`` (one line per kind of
    leniency, with counts and files)."""
    _check_thresholds(thresholds)
    if curve_thresholds:
        _check_thresholds(curve_thresholds)
    notes = LabelNotes()
    files = find_clip_files(pred_dir, gt_dirs, notes)
    chosen = select_clips(files, missing_as_empty, notes)
    items = [(c, p, g, num_classes) for c, p, g in chosen]
    records = []
    with _one_blas_thread():
        for out in _pool_map(_load_and_match, items, workers, progress, "evaluate"):
            if isinstance(out, str):
                raise MetricError(out)
            records.append(out[0])
            notes.update(out[1])
    result = summarize(records, thresholds, num_classes, curve_thresholds)
    result["clip_names"] = [c for c, _, _ in chosen]
    result["missing_predictions"] = [c for c, _ in files.gt_only]
    result["unpaired_predictions"] = [p.name for p in files.unpaired]
    result["warnings"] = notes.lines()
    return result
