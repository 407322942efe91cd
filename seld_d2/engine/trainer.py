"""``SeldTrainer``: Detectron2's ``DefaultTrainer`` wired to seld_d2's data, optimizer and hooks.

The overrides only connect builders: the STAIRS26 datasets and ``SeldDatasetMapper``, the
class-balanced sampler, AdamW with the 12 parameter groups, the epoch-level hooks, and an
atomic checkpointer. Training resumes exactly: the sampler and augmentations are functions of
the draw position (so the data after iteration k is the same whether or not the run was
interrupted), and a checkpoint holds everything the next step depends on: the model, the
optimizer (AdamW moments, step counts and each group's current LR), the AMP GradScaler when AMP is
on, the LR scheduler, and the state of every hook (RNG states, unfreezing stage and grace period,
plateau-LR scheduler, early-stopping counters, best validation loss, validation history).
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.datasets import FrameError
from ..data.mapper import LoadFailure, SeldDatasetMapper, frame_loader, list_collate, map_or_failure
from ..data.sampler import ClassBalancedFrameSampler, SequentialFrameSampler, class_frequencies
from ..modeling.roi_heads import inverse_frequency_weights
from ..utils.io import atomic_open
from . import hooks as seld_hooks
from .distributed import data_parallel
from .param_groups import build_optimizer

logger = logging.getLogger(__name__)


class AtomicCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer whose checkpoint and ``last_checkpoint`` files are written to a
    temporary file and renamed, so an interrupted save never corrupts the last good state.
    Saving a checkpoint named in ``untagged`` leaves ``last_checkpoint`` (what ``--resume``
    continues from) as it is."""

    untagged: tuple[str, ...] = ("model_best",)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        with atomic_open(path, "wb") as f:
            torch.save(data, f)
        if name not in self.untagged:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


class _SeededFrames(Dataset):
    """Records mapped with an augmentation RNG seeded by the draw position, so a sample's
    augmentation does not depend on worker assignment or on where training was resumed."""

    def __init__(self, records: list[dict], mapper, seed: int):
        self.records, self.mapper, self.seed = records, mapper, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> dict | LoadFailure:
        index, position = item
        np.random.seed((self.seed * 1_000_003 + position) % 2**32)
        return map_or_failure(self.mapper, self.records[index])


