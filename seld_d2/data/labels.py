"""STAIRS26 label / submission JSON: reading with full validation, and writing (SPEC §1).

A file is ``{"annotations": [ann, ...]}``; each ann has ``metadata_frame_index`` (int, 10 fps),
``instance_id`` (int), ``category_id`` (int 0-12), ``distance`` (cm), ``segmentation`` (a list
of polygons, each a list of ``[x, y, v]`` triplets on the 360x180 canvas) and, in predictions,
``score``. Every violation raises :class:`LabelError`, one line naming the file and the field.

What released STAIRS26 files contain and the project's writers never produce is read, and counted
in a :class:`LabelNotes` when one is passed (SPEC §5): an annotation whose segmentation is missing
or ``[]`` (an older generator's event under the threshold) has no polygons; empty polygons inside a
segmentation are dropped; a missing distance is NaN; float coordinates are kept as they are.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from ..utils.errors import DatasetError
from ..utils.io import atomic_open
from .classes import CLASS_NAMES

REQUIRED_KEYS = ("metadata_frame_index", "instance_id", "category_id")

# One line per kind of input a reader accepted though the project's writers never write it:
# (singular, plural) templates of the count n, the details d (e.g. the categories) and the files.
NOTE_TEXTS: dict[str, tuple[str, str]] = {
    "no_score": (
        '1 prediction without "score" (scored as 0)',
        '{n} predictions without "score" (scored as 0)',
    ),
    "category": ("1 annotation with category {d} dropped", "{n} annotations with category {d} dropped"),
    "no_map": (
        "1 annotation with a missing or empty segmentation (an all-zero map)",
        "{n} annotations with a missing or empty segmentation (all-zero maps)",
    ),
    "empty_polygon": ("1 empty polygon ignored", "{n} empty polygons ignored"),
    "cast": (
        "1 {d} value that is not a plain integer, read with int() (as the official evaluator does)",
        "{n} {d} values that are not plain integers, read with int() (as the official evaluator does)",
    ),
    "negative_frame": (
        "1 annotation with a negative metadata_frame_index (scored as it is)",
        "{n} annotations with a negative metadata_frame_index (scored as they are)",
    ),
    "no_distance": (
        "1 annotation without a numeric distance (no distance value for it)",
        "{n} annotations without a numeric distance (no distance value for them)",
    ),
    "float_xy": (
        "1 annotation with non-integer coordinates (kept as they are)",
        "{n} annotations with non-integer coordinates (kept as they are)",
    ),
    "duplicate": (
        "1 repeated annotation (same frame, instance_id, category_id and polygons) trained once",
        "{n} repeated annotations (same frame, instance_id, category_id and polygons) trained once",
    ),
    "unpaired_prediction": (
        "1 prediction file without ground truth skipped (as the official evaluator does)",
        "{n} prediction files without ground truth skipped (as the official evaluator does)",
    ),
    "missing_prediction": (
        "GT clip {d} has no prediction file: not scored, as the official evaluator does; "
        "--missing-as-empty scores it as an empty prediction",
        "{n} GT clips have no prediction file: not scored, as the official evaluator does; "
        "--missing-as-empty scores them as empty predictions",
    ),
    "empty_prediction": (
        "GT clip {d} has no prediction file: scored as an empty prediction (--missing-as-empty)",
        "{n} GT clips have no prediction file: scored as empty predictions (--missing-as-empty)",
    ),
    "plain_gt": (
        "1 GT file not named <clip>_std.json: not paired, as the official evaluator does",
        "{n} GT files not named <clip>_std.json: not paired, as the official evaluator does",
    ),
    "gt_twice": (
        "1 clip with ground truth in two places: the first found is used",
        "{n} clips with ground truth in several places: the first found is used",
    ),
}
SHOWN_FILES = 3  # file names listed per note line


class LabelNotes:
    """Counts, per kind of :data:`NOTE_TEXTS`, of what readers accepted that the strict schema of
    the project's writers would refuse, with the files (and details) where it was met.
    :meth:`lines` gives one line per kind; notes from several readers add up with :meth:`update`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.files: dict[str, list[str]] = {}
        self.details: dict[str, set] = {}

    def add(self, kind: str, path: str | os.PathLike, n: int = 1, detail: Any = None) -> None:
        if kind not in NOTE_TEXTS:
            raise KeyError(f"unknown note kind {kind!r}")
        if n <= 0:
            return
        self.counts[kind] += n
        files = self.files.setdefault(kind, [])
        name = os.fspath(path)
        if not files or files[-1] != name:
            files.append(name)
        if detail is not None:
            self.details.setdefault(kind, set()).add(detail)

    def update(self, other: LabelNotes) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] += n
            mine = self.files.setdefault(kind, [])
            mine.extend(f for f in other.files.get(kind, []) if f not in mine)
            if kind in other.details:
                self.details.setdefault(kind, set()).update(other.details[kind])

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]

    def lines(self) -> list[str]:
        """One line per kind met, in :data:`NOTE_TEXTS` order: the count, what was done, and the
        first files (``<folder>/<name>``)."""
        out = []
        for kind, (one, many) in NOTE_TEXTS.items():
            n = self.counts[kind]
            if not n:
                continue
            details = sorted(self.details.get(kind, ()), key=lambda d: (str(type(d)), d))
            text = (one if n == 1 else many).format(n=n, d=", ".join(map(str, details)))
            files = self.files[kind]
            if kind not in ("missing_prediction", "empty_prediction") or n > 1:
                shown = ", ".join(_short(f) for f in files[:SHOWN_FILES])
                more = f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES else ""
                text += f": {shown}{more}"
            out.append(text)
        return out


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


