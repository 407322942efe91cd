#!/usr/bin/env python
"""Extract and cache the acoustic features of every clip of a dataset split.

Reads ``<root>/mic_dev/<split>/<seq>.wav`` (4-ch tetrahedral, 24 kHz) and writes
``<root>/features_dev/<split>/<seq>.npz`` (float16 maps T x bands x 484 plus metadata): the UpLAM
latent (``--kind uplam``, the default) or classical steered response power maps of the 4x4
visibilities (``--kind srp --method bartlett|mvdr|music``, no checkpoint). Clips whose cache is
current (same kind and method, band layout, steering, checkpoint, sample rate and length) are
skipped. A bad clip is reported on one line and the others are finished; the exit code is 1 if
any clip failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from seld_d2.acoustics.audio import AudioError
from seld_d2.acoustics.features import FEATURE_KINDS, FeatureExtractor, cache_path_for
from seld_d2.acoustics.srp import SRP_METHODS
from seld_d2.data.datasets import list_sequences
from seld_d2.utils.io import WriteError, prepare_output_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root (holds mic_dev/, labels_dev/, ...)")
    p.add_argument("--split", required=True, help="split name, e.g. dev-test-sony")
    p.add_argument("--kind", default="uplam", choices=FEATURE_KINDS, help="feature kind (default uplam)")
    p.add_argument("--method", default="bartlett", choices=SRP_METHODS, help="SRP method (default bartlett)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="UpLAM checkpoint: tools/train_uplam.py's, or the official baseline's UpLAM.pth "
        "(default: random init, warned)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--bands",
        default=None,
        help="band layout for a random-init model (default mel16) or a baseline-format checkpoint",
    )
    p.add_argument(
        "--steering", default=None, choices=["fixed", "per_band"], help="steering for a random-init model"
    )
    p.add_argument("--batch-size", type=int, default=256, help="frames per UpLAM call (default 256)")
    p.add_argument("--cache-dir", default=None, help="output folder (default <root>/features_dev/<split>)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument("--force", action="store_true", help="recompute even when the cache is current")
    return p.parse_args(argv)


def list_clips(root: Path, split: str) -> list[tuple[str, Path]]:
    """(sequence name, wav path) for every clip with a wav or a label file in the split; a clip
    with labels but no wav is listed so that it is reported as missing."""
    wav_dir = root / "mic_dev" / split
    return [(seq, wav_dir / f"{seq}.wav") for seq in list_sequences(root, split, audio="mic")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.root)
    if not (root / "mic_dev" / args.split).is_dir():
        print(f"error: {root / 'mic_dev' / args.split}: split folder not found", file=sys.stderr)
        return 2
    clips = list_clips(root, args.split)
    if not clips:
        print(f"error: {root / 'mic_dev' / args.split}: no wav files", file=sys.stderr)
        return 2
    cache_dir = Path(args.cache_dir) if args.cache_dir else root / "features_dev" / args.split
    try:
        prepare_output_dir(cache_dir)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        extractor = FeatureExtractor(
            kind=args.kind,
            method=args.method,
            checkpoint=args.checkpoint,
            bands=args.bands,
            steering=args.steering,
            device=args.device,
            batch_size=args.batch_size,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    computed, current, failed, frames = 0, 0, [], 0
    t0 = time.perf_counter()
    bar = tqdm(clips, desc=f"features {args.split}", unit="clip")
    for name, wav in bar:
        bar.set_postfix_str(name)
        cache = cache_path_for(cache_dir, wav)
        try:
            if not args.force and extractor.is_cached(wav, cache):
                current += 1
                continue
            if args.force:
                cache.unlink(missing_ok=True)
            frames += extractor.cached(wav, cache).shape[0]
            computed += 1
        except AudioError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed.append(name)
        except WriteError as err:  # full disk or the like: the other clips would fail the same way
            bar.close()
            print(f"error: {err}; stopped after {computed} computed clip(s)", file=sys.stderr)
            return 2
    elapsed = time.perf_counter() - t0
    rate = f", {frames / elapsed:.1f} frames/s" if computed else ""
    print(
        f"{len(clips)} clips: {computed} computed, {current} up to date, {len(failed)} failed "
        f"-> {cache_dir}{rate}"
    )
    if failed:
        print(f"failed clips: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
