"""A clip's detections -> submission annotations (SPEC §8): per-frame selection, tracking,
export and thinning to the file-size limit, configured from ``SELD.INFER``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from detectron2.config import configurable

from ..data.labels import Annotation
from .export import thin_to_limit
from .postprocess import Detection, select_detections
from .tracker import Tracker

logger = logging.getLogger(__name__)


@dataclass
class ClipSummary:
    """What happened to one clip's detections on their way to the file."""

    frames: int = 0
    raw_detections: int = 0
    selected: int = 0
    exported: int = 0
    tracks: int = 0
    sample_step: int = 1
    thinned: bool = False
    extra: dict = field(default_factory=dict)


class ClipExporter:
    """Turns per-frame detections of one clip into submission annotations; ``ClipExporter(cfg)``
    builds one from ``SELD.INFER``.

    Args:
        score_thresh / class_thresh / nms_thresh / max_per_class: per-frame selection.
        min_age / max_missed / track_iou / coast_score_decay: the tracker.
        exporter: "dense" or "baseline"; dense_thresh / sample_step / num_peaks: its parameters.
        max_bytes: the largest file allowed; bigger outputs are thinned.

    The values come from ``SELD.INFER`` (``seld_d2/config.py`` holds the defaults, with why).
    """

    @configurable
    def __init__(
        self,
        *,
        score_thresh: float,
        class_thresh: dict[int, float] | None,
        nms_thresh: float,
        max_per_class: int | None,
        min_age: int,
        max_missed: int,
        track_iou: float,
        coast_score_decay: float | None,
        exporter: str,
        dense_thresh: float,
        sample_step: int,
        num_peaks: int,
        max_bytes: int,
    ):
        if exporter not in ("dense", "baseline"):
            raise ValueError(f"SELD.INFER.EXPORTER must be 'dense' or 'baseline', got {exporter!r}")
        self.select_kw = dict(
            score_thresh=score_thresh,
            class_thresh=dict(class_thresh or {}),
            nms_thresh=nms_thresh,
            max_per_class=max_per_class or None,
        )
        self.tracker_kw = dict(
            min_age=min_age, max_missed=max_missed, iou_thresh=track_iou, coast_score_decay=coast_score_decay
        )
        self.export_kw = dict(mode=exporter, dense_thr=dense_thresh, step=sample_step, num_peaks=num_peaks)
        self.max_bytes = int(max_bytes)

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.SELD.INFER
        return dict(
            score_thresh=c.SCORE_THRESH,
            class_thresh={int(k): float(v) for k, v in c.CLASS_SCORE_THRESH},
            nms_thresh=c.NMS_THRESH,
            max_per_class=c.MAX_PER_CLASS,
            min_age=c.MIN_AGE,
            max_missed=c.MAX_MISSED,
            track_iou=c.TRACK_IOU,
            coast_score_decay=c.COAST_SCORE_DECAY or None,
            exporter=c.EXPORTER,
            dense_thresh=c.DENSE_THRESH,
            sample_step=c.SAMPLE_STEP,
            num_peaks=c.NUM_PEAKS,
            max_bytes=int(c.MAX_FILE_MB * 2**20),
        )

    def select(self, detections: list[Detection]) -> list[Detection]:
        """One frame's detections after the score thresholds and class-wise NMS."""
        if not detections:
            return []
        keep = select_detections(
            np.stack([d.box for d in detections]),
            np.array([d.score for d in detections], np.float32),
            np.array([d.category_id for d in detections], np.int64),
            **self.select_kw,
        )
        return [detections[i] for i in keep]

    def __call__(
        self, frames: Iterable[tuple[int, list[Detection]]], name: str = "clip"
    ) -> tuple[list[Annotation], ClipSummary]:
        """``frames``: (frame index, detections) in increasing frame order, every frame of the
        clip (frames without detections included, so that tracks age correctly)."""
        summary = ClipSummary()
        tracker = Tracker(**self.tracker_kw)
        exports = []
        for frame, detections in frames:
            summary.frames += 1
            summary.raw_detections += len(detections)
            kept = self.select(detections)
            summary.selected += len(kept)
            exports.extend(tracker.step(frame, kept))
        exports.extend(tracker.finish())
        summary.tracks = len({track_id for track_id, _ in exports})
        annotations, step = thin_to_limit(exports, max_bytes=self.max_bytes, **self.export_kw)
        summary.exported = len(annotations)
        summary.sample_step = step
        summary.thinned = step != self.export_kw["step"]
        if summary.thinned:
            logger.warning(
                "%s: thinned to every %d-th pixel (was %d) to stay within %d bytes (%g MiB)",
                name,
                step,
                self.export_kw["step"],
                self.max_bytes,
                self.max_bytes / 2**20,
            )
        return annotations, summary
