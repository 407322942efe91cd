"""Epoch-level training hooks (SPEC §7): validation loss, ReduceLROnPlateau, progressive
unfreezing with optimizer reset and grace period, early stopping, best checkpoint, RNG state.

An epoch is a fixed number of iterations (``EpochClock``): FRAMES_PER_EPOCH / IMS_PER_BATCH.
Epochs are numbered from 1; epoch e covers iterations [(e - 1) n, e n).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import nn

from .distributed import average_batchnorm_statistics, rewrap

logger = logging.getLogger(__name__)

STAGES = ("stems", "layer1", "layer2", "layer3", "layer4")
_STAGE_OF_PART = {"stem": "stems", "res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}


class StopTraining(BaseException):
    """Raised by :class:`EarlyStopping`; ``SeldTrainer.train`` ends training cleanly. A
    BaseException (like SystemExit) so Detectron2's loop does not log it as a crash; its
    ``after_train`` hooks still run."""


@dataclass(frozen=True)
class EpochClock:
    iters_per_epoch: int

    def epoch(self, iteration: int) -> int:
        return iteration // self.iters_per_epoch + 1

    def is_start(self, iteration: int) -> bool:
        return iteration % self.iters_per_epoch == 0

    def is_end(self, iteration: int) -> bool:
        return (iteration + 1) % self.iters_per_epoch == 0


def backbone_stage(name: str) -> str | None:
    """The unfreezable stage of a parameter/module name (``stems``, ``layer1``..``layer4``) or
    None for parts that always train (FPN, RPN, heads)."""
    if not name.startswith("backbone."):
        return None
    for part in name.split("."):
        if part in _STAGE_OF_PART:
            return _STAGE_OF_PART[part]
    return None


def trainable_stages(epoch: int, schedule: dict[str, int]) -> set[str]:
    """Stages trainable at an epoch: those whose start epoch (> 0) is <= epoch; 0 = never."""
    return {s for s, start in schedule.items() if 0 < start <= epoch}


def set_trainable_stages(model: nn.Module, stages: set[str]) -> None:
    """``requires_grad`` of the backbone stages: on for ``stages``, off for the others; batch-norm
    layers of frozen stages go to eval mode (they keep their statistics). Parts outside the
    stages (FPN, RPN, heads) are left as they are."""
    for name, p in model.named_parameters():
        stage = backbone_stage(name)
        if stage is not None:
            p.requires_grad_(stage in stages)
    for name, m in model.named_modules():
        stage = backbone_stage(name)
        if stage is not None and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(stage in stages and model.training)


@contextlib.contextmanager
def frozen_statistics(model: nn.Module) -> Iterator[None]:
    """Batch-norm and dropout layers in eval mode (the model itself stays in training mode so
    Detectron2 returns losses); restored afterwards."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Dropout)]
    modes = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(layers, modes, strict=True):
            m.train(mode)