class SkipUnreadableFrames:
    """The batches of a training loader without the frames that could not be decoded
    (``FrameError``: a corrupt or unreadable PNG), each bad file logged once and counted in
    ``skipped``; a batch left empty is replaced by the next one. Other load failures (a missing
    feature cache, say) are raised as their original one-line error. Registration checks only
    the first frame of a clip: decoding every frame there would read the whole video once more."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.skipped = 0
        self._logged: set[str] = set()

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self.loader:
            good = [x for x in batch if not self._skip(x)]
            if good:
                yield good

    def _skip(self, x) -> bool:
        if not isinstance(x, LoadFailure):
            return False
        if not isinstance(x.error, FrameError):
            raise x.error
        self.skipped += 1
        if x.error.path not in self._logged:
            self._logged.add(x.error.path)
            logger.warning("skipping an undecodable frame (%d skipped so far): %s", self.skipped, x.error)
        return True


class _Positioned(Sampler):
    """(record index, global draw position) pairs of a process's share of an infinite index
    stream (every ``world_size``-th draw from ``rank``), from its ``start``-th draw on. The
    position is that in the whole stream, so a frame's augmentation is the same however many
    processes share the stream."""

    def __init__(self, sampler: Sampler, start: int = 0, rank: int = 0, world_size: int = 1):
        self.sampler, self.start, self.rank, self.world_size = sampler, start, rank, world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        it = iter(self.sampler)
        for _ in range(self.start):  # cheap: index streams are generated in large chunks
            next(it)
        draw = self.start
        for index in it:
            yield index, draw * self.world_size + self.rank
            draw += 1


def iters_per_epoch(cfg, num_train_frames: int) -> int:
    """Training iterations in one epoch: FRAMES_PER_EPOCH (or the whole split) / batch size."""
    frames = cfg.SELD.DATA.FRAMES_PER_EPOCH or num_train_frames
    return max(1, math.ceil(frames / cfg.SOLVER.IMS_PER_BATCH))


def dataset_records(names) -> list[dict]:
    records = []
    for name in names:
        records.extend(DatasetCatalog.get(name))
    if not records:
        raise ValueError(f"datasets {list(names)} have no frames")
    return records


def build_seld_train_loader(cfg, records: list[dict], start_iter: int = 0) -> DataLoader:
    """Per-process batches of mapped training frames (lists of dicts), infinite.

    The sampler is class-balanced (``SELD.DATA.CLASS_BALANCE``) or a seeded shuffle; with
    ``start_iter`` it continues the stream where an interrupted run stopped.
    """
    world, rank = comm.get_world_size(), comm.get_rank()
    batch = cfg.SOLVER.IMS_PER_BATCH // world
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    if cfg.SELD.DATA.CLASS_BALANCE:
        sampler = ClassBalancedFrameSampler(
            records, cap=cfg.SELD.DATA.CLASS_BALANCE_CAP, seed=seed, rank=rank, world_size=world
        )
    else:
        sampler = SequentialFrameSampler(len(records), seed=seed, rank=rank, world_size=world)
    positioned = _Positioned(sampler, start=start_iter * batch, rank=rank, world_size=world)
    return DataLoader(
        _SeededFrames(records, SeldDatasetMapper(cfg, is_train=True), seed),
        batch_size=batch,
        sampler=positioned,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=list_collate,
        persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0,
        # Its own generator: creating the iterator must not draw from the global torch RNG, whose
        # state a resumed run restores from the checkpoint.
        generator=torch.Generator().manual_seed(seed),
    )


def build_validation_batches(cfg, records: list[dict]) -> list[list[dict]]:
    """A fixed, seeded subset of ``SELD.DATA.VAL_FRAMES`` validation frames (all if 0), this
    process's share, mapped without augmentation, in batches. Held in memory (one epoch's
    worth of 19-channel inputs: about 4 MB per frame)."""
    rng = np.random.default_rng(12345)
    n = cfg.SELD.DATA.VAL_FRAMES
    chosen = (
        np.sort(rng.choice(len(records), n, replace=False))
        if 0 < n < len(records)
        else np.arange(len(records))
    )
    chosen = chosen[comm.get_rank() :: comm.get_world_size()]
    mapper = SeldDatasetMapper(cfg, is_train=True, augmentations=[])  # targets, no augmentation
    size = max(1, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())
    mapped = []
    for i in chosen:
        x = map_or_failure(mapper, records[i])
        if isinstance(x, LoadFailure):
            if not isinstance(x.error, FrameError):
                raise x.error
            logger.warning("validation: skipping an undecodable frame: %s", x.error)
            continue
        mapped.append(x)
    return [mapped[i : i + size] for i in range(0, len(mapped), size)]


def unfreeze_schedule(cfg) -> dict[str, int]:
    t = cfg.SELD.TRAIN
    return {
        "stems": t.UNFREEZE_STEMS_EPOCH,
        "layer1": t.UNFREEZE_LAYER1_EPOCH,
        "layer2": t.UNFREEZE_LAYER2_EPOCH,
        "layer3": t.UNFREEZE_LAYER3_EPOCH,
        "layer4": t.UNFREEZE_LAYER4_EPOCH,
    }


def with_class_weights(cfg, records: list[dict]):
    """The config with ``MODEL.ROI_HEADS.CLASS_WEIGHTS`` set from the training set's class
    frequencies (inverse frequency, capped) when ``SELD.TRAIN.AUTO_CLASS_WEIGHTS`` and none are
    given explicitly."""
    if not cfg.SELD.TRAIN.AUTO_CLASS_WEIGHTS or len(cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS):
        return cfg
    counts = class_frequencies(records, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    weights = inverse_frequency_weights(counts, max_weight=cfg.SELD.TRAIN.CLASS_WEIGHT_CAP)
    logger.info(
        "class weights from %d training annotations: %s", counts.sum(), [round(w, 3) for w in weights]
    )
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = weights
    cfg.freeze()
    return cfg


def drop_metrics_from(path: str, start_iter: int) -> int:
    """Cut ``metrics.json`` (one JSON object per line) before its first record of an iteration
    >= ``start_iter`` (or its first unreadable line, e.g. one torn by a kill), so a resumed run
    does not repeat iterations it already holds. Truncated in place: Detectron2's JSONWriter
    already holds the file open for appending. Returns the number of lines dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path, "r+b") as f:
        keep, dropped = 0, 0
        for line in f:
            if dropped == 0:
                try:
                    ok = json.loads(line).get("iteration", -1) < start_iter and line.endswith(b"\n")
                except (ValueError, AttributeError):
                    ok = False
                if ok:
                    keep += len(line)
                    continue
            dropped += 1
        if dropped:
            f.truncate(keep)
            logger.info("%s: dropped %d records from iteration %d on (rerun)", path, dropped, start_iter)
    return dropped


