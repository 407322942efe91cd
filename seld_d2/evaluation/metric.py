"""The official DCASE2026 Task 3 metric (SPEC §2), fast: pure numpy/scipy, no Detectron2.

Each annotation is rendered on a 100x50 canvas by linear Delaunay interpolation of its
``[x, y, v]`` triplets and normalised by its maximum; per (frame, class) predictions are matched to
ground truth by Hungarian matching on soft IoU ``sum(min) / sum(max)``; AP (101-point
interpolated precision) is computed per class at IoU thresholds 0.25, 0.5 and 0.75 over the
records pooled across frames and clips, with Pearson r of the matched maps and the relative distance
error as further per-pair measures. :mod:`seld_d2.evaluation.reference` computes the same numbers
the straightforward way and is the oracle this module is tested against.

The parts: :mod:`.rendering` (annotation maps, scipy's ``griddata`` reproduced pixel for pixel),
:mod:`.matching` (matching, AP and the summary; the record order and AP arithmetic conventions)
and :mod:`.files` (reading and pairing files as the official evaluator does). This module holds
the entry points, :func:`evaluate_annotations` and :func:`evaluate_folders`, and re-exports the
parts' public names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from ..data.classes import CLASS_NAMES
from ..data.labels import Annotation, LabelNotes
from ..utils.threads import blas_threads
from .files import (
    GT_SUFFIX,
    MAX_FILE_BYTES,
    ClipFiles,
    MetricError,
    clip_order,
    find_clip_files,
    load_clip_files,
    load_ground_truth,
    load_predictions,
    read_official,
    select_clips,
)
from .matching import (
    CURVE_THRESHOLDS,
    RECALL_POINTS,
    THRESHOLDS,
    ClipRecords,
    average_precision,
    class_name,
    group_buckets,
    match_clip,
    pearson,
    soft_iou,
    summarize,
    threshold_key,
)
from .rendering import METRIC_H, METRIC_W, render_annotation, render_annotations, scale_polygon, support_mask

__all__ = [
    "CURVE_THRESHOLDS",
    "GT_SUFFIX",
    "MAX_FILE_BYTES",
    "METRIC_H",
    "METRIC_W",
    "RECALL_POINTS",
    "THRESHOLDS",
    "ClipFiles",
    "ClipRecords",
    "MetricError",
    "average_precision",
    "class_name",
    "clip_order",
    "evaluate_annotations",
    "evaluate_folders",
    "find_clip_files",
    "group_buckets",
    "load_clip_files",
    "load_ground_truth",
    "load_predictions",
    "match_clip",
    "pearson",
    "read_official",
    "render_annotation",
    "render_annotations",
    "scale_polygon",
    "select_clips",
    "soft_iou",
    "summarize",
    "support_mask",
    "threshold_key",
]


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
    # One BLAS thread: griddata's barycentric transforms are thousands of tiny LAPACK calls, ~50x
    # slower with OpenBLAS's threads spinning against each other on a small busy machine (the
    # forked pool's workers inherit the limit).
    with blas_threads(1):
        records = list(_pool_map(_match_item, items, workers, progress, "evaluate"))
    result = summarize(records, thresholds, num_classes, curve_thresholds)
    result["warnings"] = notes.lines()
    return result


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
    with blas_threads(1):  # as in evaluate_annotations
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
