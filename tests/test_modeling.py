"""seld_d2.modeling: the SELD detector and its heads on small synthetic 19-channel inputs."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from seld_d2 import add_seld_config
from seld_d2.modeling import (
    DualModalityStem,
    EnergyMaskHead,
    FCDropoutBoxHead,
    FocalFastRCNNOutputLayers,
    GatherROIPooler,
    SeldRCNN,
    SeldROIHeads,
    crop_energy_targets,
    energy_mse_loss,
    inverse_frequency_weights,
    softmax_focal_loss,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
H, W = 180, 360
LOSSES = {
    "loss_cls",
    "loss_box_reg",
    "loss_rpn_cls",
    "loss_rpn_loc",
    "loss_energy",
    "loss_fullmap",
    "loss_distance",
}


def small_cfg(config: str = "Base-SELD-RCNN-FPN.yaml"):
    """The config with fewer proposals and RoIs, so a CPU step takes seconds."""
    cfg = get_cfg()
    add_seld_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # an untrained model still returns detections
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


def blob(box, h=H, w=W) -> torch.Tensor:
    """An energy map in (0, 1] peaking at the centre of ``box`` (x1, y1, x2, y2), 0 outside."""
    x1, y1, x2, y2 = box
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    e = torch.exp(-(((xx - cx) / (x2 - x1)) ** 2 + ((yy - cy) / (y2 - y1)) ** 2))
    inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
    return torch.where(inside, e, torch.zeros(()))


def make_input(boxes, classes, seed: int, channels: int = 19, with_targets: bool = True) -> dict:
    """A dict as SeldDatasetMapper makes it: RGB 0-255 then raw acoustic planes."""
    g = torch.Generator().manual_seed(seed)
    image = torch.cat(
        [torch.rand(3, H, W, generator=g) * 255, torch.randn(channels - 3, H, W, generator=g) * 40 + 7]
    )[:channels]
    record = {"image": image, "height": H, "width": W}
    if with_targets:
        inst = Instances((H, W))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        energy = torch.stack([blob(b) for b in boxes]) if boxes else torch.zeros(0, H, W)
        inst.gt_energy = energy
        inst.gt_distance = torch.linspace(120.0, 380.0, len(boxes))
        record["instances"] = inst
        record["fullmap"] = energy.amax(0) if boxes else torch.zeros(H, W)
    return record


def batch(with_targets: bool = True, channels: int = 19) -> list[dict]:
    return [
        # The first box hugs the left edge and the top of the canvas.
        make_input([[0, 0, 60, 70], [150, 60, 230, 120]], [0, 8], 0, channels, with_targets),
        make_input([[280, 100, 360, 180]], [12], 1, channels, with_targets),
    ]


@pytest.fixture(scope="module")
def model() -> SeldRCNN:
    torch.manual_seed(0)
    return build_model(small_cfg())


def test_train_step_has_every_loss_and_gradients(model):
    model.train()
    with EventStorage():
        losses = model(batch())
    assert set(losses) == LOSSES
    for name, value in losses.items():
        assert torch.isfinite(value), name
    sum(losses.values()).backward()
    stem = model.backbone.bottom_up.stem
    for p in (stem.conv1.weight, stem.audio_conv.weight, stem.rgb_scale, stem.audio_scale):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for head in (model.roi_heads.energy_head, model.roi_heads.distance_head, model.fullmap_head):
        assert all(p.grad is not None for p in head.parameters())
    model.zero_grad()


def test_train_step_without_instances(model):
    model.train()
    inputs = [make_input([], [], 2), make_input([], [], 3)]
    with EventStorage():
        losses = model(inputs)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_energy"] == 0 and losses["loss_distance"] == 0
    sum(losses.values()).backward()
    model.zero_grad()


def test_inference_outputs(model):
    model.eval()
    with torch.no_grad():
        outputs = model(batch(with_targets=False))
    assert len(outputs) == 2
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (H, W)
        n = len(inst)
        assert 0 < n <= 10
        assert inst.pred_boxes.tensor.shape == (n, 4)
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert inst.pred_classes.dtype == torch.int64 and inst.scores.shape == (n,)
        assert inst.pred_energy.shape == (n, 28, 28) and inst.pred_energy.dtype == torch.float32
        assert (inst.pred_energy >= 0).all() and (inst.pred_energy <= 1).all()
        assert inst.pred_distance.shape == (n,) and (inst.pred_distance > 0).all()
        fullmap = out["fullmap"]
        assert fullmap.shape == (H, W) and fullmap.dtype == torch.float32
        assert (fullmap >= 0).all() and (fullmap <= 1).all()


def test_audio_only_output_ignores_rgb():
    cfg = small_cfg()
    cfg.MODEL.SELD.AUDIO_ONLY = True
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    a = batch(with_targets=False)[:1]
    b = [dict(a[0], image=a[0]["image"].clone())]
    b[0]["image"][:3] = torch.rand(3, H, W) * 255
    with torch.no_grad():
        out_a, out_b = model(a)[0], model(b)[0]
    assert len(out_a["instances"]) > 0
    torch.testing.assert_close(out_a["fullmap"], out_b["fullmap"])
    for field in ("pred_boxes", "scores", "pred_classes", "pred_energy", "pred_distance"):
        va, vb = out_a["instances"].get(field), out_b["instances"].get(field)
        torch.testing.assert_close(getattr(va, "tensor", va), getattr(vb, "tensor", vb))
    # Without audio-only mode, RGB reaches the backbone.
    model.audio_only = False
    assert not torch.equal(model.preprocess_image(a).tensor, model.preprocess_image(b).tensor)


def test_stem_combines_modalities_with_learnt_scales():
    stem = DualModalityStem(num_acoustic=16, norm="")
    x = torch.randn(2, 19, 32, 64)
    y = stem(x)
    assert y.shape == (2, 64, 8, 16) and stem.stride == 4 and stem.out_channels == 64
    assert stem.rgb_scale.item() == 1.0
    assert stem.audio_gain().item() == pytest.approx(F.softplus(torch.tensor(-0.274)).item() + 0.1)
    # The acoustic planes are instance-normalised: their scale does not matter.
    x_scaled = x.clone()
    x_scaled[:, 3:] *= 1000.0
    torch.testing.assert_close(stem(x_scaled), y, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="19 channels"):
        stem(torch.randn(1, 18, 32, 64))


def test_pretrained_conv1_loads_into_rgb_branch(tmp_path):
    """A ResNet checkpoint in Detectron2 format (converted from torchvision) initialises the RGB
    conv1 and the stem norm; the acoustic conv keeps its own initialisation."""
    cfg = small_cfg()
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    stem = backbone.bottom_up.stem
    audio_before = stem.audio_conv.weight.detach().clone()
    rng = np.random.default_rng(0)
    conv1 = rng.standard_normal((64, 3, 7, 7)).astype(np.float32)
    bn = {
        k: rng.random(64).astype(np.float32) + 0.5 for k in ("weight", "bias", "running_mean", "running_var")
    }
    state = {"stem.conv1.weight": conv1, **{f"stem.conv1.norm.{k}": v for k, v in bn.items()}}
    res2 = {"res2.0.conv1.weight": rng.standard_normal((64, 64, 1, 1)).astype(np.float32)}
    path = tmp_path / "R-50-torchvision.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {**state, **res2}, "__author__": "torchvision", "matching_heuristics": True}, f)
    DetectionCheckpointer(backbone).load(str(path))
    torch.testing.assert_close(stem.conv1.weight.detach(), torch.from_numpy(conv1))
    torch.testing.assert_close(stem.conv1.norm.running_var, torch.from_numpy(bn["running_var"]))
    torch.testing.assert_close(
        backbone.bottom_up.res2[0].conv1.weight.detach(), torch.from_numpy(res2["res2.0.conv1.weight"])
    )
    torch.testing.assert_close(stem.audio_conv.weight.detach(), audio_before)


def test_stock_generalized_rcnn_trains_with_seld_roi_heads():
    cfg = small_cfg("Base-RCNN-FPN.yaml")
    cfg.MODEL.MASK_ON = False
    cfg.MODEL.ROI_HEADS.NAME = "SeldROIHeads"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == "GeneralizedRCNN" and isinstance(model.roi_heads, SeldROIHeads)
    with EventStorage():
        losses = model(batch(channels=3))
    assert set(losses) == LOSSES - {"loss_fullmap"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.energy_head.predictor.weight.grad is not None


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 14, generator=g), torch.randint(0, 14, (50,), generator=g)
    torch.testing.assert_close(
        softmax_focal_loss(logits, targets, gamma=0.0), F.cross_entropy(logits, targets)
    )
    uniform = torch.ones(14)
    torch.testing.assert_close(
        softmax_focal_loss(logits, targets, 0.0, uniform), F.cross_entropy(logits, targets)
    )


def test_focal_loss_closed_form_down_weights_easy_examples():
    # Two classes, logits (log p, log(1 - p)): the loss of target 0 is -(1 - p)^2 log p.
    for p in (0.9, 0.5, 0.1):
        logits = torch.tensor([[np.log(p), np.log(1 - p)]], dtype=torch.float32)
        loss = softmax_focal_loss(logits, torch.tensor([0]), gamma=2.0)
        assert loss.item() == pytest.approx(-((1 - p) ** 2) * np.log(p), rel=1e-5)
    easy = torch.tensor([[4.0, 0.0]])
    ratio = softmax_focal_loss(easy, torch.tensor([0]), 2.0) / F.cross_entropy(easy, torch.tensor([0]))
    assert ratio.item() == pytest.approx((1 - torch.softmax(easy, 1)[0, 0].item()) ** 2, rel=1e-5)
    assert ratio < 1e-3


def test_class_weights_scale_per_class_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.3, 0.2, 0.1]])
    targets = torch.tensor([0, 1, 2])
    weights = torch.tensor([3.0, 0.5, 1.0])
    per_sample = [softmax_focal_loss(logits[i : i + 1], targets[i : i + 1], 2.0) for i in range(3)]
    weighted = softmax_focal_loss(logits, targets, 2.0, weights)
    expected = sum(w * s for w, s in zip(weights, per_sample, strict=True)) / 3
    torch.testing.assert_close(weighted, expected)
    assert softmax_focal_loss(logits[:0], targets[:0], 2.0).item() == 0.0


def test_box_predictor_uses_config_class_weights():
    cfg = small_cfg()
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = inverse_frequency_weights([10, 1] + [5] * 11, max_weight=30.0)
    head = FocalFastRCNNOutputLayers(cfg, ShapeSpec(channels=64))
    assert head.class_weights.shape == (14,) and head.class_weights[-1] == 1.0
    assert head.class_weights[1] == pytest.approx(10 * head.class_weights[0])
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = [1.0, 2.0]
    with pytest.raises(ValueError, match="CLASS_WEIGHTS"):
        FocalFastRCNNOutputLayers(cfg, ShapeSpec(channels=64))


def test_inverse_frequency_weights():
    assert inverse_frequency_weights([5, 5, 5]) == pytest.approx([1.0, 1.0, 1.0])
    assert inverse_frequency_weights([100, 10, 0], max_weight=20.0) == pytest.approx([0.37, 3.7, 20.0])


def test_energy_mse_loss_weights_annotated_pixels():
    target = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    pred = torch.tensor([[0.1, 0.1, 0.3, 0.6]])
    err = (pred - target) ** 2
    expected = err.mean() + 5.0 * err[:, 2:].mean()
    torch.testing.assert_close(energy_mse_loss(pred, target, 5.0), expected)
    valid = torch.tensor([[True, False, True, False]])
    torch.testing.assert_close(
        energy_mse_loss(pred, target, 5.0, valid), (err[0, 0] + err[0, 2]) / 2 + 5 * err[0, 2]
    )


def test_crop_energy_targets_follow_the_matched_instance():
    maps = torch.zeros(2, H, W)
    maps[0, 40:80, 100:140] = 1.0
    maps[1, 40:80, 100:140] = 0.25
    inst = Instances((H, W))
    inst.proposal_boxes = Boxes(torch.tensor([[100.0, 40.0, 140.0, 80.0], [100.0, 40.0, 140.0, 80.0]]))
    inst.gt_energy_index = torch.tensor([1, 0])
    crops = crop_energy_targets([maps], [inst], 28)
    assert crops.shape == (2, 28, 28)
    # Bilinear sampling blurs the outermost bins a little; the interior is the matched map.
    torch.testing.assert_close(crops[0, 1:-1, 1:-1], torch.full((26, 26), 0.25))
    torch.testing.assert_close(crops[1, 1:-1, 1:-1], torch.ones(26, 26))
    torch.testing.assert_close(crops[0], 0.25 * crops[1])


def test_energy_head_per_class_mode_selects_the_class_map():
    head = EnergyMaskHead(
        ShapeSpec(channels=8, height=14, width=14), num_classes=3, conv_dims=[8], cls_agnostic=False
    )
    head.eval()
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.zeros(2, 4))
    inst.pred_classes = torch.tensor([2, 0])
    x = torch.randn(2, 8, 14, 14)
    maps = head.layers(x)
    (out,) = head(x, [inst])
    torch.testing.assert_close(out.pred_energy, torch.stack([maps[0, 2], maps[1, 0]]))


def _pyramid(channels: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """P2-P5-shaped random features of a 2-image batch padded to 192 x 384."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, channels, 192 // s, 384 // s, generator=g) for s in (4, 8, 16, 32)]


