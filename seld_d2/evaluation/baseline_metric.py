"""The older baseline metric of DCASE2026 Task 3 (SPEC §2, end), offered as an option.

Every annotation becomes an energy map on the 360x180 canvas: the sum over its triplets of
``v * exp(-c^2 / (2 sigma^2))``, with ``c`` the chord between the pixel's and the triplet's
directions and sigma = 6 deg; its binary mask is the pixels at >= 10 % of the map's peak
(annotations whose map is empty are dropped). Masks are scored with COCO's mask AP: per (frame,
class) the detections, by decreasing score (at most 100), greedily take the unmatched ground truth
of highest IoU >= t; per class the detections of all frames are ranked (stable sort) into
101-point interpolated precision; AP is averaged over t = 0.50:0.05:0.95. Pearson r (over the
union of the two masks dilated by two pixels) and the relative distance error are measured on
pairs matched separately: Hungarian matching, per frame, of same-class peaks at most 20 deg apart.

Geometry is this project's (SPEC §1): pixel ``(x, y)`` looks at azimuth ``180 - x`` and elevation
``90 - y``. Points further than 4 sigma from the window the map is computed on contribute less
than 3.4e-4 of their peak and are left out. Micro values pool the records of every class.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.optimize import linear_sum_assignment

from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from ..data.classes import CLASS_NAMES
from ..data.labels import Annotation, LabelNotes
from ..utils.threads import blas_threads
from .files import MetricError, clip_order, find_clip_files, load_clip_files, select_clips
from .matching import _jsonable, _mean, class_name, threshold_key
from .metric import _pool_map

SIGMA_DEG = 6.0
ENERGY_THR = 0.10
GATE_DEG = 20.0
MAX_DETS = 100
THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # 0.50 .. 0.95
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_CUTOFF_SIGMAS = 4.0


def _unit_rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    el = np.radians(90.0 - y)
    return el, np.cos(el)


def energy_map(polygons: Sequence[np.ndarray], sigma_deg: float = SIGMA_DEG) -> np.ndarray:
    """Sum of spherical Gaussians (sigma in degrees of arc) at the triplets, weighted by ``v``;
    (180, 360) float64."""
    out = np.zeros((CANVAS_HEIGHT, CANVAS_WIDTH), dtype=np.float64)
    pts = np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons if len(p)] or [np.zeros((0, 3))])
    if not len(pts):
        return out
    x, y, v = pts[:, 0], pts[:, 1], pts[:, 2]
    if len(x) > 1:  # unwrap across the seam so the window below is one interval
        xs = np.sort(x)
        gaps = np.diff(np.concatenate([xs, xs[:1] + 360]))
        k = int(np.argmax(gaps))
        x = np.where(x <= xs[k], x + 360, x) if k < len(xs) - 1 else x
    cutoff = _CUTOFF_SIGMAS * sigma_deg
    el_p, cos_p = _unit_rows(y)
    half_az = np.minimum(180.0, cutoff / np.maximum(cos_p, 0.087))
    c0, c1 = int(math.floor((x - half_az).min())), int(math.ceil((x + half_az).max()))
    cols = np.arange(c0, c1 + 1) % CANVAS_WIDTH if c1 - c0 + 1 < CANVAS_WIDTH else np.arange(CANVAS_WIDTH)
    r0, r1 = (
        max(int(math.floor(y.min() - cutoff)), 0),
        min(int(math.ceil(y.max() + cutoff)), CANVAS_HEIGHT - 1),
    )
    rows = np.arange(r0, r1 + 1)
    el_r, cos_r = _unit_rows(rows.astype(np.float64))
    az_c = np.radians(180.0 - cols)
    az_p = np.radians(180.0 - x)
    k = 4.0 / (2.0 * math.radians(sigma_deg) ** 2)  # chord^2 = 4 haversine
    hav_az = np.sin((az_c[:, None] - az_p[None, :]) / 2.0) ** 2  # (C, P)
    window = np.zeros((len(rows), len(cols)))
    step = max(1, 4_000_000 // max(1, len(cols) * len(x)))  # bound the (rows, C, P) temporary
    for i in range(0, len(rows), step):
        sl = slice(i, i + step)
        hav_el = np.sin((el_r[sl, None] - el_p[None, :]) / 2.0) ** 2  # (r, P)
        w = v[None, :] * np.exp(-k * hav_el)  # (r, P)
        coupling = k * cos_r[sl, None] * cos_p[None, :]  # (r, P)
        window[sl] = np.einsum("rp,rcp->rc", w, np.exp(-coupling[:, None, :] * hav_az[None, :, :]))
    out[np.ix_(rows, cols)] = window
    return out


@dataclass
class _Prepared:
    """An annotation's baseline rendering: energy map and binary mask (None when empty)."""

    ann: Annotation
    emap: np.ndarray
    mask: np.ndarray
    peak_dir: np.ndarray  # unit vector of the highest-energy triplet


