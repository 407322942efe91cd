#!/usr/bin/env python
"""The acoustic front-end end to end on a small generated dataset (the README's main job until the
detector lands).

1. Render free-field em32 scenes (static noise sources at known directions) into the STARSS23
   layout: 32-ch ``eigen_dev`` and 4-ch tetrahedral ``mic_dev``, 24 kHz, plus the true sources.
2. Train UpLAM self-supervised on the 32-ch train split (``tools/train_uplam.py``).
3. Extract and cache the test split's features with that checkpoint (``tools/extract_features.py``).
4. Score and draw them: peak direction error of the feature maps against the true sources, next
   to APGD maps of the 32-ch recordings; pictures of a frame's 16 feature planes.

Everything goes into ``--out``; the last lines printed say where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling tools

import extract_features  # noqa: E402
import train_uplam  # noqa: E402

from seld_d2.acoustics import geometry as geo  # noqa: E402
from seld_d2.acoustics.features import FeatureExtractor, cache_path_for  # noqa: E402
from seld_d2.acoustics.render import render_point_source  # noqa: E402
from seld_d2.acoustics.solvers import GramOperator, apgd  # noqa: E402
from seld_d2.acoustics.uplam import steering_operator  # noqa: E402
from seld_d2.acoustics.visibility import visibilities  # noqa: E402
from seld_d2.utils.io import atomic_open  # noqa: E402
from seld_d2.utils.visualize import plot_band_grid, plot_maps  # noqa: E402

FS = 24000


def coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise with a random spectral tilt and 3-8 Hz amplitude modulation (a stand-in for the
    procedural class sources that the synthetic-data generator will provide)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec *= (np.maximum(f, 100.0) / 1000.0) ** rng.uniform(-1.0, 0.0)
    x = np.fft.irfft(spec, n)
    t = np.arange(n) / FS
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 8) * t)
    return x / np.std(x)


def make_split(root: Path, split: str, clips: int, seconds: float, rng: np.random.Generator) -> list[dict]:
    """Render ``clips`` scenes of 1-2 static sources; write 32-ch and 4-ch wavs; return truths."""
    mics = geo.em32_positions()
    truths = []
    for c in range(clips):
        name = f"fold9_demo{split[:2]}_{c:03d}"
        n = int(seconds * FS)
        audio = np.zeros((n, 32))
        sources = []
        for _ in range(rng.integers(1, 3)):
            az, el = rng.uniform(-180, 180), np.rad2deg(np.arcsin(rng.uniform(-0.6, 0.8)))
            dist = rng.uniform(1.0, 2.5)
            pos = geo.azel_to_unit(az, el) * dist
            audio += render_point_source(coloured_noise(rng, n) * dist, pos, mics, FS)
            sources.append(
                {"az": round(float(az), 2), "el": round(float(el), 2), "distance_m": round(dist, 3)}
            )
        audio += 0.03 * rng.standard_normal(audio.shape)
        audio = (0.25 * audio / np.max(np.abs(audio))).astype(np.float32)
        for sub, data in (("eigen_dev", audio), ("mic_dev", audio[:, list(geo.TETRA_CHANNELS)])):
            path = root / sub / split / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), data, FS, subtype="FLOAT")
        truths.append({"clip": name, "sources": sources})
    return truths


def peak_errors(maps: np.ndarray, sources: list[dict], grid: np.ndarray) -> np.ndarray:
    """Angle from each map's peak (T, N) to the nearest true source, degrees, (T,)."""
    peaks = grid[np.argmax(maps, axis=-1)]
    truth = geo.azel_to_unit([s["az"] for s in sources], [s["el"] for s in sources])
    return geo.angular_distance_deg(peaks[:, None, :], truth[None]).min(axis=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/demo", help="output folder (default output/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train-clips", type=int, default=6, help="32-ch training scenes (default 6)")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each scene (default 6 s)")
    p.add_argument("--epochs", type=int, default=6, help="UpLAM training epochs (default 6)")
    p.add_argument("--lr", type=float, default=3e-4, help="UpLAM learning rate (default 3e-4)")
    p.add_argument("--bands", default="mel16", help="band layout (default mel16)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    root = out / "data"
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    print(f"[1/4] rendering free-field em32 scenes into {root}")
    make_split(root, "dev-train-demo", args.train_clips, args.seconds, rng)
    make_split(root, "dev-val-demo", 1, args.seconds, rng)
    truths = make_split(root, "dev-test-demo", 2, args.seconds, rng)
    with atomic_open(root / "dev-test-demo_sources.json", "w") as f:
        json.dump(truths, f, indent=1)

    print("[2/4] training UpLAM (self-supervised, 4x4 -> 32x32 visibilities)")
    ckpt_dir = out / "uplam"
    rc = train_uplam.main(
        [
            "--root", str(root), "--train-split", "dev-train-demo", "--val-split", "dev-val-demo",
            "--out", str(ckpt_dir), "--bands", args.bands, "--epochs", str(args.epochs),
            "--lr", str(args.lr), "--seed", str(args.seed),
        ]
    )  # fmt: skip
    if rc != 0:
        print("error: UpLAM training failed", file=sys.stderr)
        return rc
    ckpt = ckpt_dir / "best.pth"

    print("[3/4] extracting features of the test split")
    rc = extract_features.main(["--root", str(root), "--split", "dev-test-demo", "--checkpoint", str(ckpt)])
    if rc != 0:
        return rc

    print("[4/4] scoring and drawing")
    fe = FeatureExtractor(checkpoint=ckpt)
    centres = np.asarray(fe.bands)
    usable = centres >= 1000  # SPEC §3: below ~1 kHz the 4.2 cm array barely resolves direction
    grid = geo.fibonacci_grid()
    op = GramOperator(steering_operator(args.bands, fe.model.steering))
    summary = {"checkpoint": str(ckpt), "bands": fe.model.band_name, "clips": []}
    for k, truth in enumerate(truths):
        name, sources = truth["clip"], truth["sources"]
        latent = np.load(cache_path_for(root / "features_dev" / "dev-test-demo", f"{name}.wav"))["latent"]
        latent = latent.astype(np.float32)
        em32, _ = sf.read(str(root / "eigen_dev" / "dev-test-demo" / f"{name}.wav"), dtype="float64")
        ref = apgd(visibilities(em32, FS, args.bands), op)  # (T, B, 484): the labels' solver
        uplam_map = np.median(latent[:, usable], axis=1)
        apgd_map = np.median(ref[:, usable], axis=1)
        err_uplam, err_apgd = (peak_errors(uplam_map, sources, grid), peak_errors(apgd_map, sources, grid))
        summary["clips"].append(
            {
                "clip": name,
                "sources": sources,
                "frames": int(latent.shape[0]),
                "uplam_peak_error_deg_median": round(float(np.median(err_uplam)), 2),
                "apgd_em32_peak_error_deg_median": round(float(np.median(err_apgd)), 2),
            }
        )
        marks = [(s["az"], s["el"]) for s in sources]
        t = latent.shape[0] // 2
        plot_maps(
            [fe.to_canvas(apgd_map[t]), fe.to_canvas(uplam_map[t])],
            ["APGD of the 32-ch recording (median >= 1 kHz)", "UpLAM features from 4 ch (median >= 1 kHz)"],
            out / f"maps_{k}.png",
            marks,
            suptitle=f"{name}, frame {t} (x = true source)",
        )
        if k == 0:
            plot_band_grid(
                fe.to_canvas(latent[t]),
                centres,
                out / "feature_planes.png",
                marks,
                suptitle=f"{name}, frame {t}: the {len(centres)} acoustic input planes",
            )
    summary["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)

    print(f"\n{'clip':<22} {'sources':>7} {'UpLAM err (deg)':>16} {'APGD-32ch err (deg)':>20}")
    for c in summary["clips"]:
        print(
            f"{c['clip']:<22} {len(c['sources']):>7} {c['uplam_peak_error_deg_median']:>16} "
            f"{c['apgd_em32_peak_error_deg_median']:>20}"
        )
    print("(median over frames of the angle from the map's peak to the nearest true source)")
    print(f"\ndone in {summary['elapsed_s']} s. Outputs in {out}/:")
    print("  summary.json, maps_*.png, feature_planes.png, uplam/ (checkpoints, TensorBoard), data/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
