"""The official DCASE2026 Task 3 metric (SPEC §2) written the plain way: the oracle.

Every annotation is rendered with ``scipy.interpolate.griddata`` on the full doubled canvas, every
bucket's IoU matrix is filled pair by pair, and the whole evaluation is run once per IoU threshold.
Nothing is skipped or cached, so this module is slow and obviously equal to the definition;
:mod:`seld_d2.evaluation.metric` must reproduce its numbers (the tests check every one of them).
The conventions (pixel grid, record order, AP arithmetic) are those listed in that module's
docstring; they are re-implemented here on purpose rather than imported, and so is the official
evaluator's reading of folders and files (:func:`evaluate_folders`, :func:`read_file`).
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.interpolate import griddata
from scipy.optimize import linear_sum_assignment

from ..data.classes import CLASS_NAMES
from ..data.labels import Annotation
from ..utils.threads import blas_threads

W, H = 100, 50  # metric canvas
SRC_W, SRC_H = 360, 180  # label canvas


def render_polygon(triplets: np.ndarray) -> np.ndarray:
    """One polygon on the (50, 100) canvas, before normalisation."""
    pts = np.array(triplets, dtype=np.float32)
    xs = pts[:, 0] * (W / SRC_W)
    ys = pts[:, 1] * (H / SRC_H)
    vals = pts[:, 2]
    # Seam: if the widest gap between sorted x exceeds half the canvas, the points left of it
    # belong right of the right edge; draw on a doubled canvas and fold back.
    sorted_xs = np.sort(xs)
    gaps = np.diff(sorted_xs)
    if len(gaps) > 0 and gaps[np.argmax(gaps)] > W / 2:
        xs = np.where(xs <= sorted_xs[np.argmax(gaps)], xs + W, xs)

    wide = np.zeros((H, 2 * W), dtype=np.float32)
    interpolated = False
    if len(pts) >= 3:
        try:
            gx, gy = np.meshgrid(np.arange(2 * W), np.arange(H))
            wide = griddata((xs, ys), vals, (gx, gy), method="linear", fill_value=0.0)
            wide = np.clip(np.nan_to_num(wide, nan=0.0), 0.0, None)
            interpolated = True
        except Exception:  # qhull refuses flat or degenerate inputs: draw single pixels
            interpolated = False
    if not interpolated:
        wide = np.zeros((H, 2 * W), dtype=np.float32)
        for x, y, v in zip(xs, ys, vals, strict=True):
            col = int(np.clip(round(x), 0, 2 * W - 1))
            row = int(np.clip(round(y), 0, H - 1))
            wide[row, col] = max(wide[row, col], v)
    return np.maximum(wide[:, :W], wide[:, W:])


def render_annotation(ann: Annotation) -> np.ndarray:
    """All polygons of an annotation by pixel max, divided by the maximum (if above 1e-8)."""
    canvas = np.zeros((H, W), dtype=np.float32)
    for poly in ann.polygons:
        if len(poly) > 0:
            canvas = np.maximum(canvas, render_polygon(poly))
    peak = canvas.max()
    if peak > 1e-8:
        canvas = canvas / peak
    return canvas


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.minimum(a, b).sum()
    union = np.maximum(a, b).sum()
    if union < 1e-8:
        return 0.0
    return float(inter / union)


def pearson(gt: np.ndarray, pred: np.ndarray) -> float:
    mask = gt > 0
    if mask.sum() < 2:
        return float("nan")
    g = gt[mask].astype(np.float64)
    p = pred[mask].astype(np.float64)
    if g.std() < 1e-12 or p.std() < 1e-12:
        return float("nan")
    gz = (g - g.mean()) / g.std()
    pz = (p - p.mean()) / p.std()
    return float(np.mean(gz * pz))


def average_precision(scores: list[float], tps: list[bool], n_gt: int) -> float:
    """101-point interpolated AP, with the official dtypes (float32 counts and sums)."""
    if n_gt == 0:
        return float("nan")
    if not scores:
        return 0.0
    scores_arr = np.array(scores, dtype=np.float64)
    order = np.argsort(-scores_arr)
    tp = np.array(tps, dtype=bool)[order].astype(np.float32)
    fp = 1.0 - tp
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(fp)
    recalls = tp_cum / n_gt
    precisions = tp_cum / (tp_cum + fp_cum + 1e-9)
    ap = np.float32(0.0)
    for r in np.linspace(0.0, 1.0, 101):
        sel = recalls.astype(np.float64) >= r
        best = precisions[sel].max() if sel.any() else np.float32(0.0)
        ap = np.float32(ap + best)
    return float(ap / np.float32(101.0))


def _groups(anns: Sequence[Annotation]) -> dict[tuple[int, int], list[Annotation]]:
    out: dict[tuple[int, int], list[Annotation]] = {}
    for a in anns:
        key = (int(a.frame), int(a.category_id))
        if key not in out:
            out[key] = []
        out[key].append(a)
    return out


def _one_pass(pred, gt, clips, t, num_classes, pairs_out):
    """Records (class, score, is TP at t) of every prediction, in official order; fills
    ``pairs_out`` with (class, Pearson r, distance error) of matched pairs when it is a list."""
    records = []
    for clip in clips:
        pred_groups = _groups(pred.get(clip, []))
        gt_groups = _groups(gt[clip])
        for key in set(pred_groups.keys()) | set(gt_groups.keys()):
            cls = key[1]
            if cls < 0 or cls >= num_classes:
                continue
            preds = pred_groups.get(key, [])
            gts = gt_groups.get(key, [])
            pred_maps = [render_annotation(a) for a in preds]
            gt_maps = [render_annotation(a) for a in gts]
            if len(preds) == 0:
                continue
            if len(gts) == 0:
                for a in preds:
                    records.append((cls, float(a.score), False))
                continue
            iou = np.zeros((len(preds), len(gts)), dtype=np.float32)
            for i in range(len(preds)):
                for j in range(len(gts)):
                    iou[i, j] = soft_iou(pred_maps[i], gt_maps[j])
            rows, cols = linear_sum_assignment(-iou)
            for i, j in zip(rows, cols, strict=True):
                records.append((cls, float(preds[i].score), float(iou[i, j]) >= t))
                if pairs_out is not None:
                    r = pearson(gt_maps[j], pred_maps[i])
                    d = gts[j].distance
                    err = abs(preds[i].distance - d) / d if d > 0 else float("nan")
                    pairs_out.append((cls, r, err))
            for i in range(len(preds)):
                if i not in rows:
                    records.append((cls, float(preds[i].score), False))
    return records


def _finite_mean(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def evaluate_annotations(
    pred: Mapping[str, Sequence[Annotation]],
    gt: Mapping[str, Sequence[Annotation]],
    thresholds: Sequence[float] = (0.25, 0.5, 0.75),
    num_classes: int = len(CLASS_NAMES),
) -> dict:
    """Same contract and output as :func:`seld_d2.evaluation.metric.evaluate_annotations`."""
    for clip in pred:
        if clip not in gt:
            raise ValueError(f"predictions for clip without ground truth: {clip}")
    clips = sorted(gt, key=lambda name: name + ".json")
    gt_count = [0] * num_classes
    for clip in clips:
        for a in gt[clip]:
            if 0 <= a.category_id < num_classes:
                gt_count[a.category_id] += 1

    pairs: list[tuple[int, float, float]] = []
    records_at = {}
    with blas_threads(1):  # griddata's many tiny LAPACK calls crawl with OpenBLAS threads
        for k, t in enumerate(thresholds):
            records_at[t] = _one_pass(pred, gt, clips, t, num_classes, pairs if k == 0 else None)

    def ap_at(t, cls):
        recs = [r for r in records_at[t] if cls is None or r[0] == cls]
        n = sum(gt_count) if cls is None else gt_count[cls]
        return average_precision([r[1] for r in recs], [r[2] for r in recs], n)

    def none(x):
        return None if x is None or math.isnan(x) else x

    classes = []
    for c in range(num_classes):
        ap = {f"{t:g}": ap_at(t, c) for t in thresholds}
        p_vals = [p[1] for p in pairs if p[0] == c]
        d_vals = [p[2] for p in pairs if p[0] == c]
        classes.append(
            {
                "id": c,
                "name": CLASS_NAMES[c] if c < len(CLASS_NAMES) else f"class {c}",
                "gt": gt_count[c],
                "detections": sum(1 for r in records_at[thresholds[0]] if r[0] == c),
                "matched": len(p_vals),
                "ap": {k: none(v) for k, v in ap.items()},
                "mAP": float(np.mean(list(ap.values()))) if gt_count[c] > 0 else None,
                "pearson": _finite_mean(p_vals),
                "pearson_pairs": sum(1 for v in p_vals if not math.isnan(v)),
                "distance_error": _finite_mean(d_vals),
                "distance_pairs": sum(1 for v in d_vals if not math.isnan(v)),
            }
        )
    active = [row for row in classes if row["gt"] > 0]
    macro = {
        "classes": len(active),
        "ap": {f"{t:g}": _finite_mean(row["ap"][f"{t:g}"] for row in active) for t in thresholds},
        "mAP": _finite_mean(row["mAP"] for row in active),
        "pearson": _finite_mean(row["pearson"] for row in active),
        "distance_error": _finite_mean(row["distance_error"] for row in active),
    }
    micro_ap = {f"{t:g}": ap_at(t, None) for t in thresholds}
    micro = {
        "gt": sum(gt_count),
        "detections": len(records_at[thresholds[0]]),
        "matched": len(pairs),
        "ap": {k: none(v) for k, v in micro_ap.items()},
        "mAP": float(np.mean(list(micro_ap.values()))) if sum(gt_count) > 0 else None,
        "pearson": _finite_mean(p[1] for p in pairs),
        "pearson_pairs": sum(1 for p in pairs if not math.isnan(p[1])),
        "distance_error": _finite_mean(p[2] for p in pairs),
        "distance_pairs": sum(1 for p in pairs if not math.isnan(p[2])),
    }
    return {
        "metric": "official",
        "thresholds": [float(t) for t in thresholds],
        "clips": len(clips),
        "classes": classes,
        "macro": macro,
        "micro": micro,
    }


def read_file(path: str, predictions: bool, num_classes: int = len(CLASS_NAMES)) -> list[Annotation]:
    """A prediction or ground-truth file as the official evaluator reads it; raises ValueError
    where it stops (SPEC §2.7)."""
    if predictions and os.path.getsize(path) > 20 * 1024 * 1024:
        raise ValueError(f"{path}: larger than 20 MiB")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for ann in data["annotations"]:
        frame = int(ann["metadata_frame_index"])
        cat = int(ann["category_id"])
        if cat < 0 or cat >= num_classes:
            continue
        polygons = []
        for poly in ann.get("segmentation", []):
            if len(poly) == 0:
                continue
            arr = np.array(poly, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise ValueError(f"{path}: a polygon is not N x 3")
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: a non-finite coordinate")
            if (
                (arr[:, 0] < 0).any()
                or (arr[:, 0] > SRC_W).any()
                or (arr[:, 1] < 0).any()
                or (arr[:, 1] > SRC_H).any()
            ):
                raise ValueError(f"{path}: a point off the canvas")
            polygons.append(arr)
        score = float(ann.get("score", 0.0)) if predictions else None
        d = ann.get("distance")
        distance = float(d) if isinstance(d, int | float) and not isinstance(d, bool) else float("nan")
        out.append(Annotation(frame, -1, cat, distance, polygons, score))
    return out


def evaluate_folders(
    pred_dir: str,
    gt_dir: str,
    thresholds: Sequence[float] = (0.25, 0.5, 0.75),
    num_classes: int = len(CLASS_NAMES),
    missing_as_empty: bool = False,
) -> dict:
    """The official evaluator's pairing: each ``<clip>.json`` of ``pred_dir`` (not starting with
    ".") with ``<clip>_std.json`` in ``gt_dir`` or one folder below; unpaired predictions are
    skipped, ground-truth clips without prediction are not scored (``missing_as_empty``: scored
    as empty predictions)."""
    pred: dict[str, list[Annotation]] = {}
    gt: dict[str, list[Annotation]] = {}
    for name in sorted(os.listdir(pred_dir)):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        clip = name[: -len(".json")]
        gt_path = os.path.join(gt_dir, clip + "_std.json")
        if not os.path.isfile(gt_path):
            below = sorted(glob.glob(os.path.join(gt_dir, "*", clip + "_std.json")))
            if not below:
                continue
            gt_path = below[0]
        pred[clip] = read_file(os.path.join(pred_dir, name), True, num_classes)
        gt[clip] = read_file(gt_path, False, num_classes)
    if missing_as_empty:
        direct = sorted(glob.glob(os.path.join(gt_dir, "*_std.json")))
        for path in direct + sorted(glob.glob(os.path.join(gt_dir, "*", "*_std.json"))):
            clip = os.path.basename(path)[: -len("_std.json")]
            if clip not in gt:
                gt[clip] = read_file(path, False, num_classes)
    return evaluate_annotations(pred, gt, thresholds, num_classes)
