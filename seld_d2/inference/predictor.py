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
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import cat
from detectron2.modeling import build_model

from ..data.mapper import RaisingLoader, SeldDatasetMapper, frame_loader
from ..modeling.meta_arch import SeldRCNN
from .postprocess import Detection, to_detections

logger = logging.getLogger(__name__)


def batch_to_detections(frames: list[int], instances: list) -> list[list[Detection]]:
    """Detectron2 ``Instances`` of a batch of frames (pred_boxes, scores, pred_classes,
    pred_energy, pred_distance) as CPU ``Detection`` lists, best score first in each frame, with
    one device-to-host copy per field for the whole batch."""
    counts = [len(i) for i in instances]
    filled = [i for i in instances if len(i)]
    if not filled:
        return [[] for _ in instances]
    n = sum(counts)

    def host(name: str) -> np.ndarray:
        values = cat([getattr(i, name) for i in filled]).detach()
        return (values if name == "pred_classes" else values.float()).cpu().numpy()

    boxes = cat([i.pred_boxes.tensor for i in filled]).detach().float().cpu().numpy()
    scores, classes = host("scores"), host("pred_classes")
    energy = host("pred_energy") if filled[0].has("pred_energy") else np.ones((n, 28, 28), np.float32)
    distance = host("pred_distance") if filled[0].has("pred_distance") else np.full(n, np.nan, np.float32)
    out, start = [], 0
    for frame, count in zip(frames, counts, strict=True):
        p = slice(start, start + count)
        order = np.argsort(-scores[p], kind="stable")
        out.append(to_detections(frame, boxes[p], scores[p], classes[p], energy[p], distance[p], order))
        start += count
    return out


def score_floor(cfg) -> float:
    """Just below the lowest score the post-processing can keep with ``cfg.SELD.INFER``'s
    thresholds (it keeps scores >= them in float32; Detectron2 keeps scores > its threshold)."""
    c = cfg.SELD.INFER
    lowest = min([float(c.SCORE_THRESH), *(float(v) for _, v in c.CLASS_SCORE_THRESH)])
    return float(np.nextafter(np.float32(lowest), np.float32(-np.inf)))


class SeldPredictor:
    """Runs a trained detector on frame records, in batches, and yields per-frame detections.

    A model built here from ``cfg`` has its box predictor's test score threshold
    (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``) raised to :func:`score_floor` (never lowered), so
    that the energy and distance heads run only on detections the ``SELD.INFER`` thresholds can
    keep. Dropping boxes below a score cannot change which boxes above it survive the class-wise
    NMS and the per-image top-k, so the detections at or above it are the same.

    Args:
        cfg: a config with seld_d2's keys; ``MODEL.WEIGHTS`` is loaded unless ``model`` is given.
        model: an already built (and loaded) model to use as it is.
    """

    def __init__(self, cfg, model: torch.nn.Module | None = None):
        self.cfg = cfg
        self.score_floor = score_floor(cfg)
        if model is None:
            built = cfg.clone()
            built.defrost()
            thresh = built.MODEL.ROI_HEADS.SCORE_THRESH_TEST
            built.MODEL.ROI_HEADS.SCORE_THRESH_TEST = max(float(thresh), self.score_floor)
            model = build_model(built)
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

    def loader(self, records: list[dict], num_workers: int | None = None) -> RaisingLoader:
        """Mapped frames in model-sized batches, in record order."""
        workers = self.num_workers if num_workers is None else num_workers
        return frame_loader(records, self.mapper, self.batch_size, workers, self.device.type == "cuda")

    @torch.no_grad()
    def run_batch(self, inputs: list[dict]) -> list[dict]:
        """The model's outputs for one batch of mapped frames (``{"instances"}``; a SeldRCNN's
        full-map head is skipped: the exporter does not use it)."""
        with torch.autocast("cuda", enabled=self.amp):
            if isinstance(self.model, SeldRCNN):
                return self.model.inference(inputs, fullmap=False)
            return self.model(inputs)

    def predict(self, batches: Iterable[list[dict]]) -> Iterator[tuple[dict, list[Detection]]]:
        """For every mapped frame of ``batches``: (its record fields, its detections with a
        score the box predictor keeps)."""
        for inputs in batches:
            outputs = self.run_batch(inputs)
            frames = [x["frame_index"] for x in inputs]
            detections = batch_to_detections(frames, [out["instances"] for out in outputs])
            for x, dets in zip(inputs, detections, strict=True):
                yield {k: v for k, v in x.items() if k != "image"}, dets

    def predict_records(
        self, records: list[dict], num_workers: int | None = None
    ) -> Iterator[tuple[dict, list[Detection]]]:
        """Detections for each record (one frame each), in record order."""
        return self.predict(self.loader(records, num_workers))