def _direction(x: float, y: float) -> np.ndarray:
    az, el = math.radians(180.0 - x), math.radians(90.0 - y)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def prepare(
    ann: Annotation, sigma_deg: float = SIGMA_DEG, energy_thr: float = ENERGY_THR
) -> _Prepared | None:
    """Energy map and mask of an annotation, or None when its map is empty (such annotations are
    left out of the baseline metric, ground truth included)."""
    emap = energy_map(ann.polygons, sigma_deg)
    peak = emap.max()
    if peak < 1e-9:
        return None
    pts = np.concatenate([p for p in ann.polygons if len(p)])
    top = pts[int(np.argmax(pts[:, 2]))]
    return _Prepared(ann, emap, emap >= energy_thr * peak, _direction(float(top[0]), float(top[1])))


def mask_iou(dt: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> np.ndarray:
    """Binary mask IoU matrix (D, G)."""
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)))
    d = np.stack([m.ravel() for m in dt]).astype(np.float64)
    g = np.stack([m.ravel() for m in gt]).astype(np.float64)
    inter = d @ g.T
    union = d.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def greedy_match(ious: np.ndarray, t: float) -> np.ndarray:
    """COCO's matching of detections (rows, by decreasing score) to ground truth at threshold t:
    each takes the still unmatched GT of highest IoU >= t (ties to the later GT). TP flags (D,)."""
    taken = np.zeros(ious.shape[1], dtype=bool)
    tp = np.zeros(ious.shape[0], dtype=bool)
    for d in range(ious.shape[0]):
        best, m = min(t, 1 - 1e-10), -1
        for g in range(ious.shape[1]):
            if taken[g] or ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m >= 0:
            taken[m] = tp[d] = True
    return tp


