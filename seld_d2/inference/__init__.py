"""Inference after the model (SPEC §8): per-frame selection, tracking over frames, and export of
tracked detections as submission annotations under the 20 MB file limit.

Typical use per clip (``ClipExporter(cfg)`` in :mod:`.submission` does this with the
``SELD.INFER`` values of a config)::

    keep = select_detections(boxes, scores, classes, score_thresh=..., class_thresh=..., nms_thresh=...)
    tracker.step(frame, to_detections(frame, boxes, scores, classes, energy, distance, keep))
    annotations, step = thin_to_limit(exports, mode="dense", dense_thr=..., num_peaks=...)
    write_submission(path, annotations)
"""

from ..data.labels import write_labels as write_submission
from .export import (
    DEFAULT_MAX_BYTES,
    PastedEnergy,
    dense_points,
    detections_to_annotations,
    encoded_size,
    paste_energy,
    sparse_peaks,
    thin_to_limit,
)
from .postprocess import BASELINE_SELECTION, Detection, select_detections, to_detections
from .tracker import BASELINE_TRACKING, Tracker, box_iou, track_clip

__all__ = [
    "BASELINE_SELECTION",
    "BASELINE_TRACKING",
    "DEFAULT_MAX_BYTES",
    "Detection",
    "PastedEnergy",
    "Tracker",
    "box_iou",
    "dense_points",
    "detections_to_annotations",
    "encoded_size",
    "paste_energy",
    "select_detections",
    "sparse_peaks",
    "thin_to_limit",
    "to_detections",
    "track_clip",
    "write_submission",
]
