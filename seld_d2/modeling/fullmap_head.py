"""Full-map head: the whole-canvas energy map (per-pixel max over instances) from FPN features.

A semantic-FPN style top-down decoder: each level goes through conv + norm + ReLU (+ 2x
upsampling) until it reaches ``common_stride``, the levels are summed, a 1x1 conv predicts one
channel, which is upsampled to full resolution and passed through a sigmoid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from fvcore.nn import weight_init
from torch import nn

from .energy_head import energy_mse_loss

FULLMAP_HEAD_REGISTRY = Registry("FULLMAP_HEAD")
FULLMAP_HEAD_REGISTRY.__doc__ = """
Registry for full-map heads: modules that take the backbone's feature dict and predict an
(N, H, W) energy map at the input resolution. Built by ``build_fullmap_head(cfg, input_shape)``
with ``input_shape`` the backbone's ``output_shape()``.
"""

# Target value marking pixels that carry no label (padding added when batching).
IGNORE_VALUE = -1.0


def build_fullmap_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the head named by ``MODEL.FULLMAP_HEAD.NAME``."""
    return FULLMAP_HEAD_REGISTRY.get(cfg.MODEL.FULLMAP_HEAD.NAME)(cfg, input_shape)


@FULLMAP_HEAD_REGISTRY.register()
class FullMapHead(nn.Module):
    """Features {name: (N, C, H/s, W/s)} -> (N, H, W) energy map in [0, 1].

    ``forward(features, targets)`` returns ``(maps, losses)``: ``losses`` is
    ``{"loss_fullmap"}`` in training (``targets`` (N, H, W), ``IGNORE_VALUE`` where unlabelled)
    and ``{}`` in inference. H, W are the padded batch size (a multiple of the largest stride).
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        conv_dims: int = 128,
        common_stride: int = 4,
        norm: str = "GN",
        loss_weight: float = 1.0,
        annotated_weight: float = 10.0,
    ):
        super().__init__()
        self.in_features = sorted(input_shape, key=lambda k: input_shape[k].stride)
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.annotated_weight = annotated_weight
        self.scale_heads = nn.ModuleList()
        for name in self.in_features:
            stride, channels = input_shape[name].stride, input_shape[name].channels
            ops = []
            for k in range(max(1, int(math.log2(stride / common_stride)))):
                conv = Conv2d(
                    channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                weight_init.c2_msra_fill(conv)
                ops.append(conv)
                if stride > common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))
        self.predictor = Conv2d(conv_dims, 1, kernel_size=1)
        # Small logits at the start: a saturated sigmoid would give the MSE loss no gradient.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.FULLMAP_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dims": head.CONVS_DIM,
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "annotated_weight": head.ANNOTATED_WEIGHT,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Feature dict -> (N, H, W) maps in [0, 1], H, W = common_stride x the finest level's."""
        x = None
        for name, head in zip(self.in_features, self.scale_heads, strict=True):
            y = head(features[name])
            x = y if x is None else x + y
        x = self.predictor(x)
        x = F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        return x[:, 0].sigmoid()

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = self.layers(features)
        if not self.training:
            return maps, {}
        loss = energy_mse_loss(maps, targets, self.annotated_weight, valid=targets != IGNORE_VALUE)
        return maps, {"loss_fullmap": self.loss_weight * loss}
