"""seld_d2's Detectron2 model: the dual-modality ResNet-FPN backbone, the ``SeldRCNN``
meta-architecture, ``SeldROIHeads`` and the energy / full-map / distance heads, and
``GatherROIPooler`` (Detectron2's ROIAlign pooling as a weighted gather, for CPU training).

Importing this package registers them in Detectron2's registries (and in the new
``ENERGY_HEAD_REGISTRY``, ``FULLMAP_HEAD_REGISTRY``, ``DISTANCE_HEAD_REGISTRY``).
"""

from .backbone import DualModalityStem, build_seld_resnet_backbone, build_seld_resnet_fpn_backbone
from .config import add_seld_model_config
from .distance_head import DISTANCE_HEAD_REGISTRY, DistanceHead, build_distance_head
from .energy_head import (
    ENERGY_HEAD_REGISTRY,
    EnergyMaskHead,
    build_energy_head,
    crop_energy_targets,
    energy_mse_loss,
)
from .fullmap_head import FULLMAP_HEAD_REGISTRY, FullMapHead, build_fullmap_head
from .meta_arch import SeldRCNN
from .poolers import GatherROIPooler, roi_align_operator
from .roi_heads import (
    FCDropoutBoxHead,
    FocalFastRCNNOutputLayers,
    SeldROIHeads,
    inverse_frequency_weights,
    softmax_focal_loss,
)

__all__ = [
    "DISTANCE_HEAD_REGISTRY",
    "ENERGY_HEAD_REGISTRY",
    "FULLMAP_HEAD_REGISTRY",
    "DistanceHead",
    "DualModalityStem",
    "EnergyMaskHead",
    "FCDropoutBoxHead",
    "FocalFastRCNNOutputLayers",
    "FullMapHead",
    "GatherROIPooler",
    "SeldRCNN",
    "SeldROIHeads",
    "add_seld_model_config",
    "build_distance_head",
    "build_energy_head",
    "build_fullmap_head",
    "build_seld_resnet_backbone",
    "build_seld_resnet_fpn_backbone",
    "crop_energy_targets",
    "energy_mse_loss",
    "inverse_frequency_weights",
    "roi_align_operator",
    "softmax_focal_loss",
]
