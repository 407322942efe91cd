#!/usr/bin/env python
"""The acoustic front-end end to end on a small generated dataset (the README's main job until the
detector lands).

1. Synthesise scenes with the project's generator (``seld_d2.data.synth``, free-field em32, the
   13 procedural classes) into the STARSS23 layout: 32-ch ``eigen_dev``, 4-ch ``mic_dev``,
   frames, STAIRS26-style labels, and the true event tables.
2. Train UpLAM self-supervised on the 32-ch train split (``tools/train_uplam.py``).
3. Extract and cache the test split's features with that checkpoint (``tools/extract_features.py``).
4. Score and draw them: peak direction error on single-source frames (``seld_d2.acoustics.quality``)
   of the feature maps against the true sources, next to the classical 4-ch delay-and-sum maps
   (``srp``) and APGD maps of the 32-ch recordings; pictures of a frame's 16 feature planes.

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

from seld_d2.acoustics.features import FeatureExtractor, cache_path_for, load_cached_latent  # noqa: E402
from seld_d2.acoustics.quality import apgd_reference, band_median, peak_errors  # noqa: E402
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
    srp = FeatureExtractor(kind="srp", bands=args.bands)  # the classical 4-ch baseline
    centres = np.asarray(fe.bands)
    summary = {"checkpoint": str(ckpt), "bands": fe.band_name, "clips": []}

    def median_error(maps: np.ndarray, events: list) -> float | None:
        """Median peak error of the >= 1 kHz median map over the single-source frames."""
        err = peak_errors(band_median(maps, centres), events)
        return round(float(np.nanmedian(err)), 2) if np.isfinite(err).any() else None

    for k, name in enumerate(test_clips):
        events = read_event_table(root / "events_dev" / "dev-test-demo" / f"{name}.csv")
        latent = load_cached_latent(cache_path_for(root / "features_dev" / "dev-test-demo", f"{name}.wav"))
        em32, _ = sf.read(str(root / "eigen_dev" / "dev-test-demo" / f"{name}.wav"), dtype="float64")
        ref = apgd_reference(em32, FS, args.bands, fe.steering)  # (T, B, 484): the labels' solver
        srp_maps = srp.extract_file(root / "mic_dev" / "dev-test-demo" / f"{name}.wav")
        uplam_map, apgd_map = band_median(latent, centres), band_median(ref, centres)
        summary["clips"].append(
            {
                "clip": name,
                "events": len(events),
                "single_source_frames": int(np.isfinite(peak_errors(uplam_map, events)).sum()),
                "uplam_peak_error_deg_median": median_error(latent, events),
                "srp_bartlett_peak_error_deg_median": median_error(srp_maps, events),
                "apgd_em32_peak_error_deg_median": median_error(ref, events),
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

    print(f"\n{'clip':<26} {'events':>6} {'UpLAM err':>10} {'SRP-4ch err':>12} {'APGD-32ch err':>14} (deg)")
    for c in summary["clips"]:
        print(
            f"{c['clip']:<26} {c['events']:>6} {c['uplam_peak_error_deg_median']!s:>10} "
            f"{c['srp_bartlett_peak_error_deg_median']!s:>12} {c['apgd_em32_peak_error_deg_median']!s:>14}"
        )
    print(
        "(median over single-source frames of the angle from the peak of the median map over the bands "
        ">= 1 kHz to the source; tools/feature_quality.py gives the full measure)"
    )
    print(f"\ndone in {summary['elapsed_s']} s. Outputs in {out}/:")
    print("  summary.json, maps_*.png, feature_planes.png, uplam/ (checkpoints, TensorBoard), data/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
