"""The official metric's rendering (SPEC §2.5): an annotation's ``[x, y, v]`` triplets as a map on
the metric's 100x50 canvas (labels live on the 360x180 canvas) by linear Delaunay interpolation,
normalised by its maximum. Pure numpy/scipy.

Conventions fixed here (the official evaluator's behaviour):

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
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay, QhullError

from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH

METRIC_W, METRIC_H = 100, 50  # the metric's rendering canvas (labels: CANVAS_WIDTH x CANVAS_HEIGHT)
_INSIDE_EPS = 100 * np.finfo(np.float64).eps  # scipy's LinearNDInterpolator inside tolerance


def scale_polygon(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale ``(K, 3)`` triplets to the metric canvas and unwrap the azimuth seam.

    Returns float32 ``xs, ys, v`` of shape (K,); ``xs`` lies in [0, 200) once points left of a
    gap wider than half the canvas have been shifted right by one canvas width.
    """
    pts = np.asarray(poly, dtype=np.float32)
    # Same float32 arithmetic as the official code: the Python-float factor is applied in float32.
    xs = pts[:, 0] * (METRIC_W / CANVAS_WIDTH)
    ys = pts[:, 1] * (METRIC_H / CANVAS_HEIGHT)
    if len(xs) > 1:
        sorted_xs = np.sort(xs)
        gaps = np.diff(sorted_xs)
        k = int(np.argmax(gaps))
        if gaps[k] > METRIC_W / 2:
            xs = np.where(xs <= sorted_xs[k], xs + METRIC_W, xs)
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
    hix = np.minimum(np.floor(np.maximum(np.maximum(xv[:, 0], xv[:, 1]), xv[:, 2])), 2 * METRIC_W - 1)
    loy = np.maximum(np.ceil(np.minimum(np.minimum(yv[:, 0], yv[:, 1]), yv[:, 2])), 0.0)
    hiy = np.minimum(np.floor(np.maximum(np.maximum(yv[:, 0], yv[:, 1]), yv[:, 2])), METRIC_H - 1)
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
    cols = np.arange(2 * METRIC_W)
    rows = np.arange(METRIC_H)
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
    gx, gy = np.meshgrid(np.arange(2 * METRIC_W), np.arange(METRIC_H))
    return LinearNDInterpolator(tri, values, fill_value=0.0)(gx, gy)


def render_annotations(annotations: Sequence[Sequence[np.ndarray]], chunk: int = 200_000) -> list[np.ndarray]:
    """Maps of many annotations (each a list of (K, 3) polygons), all interpolations batched.

    Each map is (50, 100): the polygons' linear interpolations (clipped at 0; drawn as single
    pixels when a polygon has < 3 points or qhull refuses it) folded from the doubled canvas and
    combined by max, divided by the maximum when that exceeds 1e-8 (the official guard). Like the
    official code's, a map is float64 when a polygon was interpolated, else float32.
    ``chunk`` bounds the triangles interpolated at once (memory). Run it with single-threaded
    BLAS (``seld_d2.utils.threads.blas_threads(1)``, as ``evaluate_*`` do) when calling it many times.
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
    maps64 = np.zeros((n, METRIC_H * METRIC_W), dtype=np.float64)
    maps32 = np.zeros((n, METRIC_H * METRIC_W), dtype=np.float32)

    def scatter(owner: np.ndarray, row: np.ndarray, col: np.ndarray, val: np.ndarray, target) -> None:
        # Folding the doubled canvas and combining polygons are both pixel maxima; the zero the
        # canvas starts from is the clip at 0.
        np.maximum.at(target, (owner, row * METRIC_W + col % METRIC_W), val)

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
        col = np.clip(np.rint(xs), 0, 2 * METRIC_W - 1).astype(np.intp)
        row = np.clip(np.rint(ys), 0, METRIC_H - 1).astype(np.intp)
        scatter(np.full(len(row), i), row, col, v, maps64 if interpolated[i] else maps32)

    out = []
    for i in range(n):
        canvas = (maps64[i] if interpolated[i] else maps32[i]).reshape(METRIC_H, METRIC_W)
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
    mask = np.zeros((METRIC_H, METRIC_W), dtype=bool)
    for xs, ys, _ in polygons:
        x0 = max(int(math.floor(xs.min())), 0)
        x1 = min(int(math.ceil(xs.max())), 2 * METRIC_W - 1)
        y0 = max(int(math.floor(ys.min())), 0)
        y1 = min(int(math.ceil(ys.max())), METRIC_H - 1)
        if x1 < x0 or y1 < y0:
            continue
        cols = np.arange(x0, x1 + 1) % METRIC_W
        mask[y0 : y1 + 1, cols] = True
    return mask
