"""seld_d2's additions to the Detectron2 config. Every key has a comment and its default."""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_seld_config(cfg: CN) -> CN:
    """Add the ``SELD`` keys to a Detectron2 config in place (and return it)."""
    cfg.SELD = CN()

    # ---- acoustic front-end (seld_d2.acoustics) -----------------------------------------------
    cfg.SELD.AUDIO = CN()
    # Sample rate the wav files must have (STARSS23/STAIRS26: 24 kHz).
    cfg.SELD.AUDIO.SAMPLE_RATE = 24000
    # Band layout of the acoustic features: "mel16" (the report's 16 mel bands, 50-4500 Hz),
    # "linear9" (the baseline's 9 bands, 1667-4333 Hz), or a list of centre frequencies in Hz.
    # Ignored when UPLAM_CHECKPOINT is set (the checkpoint fixes it).
    cfg.SELD.AUDIO.BANDS = "mel16"
    # Steering operator of UpLAM/APGD: "fixed" (one wavelength, 4833 Hz, as the reference) or
    # "per_band" (each band steered at its centre). Ignored when UPLAM_CHECKPOINT is set.
    cfg.SELD.AUDIO.STEERING = "fixed"
    # UpLAM checkpoint (from tools/train_uplam.py). Empty: randomly initialised UpLAM (warned).
    cfg.SELD.AUDIO.UPLAM_CHECKPOINT = ""
    # Seed of the random UpLAM initialisation used when no checkpoint is given.
    cfg.SELD.AUDIO.RANDOM_INIT_SEED = 0
    # Precision of UpLAM inference: "float32" (fast) or "float64" (reference).
    cfg.SELD.AUDIO.FEATURE_DTYPE = "float32"
    # Frames per UpLAM call when extracting features.
    cfg.SELD.AUDIO.FEATURE_BATCH_SIZE = 256
    # Folder (relative to the dataset root) of the per-clip feature cache; split name appended.
    cfg.SELD.AUDIO.FEATURE_CACHE_DIR = "features_dev"
    return cfg
