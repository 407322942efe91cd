"""Tracked detections -> submission annotations: paste each energy mask into its box, turn it into
``[x, y, v]`` triplets, and keep every file under the evaluator's 20 MB limit (SPEC §1, §8).

Dense mode (the report's modified inference) lists every pixel >= ``dense_thr`` x max, ranked
by intensity, and keeps every ``step``-th of that 1-D list, so thinning keeps points concentrated
at the blob centre. Baseline mode lists ``num_peaks`` sparse peaks (3x3 local maxima, then the
highest remaining pixels). Either way a detection gets >= 3 points whenever its map has 3
non-zero pixels, because the evaluator draws a polygon of 1-2 points as single pixels.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy.ndimage import maximum_filter

from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from ..data.labels import Annotation
from .postprocess import Detection
from .tracker import Export

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 2**20  # the evaluator's per-file limit: 20 MiB
MIN_POINTS = 3  # fewer points are rendered as single pixels, not a surface
_SEPARATORS = (",", ":")  # as write_labels writes
_FILE_OVERHEAD = len('{"annotations":[]}')

Mode = Literal["dense", "baseline"]


class PastedEnergy(NamedTuple):
    """An energy map pasted on the canvas, stored as the crop around its box: ``values`` (h, w)
    float32 whose pixel (0, 0) is canvas column ``x0``, row ``y0``."""

    values: np.ndarray
    x0: int
    y0: int

    def to_canvas(self, height: int = CANVAS_HEIGHT, width: int = CANVAS_WIDTH) -> np.ndarray:
        """The full (height, width) float32 canvas, zero outside the crop."""
        out = np.zeros((height, width), dtype=np.float32)
        h, w = self.values.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.values
        return out


def _interp_weights(centers: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    """Bilinear weights (len(centers), size) sampling a ``size``-cell axis spread over [lo, hi) at
    pixel ``centers``; taps outside the axis count as zero (grid_sample's zero padding)."""
    u = (centers - lo) / (hi - lo) * size - 0.5
    # The hat function max(0, 1 - |u - i|) is the two-tap linear kernel, padding included.
    return np.maximum(1.0 - np.abs(u[:, None] - np.arange(size)), 0.0).astype(np.float32)


def paste_energy(
    energy: np.ndarray,
    box: np.ndarray | Sequence[float],
    height: int = CANVAS_HEIGHT,
    width: int = CANVAS_WIDTH,
) -> PastedEnergy:
    """Resize an (M, M) energy map to its XYXY ``box`` on the (height, width) canvas, soft values kept.

    Same sampling as Detectron2's ``paste_masks_in_image`` (bilinear, mask cell j centred at
    ``x0 + (j + 0.5) * box_w / M``, one pixel of margin) but with no threshold, as a crop clipped
    to the canvas; boxes never wrap around the azimuth seam. An empty box gives a (0, 0) crop.
    """
    energy = np.asarray(energy, dtype=np.float32)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    c0, c1 = max(math.floor(bx0) - 1, 0), min(math.ceil(bx1) + 1, width)
    r0, r1 = max(math.floor(by0) - 1, 0), min(math.ceil(by1) + 1, height)
    if not (bx1 > bx0 and by1 > by0 and c1 > c0 and r1 > r0):
        return PastedEnergy(np.zeros((0, 0), dtype=np.float32), 0, 0)
    wy = _interp_weights(np.arange(r0, r1) + 0.5, by0, by1, energy.shape[0])
    wx = _interp_weights(np.arange(c0, c1) + 0.5, bx0, bx1, energy.shape[1])
    # Separable bilinear resize as two small GEMMs: (h, M) @ (M, M) @ (M, w).
    return PastedEnergy(wy @ energy @ wx.T, c0, r0)


def _as_pasted(energy_map: np.ndarray | PastedEnergy) -> PastedEnergy:
    if isinstance(energy_map, PastedEnergy):
        return energy_map
    return PastedEnergy(np.asarray(energy_map, dtype=np.float32), 0, 0)


class _Ranked(NamedTuple):
    """Candidate points of one map, best first: ``points`` float32 (K, 3) [x, y, v]; the first
    ``num_primary`` are the sampled list, the rest only top it up to MIN_POINTS."""

    points: np.ndarray
    num_primary: int


def _ranked_points(pasted: PastedEnergy, flat_idx: np.ndarray, num_primary: int, peak: float) -> _Ranked:
    h, w = pasted.values.shape
    rows, cols = np.divmod(flat_idx, w)
    v = pasted.values.ravel()[flat_idx] / np.float32(peak)
    pts = np.stack([cols + pasted.x0, rows + pasted.y0, v], axis=1).astype(np.float32)
    return _Ranked(pts, num_primary)


def _by_value(flat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` (row-major) sorted by value descending; stable, so ties stay in row-major order."""
    return idx[np.argsort(-flat[idx], kind="stable")]


def _rank_dense(energy_map: np.ndarray | PastedEnergy, dense_thr: float) -> _Ranked:
    if not 0.0 <= dense_thr <= 1.0:  # above 1 not even the peak would be listed
        raise ValueError(f"dense_thr must be in [0, 1], got {dense_thr}")
    pasted = _as_pasted(energy_map)
    flat = pasted.values.ravel()
    peak = float(flat.max()) if flat.size else 0.0
    if peak <= 0:
        return _Ranked(np.zeros((0, 3), dtype=np.float32), 0)
    thr = np.float32(dense_thr * peak)
    primary = _by_value(flat, np.flatnonzero((flat >= thr) & (flat > 0)))
    idx = primary
    if len(primary) < MIN_POINTS:
        below = _by_value(flat, np.flatnonzero((flat < thr) & (flat > 0)))
        idx = np.concatenate([primary, below[: MIN_POINTS - len(primary)]])
    return _ranked_points(pasted, idx, len(primary), peak)


def _rank_sparse(energy_map: np.ndarray | PastedEnergy, num_peaks: int) -> _Ranked:
    if num_peaks < 1:
        raise ValueError(f"num_peaks must be >= 1, got {num_peaks}")
    pasted = _as_pasted(energy_map)
    vals = pasted.values
    peak = float(vals.max()) if vals.size else 0.0
    if peak <= 0:
        return _Ranked(np.zeros((0, 3), dtype=np.float32), 0)
    flat = vals.ravel()
    is_max = ((vals >= maximum_filter(vals, size=3, mode="constant", cval=0.0)) & (vals > 0)).ravel()
    maxima = _by_value(flat, np.flatnonzero(is_max))
    rest = _by_value(flat, np.flatnonzero(~is_max & (flat > 0)))
    idx = np.concatenate([maxima, rest])[: max(num_peaks, MIN_POINTS)]
    return _ranked_points(pasted, idx, min(num_peaks, len(idx)), peak)


def _select_mask(rank: np.ndarray, num_primary: np.ndarray, num_points: np.ndarray, step: int) -> np.ndarray:
    """Which candidates to write at sampling ``step``: ranks 0, step, 2*step, ... of the primary
    list, topped up with the best unused ranks (1, then 2) to min(MIN_POINTS, K). Rank 0 (the
    peak) is always primary, hence always kept.

    All arguments are per candidate point (P,), so one call covers every detection of a clip.
    """
    kept = (rank < num_primary) & (rank % step == 0)
    need = np.minimum(MIN_POINTS, num_points) - (num_primary + step - 1) // step
    free1 = ~((num_primary > 1) & (step == 1))  # rank 1 not already kept
    free2 = ~((num_primary > 2) & (2 % step == 0))
    fill1 = (rank == 1) & free1 & (need >= 1)
    fill2 = (rank == 2) & free2 & (need >= 1 + free1)
    return kept | fill1 | fill2


def dense_points(energy_map: np.ndarray | PastedEnergy, *, dense_thr: float, step: int = 1) -> np.ndarray:
    """Dense extraction + 1-D sampling of one map -> float32 (K, 3) ``[x, y, v]``, peak first.

    Pixels >= ``dense_thr`` x max, sorted by intensity (ties row-major), every ``step``-th kept;
    x is the canvas column, y the row, v = value / max in (0, 1]. Topped up to 3 points with the
    next-highest pixels when the map has them. A map with no positive pixel gives (0, 3).
    """
    ranked = _rank_dense(energy_map, dense_thr)
    return _sample(ranked, step)


def sparse_peaks(energy_map: np.ndarray | PastedEnergy, num_peaks: int, *, step: int = 1) -> np.ndarray:
    """The baseline exporter's points: the ``num_peaks`` strongest 3x3 local maxima, filled up with
    the highest other pixels, every ``step``-th kept -> float32 (K, 3) ``[x, y, v]``, peak first."""
    return _sample(_rank_sparse(energy_map, num_peaks), step)


def _sample(ranked: _Ranked, step: int) -> np.ndarray:
    k = len(ranked.points)
    mask = _select_mask(np.arange(k), np.int64(ranked.num_primary), np.int64(k), _check_step(step))
    return ranked.points[mask]


def _check_step(step: int) -> int:
    if int(step) < 1:
        raise ValueError(f"sampling step must be >= 1, got {step}")
    return int(step)


@dataclass
class _Candidates:
    """Every detection's ranked candidates, concatenated: ``points`` (P, 3), ``rank``/``det`` (P,)
    (rank within its detection, detection index), ``num_primary``/``num_points`` (D,)."""

    exports: list[Export]
    points: np.ndarray
    rank: np.ndarray
    det: np.ndarray
    num_primary: np.ndarray
    num_points: np.ndarray

    def mask(self, step: int) -> np.ndarray:
        return _select_mask(self.rank, self.num_primary[self.det], self.num_points[self.det], step)

    def annotations(self, step: int) -> list[Annotation]:
        if not self.exports:
            return []
        mask = self.mask(step)
        counts = np.bincount(self.det[mask], minlength=len(self.exports))
        polygons = np.split(self.points[mask], np.cumsum(counts)[:-1])
        return [_annotation(tid, d, [poly]) for (tid, d), poly in zip(self.exports, polygons, strict=True)]


def _annotation(track_id: int, det: Detection, polygons: list[np.ndarray]) -> Annotation:
    return Annotation(
        frame=int(det.frame),
        instance_id=int(track_id),
        category_id=int(det.category_id),
        # The format needs a finite non-negative distance (a model without a distance head gives NaN).
        distance=float(det.distance) if math.isfinite(det.distance) and det.distance > 0 else 0.0,
        polygons=polygons,
        score=float(det.score),
    )


def _fallback_point(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """The box centre pixel, v = 1: a detection whose pasted map is empty still gets written."""
    x = min(max(math.floor((float(box[0]) + float(box[2])) / 2), 0), width - 1)
    y = min(max(math.floor((float(box[1]) + float(box[3])) / 2), 0), height - 1)
    return np.array([[x, y, 1.0]], dtype=np.float32)


def _candidates(
    exports: list[Export], mode: Mode, dense_thr: float, num_peaks: int, height: int, width: int
) -> _Candidates:
    if mode not in ("dense", "baseline"):
        raise ValueError(f'mode must be "dense" or "baseline", got {mode!r}')
    ranked = []
    for _, det in exports:
        pasted = paste_energy(det.energy, det.box, height, width)
        r = _rank_dense(pasted, dense_thr) if mode == "dense" else _rank_sparse(pasted, num_peaks)
        ranked.append(r if len(r.points) else _Ranked(_fallback_point(det.box, height, width), 1))
    num_points = np.array([len(r.points) for r in ranked], dtype=np.int64)
    det_idx = np.repeat(np.arange(len(ranked)), num_points)
    starts = np.cumsum(num_points) - num_points
    return _Candidates(
        exports=list(exports),
        points=np.concatenate([r.points for r in ranked]) if ranked else np.zeros((0, 3), np.float32),
        rank=np.arange(len(det_idx)) - starts[det_idx],
        det=det_idx,
        num_primary=np.array([r.num_primary for r in ranked], dtype=np.int64),
        num_points=num_points,
    )


def detections_to_annotations(
    exports: list[Export],
    *,
    mode: Mode,
    dense_thr: float,
    num_peaks: int,
    step: int = 1,
    height: int = CANVAS_HEIGHT,
    width: int = CANVAS_WIDTH,
) -> list[Annotation]:
    """(track_id, detection) exports -> one single-polygon :class:`Annotation` each, in order.

    ``mode="dense"`` uses :func:`dense_points` (``dense_thr``, ``step``), ``"baseline"``
    :func:`sparse_peaks` (``num_peaks``, ``step``). The track id becomes ``instance_id``.
    """
    return _candidates(exports, mode, dense_thr, num_peaks, height, width).annotations(_check_step(step))


def encoded_size(annotations: list[Annotation]) -> int:
    """Bytes of the file :func:`seld_d2.data.labels.write_labels` would write for ``annotations``."""
    # json.dump escapes non-ASCII, so characters are bytes; write_labels' sort changes no length.
    return len(json.dumps({"annotations": [a.to_json() for a in annotations]}, separators=_SEPARATORS))


def _digits(x: np.ndarray) -> np.ndarray:
    """Characters of non-negative integer coordinates < 1000 written as JSON integers."""
    return 1 + (x >= 10) + (x >= 100)


def _value_chars(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Characters of ``repr(round(float(v), 6))`` for v in [0, 1], as ``Annotation.to_json`` writes
    them, and the worst-case error of that count per value: 0, except within 1e-6 of a rounding
    tie, where rint and Python's correctly rounded ``round`` may differ (5 = longest - shortest)."""
    scaled = v.astype(np.float64) * 1e6
    q = np.rint(scaled).astype(np.int64)
    tz = sum((q % 10**k == 0).astype(np.int64) for k in range(1, 6))  # trailing zeros of q < 1e6
    fixed = 8 - tz  # "0." + 6 decimals less trailing zeros
    sig = np.where(q >= 10, 2 - (q % 10 == 0), 1)  # significant digits of q < 100
    sci = sig + (sig > 1) + 4  # "5.6e-05", "5e-06": Python's repr below 1e-4
    chars = np.where((q <= 0) | (q >= 1_000_000), 3, np.where(q >= 100, fixed, sci))
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    return chars, np.where(near_tie, 5, 0)


class _SizeModel:
    """The encoded size at any sampling step, from per-point character counts, so finding the
    step needs no JSON encoding; ``bound`` adds the (almost always zero) rounding uncertainty."""

    def __init__(self, cand: _Candidates):
        self.cand = cand
        pts = cand.points
        x, y = pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64)
        v_chars, self.slack = _value_chars(pts[:, 2])
        # "[x,y,v]" plus the comma before it (one comma too many per polygon, removed in size()).
        self.point_chars = _digits(x) + _digits(y) + v_chars + 5
        empty = np.zeros((0, 3), dtype=np.float32)
        self.header_chars = sum(
            len(json.dumps(_annotation(tid, d, [empty]).to_json(), separators=_SEPARATORS))
            for tid, d in cand.exports
        )

    def size(self, step: int) -> int:
        """Predicted bytes at ``step`` (exact unless a value sits on a rounding tie)."""
        n = len(self.cand.exports)
        if n == 0:
            return _FILE_OVERHEAD
        points = int(self.point_chars[self.cand.mask(step)].sum())
        return _FILE_OVERHEAD + self.header_chars + points - n + (n - 1)

    def bound(self, step: int) -> int:
        """Bytes at ``step`` are at most this."""
        return self.size(step) + int(self.slack[self.cand.mask(step)].sum())


def thin_to_limit(
    exports: list[Export],
    *,
    mode: Mode,
    dense_thr: float,
    num_peaks: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    step: int = 1,
    height: int = CANVAS_HEIGHT,
    width: int = CANVAS_WIDTH,
) -> tuple[list[Annotation], int]:
    """:func:`detections_to_annotations` with the sampling step raised from ``step`` just enough
    for the written file to fit ``max_bytes``. Returns (annotations, step used); a step above
    ``step`` means points were thinned (also logged as a warning).

    Raises ValueError when even the sparsest output (the top 3 points per detection) is too big.
    """
    cand = _candidates(exports, mode, dense_thr, num_peaks, height, width)
    start = _check_step(step)
    model = _SizeModel(cand)
    # Past the longest primary list every detection is down to its top points.
    last = max(start, int(cand.num_primary.max(initial=1)))
    if model.size(last) > max_bytes:
        raise ValueError(
            f"{len(exports)} detections need {model.size(last)} bytes even with the top "
            f"{MIN_POINTS} points of each, over the {max_bytes}-byte limit; raise the score threshold"
        )
    # Bisection for the smallest fitting step: the point count only falls as the step grows.
    lo, hi = start - 1, last
    if model.size(start) <= max_bytes:
        hi = start
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if model.size(mid) <= max_bytes else (mid, hi)
    used = hi
    annotations = cand.annotations(used)
    if model.bound(used) > max_bytes:  # a value on a rounding tie: let the encoder decide
        while (size := encoded_size(annotations)) > max_bytes and used < last:
            used += 1
            annotations = cand.annotations(used)
        if size > max_bytes:
            raise ValueError(f"annotations need {size} bytes at the sparsest step, over {max_bytes}")
    if used > start:
        logger.warning(
            "thinned points: sampling step %d -> %d so the file is about %d bytes (limit %d)",
            start,
            used,
            model.size(used),
            max_bytes,
        )
    return annotations, used
