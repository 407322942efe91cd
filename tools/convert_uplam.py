#!/usr/bin/env python
"""Convert an UpLAM checkpoint between seld_d2's format and the official baseline's.

The direction follows from IN: the baseline's ``UpLAM.pth`` (a plain float64 state dict with its
module names, as released with github.com/iranroman/DCASE2026_Task3_SAISELD_baseline, or a
``.tar`` training checkpoint of it) becomes a seld_d2 checkpoint (tools/train_uplam.py's format:
weights, band layout, steering and the baseline's lower-triangle symmetrisation recorded); a
seld_d2 checkpoint becomes a baseline state dict that the baseline's ``lam_model.py`` loads.
The latter is refused when the baseline's code would compute something else with it (a model
with this project's mean symmetrisation, per-band steering, or bands other than the baseline's
linear ones) unless --inexact is given.

seld_d2 loads a baseline-format file directly (FeatureExtractor, tools/extract_features.py
--checkpoint, SELD.AUDIO.UPLAM_CHECKPOINT); converting it is optional.

With --float16, a seld_d2 checkpoint is written again in seld_d2's format with its weights
stored as float16 and without trainer state (optimizer, iteration): half the size, for shipping
(checkpoints/uplam_mel16.pth was made this way).

Example:
    python tools/convert_uplam.py UpLAM.pth uplam_linear9.pth
"""

from __future__ import annotations

import argparse
import sys

import torch

from seld_d2.acoustics.uplam import convert_checkpoint, export_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="UpLAM checkpoint in either format")
    p.add_argument("output", help="where to write the other format")
    p.add_argument(
        "--bands",
        default=None,
        help="band layout of a baseline-format input (it records none; default: the baseline's "
        "linear layout for its band count, linear9 for the released 9 bands)",
    )
    p.add_argument(
        "--inexact",
        action="store_true",
        help="write a baseline state dict even when the baseline's code would not reproduce the model",
    )
    p.add_argument(
        "--float16",
        action="store_true",
        help="seld_d2 -> seld_d2 with float16 weights and no trainer state (smaller, for shipping)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.float16:
            export_checkpoint(args.input, args.output, torch.float16)
            print(f"seld_d2 -> seld_d2 (float16 weights): {args.input} -> {args.output}")
            return 0
        written = convert_checkpoint(args.input, args.output, bands=args.bands, inexact=args.inexact)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    src, dst = ("seld_d2", "baseline") if written == "baseline" else ("baseline", "seld_d2")
    print(f"{src} -> {dst}: {args.input} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
