"""How far UpLAM's float32 (complex64) latent is from the float64 (complex128) one.

The same weights (a float64 model and its float32 copy) and the same input (tetrahedral
visibilities of a rendered clip of white-noise point sources) go through both paths, for a
randomly initialised model, one trained for a few Adam steps on that clip, and optionally
checkpoints. Prints one line per model, then all numbers as a final JSON line:

- ``max_abs``: max |x32 - x64| over frames, bands and directions;
- ``max_rel``: ``max_abs`` / max |x64|;
- ``rel_l2``: ||x32 - x64|| / ||x64||;
- ``max_abs_normalised``: max difference of the max-normalised maps (what features see).

Example:
    python tools/uplam_precision.py --bands mel16 --train-steps 20
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seld_d2.acoustics.audio import SAMPLE_RATE
from seld_d2.acoustics.geometry import TETRA_CHANNELS, azel_to_unit, em32_positions
from seld_d2.acoustics.render import render_point_source
from seld_d2.acoustics.uplam import (
    STEERING_MODES,
    UpLAM,
    max_normalise,
    mse_tv_loss,
)
from seld_d2.acoustics.visibility import visibilities


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="uplam_precision",
        description="Error of UpLAM's float32 latent against float64 (same weights, same input).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--bands", default="mel16", help="band layout: linear9 or mel16")
    p.add_argument("--steering", default="fixed", choices=STEERING_MODES)
    p.add_argument("--frames", type=int, default=64, help="100 ms frames of rendered audio")
    p.add_argument("--sources", type=int, default=2, help="white-noise point sources")
    p.add_argument("--train-steps", type=int, default=20, help="Adam steps of the trained model")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of those steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoint", type=Path, action="append", default=[], help="also measure this checkpoint"
    )
    args = p.parse_args(argv)
    if args.frames < 1 or args.train_steps < 0:
        p.error("--frames must be >= 1 and --train-steps >= 0")
    return args


def render(frames: int, sources: int, rng: np.random.Generator) -> np.ndarray:
    """White-noise point sources 1-3 m away in random directions, (frames * 2400, 32)."""
    n = frames * SAMPLE_RATE // 10
    out = np.zeros((n, 32))
    for _ in range(sources):
        pos = azel_to_unit(rng.uniform(-180, 180), rng.uniform(-60, 60)) * rng.uniform(1, 3)
        out += render_point_source(rng.standard_normal(n), pos, em32_positions(), SAMPLE_RATE)
    return 0.1 * out / np.abs(out).max()


@torch.no_grad()
def compare(model64: UpLAM, S4: torch.Tensor) -> dict[str, float]:
    """Latent errors of the float32 copy of a float64 model on complex128 input S4."""
    model64 = model64.double().eval()
    model32 = copy.deepcopy(model64).float()
    x64 = model64.latent(S4.to(torch.complex128)).numpy()
    x32 = model32.latent(S4.to(torch.complex64)).numpy().astype(np.float64)
    diff = np.abs(x32 - x64)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / np.abs(x64).max()),
        "rel_l2": float(np.linalg.norm(x32 - x64) / np.linalg.norm(x64)),
        "max_abs_normalised": float(np.abs(max_normalise(x32) - max_normalise(x64)).max()),
        "latent_max": float(np.abs(x64).max()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    audio = render(args.frames, args.sources, rng)
    S4 = torch.from_numpy(visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, args.bands))
    S32 = torch.from_numpy(visibilities(audio, SAMPLE_RATE, args.bands))

    results: dict[str, dict[str, float]] = {}
    model = UpLAM(bands=args.bands, steering=args.steering, dtype=torch.float64)
    results["random_init"] = compare(model, S4)

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in tqdm(range(args.train_steps), desc="training (float64)", leave=False):
        idx = torch.from_numpy(rng.permutation(len(S4))[:8])
        S_hat, x = model(S4[idx])
        loss = mse_tv_loss(S_hat, S32[idx], x, model.neighbours)
        opt.zero_grad()
        loss.backward()
        opt.step()
    results[f"trained_{args.train_steps}_steps"] = compare(model, S4)

    for path in args.checkpoint:
        try:
            loaded = UpLAM.from_checkpoint(path, dtype=torch.float64)
        except (OSError, RuntimeError, KeyError) as e:
            print(f"uplam_precision: error: cannot load {path}: {e}", file=sys.stderr)
            return 1
        if loaded.num_bands != S4.shape[1]:
            S4_ck = torch.from_numpy(
                visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, loaded.band_centres)
            )
        else:
            S4_ck = S4
        results[f"checkpoint:{path}"] = compare(loaded, S4_ck)

    for name, r in results.items():
        print(
            f"{name}: max abs {r['max_abs']:.3g} (latent max {r['latent_max']:.3g}), "
            f"max rel {r['max_rel']:.3g}, rel L2 {r['rel_l2']:.3g}, "
            f"max-normalised max abs {r['max_abs_normalised']:.3g}"
        )
    print(json.dumps({"bands": args.bands, "steering": args.steering, "frames": args.frames,
                      "results": results}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