class LabelError(DatasetError):
    """A malformed label file; ``str(err)`` is ``"<path>: <field>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, where: str, problem: str):
        super().__init__(path, f"{where}: {problem}" if where else problem)
        self.where, self.problem = where, problem

    def __reduce__(self):  # pickle (loader workers) rebuilds it from its own arguments
        return type(self), (self.path, self.where, self.problem)


@dataclass
class Annotation:
    """One sound event instance in one frame. ``polygons`` are float32 (K, 3) arrays of
    ``[x, y, v]``; an event straddling the azimuth seam has two, one read with an empty
    segmentation none. ``distance`` is NaN when the file gave none."""

    frame: int
    instance_id: int
    category_id: int
    distance: float
    polygons: list[np.ndarray]
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bbox(self) -> list[float]:
        """Tight XYXY box around every point of every polygon (pixel-inclusive)."""
        if not self.polygons:
            raise ValueError("an annotation without polygons has no box")
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
    notes: LabelNotes | None = None,
) -> Annotation:
    """Validate one annotation dict and convert it; raises :class:`LabelError`. What is accepted
    though the project never writes it (see the module docstring) is counted in ``notes``."""
    if not isinstance(ann, dict):
        raise LabelError(path, where, f"must be an object, got {type(ann).__name__}")
    for key in REQUIRED_KEYS + (("score",) if require_score else ()):
        if key not in ann:
            raise LabelError(path, where, f"missing key {key!r}")
    frame, inst, cat = (ann[k] for k in REQUIRED_KEYS)
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
    dist = ann.get("distance")
    if dist is None and "distance" not in ann:
        dist = math.nan  # no distance target for this instance
        _note(notes, "no_distance", path)
    elif not _is_number(dist) or dist < 0:
        raise LabelError(path, f"{where}.distance", f"must be a non-negative number of cm, got {dist!r}")
    score = ann.get("score")
    if score is not None and not _is_number(score):
        raise LabelError(path, f"{where}.score", f"must be a finite number, got {score!r}")
    seg = ann.get("segmentation", [])
    if not isinstance(seg, list):
        raise LabelError(
            path, f"{where}.segmentation", f"must be a list of polygons, got {type(seg).__name__}"
        )
    polygons = []
    for i, poly in enumerate(seg):
        if isinstance(poly, list) and not poly:
            _note(notes, "empty_polygon", path)
            continue
        polygons.append(_parse_polygon(poly, f"{where}.segmentation[{i}]", path, gt_values))
    if not polygons:
        _note(notes, "no_map", path)
    elif notes is not None and any((p[:, :2] != np.floor(p[:, :2])).any() for p in polygons):
        notes.add("float_xy", path)
    extra = {k: v for k, v in ann.items() if k not in REQUIRED_KEYS + ("distance", "segmentation", "score")}
    return Annotation(int(frame), int(inst), int(cat), float(dist), polygons, score, extra)


def _note(notes: LabelNotes | None, kind: str, path: str | os.PathLike, detail: Any = None) -> None:
    if notes is not None:
        notes.add(kind, path, detail=detail)


def check_on_canvas(arr: np.ndarray, path: str | os.PathLike, where: str, rows: Any = None) -> None:
    """Raise LabelError naming the first point of an (N, 3) polygon that is not finite or lies
    off the 360 x 180 canvas (x in [0, 360], y in [0, 180]); ``rows`` (the points as read) is
    what the message quotes, ``arr`` itself when not given."""
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        shown = rows[i] if rows is not None else arr[i].tolist()
        raise LabelError(path, f"{where}[{i}]", f"non-finite value in {shown!r}")
    for axis, name, hi in ((0, "x", CANVAS_WIDTH), (1, "y", CANVAS_HEIGHT)):
        out = (arr[:, axis] < 0) | (arr[:, axis] > hi)
        if out.any():
            i = int(np.argmax(out))
            raise LabelError(path, f"{where}[{i}]", f"{name}={arr[i, axis]:g} outside the canvas [0, {hi}]")


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
    check_on_canvas(arr, path, where, poly)
    if gt_values:
        out = (arr[:, 2] <= 0) | (arr[:, 2] > 1)
        if out.any():
            i = int(np.argmax(out))
            raise LabelError(path, f"{where}[{i}]", f"v={arr[i, 2]:g} outside (0, 1]")
    return arr.astype(np.float32)


def read_annotation_list(path: str | os.PathLike) -> list:
    """The ``annotations`` list of a label or prediction JSON file, unparsed; a missing file, bad
    JSON or another top level raises one :class:`LabelError` naming the file."""
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
    return anns


def load_labels(
    path: str | os.PathLike,
    *,
    num_classes: int = len(CLASS_NAMES),
    num_frames: int | None = None,
    require_score: bool = False,
    gt_values: bool = True,
    notes: LabelNotes | None = None,
) -> list[Annotation]:
    """Read and validate a label (or, with ``require_score``, a prediction) file.

    ``num_frames`` bounds the frame indices; ``gt_values`` requires v in (0, 1] (ground truth);
    ``notes`` counts what was accepted though the project never writes it (module docstring).
    Raises :class:`LabelError` on the first problem.
    """
    anns = read_annotation_list(path)
    return [
        parse_annotation(
            ann,
            f"annotations[{i}]",
            path,
            num_classes=num_classes,
            num_frames=num_frames,
            require_score=require_score,
            gt_values=gt_values,
            notes=notes,
        )
        for i, ann in enumerate(anns)
    ]


def write_labels(path: str | os.PathLike, annotations: list[Annotation]) -> None:
    """Write annotations as a label/submission JSON file, atomically, sorted by frame then id.

    Strict in what it writes: an annotation without polygons, with an empty polygon or without a
    finite distance raises ValueError (readers accept them in released files, the project never
    writes them)."""
    for a in annotations:
        if not a.polygons:
            problem = "no polygons"
        elif any(len(p) == 0 for p in a.polygons):
            problem = "an empty polygon"
        elif not math.isfinite(a.distance):
            problem = f"a non-finite distance ({a.distance})"
        else:
            continue
        raise ValueError(
            f"{os.fspath(path)}: annotation at frame {a.frame} (instance {a.instance_id}) has {problem}"
        )
    ordered = sorted(annotations, key=lambda a: (a.frame, a.instance_id))
    # json.dumps encodes in C; json.dump(obj, f) would take the pure-Python encoder.
    text = json.dumps({"annotations": [a.to_json() for a in ordered]}, separators=(",", ":"))
    with atomic_open(path, "w") as f:
        f.write(text)


def repeated_annotations(annotations: list[Annotation]) -> set[int]:
    """Indices of annotations that repeat an earlier one: same frame, instance_id, category_id
    and identical polygons (the newer STAIRS26 script writes a seam-crossing event once per
    contour, each copy with every polygon). Such copies train once."""
    first: dict[tuple[int, int, int], list[int]] = {}
    repeats = set()
    for i, a in enumerate(annotations):
        key = (a.frame, a.instance_id, a.category_id)
        earlier = first.setdefault(key, [])
        for j in earlier:
            b = annotations[j].polygons
            if len(b) == len(a.polygons) and all(
                np.array_equal(p, q) for p, q in zip(a.polygons, b, strict=True)
            ):
                repeats.add(i)
                break
        else:
            earlier.append(i)
    return repeats


def group_by_frame(annotations: list[Annotation]) -> dict[int, list[Annotation]]:
    """Annotations keyed by frame index."""
    frames: dict[int, list[Annotation]] = {}
    for ann in annotations:
        frames.setdefault(ann.frame, []).append(ann)
    return frames
