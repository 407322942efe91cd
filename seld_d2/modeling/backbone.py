"""ResNet + FPN whose stem takes RGB and acoustic planes through separate first convolutions.

The stages and the FPN are Detectron2's own, built from ``MODEL.RESNETS`` / ``MODEL.FPN``; only
the stem differs. The stem keeps the parameter names of Detectron2's ``BasicStem``
(``stem.conv1.weight`` for the RGB conv, ``stem.conv1.norm.*`` for the norm), so
``DetectionCheckpointer`` loads an ImageNet ResNet's conv1 and stem norm into the RGB branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from fvcore.nn import weight_init
from torch import nn

NUM_RGB = 3


class DualModalityStem(CNNBlockBase):
    """ResNet stem for (N, 3 + A, H, W) inputs: RGB first, then A acoustic planes.

    ``out = norm(s_rgb * conv1(rgb) + (softplus(a) + min) * audio_conv(InstanceNorm(ac)))``, then
    ReLU and a 3x3 max-pool: (N, out_channels, H/4, W/4). ``s_rgb`` and ``a`` are learnt.
    """

    @configurable
    def __init__(
        self,
        *,
        num_acoustic: int = 16,
        out_channels: int = 64,
        norm: str = "BN",
        rgb_scale_init: float = 1.0,
        audio_scale_init: float = -0.274,
        audio_scale_min: float = 0.1,
    ):
        super().__init__(NUM_RGB + num_acoustic, out_channels, 4)
        self.num_acoustic = num_acoustic
        self.audio_scale_min = audio_scale_min
        # The norm sits inside conv1 only so that a ResNet checkpoint's stem norm loads into it;
        # forward() applies it after the two branches are summed.
        self.conv1 = Conv2d(
            NUM_RGB,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        weight_init.c2_msra_fill(self.conv1)
        self.rgb_scale = nn.Parameter(torch.tensor(float(rgb_scale_init)))

        self.audio_norm = nn.InstanceNorm2d(num_acoustic, affine=True)
        self.audio_conv = nn.Conv2d(
            num_acoustic, out_channels, kernel_size=7, stride=2, padding=3, bias=False
        )
        nn.init.kaiming_normal_(self.audio_conv.weight, mode="fan_out", nonlinearity="relu")
        self.audio_scale = nn.Parameter(torch.tensor(float(audio_scale_init)))

    @classmethod
    def from_config(cls, cfg):
        return {
            "num_acoustic": cfg.MODEL.SELD.NUM_ACOUSTIC,
            "out_channels": cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
            "norm": cfg.MODEL.RESNETS.NORM,
            "rgb_scale_init": cfg.MODEL.SELD.RGB_SCALE_INIT,
            "audio_scale_init": cfg.MODEL.SELD.AUDIO_SCALE_INIT,
            "audio_scale_min": cfg.MODEL.SELD.AUDIO_SCALE_MIN,
        }

    def audio_gain(self) -> torch.Tensor:
        """The acoustic branch's current scale, softplus(a) + min (a 0-d tensor)."""
        return F.softplus(self.audio_scale) + self.audio_scale_min

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"DualModalityStem expects {self.in_channels} channels, got {x.shape[1]}")
        rgb, acoustic = x[:, :NUM_RGB], x[:, NUM_RGB:]
        conv = self.conv1
        y = self.rgb_scale * F.conv2d(rgb, conv.weight, conv.bias, conv.stride, conv.padding)
        y = y + self.audio_gain() * self.audio_conv(self.audio_norm(acoustic))
        if conv.norm is not None:
            y = conv.norm(y)
        y = F.relu_(y)
        return F.max_pool2d(y, kernel_size=3, stride=2, padding=1)


def build_seld_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Detectron2's ResNet (stages from ``MODEL.RESNETS``) with a :class:`DualModalityStem`."""
    num_acoustic = cfg.MODEL.SELD.NUM_ACOUSTIC
    expected = {
        "MODEL.SELD.IN_CHANNELS": cfg.MODEL.SELD.IN_CHANNELS,
        "len(MODEL.PIXEL_MEAN)": input_shape.channels,
    }
    for name, value in expected.items():
        if value != NUM_RGB + num_acoustic:
            raise ValueError(
                f"{name} is {value}, but the input has 3 RGB + {num_acoustic} acoustic channels "
                "(MODEL.SELD.NUM_ACOUSTIC)"
            )
    # Detectron2's builder makes the stages exactly as for a stock ResNet; its RGB stem is replaced.
    stock = build_resnet_backbone(cfg, ShapeSpec(channels=NUM_RGB))
    return ResNet(
        DualModalityStem(cfg),
        [list(stage) for stage in stock.stages],
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_seld_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet with :class:`DualModalityStem` + FPN (P2-P6, P6 by max-pooling P5).

    Parameter paths (under the model's ``backbone.``): ``bottom_up.stem`` (RGB: ``conv1``,
    ``rgb_scale``; acoustic: ``audio_norm``, ``audio_conv``, ``audio_scale``; shared
    ``conv1.norm``), ``bottom_up.res2`` ... ``bottom_up.res5``, ``fpn_lateral*``/``fpn_output*``.
    """
    return FPN(
        bottom_up=build_seld_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
