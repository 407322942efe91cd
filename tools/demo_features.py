#!/usr/bin/env python
"""The acoustic front-end end to end on a small generated dataset (the README's main job until the
detector lands).

1. Synthesise scenes with the project's generator (``seld_d2.data.synth``, free-field em32, the
   13 procedural classes) into the STARSS23 layout: 32-ch ``eigen_dev``, 4-ch ``mic_dev``,
   frames, STAIRS26-style labels, and the true event tables.
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
from seld_d2.acoustics.features import FeatureExtractor, cache_path_for, load_cached_latent  # noqa: E402
from seld_d2.acoustics.solvers import GramOperator, apgd  # noqa: E402
from seld_d2.acoustics.uplam import steering_operator  # noqa: E402
from seld_d2.acoustics.visibility import visibilities  # noqa: E402
from seld_d2.data.classes import CLASS_NAMES  # noqa: E402
from seld_d2.data.synth import SceneConfig, SynthConfig, synthesize_split  # noqa: E402
from seld_d2.data.synth.generate import read_event_table  # noqa: E402
from seld_d2.utils.io import atomic_open  # noqa: E402
from seld_d2.utils.visualize import plot_band_grid, plot_maps  # noqa: E402

FS = 24000


def scene_config(seconds: float) -> SynthConfig:
    """Short scenes with a few well-separated events (no video: the front-end needs none)."""
    scene = SceneConfig(duration=seconds, min_events=2, max_events=4, max_overlap=2, min_separation_deg=60.0)
    return SynthConfig(scene=scene, video_size=None)


def peak_errors(maps: np.ndarray, events: list, grid: np.ndarray) -> np.ndarray:
    """Angle from each frame's map peak (T, N) to the nearest event active in that frame, degrees;
    frames without an active event are left out."""
    peaks = grid[np.argmax(maps, axis=-1)]
    errors = []
    for t in range(len(maps)):
        active = [e.direction for e in events if e.onset_frame <= t < e.offset_frame]
        if active:
            errors.append(geo.angular_distance_deg(peaks[t][None, :], np.stack(active)).min())
    return np.asarray(errors)


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
    t_start = time.perf_counter()

    print(f"[1/4] synthesising free-field em32 scenes into {root}")
    config = scene_config(args.seconds)
    synthesize_split(root, "dev-train-demo", args.train_clips, args.seed, config)
    synthesize_split(root, "dev-val-demo", 1, args.seed, config)
    test_clips = synthesize_split(root, "dev-test-demo", 2, args.seed, config)

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
    for k, name in enumerate(test_clips):
        events = read_event_table(root / "events_dev" / "dev-test-demo" / f"{name}.csv")
        latent = load_cached_latent(cache_path_for(root / "features_dev" / "dev-test-demo", f"{name}.wav"))
        em32, _ = sf.read(str(root / "eigen_dev" / "dev-test-demo" / f"{name}.wav"), dtype="float64")
        ref = apgd(visibilities(em32, FS, args.bands), op)  # (T, B, 484): the labels' solver
        uplam_map = np.median(latent[:, usable], axis=1)
        apgd_map = np.median(ref[:, usable], axis=1)
        err_uplam, err_apgd = peak_errors(uplam_map, events, grid), peak_errors(apgd_map, events, grid)
        summary["clips"].append(
            {
                "clip": name,
                "events": len(events),
                "frames_with_events": int(len(err_uplam)),
                "uplam_peak_error_deg_median": round(float(np.median(err_uplam)), 2),
                "apgd_em32_peak_error_deg_median": round(float(np.median(err_apgd)), 2),
            }
        )
        # Draw the frame with the most active events.
        counts = [sum(e.onset_frame <= t < e.offset_frame for e in events) for t in range(len(latent))]
        t = int(np.argmax(counts))
        active = [e for e in events if e.onset_frame <= t < e.offset_frame]
        marks = [(e.azimuth, e.elevation) for e in active]
        plot_maps(
            [fe.to_canvas(apgd_map[t]), fe.to_canvas(uplam_map[t])],
            ["APGD of the 32-ch recording (median >= 1 kHz)", "UpLAM features from 4 ch (median >= 1 kHz)"],
            out / f"maps_{k}.png",
            marks,
            suptitle=f"{name}, frame {t}: " + ", ".join(CLASS_NAMES[e.category_id] for e in active) + " (x)",
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

    print(f"\n{'clip':<26} {'events':>6} {'UpLAM err (deg)':>16} {'APGD-32ch err (deg)':>20}")
    for c in summary["clips"]:
        print(
            f"{c['clip']:<26} {c['events']:>6} {c['uplam_peak_error_deg_median']:>16} "
            f"{c['apgd_em32_peak_error_deg_median']:>20}"
        )
    print("(median over frames with events of the angle from the map's peak to the nearest active event)")
    print(f"\ndone in {summary['elapsed_s']} s. Outputs in {out}/:")
    print("  summary.json, maps_*.png, feature_planes.png, uplam/ (checkpoints, TensorBoard), data/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
