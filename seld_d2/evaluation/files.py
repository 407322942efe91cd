"""Prediction and ground-truth files read and paired exactly as the official evaluator reads and
pairs them (SPEC §2.7); :class:`MetricError` for what it refuses."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.classes import CLASS_NAMES
from ..data.labels import Annotation, LabelError, LabelNotes, check_on_canvas, read_annotation_list

MAX_FILE_BYTES = 20 * 1024 * 1024  # the official evaluator refuses larger prediction files (20 MiB)


class MetricError(ValueError):
    """Bad evaluation input (unpaired, oversized or unreadable files); the message is one line."""


def clip_order(names: Iterable[str]) -> list[str]:
    """Clips in the official order: sorted by their prediction file name ``<clip>.json``."""
    return sorted(names, key=lambda n: f"{n}.json")


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
    out = []
    for k, ann in enumerate(read_annotation_list(path)):
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
