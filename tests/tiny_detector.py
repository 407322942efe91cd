"""A small model whose parameter names follow Detectron2's ResNet-FPN (backbone.bottom_up.stem /
res2..res5, backbone.fpn_*, proposal_generator, roi_heads), for the hook and parameter-group
tests."""

from torch import nn


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_rgb = nn.Conv2d(3, 4, 3)
        self.conv_audio = nn.Conv2d(16, 4, 3)
        self.norm = nn.BatchNorm2d(4)


class BottomUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Stem()
        for i in range(2, 6):
            setattr(self, f"res{i}", nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.bottom_up = BottomUp()
        self.fpn_lateral2 = nn.Conv2d(4, 4, 1)


class ROIHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.box_head = nn.Linear(4, 4)
        self.box_predictor = nn.Linear(4, 14)
        self.energy_head = nn.Conv2d(4, 1, 1)


class TinyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.proposal_generator = nn.Linear(4, 4)
        self.roi_heads = ROIHeads()
        self.fullmap_head = nn.Conv2d(4, 1, 1)