class ProgressiveUnfreezing(HookBase):
    """Sets ``requires_grad`` of the backbone stages at each epoch start from ``schedule`` (stage ->
    first trainable epoch, 0 = always frozen). When the trainable set changes after the first
    epoch, the optimizer state is cleared and a grace period starts (no early stopping for
    ``grace`` epochs). Batch-norm layers of frozen stages keep their statistics (eval mode). In
    a multi-process run the DDP wrapper is rebuilt for each new trainable set
    (:func:`~seld_d2.engine.distributed.rewrap`)."""

    def __init__(self, clock: EpochClock, schedule: dict[str, int], grace: int = 5):
        self.clock, self.schedule, self.grace = clock, dict(schedule), grace
        self.current: set[str] | None = None
        self.grace_until = 0  # last epoch of the running grace period
        self._wrapped: set[str] | None = None  # the stages the DDP wrapper was built for

    def before_step(self) -> None:
        it = self.trainer.iter
        if self.clock.is_start(it) or self.current is None:
            self._set_stages(trainable_stages(self.clock.epoch(it), self.schedule))
        if self._wrapped != self.current:
            # DDP averages the gradients of the parameters that required them when it was built:
            # a new wrapper for the new set (also after a resume), on every process at this step.
            model = rewrap(self.trainer.model)
            if model is not self.trainer.model:
                self.trainer.model = model
            self._wrapped = set(self.current)

    def _set_stages(self, stages: set[str]) -> None:
        if stages == self.current:
            return
        epoch = self.clock.epoch(self.trainer.iter)
        model = unwrap_model(self.trainer.model)
        set_trainable_stages(model, stages)
        if self.current is not None:
            self.trainer.optimizer.state.clear()
            self.grace_until = epoch + self.grace - 1
            logger.info(
                "epoch %d: trainable stages now %s; optimizer state reset; no early stopping up to epoch %d",
                epoch,
                sorted(stages),
                self.grace_until,
            )
        self.current = stages

    def state_dict(self) -> dict:
        return {
            "current": sorted(self.current) if self.current is not None else None,
            "grace_until": self.grace_until,
        }

    def load_state_dict(self, state: dict) -> None:
        self.current = set(state["current"]) if state["current"] is not None else None
        self.grace_until = state["grace_until"]
        if self.current is not None:
            set_trainable_stages(unwrap_model(self.trainer.model), self.current)


class AverageNormStatistics(HookBase):
    """After each step, the batch-norm running statistics averaged over the processes, so the
    replicas stay identical (each updates them from its own batch); before the hooks that
    validate, evaluate or checkpoint. No-op in a single process."""

    def after_step(self) -> None:
        average_batchnorm_statistics(unwrap_model(self.trainer.model))


@torch.no_grad()
def validation_losses(model: nn.Module, batches: Iterable[list[dict]]) -> dict[str, float]:
    """Mean of each loss over the batches (weighted by batch size), computed in training mode
    (Detectron2 models return losses only then) with batch-norm and dropout frozen and no
    gradients; averaged over all processes."""
    totals: dict[str, float] = {}
    count = 0
    with frozen_statistics(model):
        for batch in batches:
            for k, v in model(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(batch)
            count += len(batch)
    gathered = comm.all_gather((totals, count))
    count = sum(c for _, c in gathered)
    merged: dict[str, float] = {}
    for t, _ in gathered:
        for k, v in t.items():
            merged[k] = merged.get(k, 0.0) + v
    return {k: v / max(count, 1) for k, v in merged.items()}


class ValidationLoss(HookBase):
    """Mean total loss over a fixed set of validation batches at the end of every epoch, with
    batch-norm and dropout in eval mode and no gradients; logged as ``validation_loss`` (and each
    component as ``val/<name>``). Each process evaluates its own share; the mean is all-reduced."""

    def __init__(self, clock: EpochClock, batches: Iterable[list[dict]]):
        self.clock, self.batches = clock, batches
        self.history: list[float] = []

    def after_step(self) -> None:
        if self.clock.is_end(self.trainer.iter) or self.trainer.iter == self.trainer.max_iter - 1:
            self.history.append(self.evaluate())

    def evaluate(self) -> float:
        means = validation_losses(self.trainer.model, self.batches)
        total = sum(means.values())
        storage = self.trainer.storage
        storage.put_scalar("validation_loss", total, smoothing_hint=False)
        for k, v in means.items():
            storage.put_scalar(f"val/{k}", v, smoothing_hint=False)
        logger.info("epoch %d: validation loss %.5f", self.clock.epoch(self.trainer.iter), total)
        return total

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])


