"""ROI heads of the SELD detector: Detectron2's ``StandardROIHeads`` plus energy and distance.

- :class:`FCDropoutBoxHead`: the 2-FC box head with dropout (``ROI_BOX_HEAD_REGISTRY``).
- :class:`FocalFastRCNNOutputLayers`: the box predictor, classification trained with a softmax
  focal loss with per-class weights (:func:`softmax_focal_loss`), smooth-L1 box regression.
- :class:`SeldROIHeads` (``ROI_HEADS_REGISTRY``): box branch with that predictor, the energy
  mask head (``MODEL.ENERGY_ON``) and the distance head (``MODEL.DISTANCE_ON``), both trained
  on foreground proposals. Any Detectron2 R-CNN can use it through ``MODEL.ROI_HEADS.NAME``.
  Its RoI poolers are :class:`~seld_d2.modeling.poolers.GatherROIPooler` (the same ROIAlign,
  faster on CPU) unless ``MODEL.ROI_HEADS.GATHER_POOLER`` is off.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import ROI_BOX_HEAD_REGISTRY, ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, select_foreground_proposals
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import ImageList, Instances
from fvcore.nn import weight_init
from torch import nn

from .distance_head import build_distance_head
from .energy_head import build_energy_head, crop_energy_targets
from .poolers import GatherROIPooler


def softmax_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over R samples of ``-w[t] (1 - p_t)^gamma log p_t``, p = softmax(logits).

    ``logits`` (R, C), ``targets`` (R,) long in [0, C), ``class_weights`` (C,) or None (all 1).
    gamma = 0 with uniform weights is cross-entropy. R = 0 gives 0 (connected to ``logits``).
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if class_weights is not None:
        loss = loss * class_weights.to(loss)[targets]
    return loss.mean()


def inverse_frequency_weights(counts, max_weight: float | None = None) -> list[float]:
    """Per-class weights ``total / (K * count_c)`` (1 for a uniform distribution), for
    ``MODEL.ROI_HEADS.CLASS_WEIGHTS``. Classes never seen count as 1; ``max_weight`` caps."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    weights = counts.sum() / (len(counts) * counts)
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    return weights.tolist()


