"""The installation works: Detectron2 (built with seld_d2's minimal op library) builds a Mask
R-CNN from the project's own base config and trains one step on CPU."""

import os
import subprocess
import sys

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from seld_d2 import add_seld_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_detectron2_op_library():
    import detectron2._C as ops

    assert ops.get_compiler_version()
    assert not ops.has_cuda()


def test_detectron2_imports_on_its_own():
    # tools/setup_env.sh fixes Detectron2 0.6's PIL.Image.LINEAR (gone in Pillow 10) in the sdist:
    # a fresh interpreter imports detectron2.data with nothing of seld_d2 imported before it.
    code = (
        "import sys, PIL.Image, detectron2.data, detectron2.data.transforms as T; "
        "assert 'seld_d2' not in sys.modules and not hasattr(PIL.Image, 'LINEAR'); "
        "assert T.ExtentTransform((0, 0, 1, 1), (1, 1)).interp == PIL.Image.BILINEAR"
    )
    res = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def test_config_keys_documented_defaults():
    cfg = add_seld_config(get_cfg())
    assert cfg.SELD.AUDIO.BANDS == "mel16"
    assert cfg.SELD.AUDIO.STEERING == "fixed"
    assert cfg.SELD.AUDIO.SAMPLE_RATE == 24000


def test_build_mask_rcnn_and_train_one_step():
    torch.manual_seed(0)
    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(os.path.join(CONFIGS, "Base-RCNN-FPN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 32
    model = build_model(cfg)
    model.train()

    image = torch.rand(3, 180, 360) * 255
    inst = Instances((180, 360))
    inst.gt_boxes = Boxes(torch.tensor([[100.0, 60.0, 140.0, 100.0], [300.0, 20.0, 350.0, 70.0]]))
    inst.gt_classes = torch.tensor([0, 12])
    masks = torch.zeros(2, 180, 360, dtype=torch.bool)
    masks[0, 60:100, 100:140] = True
    masks[1, 20:70, 300:350] = True
    inst.gt_masks = BitMasks(masks)
    batch = [{"image": image, "instances": inst, "height": 180, "width": 360}]

    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.SGD(trainable, lr=1e-3)
    with EventStorage(0):  # Detectron2 models log training statistics into a storage
        losses = model(batch)
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    opt.zero_grad()
    total.backward()
    opt.step()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, trainable, strict=True))
    assert changed > 0.5 * len(trainable)

    model.eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 180, "width": 360}])
    assert "instances" in out[0]
