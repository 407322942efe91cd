"""STAIRS26 label / submission JSON: reading with full validation, and writing (SPEC §1).

A file is ``{"annotations": [ann, ...]}``; each ann has ``metadata_frame_index`` (int, 10 fps),
``instance_id`` (int), ``category_id`` (int 0-12), ``distance`` (cm), ``segmentation`` (a list
of polygons, each a list of ``[x, y, v]`` triplets on the 360x180 canvas) and, in predictions,
``score``. Every violation raises :class:`LabelError`, one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..utils.io import atomic_open
from .classes import CLASS_NAMES

CANVAS_W, CANVAS_H = 360, 180
REQUIRED_KEYS = ("metadata_frame_index", "instance_id", "category_id", "distance", "segmentation")


class LabelError(ValueError):
    """A malformed label file; ``str(err)`` is ``"<path>: <field>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, where: str, problem: str):
        self.path, self.where, self.problem = os.fspath(path), where, problem
        super().__init__(f"{self.path}: {where}: {problem}" if where else f"{self.path}: {problem}")

    def __reduce__(self):  # pickle (loader workers) rebuilds it from its own arguments
        return type(self), (self.path, self.where, self.problem)


@dataclass
class Annotation:
    """One sound event instance in one frame. ``polygons`` are float32 (K, 3) arrays of
    ``[x, y, v]``; an event straddling the azimuth seam has two."""

    frame: int
    instance_id: int
    category_id: int
    distance: float
    polygons: list[np.ndarray]
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bbox(self) -> list[float]:
        """Tight XYXY box around every point of every polygon (pixel-inclusive)."""
        pts = np.concatenate(self.polygons)
        x0, y0 = pts[:, 0].min(), pts[:, 1].min()
        x1, y1 = pts[:, 0].max(), pts[:, 1].max()
        return [float(x0), float(y0), float(x1) + 1.0, float(y1) + 1.0]

    def to_json(self) -> dict[str, Any]:
        ann = {
            "metadata_frame_index": int(self.frame),
            "instance_id": int(self.instance_id),
            "category_id": int(self.category_id),
            "distance": float(self.distance),
            "segmentation": [_triplets(poly) for poly in self.polygons],
        }
        if self.score is not None:
            ann["score"] = round(float(self.score), 6)
        return ann


