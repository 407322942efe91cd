"""The official metric as a Detectron2 ``DatasetEvaluator`` (``--eval-only`` and periodic
evaluation during training).

The model's per-frame outputs are collected per clip, turned into submission annotations by the
same chain as ``tools/infer.py`` (``ClipExporter``: thresholds, NMS, tracker, exporter) and scored
against the dataset's labels with :func:`seld_d2.evaluation.metric.evaluate_annotations`. Evaluate
whole clips (the tracker links consecutive frames); a frame subset gives tracks with gaps.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict, defaultdict

from detectron2.config import configurable
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.labels import Annotation, write_labels
from ..inference.postprocess import Detection
from ..inference.predictor import batch_to_detections
from ..inference.submission import ClipExporter
from .metric import evaluate_annotations

logger = logging.getLogger(__name__)


def record_annotations(records: list[dict]) -> dict[str, list[Annotation]]:
    """Ground-truth annotations per sequence from Detectron2 frame records: all of them, the ones
    that train no instance (``iscrowd``: no map, or a repeated copy) included, as the official
    evaluator counts every annotation of a file."""
    gt: dict[str, list[Annotation]] = defaultdict(list)
    for r in records:
        gt[r["sequence"]].extend(
            Annotation(r["frame_index"], a["instance_id"], a["category_id"], a["distance"], a["segmentation"])
            for a in r.get("annotations", [])
        )
    return gt


class Stairs26Evaluator(DatasetEvaluator):
    """Scores a SeldRCNN with the official DCASE2026 Task 3 metric;
    ``Stairs26Evaluator(cfg, dataset_name, output_dir)`` builds one with ``ClipExporter(cfg)``.

    Args:
        dataset_name: a dataset registered by ``register_stairs26`` (its records carry the labels).
        exporter: the post-processing chain (``ClipExporter(cfg)``).
        output_dir: if given, the submission files are written to ``<output_dir>/submission/``.
    """

    @configurable
    def __init__(self, dataset_name: str, exporter: ClipExporter, output_dir: str | None = None):
        self.dataset_name = dataset_name
        self.exporter = exporter
        self.output_dir = output_dir
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None) -> dict:
        return {"dataset_name": dataset_name, "exporter": ClipExporter(cfg), "output_dir": output_dir}

    def reset(self) -> None:
        self._frames: dict[str, dict[int, list[Detection]]] = defaultdict(dict)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        frames = [x["frame_index"] for x in inputs]
        detections = batch_to_detections(frames, [out["instances"] for out in outputs])
        for x, dets in zip(inputs, detections, strict=True):
            self._frames[x["sequence"]][x["frame_index"]] = dets

    def _gathered(self) -> dict[str, dict[int, list[Detection]]]:
        if comm.get_world_size() == 1:
            return self._frames
        merged: dict[str, dict[int, list[Detection]]] = defaultdict(dict)
        for part in comm.gather(dict(self._frames), dst=0):
            for seq, frames in part.items():
                merged[seq].update(frames)
        return merged

    def evaluate(self):
        frames = self._gathered()
        if not comm.is_main_process():
            return {}
        if not frames:
            logger.warning("%s: no frames were evaluated", self.dataset_name)
            return {}
        records = DatasetCatalog.get(self.dataset_name)
        gt_all = record_annotations(records)
        pred, gt = {}, {}
        for seq in sorted(frames):
            per_frame = frames[seq]
            # Every frame between the first and the last seen, so that tracks age across gaps.
            span = range(min(per_frame), max(per_frame) + 1)
            evaluated = set(per_frame)
            pred[seq], _ = self.exporter(((k, per_frame.get(k, [])) for k in span), name=seq)
            gt[seq] = [a for a in gt_all.get(seq, []) if a.frame in evaluated]
            pred[seq] = [a for a in pred[seq] if a.frame in evaluated]
            if self.output_dir:
                write_labels(os.path.join(self.output_dir, "submission", f"{seq}.json"), pred[seq])
        result = evaluate_annotations(pred, gt)
        for line in result["warnings"]:
            logger.warning("%s: %s", self.dataset_name, line)
        summary = OrderedDict()
        for row in ("macro", "micro"):
            r = result[row]
            for key in ("mAP", "pearson", "distance_error"):
                summary[f"{key}_{row}"] = math.nan if r[key] is None else float(r[key])
            for t, ap in r["ap"].items():
                summary[f"AP{t}_{row}"] = math.nan if ap is None else float(ap)
        logger.info(
            "%s: %d clips, %d frames evaluated",
            self.dataset_name,
            len(frames),
            sum(len(f) for f in frames.values()),
        )
        return OrderedDict(seld=summary)
