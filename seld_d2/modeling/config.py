"""Config keys of seld_d2's model (SPEC §6). Every key has a comment and its default."""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_seld_model_config(cfg: CN) -> CN:
    """Add the model keys (``MODEL.SELD``, the extra heads, focal loss, box-head dropout) in place."""
    # ---- input and stem (seld_d2.modeling.backbone.DualModalityStem) ---------------------------
    cfg.MODEL.SELD = CN()
    # Channels of the network input: 3 RGB + NUM_ACOUSTIC acoustic planes. Must equal
    # 3 + NUM_ACOUSTIC and len(MODEL.PIXEL_MEAN); checked when the backbone is built.
    cfg.MODEL.SELD.IN_CHANNELS = 19
    # Acoustic planes that follow the RGB channels (one per band of the acoustic front-end).
    cfg.MODEL.SELD.NUM_ACOUSTIC = 16
    # Audio-only mode (Track A): the normalised RGB channels are zeroed before the backbone.
    cfg.MODEL.SELD.AUDIO_ONLY = False
    # Initial value of the learnt scale of the RGB branch of the stem (s_rgb).
    cfg.MODEL.SELD.RGB_SCALE_INIT = 1.0
    # Initial value of the learnt logit a of the acoustic branch; its scale is softplus(a) + MIN.
    cfg.MODEL.SELD.AUDIO_SCALE_INIT = -0.274
    # Floor of the acoustic branch scale (keeps the audio path from being switched off).
    cfg.MODEL.SELD.AUDIO_SCALE_MIN = 0.1

    # ---- box head and predictor (seld_d2.modeling.roi_heads) ------------------------------------
    # Dropout after each FC layer of FCDropoutBoxHead.
    cfg.MODEL.ROI_BOX_HEAD.DROPOUT = 0.3
    # Focusing parameter of the softmax focal loss of the box classifier (0 = cross-entropy).
    cfg.MODEL.ROI_HEADS.FOCAL_GAMMA = 2.0
    # Per-class weights of the classification loss, one per foreground class (background
    # weight is 1). Empty = uniform. See roi_heads.inverse_frequency_weights.
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = []
    # RoI poolers (box and energy) of SeldROIHeads: GatherROIPooler, Detectron2's ROIAlign /
    # ROIAlignV2 computed as one weighted gather on CPU (same values up to float rounding; in
    # CPU training an order of magnitude faster than torchvision's roi_align backward; CUDA
    # unchanged). False = Detectron2's ROIPooler.
    cfg.MODEL.ROI_HEADS.GATHER_POOLER = True

    # ---- energy mask head (seld_d2.modeling.energy_head) ----------------------------------------
    # Predict a 28x28 energy map per RoI (trained on foreground proposals).
    cfg.MODEL.ENERGY_ON = True
    cfg.MODEL.ENERGY_HEAD = CN()
    # Name in ENERGY_HEAD_REGISTRY.
    cfg.MODEL.ENERGY_HEAD.NAME = "EnergyMaskHead"
    # RoI features pooled from ROI_HEADS.IN_FEATURES at this resolution (the map is twice it).
    cfg.MODEL.ENERGY_HEAD.POOLER_RESOLUTION = 14
    # Sampling ratio of the RoI pooler (0 = adaptive).
    cfg.MODEL.ENERGY_HEAD.POOLER_SAMPLING_RATIO = 0
    # RoI pooler type.
    cfg.MODEL.ENERGY_HEAD.POOLER_TYPE = "ROIAlignV2"
    # Number of 3x3 conv + norm + ReLU layers before the deconvolution.
    cfg.MODEL.ENERGY_HEAD.NUM_CONV = 4
    # Channels of those conv layers.
    cfg.MODEL.ENERGY_HEAD.CONV_DIM = 256
    # Norm of those conv layers ("BN", "SyncBN", "GN", "" for none).
    cfg.MODEL.ENERGY_HEAD.NORM = "BN"
    # One map per RoI (True) or one per class, the predicted/ground-truth class's one used (False).
    cfg.MODEL.ENERGY_HEAD.CLS_AGNOSTIC = True
    # Loss = LOSS_WEIGHT * (MSE over all pixels + ANNOTATED_WEIGHT * MSE over pixels with
    # ground truth > 0).
    cfg.MODEL.ENERGY_HEAD.LOSS_WEIGHT = 1.0
    cfg.MODEL.ENERGY_HEAD.ANNOTATED_WEIGHT = 5.0

    # ---- full-map head (seld_d2.modeling.fullmap_head) ------------------------------------------
    # Predict the whole-canvas energy map (per-pixel max over instances) from the FPN features.
    cfg.MODEL.FULLMAP_ON = True
    cfg.MODEL.FULLMAP_HEAD = CN()
    # Name in FULLMAP_HEAD_REGISTRY.
    cfg.MODEL.FULLMAP_HEAD.NAME = "FullMapHead"
    # FPN levels merged by the top-down decoder.
    cfg.MODEL.FULLMAP_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Channels of the decoder's conv layers.
    cfg.MODEL.FULLMAP_HEAD.CONVS_DIM = 128
    # Stride at which the levels are merged before the final upsampling to full resolution.
    cfg.MODEL.FULLMAP_HEAD.COMMON_STRIDE = 4
    # Norm of the decoder's conv layers ("GN", "BN", "SyncBN", "" for none).
    cfg.MODEL.FULLMAP_HEAD.NORM = "GN"
    # Loss = LOSS_WEIGHT * (MSE over the image + ANNOTATED_WEIGHT * MSE over pixels with
    # ground truth > 0); padding added for batching is ignored.
    cfg.MODEL.FULLMAP_HEAD.LOSS_WEIGHT = 1.0
    cfg.MODEL.FULLMAP_HEAD.ANNOTATED_WEIGHT = 10.0

    # ---- distance head (seld_d2.modeling.distance_head) -----------------------------------------
    # Predict each instance's distance from its RoI box features (trained on foreground proposals).
    cfg.MODEL.DISTANCE_ON = True
    cfg.MODEL.DISTANCE_HEAD = CN()
    # Name in DISTANCE_HEAD_REGISTRY.
    cfg.MODEL.DISTANCE_HEAD.NAME = "DistanceHead"
    # Width of the MLP's hidden layer.
    cfg.MODEL.DISTANCE_HEAD.HIDDEN_DIM = 256
    # The head predicts distance / NORMALISER (distance in cm); the L1 loss is on that scale.
    cfg.MODEL.DISTANCE_HEAD.NORMALISER = 500.0
    # Weight of the L1 loss.
    cfg.MODEL.DISTANCE_HEAD.LOSS_WEIGHT = 1.0
    return cfg
