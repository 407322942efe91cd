"""Self-supervised UpLAM training on 32-channel em32 recordings (SPEC §3), the Detectron2 way.

The settings are the ``SELD.UPLAM`` config node (``seld_d2/config.py``): a ``--config-file``,
then the flags below (each sets one key), then trailing ``KEY VALUE`` pairs. The loop is
``seld_d2.engine.uplam_trainer.UpLAMTrainer`` (Detectron2's SimpleTrainer, hooks, EventStorage):
console lines, ``metrics.json`` and TensorBoard scalars every ``LOG_PERIOD`` iterations, one
line per epoch with the validation (MSE-TV loss; PSNR = 10 log10(1 / MSE) and mean absolute
difference of the max-normalised latent against the max-normalised APGD map of the 32-ch
target; with ``events_dev/<split>/<seq>.csv``, the peak error of the >= 1 kHz median map on
single-source frames), atomic ``last.pth`` every epoch and ``best.pth`` (``BEST_METRIC``).
``--resume`` continues ``last.pth`` exactly. Unusable wavs are reported on stderr, one line
each, and skipped; the exit status is then 1 once training has finished.

Example:
    python tools/train_uplam.py --root datasets/STAIRS26 --train-split dev-train-sony \\
        --val-split dev-test-sony --out output/uplam_mel16 SELD.UPLAM.LAM_LR 1e-5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

PROG = "train_uplam"

# flag -> SELD.UPLAM key (values given as flags are set on the config, after --config-file).
FLAG_KEYS = {
    "bands": "BANDS",
    "steering": "STEERING",
    "epochs": "EPOCHS",
    "batch_size": "BATCH_SIZE",
    "lr": "LR",
    "lam_lr": "LAM_LR",
    "tv_weight": "TV_WEIGHT",
    "max_clips": "MAX_CLIPS",
    "seed": "SEED",
    "device": "DEVICE",
    "dtype": "DTYPE",
    "shuffle_clips": "SHUFFLE_CLIPS",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Self-supervised UpLAM training: tetrahedral 4x4 visibilities -> em32 32x32 "
            "visibilities, on <root>/eigen_dev/<split>/*.wav (24 kHz, 32 channels). Validation "
            "reports the MSE-TV loss and, per band then averaged, the peak SNR "
            "(PSNR = 10 log10(1 / MSE), in dB) and mean absolute difference between the "
            "max-normalised latent and the max-normalised APGD map of the 32-channel target; "
            "where <root>/events_dev/<split>/<seq>.csv exist, the peak angular error of the "
            "median map over bands >= 1 kHz on single-source frames. Settings: the SELD.UPLAM "
            "config node (seld_d2/config.py); a flag left out keeps the config's value."
        ),
    )
    p.add_argument("--config-file", default="", metavar="FILE", help="yacs config file (SELD.UPLAM keys)")
    p.add_argument("--root", type=Path, help="dataset root, holds eigen_dev/ (SELD.DATA.ROOT)")
    p.add_argument("--train-split", help="training split(s) under eigen_dev/, comma-separated (TRAIN_SPLITS)")
    p.add_argument("--val-split", help="validation split(s) under eigen_dev/, comma-separated (VAL_SPLITS)")
    p.add_argument("--out", type=Path, help="output directory: checkpoints, logs (OUTPUT_DIR)")
    p.add_argument("--bands", help="band layout: linear9, mel16, or comma-separated centre frequencies in Hz")
    p.add_argument("--steering", choices=("fixed", "per_band"), help="steering mode")
    p.add_argument("--epochs", type=int, help="total number of epochs")
    p.add_argument("--batch-size", type=int, help="frames per training step")
    p.add_argument("--lr", type=float, help="Adam learning rate of the CDBPN (LR)")
    p.add_argument("--lam-lr", type=float, help="Adam learning rate of LAM: D, tau, denoisers (LAM_LR)")
    p.add_argument("--tv-weight", type=float, help="lambda of the TV + L1 term")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pth exactly")
    p.add_argument("--max-clips", type=int, help="use at most N clips per split")
    p.add_argument("--seed", type=int, help="random seed (initialisation and frame order)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "float64"), help="model precision")
    p.add_argument(
        "--shuffle-clips",
        type=int,
        help="clips whose frames are pooled and shuffled together (memory: ~80 MB per minute of "
        "audio per clip for mel16)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides after everything else, e.g. SELD.UPLAM.UPSAMPLE_LOSS_WEIGHT 0.1",
    )
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "shuffle_clips", "max_clips"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if len(args.opts) % 2:
        p.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    return args


def setup(args: argparse.Namespace):
    """The frozen config: defaults, ``--config-file``, flags, trailing opts; checked. Raises
    ValueError (one line) for a bad value."""
    from detectron2.config import get_cfg

    from seld_d2 import add_seld_config
    from seld_d2.acoustics.uplam import PRIORS, STEERING_MODES
    from seld_d2.engine.uplam_trainer import BEST_METRICS, parse_bands

    cfg = get_cfg()
    add_seld_config(cfg)
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
        u = cfg.SELD.UPLAM
        for flag, key in FLAG_KEYS.items():
            if getattr(args, flag) is not None:
                u[key] = getattr(args, flag)
        if args.root is not None:
            cfg.SELD.DATA.ROOT = str(args.root)
        if args.out is not None:
            cfg.OUTPUT_DIR = str(args.out)
        for flag, key in (("train_split", "TRAIN_SPLITS"), ("val_split", "VAL_SPLITS")):
            if getattr(args, flag) is not None:
                u[key] = [s for s in getattr(args, flag).split(",") if s]
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, TypeError, AssertionError, OSError) as err:
        raise ValueError(f"config: {err}") from None
    u = cfg.SELD.UPLAM
    try:
        parse_bands(u.BANDS)
    except ValueError as err:
        raise ValueError(f"SELD.UPLAM.BANDS: {err}") from None
    for key, allowed in (
        ("STEERING", STEERING_MODES),
        ("PRIOR", PRIORS),
        ("DTYPE", ("float32", "float64")),
        ("BEST_METRIC", BEST_METRICS),
    ):
        if u[key] not in allowed:
            raise ValueError(f"SELD.UPLAM.{key} is {u[key]!r}; use one of {tuple(allowed)}")
    for key, low in (
        ("EPOCHS", 1),
        ("BATCH_SIZE", 1),
        ("SHUFFLE_CLIPS", 1),
        ("MAX_CLIPS", 0),
        ("WARMUP_EPOCHS", 0),
    ):
        if u[key] < low:
            raise ValueError(f"SELD.UPLAM.{key} must be at least {low}, got {u[key]}")
    if not u.TRAIN_SPLITS or not u.VAL_SPLITS:
        raise ValueError("no training or validation split given (--train-split / --val-split)")
    cfg.freeze()
    return cfg


def _error(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = setup(args)
    except ValueError as err:
        return _error(str(err))
    import torch  # after --help and the config checks: slow
    from detectron2.utils.logger import setup_logger

    from seld_d2.engine.uplam_data import scan_splits
    from seld_d2.engine.uplam_trainer import UpLAMTrainer
    from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir

    u, root, out = cfg.SELD.UPLAM, Path(cfg.SELD.DATA.ROOT), Path(cfg.OUTPUT_DIR)
    try:
        torch.empty(0, device=torch.device(u.DEVICE))
    except (RuntimeError, AssertionError) as e:
        return _error(f"device {u.DEVICE!r} is not usable ({e})")
    for split in [*u.TRAIN_SPLITS, *u.VAL_SPLITS]:
        if not (root / "eigen_dev" / split).is_dir():
            return _error(f"{root / 'eigen_dev' / split}: split folder not found")
    try:  # before the long work; also removes the temporaries of a killed run's saves
        prepare_output_dir(out)
    except WriteError as err:
        return _error(str(err))
    last = out / "last.pth"
    if args.resume and not last.exists():
        return _error(f"--resume given but {last} does not exist")

    def report(msg: str) -> None:
        tqdm.write(f"{PROG}: {msg}", file=sys.stderr)

    train_clips, bad_train = scan_splits(root, u.TRAIN_SPLITS, u.MAX_CLIPS, report)
    val_clips, bad_val = scan_splits(root, u.VAL_SPLITS, u.MAX_CLIPS, report)
    for splits, clips in ((u.TRAIN_SPLITS, train_clips), (u.VAL_SPLITS, val_clips)):
        if not clips:
            return _error(f"no usable clips in {root / 'eigen_dev'}/{','.join(splits)}")
    bad = bad_train + bad_val

    setup_logger(str(out), name="detectron2", abbrev_name="d2")
    setup_logger(str(out), name="seld_d2")
    with atomic_open(out / "config.yaml", "w") as f:
        f.write(cfg.dump())
    trainer = UpLAMTrainer(cfg, train_clips, val_clips)
    try:
        trainer.resume_or_load(resume=args.resume)
    except ValueError as err:
        return _error(str(err))
    if args.resume:
        epoch = trainer.clock.epoch(trainer.start_iter)
        print(f"{PROG}: resuming from {last} at iteration {trainer.start_iter} (epoch {epoch})")
    model = trainer.model
    print(
        f"{PROG}: {len(train_clips)} train clips ({trainer.data_loader.num_frames} frames, "
        f"{trainer.clock.iters_per_epoch} steps per epoch), {len(val_clips)} val clips; bands "
        f"{model.band_name}, steering {model.steering}, prior {model.prior}, {u.DTYPE} on {u.DEVICE}; "
        f"best.pth by {trainer.best_metric}"
    )
    try:
        trainer.train()
    except FloatingPointError:
        return _error(f"non-finite training loss at iteration {trainer.iter}")
    except WriteError as err:
        return _error(str(err))
    if bad:
        return _error(f"{bad} unusable wav(s) were skipped (listed above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
