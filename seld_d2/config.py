"""seld_d2's additions to the Detectron2 config. Every key has a comment and its default."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from .modeling.config import add_seld_model_config  # importing seld_d2.modeling registers the model


def add_seld_config(cfg: CN) -> CN:
    """Add the ``SELD`` keys to a Detectron2 config in place (and return it)."""
    add_seld_model_config(cfg)
    cfg.SELD = CN()

    # ---- acoustic front-end (seld_d2.acoustics) -----------------------------------------------
    cfg.SELD.AUDIO = CN()
    # Sample rate the wav files must have (STARSS23/STAIRS26: 24 kHz).
    cfg.SELD.AUDIO.SAMPLE_RATE = 24000
    # Kind of acoustic features: "uplam" (the latent of the UpLAM of UPLAM_CHECKPOINT) or "srp"
    # (classical steered response power of the 4x4 visibilities, one steering operator per band,
    # no training: the baseline a learnt feature must beat; UPLAM_CHECKPOINT and STEERING are
    # ignored). The feature cache records the kind, so the two never mix.
    cfg.SELD.AUDIO.FEATURE_KIND = "uplam"
    # SRP method when FEATURE_KIND is "srp": "bartlett" (delay-and-sum), "mvdr" or "music".
    cfg.SELD.AUDIO.SRP_METHOD = "bartlett"
    # Band layout of the acoustic features: "mel16" (the report's 16 mel bands, 50-4500 Hz),
    # "linear9" (the baseline's 9 bands, 1667-4333 Hz), or a list of centre frequencies in Hz.
    # Ignored when UPLAM_CHECKPOINT is set (the checkpoint fixes it).
    cfg.SELD.AUDIO.BANDS = "mel16"
    # Steering operator of UpLAM/APGD: "fixed" (one wavelength, 4833 Hz, as the reference) or
    # "per_band" (each band steered at its centre). Ignored when UPLAM_CHECKPOINT is set.
    cfg.SELD.AUDIO.STEERING = "fixed"
    # UpLAM checkpoint: from tools/train_uplam.py, or the official baseline's UpLAM.pth as
    # released (recognised by its keys: linear9, fixed steering). Empty: randomly initialised
    # UpLAM (warned).
    cfg.SELD.AUDIO.UPLAM_CHECKPOINT = ""
    # Seed of the random UpLAM initialisation used when no checkpoint is given.
    cfg.SELD.AUDIO.RANDOM_INIT_SEED = 0
    # Precision of UpLAM inference: "float32" (fast) or "float64" (reference).
    cfg.SELD.AUDIO.FEATURE_DTYPE = "float32"
    # Frames per UpLAM call when extracting features.
    cfg.SELD.AUDIO.FEATURE_BATCH_SIZE = 256
    # Folder (relative to the dataset root) of the per-clip feature cache; split name appended.
    cfg.SELD.AUDIO.FEATURE_CACHE_DIR = "features_dev"

    # ---- data (seld_d2.data) ----------------------------------------------------------------
    cfg.SELD.DATA = CN()
    # Dataset root (STARSS23 layout, see datasets/README.md) of the splits named below.
    cfg.SELD.DATA.ROOT = "datasets/STAIRS26"
    # Splits registered as the training / validation datasets (names of DATASETS.TRAIN/TEST).
    cfg.SELD.DATA.TRAIN_SPLITS = ["dev-train-sony", "dev-train-tau"]
    cfg.SELD.DATA.VAL_SPLITS = ["dev-test-sony", "dev-test-tau"]
    # Bad clips are skipped with a warning ("skip") or stop loading ("raise").
    cfg.SELD.DATA.ON_ERROR = "skip"
    # Training frames drawn per epoch (class-balanced, with replacement); 0 = every frame once.
    cfg.SELD.DATA.FRAMES_PER_EPOCH = 15000
    # Validation frames evaluated per epoch (a fixed seeded subset); 0 = the whole split.
    cfg.SELD.DATA.VAL_FRAMES = 3000
    # Class balancing: frame weight = max over its classes of min(max_count / count, CAP).
    cfg.SELD.DATA.CLASS_BALANCE = True
    cfg.SELD.DATA.CLASS_BALANCE_CAP = 30.0
    # Clips whose acoustic latent each data-loader worker keeps in memory.
    cfg.SELD.DATA.FEATURE_CACHE_CLIPS = 64

    # ---- augmentation (seld_d2.data.augment), training only -------------------------------
    cfg.SELD.AUG = CN()
    # Random azimuth rotation: circular roll of image, maps and masks by 0..359 pixels.
    cfg.SELD.AUG.AZIMUTH_ROTATION = True
    # Probability of the azimuth mirror (horizontal flip, az -> -az).
    cfg.SELD.AUG.FLIP_PROB = 0.5
    # Probability and strength (factors in 1 +- strength) of brightness/contrast/saturation jitter.
    cfg.SELD.AUG.RGB_JITTER_PROB = 0.8
    cfg.SELD.AUG.RGB_JITTER_STRENGTH = 0.4
    # Probability that the RGB channels are replaced by the ImageNet mean (modality dropout).
    cfg.SELD.AUG.RGB_DROPOUT_PROB = 0.15
    # Up to this many acoustic bands are zeroed (uniform 0..N).
    cfg.SELD.AUG.MAX_MASKED_BANDS = 4

    # ---- training (seld_d2.engine) ----------------------------------------------------------
    cfg.SELD.TRAIN = CN()
    # Training length in epochs (an epoch = FRAMES_PER_EPOCH frames); sets SOLVER.MAX_ITER
    # when > 0 (tools/train_net.py).
    cfg.SELD.TRAIN.MAX_EPOCHS = 30
    # Progressive unfreezing: first epoch (1-based) from which each backbone stage trains;
    # 0 = always frozen. Report: stems and layer1 from 1, layer4 from 3, layer3 from 7,
    # layer2 never. FPN, RPN and heads always train.
    cfg.SELD.TRAIN.UNFREEZE_STEMS_EPOCH = 1
    cfg.SELD.TRAIN.UNFREEZE_LAYER1_EPOCH = 1
    cfg.SELD.TRAIN.UNFREEZE_LAYER2_EPOCH = 0
    cfg.SELD.TRAIN.UNFREEZE_LAYER3_EPOCH = 7
    cfg.SELD.TRAIN.UNFREEZE_LAYER4_EPOCH = 3
    # Epochs after each unfreezing transition during which early stopping is suspended.
    cfg.SELD.TRAIN.GRACE_EPOCHS = 5
    # ReduceLROnPlateau on the validation loss: factor and patience (epochs).
    cfg.SELD.TRAIN.PLATEAU_FACTOR = 0.5
    cfg.SELD.TRAIN.PLATEAU_PATIENCE = 3
    # Early stopping after this many epochs without a better validation loss (0 = off).
    cfg.SELD.TRAIN.EARLY_STOP_PATIENCE = 10
    # Per-class weights of the focal classification loss from the training set's inverse class
    # frequencies (used when MODEL.ROI_HEADS.CLASS_WEIGHTS is empty), capped at CLASS_WEIGHT_CAP.
    cfg.SELD.TRAIN.AUTO_CLASS_WEIGHTS = True
    cfg.SELD.TRAIN.CLASS_WEIGHT_CAP = 30.0
    # Iterations between log lines / TensorBoard writes.
    cfg.SELD.TRAIN.LOG_PERIOD = 20

    # ---- UpLAM self-supervised training (seld_d2.engine.uplam_trainer, tools/train_uplam.py) ----
    # Data: every 100 ms frame of <SELD.DATA.ROOT>/eigen_dev/<split>/*.wav (24 kHz, 32 channels);
    # checkpoints and logs go to OUTPUT_DIR.
    cfg.SELD.UPLAM = CN()
    # Splits under eigen_dev/ to train on and to validate on.
    cfg.SELD.UPLAM.TRAIN_SPLITS = ["dev-train-sony", "dev-train-tau"]
    cfg.SELD.UPLAM.VAL_SPLITS = ["dev-test-sony", "dev-test-tau"]
    # Use at most this many clips per split (sorted by name); 0 = all.
    cfg.SELD.UPLAM.MAX_CLIPS = 0
    # Band layout: "mel16", "linear9", or comma-separated centre frequencies in Hz.
    cfg.SELD.UPLAM.BANDS = "mel16"
    # Steering operator: "per_band" (each band at its centre; localises the low mel bands) or
    # "fixed" (the reference's single 4833 Hz operator).
    cfg.SELD.UPLAM.STEERING = "per_band"
    # "interpolation": the CDBPN learns a correction to the least-squares map T S4 T^H of the
    # tetrahedral manifold onto the em32's (untrained, it upsamples to that); "none": the
    # reference (the CDBPN alone upsamples).
    cfg.SELD.UPLAM.PRIOR = "interpolation"
    # Scale LAM's delay-and-sum start per band to the least-squares reconstruction gain.
    cfg.SELD.UPLAM.CALIBRATE = True
    # Scaling of the CDBPN's input: "none" (the reference) or "trace" (each frame's and band's
    # visibilities divided by their mean power, the output multiplied back: level-equivariant).
    cfg.SELD.UPLAM.INPUT_SCALING = "none"
    # Model precision: "float32" or "float64" (the reference's).
    cfg.SELD.UPLAM.DTYPE = "float32"
    # Torch device.
    cfg.SELD.UPLAM.DEVICE = "cpu"
    # Adam learning rate of the CDBPN (the upsampling network). Measured on generated scenes
    # (README, "The acoustic front-end"): 3e-4 reaches a higher PSNR against APGD sooner but the
    # maps' maxima drift to one direction within 2-3 epochs; 3e-5 keeps them.
    cfg.SELD.UPLAM.LR = 3e-5
    # Adam learning rate of LAM's D and denoisers. The latent is ~1e-4 in magnitude, so steps
    # of the CDBPN's size wipe out the map; the reference's 1e-6.
    cfg.SELD.UPLAM.LAM_LR = 1e-6
    # Adam learning rate of LAM's tau (a per-band, per-direction offset subtracted from the map).
    # 0 (frozen): a learnt offset is the same for every frame, and training used it to pull every
    # map's maximum towards one direction (measured: 15.3 deg median peak error vs 4.1 frozen).
    cfg.SELD.UPLAM.TAU_LR = 0.0
    # lambda of the graph-TV + L1 term of the latent in the MSE-TV loss.
    cfg.SELD.UPLAM.TV_WEIGHT = 1e-5
    # Weight of an extra loss term mean |upsampled S32 - target S32|^2 on the CDBPN's output
    # (0 = the reference loss only).
    cfg.SELD.UPLAM.UPSAMPLE_LOSS_WEIGHT = 0.0
    # Epochs at the start that train on the upsampling term alone (unweighted; LAM is idle).
    cfg.SELD.UPLAM.WARMUP_EPOCHS = 0
    # Frames per training step, and epochs.
    cfg.SELD.UPLAM.BATCH_SIZE = 8
    cfg.SELD.UPLAM.EPOCHS = 50
    # Clips whose frames are pooled and shuffled together (memory: ~80 MB per minute of audio
    # per clip for mel16).
    cfg.SELD.UPLAM.SHUFFLE_CLIPS = 4
    # Seed of the initialisation and of the frame order (epoch e's order is a function of
    # (SEED, e), so a resumed run sees the same batches).
    cfg.SELD.UPLAM.SEED = 0
    # Which validation value picks best.pth (lower is better): "peak_error" (median peak error
    # of the >= 1 kHz median map on single-source frames; needs events_dev/<split>/<seq>.csv,
    # else "loss" is used) or "loss" (the MSE-TV loss).
    cfg.SELD.UPLAM.BEST_METRIC = "peak_error"
    # last.pth is written every epoch and also every CHECKPOINT_PERIOD iterations (0 = epoch ends
    # only).
    cfg.SELD.UPLAM.CHECKPOINT_PERIOD = 0
    # Iterations between console lines / metrics.json / TensorBoard writes (and at epoch ends).
    cfg.SELD.UPLAM.LOG_PERIOD = 20
    # Frames per model call in validation.
    cfg.SELD.UPLAM.EVAL_BATCH_SIZE = 64

    # ---- inference and export (seld_d2.inference, tools/infer.py) -------------------------------
    cfg.SELD.INFER = CN()
    # Frames per model call.
    cfg.SELD.INFER.BATCH_SIZE = 16
    # Detections below this score are dropped (report: 0.70, tuned with MIN_AGE).
    cfg.SELD.INFER.SCORE_THRESH = 0.70
    # Per-class overrides of SCORE_THRESH as [class id, threshold] pairs (report: Knock 0.85,
    # which kept one clip's file under the 20 MB limit).
    cfg.SELD.INFER.CLASS_SCORE_THRESH = [[12, 0.85]]
    # IoU of the class-wise non-maximum suppression after thresholding.
    cfg.SELD.INFER.NMS_THRESH = 0.5
    # At most this many detections per class and frame (0 = no limit).
    cfg.SELD.INFER.MAX_PER_CLASS = 0
    # Tracker (same class, box-IoU Hungarian): a track is exported once it has MIN_AGE
    # detections and ends after more than MAX_MISSED consecutive frames without one.
    cfg.SELD.INFER.MIN_AGE = 2
    cfg.SELD.INFER.MAX_MISSED = 2
    # Smallest box IoU that links a detection to a track.
    cfg.SELD.INFER.TRACK_IOU = 0.3
    # Score decay per missed frame while a track coasts, whose last map is then exported again
    # (the baseline exporter's 0.9); 0 = coasting frames are not exported.
    cfg.SELD.INFER.COAST_SCORE_DECAY = 0.0
    # Exporter: "dense" (the report's modified inference: every pixel >= DENSE_THRESH x max of
    # the pasted energy map, sorted by intensity, every SAMPLE_STEP-th kept) or "baseline"
    # (NUM_PEAKS sparse peaks per detection).
    cfg.SELD.INFER.EXPORTER = "dense"
    cfg.SELD.INFER.DENSE_THRESH = 0.5
    cfg.SELD.INFER.SAMPLE_STEP = 1
    cfg.SELD.INFER.NUM_PEAKS = 20
    # Submission files larger than this are thinned (larger SAMPLE_STEP) until they fit; the
    # official evaluator refuses files over 20 MiB (20 * 2**20 bytes). In MiB.
    cfg.SELD.INFER.MAX_FILE_MB = 20.0

    # ---- optimizer: AdamW with 12 named parameter groups (seld_d2.engine.param_groups) -------
    cfg.SELD.OPTIM = CN()
    cfg.SELD.OPTIM.BETAS = (0.9, 0.999)
    cfg.SELD.OPTIM.GROUPS = CN()
    # (learning rate, weight decay) per group; the report's extremes: audio stem 2e-4 (highest),
    # box predictor 2e-5 (lowest); base 1e-4. Norm layers get no weight decay.
    for name, lr, wd in (
        ("RGB_STEM", 5e-5, 1e-4),
        ("AUDIO_STEM", 2e-4, 1e-4),
        ("NORMS", 1e-4, 0.0),
        ("LAYER1", 5e-5, 1e-4),
        ("LAYER2", 5e-5, 1e-4),
        ("LAYER3", 5e-5, 1e-4),
        ("LAYER4", 1e-4, 1e-4),
        ("FPN", 1e-4, 1e-4),
        ("RPN", 1e-4, 1e-4),
        ("BOX_HEAD", 1e-4, 1e-4),
        ("BOX_PREDICTOR", 2e-5, 1e-4),
        ("EXTRA_HEADS", 1e-4, 1e-4),
    ):
        cfg.SELD.OPTIM.GROUPS[name] = CN({"LR": lr, "WEIGHT_DECAY": wd})
    return cfg