@ROI_BOX_HEAD_REGISTRY.register()
class FCDropoutBoxHead(nn.Sequential):
    """Flatten, then ``len(fc_dims)`` x (Linear + ReLU + Dropout): (R, C, S, S) -> (R, fc_dims[-1])."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, fc_dims: list[int], dropout: float = 0.0):
        super().__init__()
        size = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
        self.add_module("flatten", nn.Flatten())
        for k, fc_dim in enumerate(fc_dims, start=1):
            fc = nn.Linear(size, fc_dim)
            weight_init.c2_xavier_fill(fc)
            self.add_module(f"fc{k}", fc)
            self.add_module(f"fc_relu{k}", nn.ReLU())
            self.add_module(f"dropout{k}", nn.Dropout(dropout))
            size = fc_dim
        self._output_size = size

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ROI_BOX_HEAD
        return {"input_shape": input_shape, "fc_dims": [head.FC_DIM] * head.NUM_FC, "dropout": head.DROPOUT}

    @property
    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self._output_size)

    def trunk_and_tail(self) -> tuple[nn.Sequential, nn.Sequential]:
        """The head split before its first dropout: ``head(x) == tail(trunk(x))``. ``trunk``
        (flatten, fc1, ReLU) draws no random numbers, so rows of one ``trunk`` output can go
        through ``tail`` twice, each time with its own dropout masks."""
        layers = list(self)
        k = next((i for i, m in enumerate(layers) if isinstance(m, nn.Dropout)), len(layers))
        return nn.Sequential(*layers[:k]), nn.Sequential(*layers[k:])


class FocalFastRCNNOutputLayers(FastRCNNOutputLayers):
    """Detectron2's box predictor with ``loss_cls`` a weighted softmax focal loss.

    ``class_weights``: one per foreground class (background gets 1); empty = uniform.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, focal_gamma: float = 2.0, class_weights=(), **kwargs):
        super().__init__(input_shape, **kwargs)
        self.focal_gamma = focal_gamma
        weights = None
        if len(class_weights):
            if len(class_weights) != self.num_classes:
                raise ValueError(
                    f"MODEL.ROI_HEADS.CLASS_WEIGHTS has {len(class_weights)} entries, expected "
                    f"{self.num_classes} (one per foreground class) or none"
                )
            weights = torch.tensor([*class_weights, 1.0], dtype=torch.float32)
        # Not persistent: the config, not a checkpoint, decides the weights.
        self.register_buffer("class_weights", weights, persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["focal_gamma"] = cfg.MODEL.ROI_HEADS.FOCAL_GAMMA
        ret["class_weights"] = list(cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS)
        return ret

    def losses(self, predictions, proposals) -> dict[str, torch.Tensor]:
        # The parent computes the box loss and logs the classification statistics.
        losses = super().losses(predictions, proposals)
        scores, _ = predictions
        gt_classes = cat([p.gt_classes for p in proposals]) if proposals else scores.new_zeros(0).long()
        loss_cls = softmax_focal_loss(scores, gt_classes, self.focal_gamma, self.class_weights)
        losses["loss_cls"] = loss_cls * self.loss_weight.get("loss_cls", 1.0)
        return losses


def _without_energy(targets: Instances) -> Instances:
    """``targets`` without ``gt_energy`` and with ``gt_energy_index`` (row of each instance).

    Proposal sampling copies every ``gt_*`` field per proposal; for (N, H, W) canvas maps
    that would be hundreds of MB, so proposals carry the row index instead.
    """
    out = Instances(targets.image_size)
    for name, value in targets.get_fields().items():
        if name != "gt_energy":
            out.set(name, value)
    out.gt_energy_index = torch.arange(len(targets), device=targets.gt_boxes.device)
    return out


def _proposal_rows(
    boxes: tuple[torch.Tensor, ...], scores: tuple[torch.Tensor, ...], kept: list[torch.Tensor]
) -> torch.Tensor:
    """Rows, in the concatenated proposals of all images, of the detections that
    ``fast_rcnn_inference(boxes, scores, ...)`` returned with indices ``kept``.

    Those indices count only an image's proposals with finite boxes and scores (it drops the
    others first), so they are mapped back when any was dropped."""
    finite = torch.isfinite(cat(boxes)).all(dim=1) & torch.isfinite(cat(scores)).all(dim=1)
    counts = [len(b) for b in boxes]
    if bool(finite.all()):
        starts = np.cumsum([0, *counts[:-1]]).tolist()
        return cat([k + start for k, start in zip(kept, starts, strict=True)])
    rows = torch.arange(len(finite), device=finite.device)
    return cat([r[f][k] for r, f, k in zip(rows.split(counts), finite.split(counts), kept, strict=True)])


@ROI_HEADS_REGISTRY.register()
class SeldROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with a focal-loss box predictor, an energy head and a distance head.

    Targets need ``gt_energy`` (N, H, W) when the energy head is on and ``gt_distance`` (N,)
    (cm) when the distance head is on. Predictions gain ``pred_energy`` (R, M, M) in [0, 1]
    (the map inside each box) and ``pred_distance`` (R,) in cm. The distance head reads the
    box head's features (``box_pooler`` + ``box_head``) of each foreground proposal in
    training, of the proposal each detection came from in inference, and of the given boxes in
    :meth:`forward_with_given_boxes`. In training, with a box head that has ``trunk_and_tail()`` (like
    :class:`FCDropoutBoxHead`), the foreground rows of the box branch's trunk output (pooled
    features through fc1 + ReLU) go through the head's tail again for the distance head,
    instead of pooling and running fc1 a second time: the same function of the same features,
    with the same dropout draws in the same order.
    """

    @configurable
    def __init__(
        self,
        *,
        energy_in_features: list[str] | None = None,
        energy_pooler: ROIPooler | None = None,
        energy_head: nn.Module | None = None,
        distance_head: nn.Module | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.energy_on = energy_head is not None
        if self.energy_on:
            self.energy_in_features = energy_in_features
            self.energy_pooler = energy_pooler
            self.energy_head = energy_head
        self.distance_on = distance_head is not None
        if self.distance_on:
            self.distance_head = distance_head

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_energy_head(cfg, input_shape))
        if cfg.MODEL.DISTANCE_ON:
            ret["distance_head"] = build_distance_head(cfg, ret["box_head"].output_shape)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = FocalFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        if cfg.MODEL.ROI_HEADS.GATHER_POOLER:
            head = cfg.MODEL.ROI_BOX_HEAD
            ret["box_pooler"] = GatherROIPooler(
                output_size=head.POOLER_RESOLUTION,
                scales=tuple(1.0 / input_shape[k].stride for k in ret["box_in_features"]),
                sampling_ratio=head.POOLER_SAMPLING_RATIO,
                pooler_type=head.POOLER_TYPE,
            )
        return ret

    @classmethod
    def _init_energy_head(cls, cfg, input_shape):
        if not cfg.MODEL.ENERGY_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        head = cfg.MODEL.ENERGY_HEAD
        resolution = head.POOLER_RESOLUTION
        pooler = (GatherROIPooler if cfg.MODEL.ROI_HEADS.GATHER_POOLER else ROIPooler)(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=head.POOLER_SAMPLING_RATIO,
            pooler_type=head.POOLER_TYPE,
        )
        shape = ShapeSpec(channels=input_shape[in_features[0]].channels, height=resolution, width=resolution)
        return {
            "energy_in_features": in_features,
            "energy_pooler": pooler,
            "energy_head": build_energy_head(cfg, shape),
        }

    def forward(
        self,
        images: ImageList,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        del images
        if not self.training:
            return self._inference(features, proposals), {}

        assert targets, "'targets' argument is required during training"
        energy_maps = None
        if self.energy_on:
            if not all(t.has("gt_energy") for t in targets):
                raise ValueError("SeldROIHeads with MODEL.ENERGY_ON needs 'gt_energy' in every target")
            energy_maps = [t.gt_energy for t in targets]
            targets = [_without_energy(t) for t in targets]
        proposals = self.label_and_sample_proposals(proposals, targets)
        del targets
        shared = None
        split = getattr(self.box_head, "trunk_and_tail", None)
        # With train_on_pred_boxes the proposal boxes change inside _forward_box, so the
        # distance head must pool its own.
        if self.distance_on and split is not None and not self.train_on_pred_boxes:
            trunk, tail = split()
            boxes = [x.proposal_boxes for x in proposals]
            trunk_out = trunk(self.box_pooler([features[f] for f in self.box_in_features], boxes))
            predictions = self.box_predictor(tail(trunk_out))
            losses = self.box_predictor.losses(predictions, proposals)
            shared = (trunk_out, tail)
        else:
            losses = self._forward_box(features, proposals)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        losses.update(self._forward_energy(features, proposals, energy_maps))
        losses.update(self._forward_distance(features, proposals, shared))
        return proposals, losses

    def _inference(self, features: dict[str, torch.Tensor], proposals: list[Instances]) -> list[Instances]:
        """Detections from proposals. The distance head reads the box head's features of the
        proposal each detection came from (as in training, where it reads those of the
        foreground proposals), so the detections are not pooled and run through the box head a
        second time; the energy head pools the detected boxes."""
        box_features = self.box_head(
            self.box_pooler(
                [features[f] for f in self.box_in_features], [x.proposal_boxes for x in proposals]
            )
        )
        predictions = self.box_predictor(box_features)
        p = self.box_predictor
        boxes, scores = p.predict_boxes(predictions, proposals), p.predict_probs(predictions, proposals)
        instances, kept = fast_rcnn_inference(
            boxes, scores, [x.image_size for x in proposals], p.test_score_thresh, p.test_nms_thresh,
            p.test_topk_per_image,
        )  # fmt: skip
        instances = super().forward_with_given_boxes(features, instances)  # mask / keypoint heads
        instances = self._forward_energy(features, instances)
        if not self.distance_on:
            return instances
        return self.distance_head(box_features[_proposal_rows(boxes, scores, kept)], instances)

    def forward_with_given_boxes(
        self, features: dict[str, torch.Tensor], instances: list[Instances]
    ) -> list[Instances]:
        instances = super().forward_with_given_boxes(features, instances)
        instances = self._forward_energy(features, instances)
        return self._forward_distance(features, instances)

    def _forward_energy(
        self,
        features: dict[str, torch.Tensor],
        instances: list[Instances],
        energy_maps: list[torch.Tensor] | None = None,
    ):
        """Training: ``{"loss_energy"}`` on the foreground proposals. Inference: sets
        ``pred_energy`` on ``instances`` (with ``pred_boxes``/``pred_classes``) and returns them."""
        if not self.energy_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        x = self.energy_pooler([features[f] for f in self.energy_in_features], boxes)
        if not self.training:
            return self.energy_head(x, instances)
        targets = crop_energy_targets(energy_maps, instances, 2 * self.energy_pooler.output_size[0])
        return self.energy_head(x, instances, targets)

    def _forward_distance(
        self,
        features: dict[str, torch.Tensor],
        instances: list[Instances],
        shared: tuple[torch.Tensor, nn.Module] | None = None,
    ):
        """Training: ``{"loss_distance"}`` on the foreground proposals. Inference: sets
        ``pred_distance`` on ``instances`` and returns them. ``shared``: (the box head's trunk
        output for all of ``instances``, the head's tail), in training; its foreground rows
        are then reused."""
        if not self.distance_on:
            return {} if self.training else instances
        if self.training:
            instances, fg_masks = select_foreground_proposals(instances, self.num_classes)
        if self.training and shared is not None:
            trunk_out, tail = shared
            x = tail(trunk_out[cat(fg_masks)])
        else:
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            x = self.box_head(self.box_pooler([features[f] for f in self.box_in_features], boxes))
        return self.distance_head(x, instances)
