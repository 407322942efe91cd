"""Energy mask head: a 28x28 map of acoustic energy in [0, 1] inside each RoI's box.

Like Mask R-CNN's mask head, but regressing a continuous map (sigmoid + MSE) instead of
classifying pixels. Class-agnostic by default: the energy map is a property of the sound
field, not of the class, and rare classes then share the head's training signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from fvcore.nn import weight_init
from torch import nn
from torchvision.ops import roi_align

ENERGY_HEAD_REGISTRY = Registry("ENERGY_HEAD")
ENERGY_HEAD_REGISTRY.__doc__ = """
Registry for energy mask heads: modules that take RoI features (R, C, S, S) and predict
(R, 2S, 2S) energy maps. Built by ``build_energy_head(cfg, input_shape)``.
"""


def build_energy_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the head named by ``MODEL.ENERGY_HEAD.NAME``."""
    return ENERGY_HEAD_REGISTRY.get(cfg.MODEL.ENERGY_HEAD.NAME)(cfg, input_shape)


def energy_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, annotated_weight: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE over valid pixels + ``annotated_weight`` x MSE over valid pixels whose target is > 0.

    ``pred``, ``target`` and ``valid`` (bool, None = all) share one shape. An empty set of
    pixels contributes 0 (still connected to ``pred``'s graph). Returns a 0-d float32 tensor.
    """
    pred, target = pred.float(), target.float()
    err = (pred - target) ** 2
    valid = torch.ones_like(err) if valid is None else valid.to(err.dtype)
    annotated = valid * (target > 0).to(err.dtype)
    mse_all = (err * valid).sum() / valid.sum().clamp(min=1.0)
    mse_annotated = (err * annotated).sum() / annotated.sum().clamp(min=1.0)
    return mse_all + annotated_weight * mse_annotated


def crop_energy_targets(
    energy_maps: list[torch.Tensor], instances: list[Instances], size: int
) -> torch.Tensor:
    """Each proposal's ground-truth energy map, cropped to its box and resampled to size x size.

    ``energy_maps[i]``: (N_i, H, W) canvas maps of image i's ground-truth instances;
    ``instances[i]``: its proposals, with ``proposal_boxes`` and ``gt_energy_index`` (R_i,), the
    row of ``energy_maps[i]`` each proposal is matched to. Returns (sum R_i, size, size).
    """
    crops = []
    for maps, inst in zip(energy_maps, instances, strict=True):
        if len(inst) == 0:
            continue
        maps = maps.float()
        rois = torch.cat([inst.gt_energy_index[:, None].to(maps), inst.proposal_boxes.tensor.to(maps)], dim=1)
        # aligned=True: pixel (i, j) of a map is sampled at its centre (j + 0.5, i + 0.5).
        crops.append(roi_align(maps[:, None], rois, (size, size), 1.0, 0, True)[:, 0])
    if not crops:
        device = energy_maps[0].device if energy_maps else None
        return torch.zeros((0, size, size), device=device)
    return cat(crops, dim=0)


@ENERGY_HEAD_REGISTRY.register()
class EnergyMaskHead(nn.Module):
    """NUM_CONV x (conv3x3 + norm + ReLU), a 2x deconvolution + ReLU, a 1x1 conv and a sigmoid.

    Input (R, C, S, S) RoI features; output (R, 2S, 2S) maps in [0, 1]. In training
    ``forward`` returns ``{"loss_energy"}``; in inference it sets ``pred_energy`` (R_i, 2S, 2S)
    on each image's ``Instances``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: list[int],
        norm: str = "BN",
        cls_agnostic: bool = True,
        loss_weight: float = 1.0,
        annotated_weight: float = 5.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.cls_agnostic = cls_agnostic
        self.loss_weight = loss_weight
        self.annotated_weight = annotated_weight
        channels = input_shape.channels
        self.convs = nn.ModuleList()
        for dim in conv_dims:
            conv = Conv2d(
                channels,
                dim,
                kernel_size=3,
                padding=1,
                bias=not norm,
                norm=get_norm(norm, dim),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            self.convs.append(conv)
            channels = dim
        self.deconv = ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        weight_init.c2_msra_fill(self.deconv)
        self.predictor = Conv2d(channels, 1 if cls_agnostic else num_classes, kernel_size=1)
        # Small logits at the start: a saturated sigmoid would give the MSE loss no gradient.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ENERGY_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "norm": head.NORM,
            "cls_agnostic": head.CLS_AGNOSTIC,
            "loss_weight": head.LOSS_WEIGHT,
            "annotated_weight": head.ANNOTATED_WEIGHT,
        }

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) features -> (R, 1 or K, 2S, 2S) maps in [0, 1]."""
        for conv in self.convs:
            x = conv(x)
        x = F.relu(self.deconv(x))
        return self.predictor(x).sigmoid()

    def _select(self, maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.cls_agnostic:
            return maps[:, 0]
        return maps[torch.arange(len(maps), device=maps.device), classes]

    def forward(
        self, x: torch.Tensor, instances: list[Instances], targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """``x`` (R, C, S, S) pooled from the boxes of ``instances`` (concatenated in order).

        Training: ``instances`` are foreground proposals (``gt_classes``) and ``targets``
        (R, 2S, 2S) their cropped ground-truth maps (see :func:`crop_energy_targets`).
        """
        maps = self.layers(x)
        if self.training:
            classes = [i.gt_classes for i in instances if len(i)]
            classes = cat(classes) if classes else maps.new_zeros(0).long()
            pred = self._select(maps, classes)
            loss = energy_mse_loss(pred, targets, self.annotated_weight)
            return {"loss_energy": self.loss_weight * loss}
        classes = cat([i.pred_classes for i in instances]) if instances else maps.new_zeros(0).long()
        pred = self._select(maps, classes)
        for inst, p in zip(instances, pred.split([len(i) for i in instances]), strict=True):
            inst.pred_energy = p.float()  # float32 also under autocast
        return instances
