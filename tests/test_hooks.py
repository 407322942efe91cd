"""Epoch hooks in isolation, on a small model whose parameter names follow Detectron2's ResNet-FPN
(tests/tiny_detector.py)."""

import random

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage
from tiny_detector import TinyDetector

from seld_d2.engine import hooks as H

SCHEDULE = {"stems": 1, "layer1": 1, "layer2": 0, "layer3": 7, "layer4": 3}


class FakeTrainer:
    def __init__(self, model):
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.iter = 0
        self.max_iter = 1000


def stage_trainable(model):
    out = {}
    for name, p in model.named_parameters():
        stage = H.backbone_stage(name)
        if stage:
            out.setdefault(stage, set()).add(p.requires_grad)
    return {s: v.pop() for s, v in out.items() if len(v) == 1}


@pytest.mark.parametrize(
    "epoch,expected",
    [
        (1, {"stems": True, "layer1": True, "layer2": False, "layer3": False, "layer4": False}),
        (2, {"stems": True, "layer1": True, "layer2": False, "layer3": False, "layer4": False}),
        (3, {"stems": True, "layer1": True, "layer2": False, "layer3": False, "layer4": True}),
        (6, {"stems": True, "layer1": True, "layer2": False, "layer3": False, "layer4": True}),
        (7, {"stems": True, "layer1": True, "layer2": False, "layer3": True, "layer4": True}),
    ],
)
def test_unfreezing_schedule(epoch, expected):
    model = TinyDetector()
    trainer = FakeTrainer(model)
    hook = H.ProgressiveUnfreezing(H.EpochClock(10), SCHEDULE, grace=5)
    hook.trainer = trainer
    trainer.iter = (epoch - 1) * 10
    hook.before_step()
    assert stage_trainable(model) == expected
    # FPN, RPN and heads always train.
    assert (
        model.backbone.fpn_lateral2.weight.requires_grad
        and model.roi_heads.box_predictor.weight.requires_grad
    )
    # Frozen stages keep their batch-norm statistics.
    assert model.backbone.bottom_up.res3[1].training is False


def test_transition_resets_optimizer_state_and_opens_grace():
    model = TinyDetector()
    trainer = FakeTrainer(model)
    hook = H.ProgressiveUnfreezing(H.EpochClock(10), SCHEDULE, grace=5)
    hook.trainer = trainer
    for it in range(0, 30):
        trainer.iter = it
        hook.before_step()
        loss = sum(p.sum() for p in model.parameters() if p.requires_grad)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        if it == 19:
            assert len(trainer.optimizer.state) > 0
    # Epoch 3 (iteration 20) added layer4: state was cleared at that step, grace to epoch 7.
    assert hook.grace_until == 7
    trainer.iter = 60  # epoch 7 adds layer3
    hook.before_step()
    assert len(trainer.optimizer.state) == 0 and hook.grace_until == 11
    state = hook.state_dict()
    other = H.ProgressiveUnfreezing(H.EpochClock(10), SCHEDULE, grace=5)
    other.trainer = FakeTrainer(TinyDetector())
    other.load_state_dict(state)
    assert stage_trainable(other.trainer.model)["layer3"] is True


class FixedValidation:
    """Stands in for ValidationLoss: a scripted loss per epoch."""

    def __init__(self):
        self.history = []


def run_epochs(losses, hooks_, trainer, validation, clock):
    for loss in losses:
        epoch = len(validation.history) + 1
        trainer.iter = epoch * clock.iters_per_epoch - 1
        validation.history.append(loss)
        for h in hooks_:
            h.after_step()


def test_plateau_halves_lr_after_three_bad_epochs():
    model = TinyDetector()
    trainer = FakeTrainer(model)
    clock, validation = H.EpochClock(5), FixedValidation()
    plateau = H.PlateauLR(clock, validation, factor=0.5, patience=3)
    plateau.trainer = trainer
    plateau.before_train()
    with EventStorage(0) as storage:
        trainer.storage = storage
        run_epochs([1.0, 1.1, 1.2, 1.3], [plateau], trainer, validation, clock)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
        run_epochs([1.4], [plateau], trainer, validation, clock)  # 4th epoch without improvement
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_early_stopping_respects_grace():
    model = TinyDetector()
    trainer = FakeTrainer(model)
    clock, validation = H.EpochClock(5), FixedValidation()
    unfreezing = H.ProgressiveUnfreezing(clock, SCHEDULE)
    unfreezing.grace_until = 4
    stop = H.EarlyStopping(clock, validation, unfreezing, patience=2)
    stop.trainer = trainer
    run_epochs([1.0, 2.0, 2.0, 2.0], [stop], trainer, validation, clock)  # epochs 2-4 in grace
    assert stop.bad_epochs == 0
    with pytest.raises(H.StopTraining):
        run_epochs([2.0, 2.0], [stop], trainer, validation, clock)


def test_rng_state_round_trip():
    hook = H.RNGState()
    state = hook.state_dict()
    a = (torch.rand(3), np.random.rand(3), random.random())
    hook.load_state_dict(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]