class PlateauLR(HookBase):
    """ReduceLROnPlateau on the validation loss (every group's LR times ``factor`` after
    ``patience`` epochs without improvement); LRs are logged per group."""

    def __init__(self, clock: EpochClock, validation: ValidationLoss, factor: float = 0.5, patience: int = 3):
        self.clock, self.validation = clock, validation
        self.factor, self.patience = factor, patience
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._pending: dict | None = None

    def before_train(self) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.trainer.optimizer, mode="min", factor=self.factor, patience=self.patience
        )
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)

    def after_step(self) -> None:
        if self.clock.is_end(self.trainer.iter) and self.validation.history:
            self.scheduler.step(self.validation.history[-1])
        if self.trainer.iter % 20 == 0 or self.clock.is_end(self.trainer.iter):
            groups = self.trainer.optimizer.param_groups
            for g in groups:
                self.trainer.storage.put_scalar(f"lr/{g.get('name', 'group')}", g["lr"], smoothing_hint=False)
            # "lr" is what Detectron2's console printer shows: the largest group LR.
            self.trainer.storage.put_scalar("lr", max(g["lr"] for g in groups), smoothing_hint=False)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


class EarlyStopping(HookBase):
    """Stops training after ``patience`` epochs without a better validation loss, not counting
    epochs inside an unfreezing grace period."""

    def __init__(
        self,
        clock: EpochClock,
        validation: ValidationLoss,
        unfreezing: ProgressiveUnfreezing | None,
        patience: int = 10,
    ):
        self.clock, self.validation, self.unfreezing, self.patience = clock, validation, unfreezing, patience
        self.best, self.bad_epochs = float("inf"), 0

    def after_step(self) -> None:
        if not (self.clock.is_end(self.trainer.iter) and self.validation.history):
            return
        loss, epoch = self.validation.history[-1], self.clock.epoch(self.trainer.iter)
        if loss < self.best:
            self.best, self.bad_epochs = loss, 0
        elif self.unfreezing is None or epoch > self.unfreezing.grace_until:
            self.bad_epochs += 1
        if self.patience > 0 and self.bad_epochs >= self.patience:
            logger.info("early stopping at epoch %d: no improvement for %d epochs", epoch, self.bad_epochs)
            raise StopTraining

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class BestCheckpoint(HookBase):
    """Saves ``model_best.pth`` (atomically, through the trainer's checkpointer) whenever the
    validation loss improves."""

    def __init__(self, clock: EpochClock, validation: ValidationLoss, checkpointer):
        self.clock, self.validation, self.checkpointer = clock, validation, checkpointer
        self.best = float("inf")

    def after_step(self) -> None:
        if not (self.clock.is_end(self.trainer.iter) and self.validation.history):
            return
        loss = self.validation.history[-1]  # the same on every process (all-gathered)
        if loss < self.best:
            self.best = loss
            if comm.is_main_process():
                self.checkpointer.save("model_best", iteration=self.trainer.iter, validation_loss=loss)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


class RNGState(HookBase):
    """Puts the Python, NumPy and torch RNG states into checkpoints and restores them on resume,
    so a resumed run draws the same dropout masks and proposal samples as an uninterrupted one.

    With several processes each has its own streams (Detectron2 seeds rank r with SEED + r), but
    only the main process writes checkpoints: every process gathers all states after each step
    (a few kB; this hook comes right before the checkpointer), and each restores its own."""

    def __init__(self):
        self._gathered: list[dict] | None = None

    def after_step(self) -> None:
        if comm.get_world_size() > 1:
            self._gathered = comm.all_gather(_rng_state())

    def state_dict(self) -> dict:
        if comm.get_world_size() > 1 and self._gathered is not None:
            return {"ranks": self._gathered}
        return _rng_state()

    def load_state_dict(self, state: dict) -> None:
        if "ranks" in state:
            ranks, rank = state["ranks"], comm.get_rank()
            if len(ranks) != comm.get_world_size():
                logger.warning(
                    "the checkpoint holds the random streams of %d processes, this run has %d: "
                    "the data after the resume point is not that of the interrupted run",
                    len(ranks),
                    comm.get_world_size(),
                )
            state = ranks[rank % len(ranks)]
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _rng_state() -> dict:
    # Plain tensors and tuples only: checkpoints are read back with torch.load(weights_only=True).
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
