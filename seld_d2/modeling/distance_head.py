"""Distance head: each RoI's source distance from its box features (MLP + softplus)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from fvcore.nn import weight_init
from torch import nn

DISTANCE_HEAD_REGISTRY = Registry("DISTANCE_HEAD")
DISTANCE_HEAD_REGISTRY.__doc__ = """
Registry for distance heads: modules that take per-RoI box features (R, D) (the box head's
output) and predict distances. Built by ``build_distance_head(cfg, input_shape)``.
"""


def build_distance_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the head named by ``MODEL.DISTANCE_HEAD.NAME``."""
    return DISTANCE_HEAD_REGISTRY.get(cfg.MODEL.DISTANCE_HEAD.NAME)(cfg, input_shape)


@DISTANCE_HEAD_REGISTRY.register()
class DistanceHead(nn.Module):
    """Linear + ReLU + Linear + softplus on (R, D) box features -> distance / normaliser (R,).

    Training: ``forward`` returns ``{"loss_distance"}``, the mean L1 error on the normalised
    scale against ``gt_distance`` (cm), over the RoIs whose target is finite (NaN: the label had
    no distance). Inference: sets ``pred_distance`` (cm) on each image's ``Instances``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        hidden_dim: int = 256,
        normaliser: float = 500.0,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        in_dim = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
        self.normaliser = normaliser
        self.loss_weight = loss_weight
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.predictor = nn.Linear(hidden_dim, 1)
        weight_init.c2_xavier_fill(self.fc1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.DISTANCE_HEAD
        return {
            "input_shape": input_shape,
            "hidden_dim": head.HIDDEN_DIM,
            "normaliser": head.NORMALISER,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, ...) features -> (R,) normalised distances (> 0)."""
        x = F.relu(self.fc1(torch.flatten(x, start_dim=1)))
        return F.softplus(self.predictor(x)[:, 0])

    def forward(
        self, x: torch.Tensor, instances: list[Instances]
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """``x`` (R, ...) box features of the boxes of ``instances`` (concatenated in order)."""
        pred = self.layers(x)
        if self.training:
            # Images without ground truth give empty proposal sets that lack gt_distance.
            gt = [i.gt_distance for i in instances if len(i)]
            gt = cat(gt) if gt else pred.new_zeros(0)
            known = torch.isfinite(gt)  # a label file without distance gives NaN: no target
            err = (pred.float()[known] - gt.float()[known] / self.normaliser).abs()
            return {"loss_distance": self.loss_weight * err.sum() / max(len(err), 1)}
        for inst, p in zip(instances, pred.split([len(i) for i in instances]), strict=True):
            inst.pred_distance = p.float() * self.normaliser  # float32 also under autocast
        return instances
