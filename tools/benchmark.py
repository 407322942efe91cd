#!/usr/bin/env python
"""Benchmarks of seld_d2's pipelines. Each prints readable lines and, as its last line, one JSON
object with the numbers.

  features   4-ch audio -> visibilities -> UpLAM latent (the cached acoustic features), frames/s
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from seld_d2.acoustics.features import FeatureExtractor
from seld_d2.acoustics.geometry import TETRA_CHANNELS, em32_positions
from seld_d2.acoustics.render import render_plane_wave
from seld_d2.acoustics.visibility import FRAME_RATE, visibilities

FS = 24000


def _test_audio(frames: int, seed: int = 0) -> np.ndarray:
    """A white-noise plane wave plus sensor noise at the tetrahedral capsules, (samples, 4)."""
    rng = np.random.default_rng(seed)
    n = frames * FS // FRAME_RATE
    mics = em32_positions()[list(TETRA_CHANNELS)]
    audio = render_plane_wave(rng.standard_normal(n), 40.0, 15.0, mics, FS)
    return (audio + 0.05 * rng.standard_normal(audio.shape)).astype(np.float32)


def bench_features(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    fe = FeatureExtractor(bands=args.bands, device=args.device, batch_size=args.batch_size, dtype=dtype)
    audio = _test_audio(args.frames)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    fe.latent_from_audio(audio[: FS // FRAME_RATE * min(args.frames, args.batch_size)], FS)  # warm-up
    sync()
    best_total, best_vis = float("inf"), float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        S = visibilities(audio, FS, fe.bands, dtype=np.complex64)
        t1 = time.perf_counter()
        latent = fe.latent_from_visibilities(S)
        sync()
        t2 = time.perf_counter()
        best_total, best_vis = min(best_total, t2 - t0), min(best_vis, t1 - t0)
    result = {
        "benchmark": "features",
        "frames": int(latent.shape[0]),
        "frames_per_s": round(latent.shape[0] / best_total, 1),
        "visibility_frames_per_s": round(latent.shape[0] / best_vis, 1),
        "uplam_frames_per_s": round(latent.shape[0] / (best_total - best_vis), 1),
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "bands": fe.num_bands,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
    }
    if args.reference_frames:
        # The naive path for comparison: float64 model, one frame per call.
        ref = FeatureExtractor(bands=args.bands, device=args.device, batch_size=1, dtype=torch.float64)
        part = audio[: args.reference_frames * FS // FRAME_RATE].astype(np.float64)
        t0 = time.perf_counter()
        ref.latent_from_audio(part, FS)
        sync()
        result["reference_float64_per_frame_frames_per_s"] = round(
            args.reference_frames / (time.perf_counter() - t0), 1
        )
    print(
        f"features: {result['frames']} frames, {result['frames_per_s']} frames/s end to end "
        f"(visibilities {result['visibility_frames_per_s']}/s, UpLAM {result['uplam_frames_per_s']}/s) "
        f"on {result['device']}, {result['threads']} threads, {result['bands']} bands, {args.dtype}"
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    f = sub.add_parser("features", help="acoustic feature extraction speed (frames/s)")
    f.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    f.add_argument("--frames", type=int, default=1200, help="100 ms frames to process (default 1200)")
    f.add_argument("--bands", default="mel16", help="band layout (default mel16)")
    f.add_argument("--batch-size", type=int, default=256, help="frames per UpLAM call (default 256)")
    f.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    f.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    f.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    f.add_argument(
        "--reference-frames",
        type=int,
        default=0,
        help="also time the naive float64 one-frame-per-call path on this many frames",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = {"features": bench_features}[args.which](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
