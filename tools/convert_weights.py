#!/usr/bin/env python
"""Convert pretrained detector weights for seld_d2's SeldRCNN (MODEL.WEIGHTS).

IN is one of:

- a torchvision ResNet-50 ImageNet state dict (e.g. ``resnet50-11ad3fa6.pth`` or
  ``resnet50-0676ba61.pth``): renamed to Detectron2's names; conv1 and its BN go into the RGB
  branch of the DualModalityStem. Train with ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (the
  project's default), RGB input with the ImageNet mean/std (the project's PIXEL_MEAN/STD).
- a Detectron2 model-zoo Mask R-CNN R50-FPN ``.pkl`` (COCO, e.g. ``model_final_f10217.pkl``):
  backbone, FPN, RPN and box head are kept; the stem conv1 is re-ordered from BGR to RGB and
  scaled by the ImageNet std so that it sees the project's input as the zoo model saw its own.
  Train with ``MODEL.RESNETS.STRIDE_IN_1X1: True`` (the zoo's MSRA ResNet).

The config (--config-file, plus KEY VALUE overrides) builds the SeldRCNN the weights are for:
tensors it has no place for, or of another shape (the 81-class COCO predictor, the mask head),
are left out of OUT and listed, as are the model's tensors that keep their initialisation (the
acoustic stem branch, the new heads). OUT (``.pth`` or ``.pkl``) loads with exact names.
Both sources carry BN statistics, so ``MODEL.RESNETS.NORM: FrozenBN`` (the run configs') suits
them; without pretrained weights use GN or BN.

Example:
    python tools/convert_weights.py resnet50-0676ba61.pth weights/R50-torchvision-d2.pth
    python tools/convert_weights.py model_final_f10217.pkl weights/R50-FPN-COCO-seld.pkl \\
        --config-file configs/SELD/run3_mel16.yaml MODEL.RESNETS.STRIDE_IN_1X1 True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seld_d2 import add_seld_config
from seld_d2.modeling.pretrained import (
    REQUIRED_CONFIG,
    group_names,
    match_to_model,
    read_pretrained,
    write_weights,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "SELD" / "run3_mel16.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="torchvision ResNet .pth or Detectron2 model-zoo .pkl")
    p.add_argument("output", help="converted weights (.pth, or .pkl) for MODEL.WEIGHTS")
    p.add_argument("--config-file", default=str(DEFAULT_CONFIG), help="config of the target SeldRCNN")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return p.parse_args(argv)


def _listing(names: list[str]) -> str:
    return ", ".join(f"{prefix} ({n})" if n > 1 else prefix for prefix, n in group_names(names)) or "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        kind, weights = read_pretrained(args.input)
        cfg = add_seld_config(get_cfg())
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg.MODEL.DEVICE = "cpu"
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg)
    report = match_to_model(weights, model)
    required = REQUIRED_CONFIG[kind]
    write_weights(
        args.output,
        {k: weights[k] for k in report.loaded},
        {"source": kind, "required_config": required},
    )
    n = len(report.loaded)
    print(f"{kind} {args.input} -> {args.output}: {n} tensors for SeldRCNN ({args.config_file})")
    print(f"loaded: {_listing(report.loaded)}")
    print(f"skipped, not in the model: {_listing(report.unexpected)}")
    shapes = [f"{k} {a} vs {b}" for k, (a, b) in report.shape_mismatch.items()]
    print(f"skipped, other shape (file vs model): {', '.join(shapes) or '-'}")
    print(f"left at initialisation: {_listing(report.initialised)}")
    for key, value in required.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if node != value:
            print(f"warning: these weights need {key} {value}; the config given has {node}", file=sys.stderr)
        else:
            print(f"train with {key} {value} (as this config)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
