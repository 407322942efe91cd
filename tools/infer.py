#!/usr/bin/env python
"""Run a trained seld_d2 detector on clips and write challenge submission files.

    python tools/infer.py --config-file configs/SELD/run3_mel16.yaml --checkpoint out/model_best.pth \\
        --root datasets/STAIRS26 --split dev-test-sony --out submissions/run3
    python tools/infer.py --config-file ... --checkpoint ... --wav clip.wav --frames clip_frames/ --out DIR
    python tools/infer.py ... SELD.INFER.SCORE_THRESH 0.6 SELD.INFER.EXPORTER baseline   # config overrides

Per clip: acoustic features are computed when the cache is missing or stale (the kind of
``SELD.AUDIO.FEATURE_KIND``: the UpLAM of ``SELD.AUDIO.UPLAM_CHECKPOINT``, or the classical ``srp``
maps), frames are batched through the model, then the detections
go through the score thresholds, class-wise NMS, the tracker and the exporter (SPEC §8,
``SELD.INFER``), and ``<out>/<seq>.json`` is written atomically. Files that would exceed
``SELD.INFER.MAX_FILE_MB`` are thinned until they fit (and the tool says so). A bad clip is
reported on one line and the others are finished; the exit code is 1 if any clip failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from detectron2.config import get_cfg
from tqdm import tqdm

from seld_d2 import add_seld_config
from seld_d2.acoustics.audio import check_wav
from seld_d2.acoustics.features import build_feature_extractor
from seld_d2.acoustics.visibility import FRAME_RATE
from seld_d2.data.datasets import (
    DatasetError,
    check_frames,
    clip_frames_dir,
    clip_wav,
    frame_record,
    list_sequences,
)
from seld_d2.data.labels import write_labels
from seld_d2.inference.predictor import SeldPredictor
from seld_d2.inference.submission import ClipExporter
from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir, remove_stale_temps

logger = logging.getLogger("seld_d2.infer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the model's config (as trained)")
    p.add_argument("--checkpoint", required=True, help="detector weights (e.g. OUTPUT_DIR/model_best.pth)")
    p.add_argument("--out", required=True, help="submission folder: one <seq>.json per clip")
    p.add_argument("--root", help="dataset root (STARSS23 layout)")
    p.add_argument("--split", help="split of --root to run on, e.g. dev-test-sony")
    p.add_argument("--wav", help="single-clip form: a 4-channel 24 kHz wav ...")
    p.add_argument("--frames", help="... and the folder of its frames <seq>_<k:04d>.png")
    p.add_argument(
        "--feature-dir",
        help="acoustic feature cache (default <root>/SELD.AUDIO.FEATURE_CACHE_DIR/<split>, or "
        "<out>/.features for a single clip)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=None, help="frame loader processes (default: config)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    single = args.wav is not None or args.frames is not None
    if single and not (args.wav and args.frames):
        p.error("the single-clip form needs both --wav and --frames")
    if not single and not (args.root and args.split):
        p.error("give --root and --split, or --wav and --frames")
    if single and (args.root or args.split):
        p.error("--root/--split and --wav/--frames are alternatives")
    return args


def setup(args: argparse.Namespace):
    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.checkpoint
    cfg.MODEL.DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.SOLVER.AMP.ENABLED = False
    if args.num_workers is not None:
        cfg.DATALOADER.NUM_WORKERS = args.num_workers
    cfg.freeze()
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)  # as Detectron2's default_setup
    return cfg


def clip_list(args: argparse.Namespace, cfg) -> list[tuple[str, Path, Path, Path]]:
    """(sequence, wav, frames folder, feature cache file) of every clip to run."""
    if args.wav:
        wav = Path(args.wav)
        feature_dir = Path(args.feature_dir) if args.feature_dir else Path(args.out) / ".features"
        return [(wav.stem, wav, Path(args.frames), feature_dir / f"{wav.stem}.npz")]
    root = Path(args.root)
    if not (root / "mic_dev" / args.split).is_dir():
        raise SystemExit(f"error: {root / 'mic_dev' / args.split}: split folder not found")
    feature_dir = (
        Path(args.feature_dir) if args.feature_dir else root / cfg.SELD.AUDIO.FEATURE_CACHE_DIR / args.split
    )
    return [
        (
            seq,
            clip_wav(root, args.split, seq),
            clip_frames_dir(root, args.split, seq),
            feature_dir / f"{seq}.npz",
        )
        for seq in list_sequences(root, args.split)
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    summary_file = out.parent / f"{out.name}_infer_summary.json"
    try:  # before any work: the submission folder and the folder of the summary beside it
        prepare_output_dir(out)
        prepare_output_dir(out.parent, clean=False)
        remove_stale_temps(out.parent, names=[summary_file.name])
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = setup(args)
    clips = clip_list(args, cfg)
    for feature_dir in sorted({c[3].parent for c in clips}):
        remove_stale_temps(feature_dir)
    if not clips:
        print(f"error: no clips found in {args.root}/mic_dev/{args.split}", file=sys.stderr)
        return 2

    # Check every clip first so that a bad one is reported before any long computation.
    ready, failed = [], {}
    for seq, wav, frames_dir, feature_file in clips:
        try:
            info = check_wav(wav, channels=4, sample_rate=cfg.SELD.AUDIO.SAMPLE_RATE)
            audio_frames = -(-info.num_samples // (info.sample_rate // FRAME_RATE))
            n = check_frames(frames_dir, seq, audio_frames, wav=wav)
            ready.append((seq, wav, frames_dir, feature_file, n))
        except DatasetError as err:
            failed[seq] = str(err)
            print(f"skipping clip {seq}: {err}", file=sys.stderr)

    extractor = build_feature_extractor(cfg, device=cfg.MODEL.DEVICE)
    predictor = SeldPredictor(cfg)
    exporter = ClipExporter(cfg)
    summaries: dict[str, dict] = {}
    total_frames = sum(c[-1] for c in ready)
    t0 = time.perf_counter()
    bar = tqdm(total=total_frames, desc="inference", unit="frame")
    for seq, wav, frames_dir, feature_file, n in ready:
        bar.set_postfix_str(seq)
        try:
            extractor.cached(wav, feature_file)  # computes only when missing or stale
            records = [frame_record(frames_dir, args.split, seq, k, feature_file) for k in range(n)]

            def frames(records=records):
                for meta, detections in predictor.predict_records(records):
                    bar.update(1)
                    yield meta["frame_index"], detections

            annotations, summary = exporter(frames(), name=seq)
            path = out / f"{seq}.json"
            write_labels(path, annotations)
            summary.extra["bytes"] = os.path.getsize(path)
            summaries[seq] = vars(summary)
            if summary.thinned:
                print(
                    f"{seq}: thinned to every {summary.sample_step}-th pixel to stay under "
                    f"{cfg.SELD.INFER.MAX_FILE_MB:g} MiB ({summary.extra['bytes']} bytes)",
                    file=sys.stderr,
                )
        except WriteError as err:  # full disk or the like: the other clips would fail the same way
            bar.close()
            print(f"error: {err}; stopped after {len(summaries)} clip(s)", file=sys.stderr)
            return 2
        except (DatasetError, OSError, ValueError) as err:
            failed[seq] = str(err)
            tqdm.write(f"failed clip {seq}: {err}", file=sys.stderr)
    bar.close()
    elapsed = time.perf_counter() - t0
    report = {
        "config": args.config_file,
        "checkpoint": args.checkpoint,
        "clips": summaries,
        "failed": failed,
        "frames": total_frames,
        "seconds": round(elapsed, 2),
        "frames_per_s": round(total_frames / max(elapsed, 1e-9), 2),
    }
    try:
        with atomic_open(summary_file, "w") as f:
            json.dump(report, f, indent=1)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    exported = sum(s["exported"] for s in summaries.values())
    print(
        f"{len(summaries)} clips written to {out} ({exported} annotations, {total_frames} frames, "
        f"{report['frames_per_s']} frames/s); {len(failed)} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