def _pooler_boxes(seed: int = 0) -> list[Boxes]:
    """Boxes of every FPN level, plus boxes past the canvas, empty and inverted boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([360.0, 180.0])
    wh = torch.exp(torch.rand(40, 2, generator=g) * 6.0)  # 1 to 400 px
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    edge = torch.tensor(
        [
            [0.0, 0.0, 384.0, 192.0],
            [-30.0, -20.0, 25.0, 35.0],
            [350.0, 170.0, 420.0, 260.0],
            [100.0, 50.0, 100.0, 50.0],
            [60.0, 60.0, 50.0, 55.0],
            [100.3, 20.7, 100.9, 21.2],
        ]
    )
    return [Boxes(boxes[:25]), Boxes(torch.cat([boxes[25:], edge]))]


@pytest.mark.parametrize(
    "pooler_type, resolution, sampling_ratio",
    [("ROIAlignV2", 7, 0), ("ROIAlignV2", 14, 0), ("ROIAlign", 7, 0), ("ROIAlignV2", 7, 2)],
)
def test_gather_pooler_matches_detectron2_pooler(pooler_type, resolution, sampling_ratio):
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    ref = ROIPooler(resolution, scales, sampling_ratio, pooler_type)
    new = GatherROIPooler(resolution, scales, sampling_ratio, pooler_type)
    boxes = _pooler_boxes()
    x_ref = [t.requires_grad_() for t in _pyramid()]
    x_new = [t.detach().clone().requires_grad_() for t in x_ref]
    out_ref, out_new = ref(x_ref, boxes), new(x_new, boxes)
    torch.testing.assert_close(out_new, out_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(out_ref.shape, generator=torch.Generator().manual_seed(1))
    out_ref.backward(grad)
    out_new.backward(grad)
    for a, b in zip(x_new, x_ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_gather_pooler_without_boxes_gives_empty_connected_output():
    pooler = GatherROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    x = [t.requires_grad_() for t in _pyramid()]
    out = pooler(x, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert out.shape == (0, 5, 7, 7)
    out.sum().backward()
    assert all(t.grad is not None and not t.grad.any() for t in x)


def test_box_head_tail_of_trunk_is_the_head():
    head = FCDropoutBoxHead(ShapeSpec(channels=4, height=3, width=3), fc_dims=[16, 8], dropout=0.5)
    head.train()
    x = torch.randn(6, 4, 3, 3)
    trunk, tail = head.trunk_and_tail()
    torch.manual_seed(3)
    expected = head(x)
    torch.manual_seed(3)
    torch.testing.assert_close(tail(trunk(x)), expected)


def test_gather_pooler_and_shared_box_trunk_keep_the_losses(model):
    """SeldROIHeads' fast paths (GatherROIPooler; the distance head reusing the box head's fc1
    output) give the losses and gradients of the plain ones (ROIPooler; pooling again)."""
    heads = model.roi_heads
    assert isinstance(heads.box_pooler, GatherROIPooler)
    assert isinstance(heads.energy_pooler, GatherROIPooler)
    fast = heads.box_pooler, heads.energy_pooler, heads.box_head
    plain = (
        ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2"),
        ROIPooler(14, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2"),
        # The same modules without trunk_and_tail(): the distance head pools and runs fc1 again.
        torch.nn.Sequential(OrderedDict(heads.box_head.named_children())),
    )

    def step(modules):
        heads.box_pooler, heads.energy_pooler, heads.box_head = modules
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        with EventStorage():
            losses = model(batch())
        sum(losses.values()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return losses, grads

    try:
        ref_losses, ref_grads = step(plain)
        losses, grads = step(fast)
    finally:
        heads.box_pooler, heads.energy_pooler, heads.box_head = fast
    for name, value in ref_losses.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        err = (grads[name] - g).norm() / g.norm().clamp(min=1e-12)
        assert err < 1e-2, (name, err)


def test_inference_distance_reads_the_features_of_each_detections_proposal(model):
    """In inference the distance head gets the box head's features of the proposal each
    detection came from (Detectron2's kept indices), not a second pooling of the detected box."""
    model.eval()
    heads = model.roi_heads
    with torch.no_grad():
        images = model.preprocess_image(batch(with_targets=False))
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        detections = heads._inference(features, proposals)
        pooled = heads.box_pooler(
            [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals]
        )
        box_features = heads.box_head(pooled)
        _, kept = heads.box_predictor.inference(heads.box_predictor(box_features), proposals)
        # The head runs once over the kept rows of all images, so the expectation does too: a
        # GEMM over another row count (per image, or all proposals) may sum the 1024-term dot
        # products in another order, which moves float32 results in the last bits.
        starts = np.cumsum([0] + [len(p) for p in proposals[:-1]])
        rows = torch.cat([int(s) + k for s, k in zip(starts, kept, strict=True)])
        expected = heads.distance_head.layers(box_features[rows]) * heads.distance_head.normaliser
    torch.testing.assert_close(torch.cat([d.pred_distance for d in detections]), expected)
    assert sum(len(d) for d in detections) > 0


def test_proposal_rows_map_indices_past_non_finite_proposals():
    from seld_d2.modeling.roi_heads import _proposal_rows

    boxes = (torch.zeros(3, 8), torch.zeros(4, 8))
    scores = (torch.zeros(3, 3), torch.zeros(4, 3))
    kept = [torch.tensor([2, 0]), torch.tensor([1, 3])]
    assert _proposal_rows(boxes, scores, kept).tolist() == [2, 0, 4, 6]
    boxes[1][1, 0] = float("nan")  # image 1 proposal 1 is dropped: kept indices count 0, 2, 3
    scores[0][0, 2] = float("inf")  # image 0 proposal 0 is dropped: kept indices count 1, 2
    kept = [torch.tensor([1, 0]), torch.tensor([1, 2])]
    assert _proposal_rows(boxes, scores, kept).tolist() == [2, 1, 5, 6]


def test_inference_without_full_map(model):
    model.eval()
    with torch.no_grad():
        full = model(batch(with_targets=False))
        lean = model.inference(batch(with_targets=False), fullmap=False)
    for a, b in zip(full, lean, strict=True):
        assert set(b) == {"instances"}
        torch.testing.assert_close(b["instances"].pred_distance, a["instances"].pred_distance)
        torch.testing.assert_close(b["instances"].pred_energy, a["instances"].pred_energy)


def test_predictor_score_floor_keeps_the_detections_above_it(model):
    """A SeldPredictor building its model raises the box predictor's threshold once, to just
    below the lowest SELD.INFER threshold: the detections at or above that are exactly those of
    the unraised model."""
    from seld_d2.inference.predictor import SeldPredictor, score_floor

    cfg = small_cfg()
    threshold = model.roi_heads.box_predictor.test_score_thresh
    inputs = batch(with_targets=False)
    everything = SeldPredictor(cfg, model=model).run_batch(inputs)  # a given model is used as is
    scores = torch.cat([o["instances"].scores for o in everything])
    floor = float(scores.median())
    assert (scores > floor).any() and (scores <= floor).any()
    cfg.SELD.INFER.SCORE_THRESH = floor
    cfg.SELD.INFER.CLASS_SCORE_THRESH = []
    predictor = SeldPredictor(cfg)
    predictor.model.load_state_dict(model.state_dict())
    kept = predictor.model.roi_heads.box_predictor.test_score_thresh
    assert kept == predictor.score_floor == score_floor(cfg) < floor
    assert model.roi_heads.box_predictor.test_score_thresh == threshold
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == threshold  # the caller's config is not changed
    raised = predictor.run_batch(inputs)
    for a, b in zip(everything, raised, strict=True):
        a, b = a["instances"], b["instances"]
        a = a[a.scores > kept]
        assert len(a) == len(b)
        for name in ("scores", "pred_classes"):
            torch.testing.assert_close(b.get(name), a.get(name), msg=lambda m, name=name: f"{name}: {m}")
        # The mask and distance heads run one GEMM over the kept boxes of all images: another
        # row count may pick another kernel and reduction order, a relative error of up to about
        # K * 2^-24 for K ~ 64-256 accumulated terms (measured: 1.4e-6 at one OpenMP thread).
        for name in ("pred_energy", "pred_distance"):
            torch.testing.assert_close(
                b.get(name), a.get(name), rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
            )
        torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor)
