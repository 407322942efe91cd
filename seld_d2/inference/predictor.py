"""Batched frame inference of a SeldRCNN over whole clips.

``SeldPredictor(cfg)`` builds the model from a config, loads ``cfg.MODEL.WEIGHTS`` and runs it on
batches of ``SELD.INFER.BATCH_SIZE`` frames (mixed precision on CUDA when ``SOLVER.AMP.ENABLED``).
Frames are read and mapped to 19-channel inputs by ``SeldDatasetMapper(is_train=False)`` in
``DATALOADER.NUM_WORKERS`` loader processes while the model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.mapper import SeldDatasetMapper, frame_loader
from ..modeling.meta_arch import SeldRCNN
from .postprocess import Detection, to_detections

logger = logging.getLogger(__name__)


def instances_to_detections(frame: int, instances) -> list[Detection]:
    """A Detectron2 ``Instances`` of one frame (pred_boxes, scores, pred_classes, pred_energy,
    pred_distance) as CPU ``Detection`` objects, best score first."""
    n = len(instances)
    if n == 0:
        return []
    boxes = instances.pred_boxes.tensor.detach().float().cpu().numpy()
    scores = instances.scores.detach().float().cpu().numpy()
    classes = instances.pred_classes.detach().cpu().numpy()
    energy = (
        instances.pred_energy.detach().float().cpu().numpy()
        if instances.has("pred_energy")
        else np.ones((n, 28, 28), np.float32)
    )
    distance = (
        instances.pred_distance.detach().float().cpu().numpy()
        if instances.has("pred_distance")
        else np.full(n, np.nan, np.float32)
    )
    return to_detections(frame, boxes, scores, classes, energy, distance, np.argsort(-scores, kind="stable"))


class SeldPredictor:
    """Runs a trained detector on frame records, in batches, and yields per-frame detections.

    Args:
        cfg: a config with seld_d2's keys; ``MODEL.WEIGHTS`` is loaded unless ``model`` is given.
        model: an already built (and loaded) model to use instead.
    """

    def __init__(self, cfg, model: torch.nn.Module | None = None):
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        self.cfg = cfg
        if model is None:
            model = build_model(cfg)
            if cfg.MODEL.WEIGHTS:
                DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
            else:
                logger.warning("MODEL.WEIGHTS is empty: the detector is randomly initialised")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.amp = bool(cfg.SOLVER.AMP.ENABLED) and self.device.type == "cuda"
        self.batch_size = max(1, int(cfg.SELD.INFER.BATCH_SIZE))
        self.mapper = SeldDatasetMapper(cfg, is_train=False)
        self.num_workers = int(cfg.DATALOADER.NUM_WORKERS)
        c = cfg.SELD.INFER
        # Just below the lowest score the post-processing can keep (it keeps scores >= its
        # thresholds in float32; Detectron2 keeps scores > its threshold).
        lowest = min([float(c.SCORE_THRESH), *(float(v) for _, v in c.CLASS_SCORE_THRESH)])
        self.score_floor = float(np.nextafter(np.float32(lowest), np.float32(-np.inf)))

    def loader(self, records: list[dict], num_workers: int | None = None) -> DataLoader:
        """Mapped frames in model-sized batches, in record order."""
        workers = self.num_workers if num_workers is None else num_workers
        return frame_loader(records, self.mapper, self.batch_size, workers, self.device.type == "cuda")

    @torch.no_grad()
    def run_batch(self, inputs: list[dict], score_floor: float | None = None) -> list[dict]:
        """The model's outputs for one batch of mapped frames (``{"instances"}``; a SeldRCNN's
        full-map head is skipped: the exporter does not use it).

        ``score_floor``: for this call, the box predictor's test score threshold is raised to it
        (never lowered), so that the energy and distance heads run only on detections that can
        pass it. Dropping boxes below a score cannot change which boxes above it survive the
        class-wise NMS and the per-image top-k, so the detections at or above it are the same.
        """
        predictor = getattr(getattr(self.model, "roi_heads", None), "box_predictor", None)
        saved = getattr(predictor, "test_score_thresh", None)
        if score_floor is not None and saved is not None and score_floor > saved:
            predictor.test_score_thresh = score_floor
        try:
            with torch.autocast("cuda", enabled=self.amp):
                if isinstance(self.model, SeldRCNN):
                    return self.model.inference(inputs, fullmap=False)
                return self.model(inputs)
        finally:
            if saved is not None:
                predictor.test_score_thresh = saved

    def predict(self, batches: Iterable[list[dict]]) -> Iterator[tuple[dict, list[Detection]]]:
        """For every mapped frame of ``batches``: (its record fields, its detections with a
        score the ``SELD.INFER`` thresholds can keep; see :meth:`run_batch`)."""
        for inputs in batches:
            for x, out in zip(inputs, self.run_batch(inputs, self.score_floor), strict=True):
                meta = {k: v for k, v in x.items() if k != "image"}
                yield meta, instances_to_detections(x["frame_index"], out["instances"])

    def predict_records(
        self, records: list[dict], num_workers: int | None = None
    ) -> Iterator[tuple[dict, list[Detection]]]:
        """Detections for each record (one frame each), in record order."""
        return self.predict(self.loader(records, num_workers))
