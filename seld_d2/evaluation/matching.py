"""The official metric's matching and scores (SPEC §2): per (frame, class) Hungarian matching of
predictions to ground truth on soft IoU ``sum(min) / sum(max)`` of their maps, 101-point
interpolated AP per class and IoU threshold over the records pooled across frames and clips, Pearson
r of the matched maps and the relative distance error. Pure numpy/scipy.

Conventions fixed here (the official evaluator's behaviour, see SPEC §2.5):

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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.classes import CLASS_NAMES
from ..data.labels import Annotation
from .rendering import Scaled, _render_scaled, _scale_all, _support_scaled

THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_UNMATCHED = np.float32(-1.0)  # IoU stored for unmatched predictions: below every threshold


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
