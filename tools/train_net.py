#!/usr/bin/env python
"""Train (or evaluate) the seld_d2 detector, the Detectron2 way.

    python tools/train_net.py --config-file configs/SELD/run3_mel16.yaml
    python tools/train_net.py --config-file ... --num-gpus 4   # 4 processes (gloo ones without CUDA)
    python tools/train_net.py --config-file ... --resume              # continue OUTPUT_DIR
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_best.pth
    python tools/train_net.py --config-file ... SELD.DATA.ROOT /data/STAIRS26 SOLVER.IMS_PER_BATCH 16

The training and validation datasets are the STAIRS26-layout splits named by
``SELD.DATA.TRAIN_SPLITS`` / ``VAL_SPLITS`` under ``SELD.DATA.ROOT`` (registered here as
``DATASETS.TRAIN`` / ``DATASETS.TEST``); their acoustic features must have been extracted
(``tools/extract_features.py``). ``--eval-only`` reports the validation loss and the official
DCASE2026 Task 3 metric on the whole validation clips (submission files under
``OUTPUT_DIR/inference/<dataset>/submission``); ``TEST.EVAL_PERIOD N`` runs that evaluation every
N iterations during training.

``--num-gpus N`` (with Detectron2's ``--num-machines``, ``--machine-rank``, ``--dist-url``) trains in
N processes: Detectron2's ``launch`` with CUDA, the same process layout over gloo without
(``seld_d2.engine.distributed``). ``SOLVER.IMS_PER_BATCH`` is the global batch. A process that
fails or is killed stops the others; the tool then exits with one line naming it.
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from seld_d2 import add_seld_config
from seld_d2.data.datasets import register_stairs26
from seld_d2.engine.distributed import launch
from seld_d2.engine.hooks import validation_losses
from seld_d2.engine.trainer import SeldTrainer, build_validation_batches, dataset_records, iters_per_epoch
from seld_d2.utils.io import WriteError, prepare_output_dir

logger = logging.getLogger("seld_d2")


def register_datasets(cfg) -> None:
    """Register DATASETS.TRAIN[0] / DATASETS.TEST[0] from SELD.DATA (unless already registered)."""
    d = cfg.SELD.DATA
    feature_cache = os.path.join(d.ROOT, cfg.SELD.AUDIO.FEATURE_CACHE_DIR)
    for names, splits in ((cfg.DATASETS.TRAIN, d.TRAIN_SPLITS), (cfg.DATASETS.TEST, d.VAL_SPLITS)):
        for name in names:
            if name not in DatasetCatalog.list():
                register_stairs26(
                    name, d.ROOT, list(splits), feature_cache=feature_cache, on_error=d.ON_ERROR
                )


def setup(args):
    """Config from file + command line, datasets registered, epoch-derived iteration counts."""
    cfg = get_cfg()
    add_seld_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.SOLVER.AMP.ENABLED and not torch.cuda.is_available():
        cfg.SOLVER.AMP.ENABLED = False  # Detectron2 0.6's AMP trainer is CUDA-only
    register_datasets(cfg)
    if not args.eval_only:
        ipe = iters_per_epoch(cfg, len(dataset_records(cfg.DATASETS.TRAIN)))
        if cfg.SELD.TRAIN.MAX_EPOCHS > 0:
            cfg.SOLVER.MAX_ITER = cfg.SELD.TRAIN.MAX_EPOCHS * ipe
        if cfg.SOLVER.CHECKPOINT_PERIOD <= 0:
            cfg.SOLVER.CHECKPOINT_PERIOD = ipe  # 0 means: every epoch
    cfg.freeze()
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        try:  # before any work; also removes the temporaries of a killed run's checkpoint saves
            prepare_output_dir(cfg.OUTPUT_DIR)
        except WriteError as err:
            raise SystemExit(f"error: {err}") from None
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = SeldTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        model.train()  # losses need training mode; validation_losses freezes BN and dropout
        with EventStorage(0):
            means = validation_losses(
                model, build_validation_batches(cfg, dataset_records(cfg.DATASETS.TEST))
            )
        logger.info("validation losses: %s", {k: round(v, 5) for k, v in means.items()})
        print(f"validation loss: {sum(means.values()):.5f}")
        results = SeldTrainer.test(cfg, model)  # the official metric on the whole clips
        if comm.is_main_process():
            print_csv_format(results)
        return {"validation_losses": means, **results}
    trainer = SeldTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except WriteError as err:  # a checkpoint or log that the disk no longer takes
        raise SystemExit(f"error: {err}") from None


def _exception_line(traceback: str) -> str:
    """The 'Type: message' line of a formatted traceback: the first after its last frame."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    rest = [line for line in lines[frames[-1] + 1 :] if not line.startswith("    ")] if frames else []
    return rest[0] if rest else lines[-1]


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessRaisedException as err:  # a worker's exception; the others have been stopped
        print(err, file=sys.stderr)  # its traceback
        raise SystemExit(
            f"error: training process {err.error_index} failed: {_exception_line(str(err))}"
        ) from None
    except ProcessExitedException as err:  # a worker killed, or one that exited with an error line
        raise SystemExit(f"error: training {err}; the other processes were stopped") from None


if __name__ == "__main__":
    invoke_main()
    sys.exit(0)