def _num(value: float) -> int | float:
    """Integral coordinates are written as JSON integers (as STAIRS26 labels are)."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 3)


def _coords(values: np.ndarray) -> list[int | float]:
    """``[_num(x) for x in values]``, with one vectorised check for the usual all-integral case."""
    values = values.astype(np.float64)
    if np.all(np.isfinite(values) & (np.floor(values) == values)):
        return values.astype(np.int64).tolist()
    return [_num(x) for x in values.tolist()]


def _triplets(poly: np.ndarray) -> list[list[int | float]]:
    """A (K, 3) polygon as JSON-ready ``[x, y, round(v, 6)]`` lists (Python's correctly rounded
    ``round``, whose output lengths ``seld_d2.inference.export`` models)."""
    poly = np.asarray(poly).reshape(-1, 3)
    values = [round(v, 6) for v in poly[:, 2].astype(np.float64).tolist()]
    return [list(t) for t in zip(_coords(poly[:, 0]), _coords(poly[:, 1]), values, strict=True)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_triplet(p: Any) -> bool:
    return (
        isinstance(p, list)
        and len(p) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
    )


def parse_annotation(
    ann: Any,
    where: str,
    path: str | os.PathLike,
    *,
    num_classes: int = len(CLASS_NAMES),
    num_frames: int | None = None,
    require_score: bool = False,
    gt_values: bool = True,
) -> Annotation:
    """Validate one annotation dict and convert it; raises :class:`LabelError`."""
    if not isinstance(ann, dict):
        raise LabelError(path, where, f"must be an object, got {type(ann).__name__}")
    for key in REQUIRED_KEYS + (("score",) if require_score else ()):
        if key not in ann:
            raise LabelError(path, where, f"missing key {key!r}")
    frame, inst, cat, dist = (ann[k] for k in REQUIRED_KEYS[:4])
    if not _is_int(frame) or frame < 0:
        raise LabelError(
            path, f"{where}.metadata_frame_index", f"must be a non-negative integer, got {frame!r}"
        )
    if num_frames is not None and frame >= num_frames:
        raise LabelError(
            path, f"{where}.metadata_frame_index", f"frame {frame} is past the clip's {num_frames} frames"
        )
    if not _is_int(inst):
        raise LabelError(path, f"{where}.instance_id", f"must be an integer, got {inst!r}")
    if not _is_int(cat) or not 0 <= cat < num_classes:
        raise LabelError(
            path, f"{where}.category_id", f"must be an integer in [0, {num_classes - 1}], got {cat!r}"
        )
    if not _is_number(dist) or dist < 0:
        raise LabelError(path, f"{where}.distance", f"must be a non-negative number of cm, got {dist!r}")
    score = ann.get("score")
    if score is not None and not _is_number(score):
        raise LabelError(path, f"{where}.score", f"must be a finite number, got {score!r}")
    seg = ann["segmentation"]
    if not isinstance(seg, list) or not seg:
        raise LabelError(path, f"{where}.segmentation", "must be a non-empty list of polygons")
    polygons = [
        _parse_polygon(poly, f"{where}.segmentation[{i}]", path, gt_values) for i, poly in enumerate(seg)
    ]
    extra = {k: v for k, v in ann.items() if k not in REQUIRED_KEYS and k != "score"}
    return Annotation(int(frame), int(inst), int(cat), float(dist), polygons, score, extra)


def _parse_polygon(poly: Any, where: str, path: str | os.PathLike, gt_values: bool) -> np.ndarray:
    if not isinstance(poly, list) or not poly:
        raise LabelError(path, where, "must be a non-empty list of [x, y, v] triplets")
    try:
        arr = np.asarray(poly, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 3:
        bad = next(i for i, p in enumerate(poly) if not _is_triplet(p))
        raise LabelError(
            path, f"{where}[{bad}]", f"must be an [x, y, v] triplet of numbers, got {poly[bad]!r}"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise LabelError(path, f"{where}[{i}]", f"non-finite value in {poly[i]!r}")
    for axis, name, hi in ((0, "x", CANVAS_W), (1, "y", CANVAS_H)):
        out = (arr[:, axis] < 0) | (arr[:, axis] > hi)
        if out.any():
            i = int(np.argmax(out))
            raise LabelError(path, f"{where}[{i}]", f"{name}={arr[i, axis]:g} outside the canvas [0, {hi}]")
    if gt_values:
        out = (arr[:, 2] <= 0) | (arr[:, 2] > 1)
        if out.any():
            i = int(np.argmax(out))
            raise LabelError(path, f"{where}[{i}]", f"v={arr[i, 2]:g} outside (0, 1]")
    return arr.astype(np.float32)


def load_labels(
    path: str | os.PathLike,
    *,
    num_classes: int = len(CLASS_NAMES),
    num_frames: int | None = None,
    require_score: bool = False,
    gt_values: bool = True,
) -> list[Annotation]:
    """Read and validate a label (or, with ``require_score``, a prediction) file.

    ``num_frames`` bounds the frame indices; ``gt_values`` requires v in (0, 1] (ground truth).
    Raises :class:`LabelError` on the first problem.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LabelError(path, "", "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelError(path, "", f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise LabelError(path, "", 'top level must be an object with an "annotations" list')
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise LabelError(path, "annotations", f"must be a list, got {type(anns).__name__}")
    return [
        parse_annotation(
            ann,
            f"annotations[{i}]",
            path,
            num_classes=num_classes,
            num_frames=num_frames,
            require_score=require_score,
            gt_values=gt_values,
        )
        for i, ann in enumerate(anns)
    ]


def write_labels(path: str | os.PathLike, annotations: list[Annotation]) -> None:
    """Write annotations as a label/submission JSON file, atomically, sorted by frame then id."""
    ordered = sorted(annotations, key=lambda a: (a.frame, a.instance_id))
    # json.dumps encodes in C; json.dump(obj, f) would take the pure-Python encoder.
    text = json.dumps({"annotations": [a.to_json() for a in ordered]}, separators=(",", ":"))
    with atomic_open(path, "w") as f:
        f.write(text)


def group_by_frame(annotations: list[Annotation]) -> dict[int, list[Annotation]]:
    """Annotations keyed by frame index."""
    frames: dict[int, list[Annotation]] = {}
    for ann in annotations:
        frames.setdefault(ann.frame, []).append(ann)
    return frames
