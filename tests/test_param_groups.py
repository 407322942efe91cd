"""The 12 named AdamW parameter groups and the optimizer built over them (gradient clipping from
SOLVER.CLIP_GRADIENTS, Detectron2's own)."""

import pytest
import torch
from detectron2.config import get_cfg
from tiny_detector import TinyDetector

from seld_d2.config import add_seld_config
from seld_d2.engine.param_groups import GROUP_NAMES, build_optimizer, build_param_groups, named_groups


def test_param_groups_cover_every_parameter_once():
    model = TinyDetector()
    groups = named_groups(model)
    assert list(groups) == list(GROUP_NAMES)
    names = [n for params in groups.values() for n, _ in params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert {n for n, _ in groups["rgb_stem"]} == {
        "backbone.bottom_up.stem.conv_rgb.weight",
        "backbone.bottom_up.stem.conv_rgb.bias",
    }
    assert "backbone.bottom_up.stem.norm.weight" in {n for n, _ in groups["norms"]}
    assert {n for n, _ in groups["layer3"]} == {
        "backbone.bottom_up.res4.0.weight",
        "backbone.bottom_up.res4.0.bias",
    }
    assert {n for n, _ in groups["extra_heads"]} >= {"roi_heads.energy_head.weight", "fullmap_head.weight"}
    assert groups["box_predictor"] and groups["rpn"] and groups["fpn"]


def test_groups_take_their_lr_and_weight_decay_from_the_config():
    cfg = add_seld_config(get_cfg())
    for group in build_param_groups(TinyDetector(), cfg):
        node = cfg.SELD.OPTIM.GROUPS[group["name"].upper()]
        assert (group["lr"], group["weight_decay"]) == (node.LR, node.WEIGHT_DECAY)


def test_without_clipping_adamw_is_fused():
    cfg = add_seld_config(get_cfg())
    assert not cfg.SOLVER.CLIP_GRADIENTS.ENABLED  # Detectron2's default
    opt = build_optimizer(TinyDetector(), cfg)
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"]


def one_step(cfg, scale: float | None) -> tuple[torch.nn.Module, torch.Tensor]:
    """One optimizer step of a TinyDetector (layer2 frozen: no gradient) on a loss with large
    gradients, through AMP's GradScaler when ``scale`` is given; returns the model and the
    gradient of one parameter after the step."""
    torch.manual_seed(0)
    model = TinyDetector()
    for p in model.backbone.bottom_up.res3.parameters():
        p.requires_grad_(False)
    opt = build_optimizer(model, cfg)
    loss = 1e3 * sum((p**2).sum() for p in model.parameters() if p.requires_grad)
    if scale is None:
        loss.backward()
        opt.step()
    else:
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        scaler.scale(loss).backward()
        scaler.step(opt)
    return model, model.roi_heads.box_predictor.weight.grad


@pytest.mark.parametrize("kind", ["value", "norm"])
@pytest.mark.parametrize("scale", [None, 2.0**12])
def test_clip_gradients_is_honoured(kind, scale):
    cfg = add_seld_config(get_cfg())
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = kind
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model, grad = one_step(cfg, scale)
    if kind == "value":
        assert grad.abs().max() == pytest.approx(0.5)
    else:
        assert grad.norm() == pytest.approx(0.5)
    # The same step by hand: AdamW on the clipped true gradients.
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    torch.manual_seed(0)
    ref = TinyDetector()
    for p in ref.backbone.bottom_up.res3.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(build_param_groups(ref, cfg), betas=tuple(cfg.SELD.OPTIM.BETAS))
    (1e3 * sum((p**2).sum() for p in ref.parameters() if p.requires_grad)).backward()
    for p in ref.parameters():
        if p.grad is not None:
            clip = torch.nn.utils.clip_grad_value_ if kind == "value" else torch.nn.utils.clip_grad_norm_
            clip([p], 0.5)
    opt.step()
    for (name, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_an_unknown_clip_type_fails_when_the_optimizer_is_built():
    cfg = add_seld_config(get_cfg())
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_optimizer(TinyDetector(), cfg)
