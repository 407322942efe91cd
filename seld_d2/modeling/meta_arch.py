"""SeldRCNN: Generalized R-CNN on RGB + acoustic planes, with a full-map head on the FPN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, detector_postprocess
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from .backbone import NUM_RGB
from .fullmap_head import IGNORE_VALUE, build_fullmap_head


@META_ARCH_REGISTRY.register()
class SeldRCNN(GeneralizedRCNN):
    """Backbone + RPN + ROI heads (``SeldROIHeads``) + full-map head.

    Inputs: Detectron2 dicts whose ``"image"`` is (3 + A, H, W): RGB in 0-255, then A acoustic
    planes; in training also ``"instances"`` (``gt_boxes``, ``gt_classes``, ``gt_energy``,
    ``gt_distance``) and ``"fullmap"`` (H, W) in [0, 1] (if absent: the per-pixel max of
    ``gt_energy``). Outputs per image: ``{"instances", "fullmap": (height, width)}``.
    Audio-only mode zeroes the normalised RGB channels, i.e. every image becomes the mean image.
    """

    @configurable
    def __init__(self, *, fullmap_head: nn.Module | None = None, audio_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fullmap_head = fullmap_head
        self.audio_only = audio_only

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        if cfg.MODEL.FULLMAP_ON:
            ret["fullmap_head"] = build_fullmap_head(cfg, ret["backbone"].output_shape())
        ret["audio_only"] = cfg.MODEL.SELD.AUDIO_ONLY
        return ret

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        images = super().preprocess_image(batched_inputs)
        if self.audio_only:
            images.tensor[:, :NUM_RGB] = 0.0
        return images

    def _fullmap_targets(self, batched_inputs: list[dict], images: ImageList) -> torch.Tensor:
        """(N, H, W) targets on the padded batch canvas, ``IGNORE_VALUE`` on the padding."""
        n, _, height, width = images.tensor.shape
        targets = images.tensor.new_full((n, height, width), IGNORE_VALUE)
        for target, x, (h, w) in zip(targets, batched_inputs, images.image_sizes, strict=True):
            if "fullmap" in x:
                fullmap = x["fullmap"].to(targets)
            else:
                energy = x["instances"].gt_energy.to(targets)
                fullmap = energy.amax(dim=0) if len(energy) else energy.new_zeros((h, w))
            target[:h, :w] = fullmap
        return targets

    def forward(self, batched_inputs: list[dict]):
        """Training: dict of losses. Inference: see :meth:`inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        if self.proposal_generator is not None:
            proposals, losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals, losses = [x["proposals"].to(self.device) for x in batched_inputs], {}
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)
        if self.fullmap_head is not None:
            _, fullmap_losses = self.fullmap_head(features, self._fullmap_targets(batched_inputs, images))
            losses.update(fullmap_losses)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return losses

    def visualize_training(self, batched_inputs: list[dict], proposals: list[Instances]) -> None:
        # Detectron2's visualiser draws on the RGB channels only.
        rgb_inputs = [{**x, "image": x["image"][:NUM_RGB]} for x in batched_inputs]
        super().visualize_training(rgb_inputs, proposals)

    def inference(
        self,
        batched_inputs: list[dict],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
        fullmap: bool = True,
    ):
        """With ``do_postprocess``: per image ``{"instances": Instances(pred_boxes, scores,
        pred_classes, pred_energy (R, M, M), pred_distance (R,) cm), "fullmap": (height, width)}``
        (plus nothing else), boxes in the ``height`` x ``width`` frame; without ``fullmap`` the
        full-map head is not run and ``"fullmap"`` is absent. Otherwise the raw per-image
        ``Instances`` in the network's input frame (no full map)."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        if not do_postprocess:
            return results

        fullmaps = self.fullmap_head(features)[0] if fullmap and self.fullmap_head is not None else None
        outputs = []
        for i, (instances, x, (h, w)) in enumerate(
            zip(results, batched_inputs, images.image_sizes, strict=True)
        ):
            height, width = x.get("height", h), x.get("width", w)
            output = {"instances": detector_postprocess(instances, height, width)}
            if fullmaps is not None:
                fullmap = fullmaps[i, :h, :w].float()  # float32 also under autocast
                if (height, width) != (h, w):
                    fullmap = F.interpolate(fullmap[None, None], size=(height, width), mode="bilinear")[0, 0]
                output["fullmap"] = fullmap
            outputs.append(output)
        return outputs
