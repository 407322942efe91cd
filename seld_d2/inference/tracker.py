"""Frame-to-frame linking of detections into tracks, whose ids become ``instance_id`` (SPEC §8).

Per frame and per class, tracks and detections are matched by the Hungarian algorithm on box
IoU; pairs below ``iou_thresh`` are never linked, so a class never changes inside a track.
A track is exported once it has ``min_age`` hits (a one-frame flash is dropped: with the report's
settings most of those are false positives) and ends after more than ``max_missed`` consecutive
frames without a hit. Baseline style coasting (``coast_score_decay``) exports the last detection
while the track is unmatched, its score decayed by ``decay ** missed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import MappingProxyType

import numpy as np
from scipy.optimize import linear_sum_assignment

from .postprocess import Detection

# Tracker keyword arguments of the baseline exporter (report run 2): max age 5, decay 0.9, min hits 2.
BASELINE_TRACKING = MappingProxyType(
    {"min_age": 2, "max_missed": 5, "iou_thresh": 0.3, "coast_score_decay": 0.9}
)

Export = tuple[int, Detection]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M) float64."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclasses.dataclass
class _Track:
    category_id: int
    last: Detection
    last_hit_frame: int
    hits: int = 1
    track_id: int | None = None  # assigned on confirmation, so exported ids are 0, 1, 2, ...
    pending: list[Export] = dataclasses.field(default_factory=list)  # pre-confirmation exports


class Tracker:
    """Online tracker over the frames of one clip; call :meth:`step` for every frame in order
    (with ``[]`` for frames without detections), then :meth:`finish`.

    ``export_unconfirmed_history`` makes it retroactive: when a track is confirmed, the frames it
    covered before confirmation are exported too (each with its own frame index).
    """

    def __init__(
        self,
        *,
        min_age: int,
        max_missed: int,
        iou_thresh: float,
        coast_score_decay: float | None = None,
        export_unconfirmed_history: bool = False,
    ):
        if min_age < 1:
            raise ValueError(f"min_age must be >= 1, got {min_age}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.min_age = min_age
        self.max_missed = max_missed
        self.iou_thresh = iou_thresh
        self.coast_score_decay = coast_score_decay
        self.export_unconfirmed_history = export_unconfirmed_history
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame: int | None = None

    @property
    def num_active(self) -> int:
        """Tracks alive after the last step (confirmed or not)."""
        return len(self._tracks)

    def _emit(self, track: _Track, frame: int, det: Detection, out: list[Export]) -> None:
        if track.track_id is None and track.hits >= self.min_age:
            track.track_id = self._next_id
            self._next_id += 1
            out.extend((track.track_id, d) for _, d in track.pending)
            track.pending.clear()
        if track.track_id is not None:
            out.append((track.track_id, det))
        elif self.export_unconfirmed_history:
            track.pending.append((frame, det))

    def step(self, frame: int, detections: list[Detection]) -> list[Export]:
        """Link this frame's detections; returns the (track_id, detection) pairs that became
        exportable, sorted by (frame, track_id)."""
        if self._frame is not None and frame <= self._frame:
            raise ValueError(f"frames must increase: got {frame} after {self._frame}")
        self._frame = frame
        # A caller that skips frames still gets them counted as misses.
        self._tracks = [t for t in self._tracks if frame - t.last_hit_frame - 1 <= self.max_missed]
        out: list[Export] = []
        matched = np.zeros(len(self._tracks), dtype=bool)
        new_tracks: list[_Track] = []
        for cls in sorted({d.category_id for d in detections}):
            dets = [d for d in detections if d.category_id == cls]
            tids = [i for i, t in enumerate(self._tracks) if t.category_id == cls]
            linked = np.zeros(len(dets), dtype=bool)
            if tids:
                iou = box_iou(
                    np.stack([self._tracks[i].last.box for i in tids]), np.stack([d.box for d in dets])
                )
                # Pairs below the gate bring no gain, so they never displace a valid pair.
                gain = np.where(iou >= self.iou_thresh, iou, 0.0)
                for r, c in zip(*linear_sum_assignment(gain, maximize=True), strict=True):
                    if iou[r, c] < self.iou_thresh:
                        continue
                    track = self._tracks[tids[r]]
                    track.hits += 1
                    track.last, track.last_hit_frame = dets[c], frame
                    matched[tids[r]] = linked[c] = True
                    self._emit(track, frame, dets[c], out)
            for d in (d for d, ok in zip(dets, linked, strict=True) if not ok):
                track = _Track(category_id=cls, last=d, last_hit_frame=frame)
                new_tracks.append(track)
                self._emit(track, frame, d, out)
        survivors = []
        for track, hit in zip(self._tracks, matched, strict=True):
            missed = frame - track.last_hit_frame
            if not hit and missed > self.max_missed:
                continue
            if not hit and self.coast_score_decay is not None:
                coast = dataclasses.replace(
                    track.last, frame=frame, score=track.last.score * self.coast_score_decay**missed
                )
                self._emit(track, frame, coast, out)
            survivors.append(track)
        self._tracks = survivors + new_tracks
        out.sort(key=lambda e: (e[1].frame, e[0]))
        return out

    def finish(self) -> list[Export]:
        """End the clip: close every track and return what is still to export (exports are made as
        soon as they are certain, so this is empty; a track unconfirmed at the end is dropped)."""
        self._tracks = []
        self._frame = None
        return []


def track_clip(frames: Iterable[tuple[int, list[Detection]]], **kwargs) -> list[Export]:
    """Track a whole clip: ``frames`` yields (frame, detections) in increasing frame order;
    ``kwargs`` go to :class:`Tracker`. Returns every export, sorted by (frame, track_id)."""
    tracker = Tracker(**kwargs)
    out: list[Export] = []
    for frame, dets in frames:
        out.extend(tracker.step(frame, dets))
    out.extend(tracker.finish())
    return out