def coco_ap(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point AP (stable ranking, precision envelope); NaN without ground truth."""
    if n_gt == 0:
        return math.nan
    if not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[order]).astype(np.float64)
    fps = np.cumsum(~tp[order]).astype(np.float64)
    recall = tps / n_gt
    precision = np.maximum.accumulate((tps / (fps + tps + np.spacing(1)))[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(q.mean())


def _match_clip(item: tuple) -> dict:
    """One clip: per (frame, class) COCO records and gated pairs (class, Pearson, distance error)."""
    pred, gt, thresholds, num_classes, sigma_deg, energy_thr, gate_deg = item
    frames: dict[int, tuple[list, list]] = {}
    for ann in gt:
        frames.setdefault(ann.frame, ([], []))[0].append(ann)
    for ann in pred:
        frames.setdefault(ann.frame, ([], []))[1].append(ann)
    det_cls, det_score, det_tp, pairs = [], [], [], []
    gt_count = np.zeros(num_classes, dtype=np.int64)
    cos_gate = math.cos(math.radians(gate_deg))
    for f in sorted(frames):
        g_all = [p for p in (prepare(a, sigma_deg, energy_thr) for a in frames[f][0]) if p is not None]
        d_all = [p for p in (prepare(a, sigma_deg, energy_thr) for a in frames[f][1]) if p is not None]
        for c in range(num_classes):
            gs = [p for p in g_all if p.ann.category_id == c]
            ds = [p for p in d_all if p.ann.category_id == c]
            gt_count[c] += len(gs)
            if not ds:
                continue
            order = np.argsort([-p.ann.score for p in ds], kind="mergesort")[:MAX_DETS]
            ds = [ds[i] for i in order]
            ious = mask_iou([p.mask for p in ds], [p.mask for p in gs])
            det_cls += [c] * len(ds)
            det_score += [float(p.ann.score) for p in ds]
            det_tp.append(np.stack([greedy_match(ious, t) for t in thresholds], axis=1))
        # Pearson / distance pairs: peaks within the gate, same class, Hungarian on the angle.
        if g_all and d_all:
            cosang = np.array([[float(g.peak_dir @ d.peak_dir) for d in d_all] for g in g_all])
            same = np.array([[g.ann.category_id == d.ann.category_id for d in d_all] for g in g_all])
            ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
            cost = np.where(same & (cosang >= cos_gate), ang, 1000.0)
            for i, j in zip(*linear_sum_assignment(cost), strict=True):
                if cost[i, j] > gate_deg:
                    continue
                g, d = g_all[i], d_all[j]
                region = binary_dilation(g.mask | d.mask, iterations=2)
                gv, dv = g.emap[region], d.emap[region]
                r = float(np.corrcoef(gv, dv)[0, 1]) if np.ptp(gv) > 1e-7 and np.ptp(dv) > 1e-7 else math.nan
                dist = g.ann.distance
                err = abs(d.ann.distance - dist) / dist if dist > 0 else math.nan
                pairs.append((g.ann.category_id, r, err))
    return {
        "det_cls": np.asarray(det_cls, dtype=np.int64),
        "det_score": np.asarray(det_score, dtype=np.float64),
        "det_tp": np.concatenate(det_tp) if det_tp else np.zeros((0, len(thresholds)), dtype=bool),
        "pairs": pairs,
        "gt_count": gt_count,
    }


def evaluate_annotations(
    pred: Mapping[str, Sequence[Annotation]],
    gt: Mapping[str, Sequence[Annotation]],
    thresholds: Sequence[float] = THRESHOLDS,
    num_classes: int = len(CLASS_NAMES),
    *,
    sigma_deg: float = SIGMA_DEG,
    energy_thr: float = ENERGY_THR,
    gate_deg: float = GATE_DEG,
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Baseline metric of predictions against ground truth keyed by clip name; the same result
    layout as :func:`seld_d2.evaluation.metric.evaluate_annotations` (``"metric": "baseline"``)."""
    orphans = sorted(set(pred) - set(gt))
    if orphans:
        raise MetricError(f"predictions for clip(s) without ground truth: {', '.join(orphans)}")
    clips = clip_order(gt)
    items = [
        (list(pred.get(c, [])), list(gt[c]), tuple(thresholds), num_classes, sigma_deg, energy_thr, gate_deg)
        for c in clips
    ]
    with blas_threads(1):  # as the official metric (metric.evaluate_annotations)
        outs = list(_pool_map(_match_clip, items, workers, progress, "baseline"))
    det_cls = np.concatenate([o["det_cls"] for o in outs]) if outs else np.zeros(0, dtype=np.int64)
    det_score = np.concatenate([o["det_score"] for o in outs]) if outs else np.zeros(0)
    det_tp = np.concatenate([o["det_tp"] for o in outs]) if outs else np.zeros((0, len(thresholds)), bool)
    pairs = [p for o in outs for p in o["pairs"]]
    gt_count = np.sum([o["gt_count"] for o in outs], axis=0) if outs else np.zeros(num_classes, np.int64)

    def aps(mask: np.ndarray, n_gt: int) -> dict[str, float]:
        return {
            threshold_key(t): coco_ap(det_score[mask], det_tp[mask, k], n_gt)
            for k, t in enumerate(thresholds)
        }

    classes, active = [], []
    for c in range(num_classes):
        sel = det_cls == c
        n_gt = int(gt_count[c])
        ap = aps(sel, n_gt)
        pear = [p[1] for p in pairs if p[0] == c]
        dist = [p[2] for p in pairs if p[0] == c]
        row = {
            "id": c,
            "name": class_name(c),
            "gt": n_gt,
            "detections": int(sel.sum()),
            "matched": len(pear),
            "ap": ap,
            "mAP": float(np.mean(list(ap.values()))) if n_gt else math.nan,
            "pearson": _mean(pear),
            "pearson_pairs": int(np.isfinite(pear).sum()) if pear else 0,
            "distance_error": _mean(dist),
            "distance_pairs": int(np.isfinite(dist).sum()) if dist else 0,
        }
        classes.append(row)
        if n_gt:
            active.append(row)
    micro_ap = aps(np.ones(len(det_cls), dtype=bool), int(gt_count.sum()))
    result = {
        "metric": "baseline",
        "thresholds": [float(t) for t in thresholds],
        "clips": len(clips),
        "settings": {"sigma_deg": sigma_deg, "energy_thr": energy_thr, "gate_deg": gate_deg},
        "classes": classes,
        "macro": {
            "classes": len(active),
            "ap": {k: _mean(r["ap"][k] for r in active) for k in map(threshold_key, thresholds)},
            "mAP": _mean(r["mAP"] for r in active),
            "pearson": _mean(r["pearson"] for r in active),
            "distance_error": _mean(r["distance_error"] for r in active),
        },
        "micro": {
            "gt": int(gt_count.sum()),
            "detections": len(det_cls),
            "matched": len(pairs),
            "ap": micro_ap,
            "mAP": float(np.mean(list(micro_ap.values()))) if gt_count.sum() else math.nan,
            "pearson": _mean(p[1] for p in pairs),
            "pearson_pairs": sum(1 for p in pairs if math.isfinite(p[1])),
            "distance_error": _mean(p[2] for p in pairs),
            "distance_pairs": sum(1 for p in pairs if math.isfinite(p[2])),
        },
    }
    return _jsonable(result)


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    thresholds: Sequence[float] = THRESHOLDS,
    num_classes: int = len(CLASS_NAMES),
    *,
    missing_as_empty: bool = False,
    workers: int = 1,
    progress: bool = False,
    **settings,
) -> dict:
    """Baseline metric of a submission folder; files are paired and read as for the official
    metric (:func:`seld_d2.evaluation.metric.evaluate_folders`, whose extra result keys it adds)."""
    notes = LabelNotes()
    files = find_clip_files(pred_dir, gt_dirs, notes)
    chosen = select_clips(files, missing_as_empty, notes)
    pred, gt = {}, {}
    for clip, p, g in chosen:
        try:
            pred[clip], gt[clip] = load_clip_files(p, g, num_classes, notes)
        except (ValueError, OSError) as err:
            raise MetricError(str(err)) from None
    result = evaluate_annotations(
        pred, gt, thresholds, num_classes, workers=workers, progress=progress, **settings
    )
    result["clip_names"] = [c for c, _, _ in chosen]
    result["missing_predictions"] = [c for c, _ in files.gt_only]
    result["unpaired_predictions"] = [p.name for p in files.unpaired]
    result["warnings"] = notes.lines()
    return result
