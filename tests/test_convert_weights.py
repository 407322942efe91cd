"""seld_d2.modeling.pretrained and tools/convert_weights.py on small fake checkpoints.

The fakes have the real names and shapes with random values: torchvision's ``resnet50()`` state
dict, and a Detectron2 model-zoo Mask R-CNN R50-FPN ``.pkl`` ({"model": {name: ndarray}}) whose
names and shapes are those of Detectron2's own GeneralizedRCNN built as the zoo's (80 classes,
mask head, FrozenBN, stride in the 1x1 conv).
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seld_d2 import add_seld_config
from seld_d2.modeling.pretrained import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    STEM_CONV,
    torchvision_resnet_to_d2,
)

REPO = Path(__file__).resolve().parents[1]
RUN3 = REPO / "configs" / "SELD" / "run3_mel16.yaml"


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_weights", REPO / "tools" / "convert_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["convert_weights"] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def seld_model(*opts: str, seed: int = 0):
    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(str(RUN3))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(seed)
    return build_model(cfg)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(0)
    sd = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in torchvision.models.resnet50().state_dict().items()
    }
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def model_zoo_file(tmp_path_factory) -> Path:
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "Base-RCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "80"])
    cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.STRIDE_IN_1X1 = "FrozenBN", True
    rng = np.random.default_rng(0)
    names = build_model(cfg).state_dict()
    model = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in names.items()}
    path = tmp_path_factory.mktemp("zoo") / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    return path


def test_torchvision_names():
    sd = {k: torch.zeros(1) for k in ("conv1.weight", "bn1.running_var", "layer1.0.bn2.bias",
                                      "layer3.5.conv3.weight", "layer2.0.downsample.0.weight",
                                      "layer4.0.downsample.1.running_mean", "fc.weight")}  # fmt: skip
    assert list(torchvision_resnet_to_d2(sd)) == [
        "backbone.bottom_up.stem.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.bottom_up.res2.0.conv2.norm.bias",
        "backbone.bottom_up.res4.5.conv3.weight",
        "backbone.bottom_up.res3.0.shortcut.weight",
        "backbone.bottom_up.res5.0.shortcut.norm.running_mean",
        "fc.weight",
    ]


def _load(model, path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DetectionCheckpointer(model).load(str(path))
    after = model.state_dict()
    return before, after


def test_torchvision_resnet50_into_seld_rcnn(torchvision_file, tmp_path, capsys):
    out = tmp_path / "R50-d2.pth"
    assert tool.main([str(torchvision_file), str(out)]) == 0
    text = capsys.readouterr()
    assert "skipped, not in the model: *.num_batches_tracked (53), fc.bias, fc.weight" in text.out
    assert "skipped, other shape (file vs model): -" in text.out
    assert "train with MODEL.RESNETS.STRIDE_IN_1X1 False" in text.out and "warning" not in text.err

    ckpt = torch.load(out, weights_only=True)
    assert ckpt["matching_heuristics"] is False and ckpt["source"] == "torchvision"
    source = torchvision_resnet_to_d2(torch.load(torchvision_file, weights_only=True))
    model = seld_model()
    before, after = _load(model, out)
    stem_new = {f"backbone.bottom_up.stem.{n}" for n in ("rgb_scale", "audio_scale", "audio_conv.weight",
                                                         "audio_norm.weight", "audio_norm.bias")}  # fmt: skip
    expected_loaded = {k for k in after if k.startswith("backbone.bottom_up.")} - stem_new
    assert set(ckpt["model"]) == expected_loaded and len(expected_loaded) == 265
    for k in expected_loaded:
        assert torch.equal(after[k], source[k]), k
    for k in set(after) - expected_loaded:  # FPN, RPN, heads, acoustic stem: as initialised
        assert torch.equal(after[k], before[k]), k
    assert any(k.startswith("backbone.fpn_") for k in set(after) - expected_loaded)
    assert (
        STEM_CONV in expected_loaded and "backbone.bottom_up.stem.conv1.norm.running_var" in expected_loaded
    )


def test_model_zoo_rcnn_into_seld_rcnn(model_zoo_file, tmp_path, capsys):
    out = tmp_path / "R50-FPN-COCO.pkl"
    assert tool.main([str(model_zoo_file), str(out), "MODEL.RESNETS.STRIDE_IN_1X1", "True"]) == 0
    text = capsys.readouterr().out
    assert "skipped, not in the model: roi_heads.mask_head (12)" in text
    assert "roi_heads.box_predictor.cls_score.weight (81, 1024) vs (14, 1024)" in text
    assert "roi_heads.box_predictor.bbox_pred.weight (320, 1024) vs (52, 1024)" in text
    assert "left at initialisation: backbone.bottom_up.stem.audio_conv, " in text

    with open(model_zoo_file, "rb") as f:
        zoo = pickle.load(f)["model"]
    with open(out, "rb") as f:
        converted = pickle.load(f)
    assert converted["required_config"] == {"MODEL.RESNETS.STRIDE_IN_1X1": True}
    model = seld_model("MODEL.RESNETS.STRIDE_IN_1X1", "True")
    before, after = _load(model, out)
    loaded = set(converted["model"])
    predictor = {
        f"roi_heads.box_predictor.{n}.{p}" for n in ("cls_score", "bbox_pred") for p in ("weight", "bias")
    }
    assert loaded == set(zoo) - predictor - {k for k in zoo if k.startswith("roi_heads.mask_head.")}
    assert all(k.startswith(("backbone.", "proposal_generator.", "roi_heads.box_head.")) for k in loaded)
    assert (
        any(k.startswith("backbone.fpn_") for k in loaded)
        and "proposal_generator.rpn_head.conv.weight" in loaded
    )
    for k in loaded - {STEM_CONV}:
        assert torch.equal(after[k], torch.from_numpy(zoo[k])), k
    left = set(after) - loaded
    for k in left:
        assert torch.equal(after[k], before[k]), k
    assert predictor <= left and any(k.startswith("roi_heads.energy_head.") for k in left)

    # The stem sees the project's RGB / ImageNet-std input as the zoo model saw BGR - mean.
    rgb = torch.rand(1, 3, 20, 24, dtype=torch.float64) * 255
    mean, std = torch.tensor(IMAGENET_MEAN_RGB)[:, None, None], torch.tensor(IMAGENET_STD_RGB)[:, None, None]
    ours = F.conv2d((rgb - mean) / std, after[STEM_CONV].double(), stride=2, padding=3)
    bgr = (rgb - mean).flip(1)
    theirs = F.conv2d(bgr, torch.from_numpy(zoo[STEM_CONV]).double(), stride=2, padding=3)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_model_zoo_with_the_wrong_stride_warns(model_zoo_file, tmp_path, capsys):
    assert tool.main([str(model_zoo_file), str(tmp_path / "w.pth")]) == 0
    err = capsys.readouterr().err
    assert "warning: these weights need MODEL.RESNETS.STRIDE_IN_1X1 True; the config given has False" in err


def test_bad_inputs_are_one_line(tmp_path, capsys):
    (tmp_path / "junk.pth").write_text("junk")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    for name, problem in (("junk.pth", "cannot be read"), ("other.pth", "neither a torchvision"),
                          ("absent.pkl", "file not found")):  # fmt: skip
        assert tool.main([str(tmp_path / name), str(tmp_path / "out.pth")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and problem in err[0], err
    assert not (tmp_path / "out.pth").exists()


def test_help():
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--help"])
    assert exit_.value.code == 0