class SeldTrainer(DefaultTrainer):
    """DefaultTrainer with seld_d2's builders and epoch hooks (see the module docstring)."""

    def __init__(self, cfg):
        self._train_records = dataset_records(cfg.DATASETS.TRAIN)
        self.clock = seld_hooks.EpochClock(iters_per_epoch(cfg, len(self._train_records)))
        cfg = with_class_weights(cfg, self._train_records)
        # DefaultTrainer.__init__ of Detectron2 0.6, but for the DDP wrapper (data_parallel) and
        # the atomic checkpointer: its create_ddp_model call gives DDP the local rank as a CUDA
        # device id, which a CPU model refuses.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            data_parallel(model), data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_train_loader(self, cfg):  # noqa: D102  (instance method: needs the records)
        return SkipUnreadableFrames(build_seld_train_loader(cfg, self._train_records))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Every frame of the dataset in order (whole clips, for the tracker), mapped without
        augmentation, ``SELD.INFER.BATCH_SIZE`` frames per batch, this process's share of clips."""
        records = DatasetCatalog.get(dataset_name)
        sequences = sorted({r["sequence"] for r in records})
        mine = set(sequences[comm.get_rank() :: comm.get_world_size()])
        records = [r for r in records if r["sequence"] in mine]
        mapper = SeldDatasetMapper(cfg, is_train=False)
        return frame_loader(records, mapper, cfg.SELD.INFER.BATCH_SIZE, cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str | None = None):
        """The official DCASE2026 Task 3 metric on the dataset's whole clips."""
        from ..evaluation.evaluator import Stairs26Evaluator

        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return Stairs26Evaluator(cfg, dataset_name, folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(model, cfg)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # LR changes come from the plateau hook at epoch ends; nothing per iteration.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def build_hooks(self):
        cfg = self.cfg
        t = cfg.SELD.TRAIN
        val_batches = (
            build_validation_batches(cfg, dataset_records(cfg.DATASETS.TEST)) if cfg.DATASETS.TEST else []
        )
        unfreezing = seld_hooks.ProgressiveUnfreezing(self.clock, unfreeze_schedule(cfg), t.GRACE_EPOCHS)
        validation = seld_hooks.ValidationLoss(self.clock, val_batches)
        hook_list = [hooks.IterationTimer(), unfreezing, seld_hooks.AverageNormStatistics()]
        if val_batches:
            hook_list += [
                validation,
                seld_hooks.PlateauLR(self.clock, validation, t.PLATEAU_FACTOR, t.PLATEAU_PATIENCE),
                seld_hooks.BestCheckpoint(self.clock, validation, self.checkpointer),
                seld_hooks.EarlyStopping(self.clock, validation, unfreezing, t.EARLY_STOP_PATIENCE),
            ]
        if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            # The official metric on the whole validation clips every EVAL_PERIOD iterations.
            hook_list.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self._evaluate(unfreezing)))
        # After every hook that draws random numbers (validation samples proposals), right
        # before the checkpointer: with several processes it gathers their RNG states here.
        hook_list.append(seld_hooks.RNGState())
        if comm.is_main_process():
            # Last among the after_step hooks that touch state, so checkpoints see it all.
            hook_list.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
            hook_list.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.SELD.TRAIN.LOG_PERIOD))
        return hook_list

    def _evaluate(self, unfreezing: seld_hooks.ProgressiveUnfreezing) -> dict:
        results = self.test(self.cfg, self.model)
        # Inference switched every module back to training mode; frozen stages keep BN eval mode.
        if unfreezing.current is not None:
            seld_hooks.set_trainable_stages(seld_hooks.unwrap_model(self.model), unfreezing.current)
        return results

    def build_writers(self):
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume)
        if self.start_iter > 0 and comm.is_main_process():
            drop_metrics_from(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
        if self.start_iter > 0:
            # Continue the data stream exactly where the interrupted run left it.
            loader = SkipUnreadableFrames(
                build_seld_train_loader(self.cfg, self._train_records, start_iter=self.start_iter)
            )
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = iter(loader)

    def state_dict(self) -> dict:
        """Detectron2's trainer state (iteration, hooks) plus the optimizer's (and the AMP
        GradScaler's, under AMP) and the LR scheduler's: DefaultTrainer 0.6 saves neither, so a
        resumed AdamW would restart from zero moments."""
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()  # optimizer (+ grad_scaler)
        state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        # Hooks first (ProgressiveUnfreezing sets the stage of the resume point), then the
        # optimizer state saved at that stage (its groups always hold every parameter).
        super().load_state_dict(state)
        if "_trainer" not in state:
            logger.warning(
                "the checkpoint has no optimizer state (written by an older seld_d2): AdamW restarts "
                "from zero moments, so this resume is not exact"
            )
            return
        self._trainer.load_state_dict(state["_trainer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def train(self):
        try:
            return super().train()
        except seld_hooks.StopTraining:
            logger.info("training stopped early at iteration %d", self.iter)
            return None
