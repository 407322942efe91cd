#!/usr/bin/env python
"""Do the acoustic features localise? Scores any feature kind on a split with true event tables.

For every clip of ``<root>/mic_dev/<split>`` that has ``<root>/events_dev/<split>/<seq>.csv``
(written by ``tools/synthesize.py``), the features are computed from the 4-ch wav (``--kind
uplam`` with ``--checkpoint``, or random init; ``--kind srp --method bartlett|mvdr|music``) or
read from a cache folder (``--features-dir``, any kind), and scored per band and for the median
map over the bands >= 1 kHz (``seld_d2.acoustics.quality``):

* peak angular error on single-source frames: median, share within 10 and 20 degrees;
* recall of the active sources among the top-k local maxima on multi-source frames;
* where ``<root>/eigen_dev/<split>/<seq>.wav`` exists: PSNR and mean absolute difference of the
  max-normalised maps against the 32-ch APGD map (``--no-reference`` skips it).

Writes ``<out>/quality.json`` and ``<out>/planes.png`` (the frame with the most active events of
the first clip: every band and the median, true directions marked). The last line printed is
the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seld_d2.acoustics import quality as Q
from seld_d2.acoustics.audio import SAMPLE_RATE, AudioError, read_wav
from seld_d2.acoustics.features import (
    FeatureExtractor,
    latent_to_canvas,
    load_cached_latent,
    read_cache_metadata,
)
from seld_d2.acoustics.geometry import canvas_nearest_index, fibonacci_grid
from seld_d2.acoustics.srp import SRP_METHODS
from seld_d2.acoustics.uplam import max_normalise
from seld_d2.data.classes import CLASS_NAMES
from seld_d2.data.synth.generate import read_event_table
from seld_d2.utils.io import atomic_open
from seld_d2.utils.visualize import plot_band_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root (mic_dev/, events_dev/, [eigen_dev/])")
    p.add_argument("--split", required=True, help="split name")
    p.add_argument("--kind", default="uplam", choices=["uplam", "srp"], help="feature kind (default uplam)")
    p.add_argument("--method", default="bartlett", choices=SRP_METHODS, help="SRP method (default bartlett)")
    p.add_argument("--checkpoint", default=None, help="UpLAM checkpoint (default: random init, warned)")
    p.add_argument("--bands", default=None, help="band layout without a checkpoint (default mel16)")
    p.add_argument(
        "--steering", default=None, choices=["fixed", "per_band"], help="steering of a random-init UpLAM"
    )
    p.add_argument(
        "--features-dir", default=None, help="score the cached features <DIR>/<seq>.npz instead of computing"
    )
    p.add_argument(
        "--reference-steering",
        default=None,
        choices=["fixed", "per_band"],
        help="steering of the 32-ch APGD reference (default: the features')",
    )
    p.add_argument("--no-reference", action="store_true", help="skip the 32-ch APGD agreement")
    p.add_argument("--tol", type=float, default=20.0, help="top-k recall: a peak finds a source within (deg)")
    p.add_argument("--max-clips", type=int, default=None, help="score at most this many clips")
    p.add_argument("--device", default="cpu", help="torch device for UpLAM (default cpu)")
    p.add_argument("--out", default="output/feature_quality", help="folder for quality.json, planes.png")
    return p.parse_args(argv)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _table(summary: dict) -> str:
    rows = [
        f"{'column':>14} {'median err':>10} {'<=10 deg':>8} {'<=20 deg':>8} {'recall':>7} {'PSNR dB':>8} "
        f"{'abs diff':>9}"
    ]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for name, c in summary["columns"].items():
        rows.append(
            f"{name:>14} {fmt(c['median_deg'], '10.2f')} {fmt(c['within_10'], '8.3f')} "
            f"{fmt(c['within_20'], '8.3f')} {fmt(c['recall'], '7.3f')} {fmt(c.get('psnr_db'), '8.2f')} "
            f"{fmt(c.get('mad'), '9.5f')}"
        )
    return "\n".join(rows)


def draw(path: Path, maps: np.ndarray, centres: np.ndarray, events: list, name: str, label: str) -> None:
    """The clip's frame with the most active events: every band and the >= 1 kHz median."""
    active = Q.event_activity(events, len(maps))
    t = int(np.argmax(active.sum(axis=1)))
    shown = [events[i] for i in np.flatnonzero(active[t])]
    planes = np.concatenate([max_normalise(maps[t]), Q.band_median(maps[t : t + 1], centres)], axis=0)
    plot_band_grid(
        latent_to_canvas(planes, canvas_nearest_index(fibonacci_grid())),
        centres,
        path,
        [(e.azimuth, e.elevation) for e in shown],
        suptitle=f"{label}: {name}, frame {t}: "
        + (", ".join(CLASS_NAMES[e.category_id] for e in shown) or "no event")
        + " (x: true directions)",
        titles=Q.column_names(centres),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.root)
    mic_dir, ev_dir, em_dir = (root / d / args.split for d in ("mic_dev", "events_dev", "eigen_dev"))
    if not mic_dir.is_dir():
        return _fail(f"{mic_dir}: split folder not found")
    if not ev_dir.is_dir():
        return _fail(f"{ev_dir}: no true event tables (generate the split with tools/synthesize.py)")
    clips = sorted(p.stem for p in ev_dir.glob("*.csv") if (mic_dir / f"{p.stem}.wav").is_file())
    if not clips:
        return _fail(f"{ev_dir}: no event table with a wav in {mic_dir}")
    clips = clips[: args.max_clips] if args.max_clips else clips

    extractor = None
    if args.features_dir:
        first = Path(args.features_dir) / f"{clips[0]}.npz"
        meta = read_cache_metadata(first)
        if meta is None or "band_centres" not in meta:
            return _fail(f"{first}: missing or unreadable feature cache")
        centres = np.asarray(meta["band_centres"])
        label = f"{meta.get('kind', 'uplam')} features from {args.features_dir}"
        bands, steering = centres, meta.get("steering", "fixed")
    else:
        try:
            extractor = FeatureExtractor(
                kind=args.kind,
                method=args.method,
                checkpoint=args.checkpoint,
                bands=args.bands,
                steering=args.steering,
                device=args.device,
            )
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            return _fail(str(err))
        centres = np.asarray(extractor.bands)
        label = args.kind + (f" {args.method}" if args.kind == "srp" else f" {extractor.checkpoint_id}")
        bands, steering = centres, extractor.steering
    if not (centres >= Q.USABLE_MIN_HZ).any():
        return _fail(f"no band is centred at >= {Q.USABLE_MIN_HZ:g} Hz: nothing to score")
    ref_steering = args.reference_steering or steering

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores, with_ref = [], 0
    for k, name in enumerate(tqdm(clips, desc="feature quality", unit="clip")):
        try:
            events = read_event_table(ev_dir / f"{name}.csv")
            if extractor is not None:
                maps = extractor.extract_file(mic_dir / f"{name}.wav")
            else:
                maps = load_cached_latent(Path(args.features_dir) / f"{name}.npz")
            reference = None
            if not args.no_reference and (em_dir / f"{name}.wav").is_file():
                audio32, _ = read_wav(em_dir / f"{name}.wav", channels=32, sample_rate=SAMPLE_RATE)
                reference = Q.apgd_reference(audio32.astype(np.float64), SAMPLE_RATE, bands, ref_steering)
                T = min(len(maps), len(reference))
                maps, reference = maps[:T], reference[:T]
                with_ref += 1
        except (AudioError, OSError, ValueError) as err:
            return _fail(str(err))
        if maps.ndim != 3 or maps.shape[1] != len(centres):
            return _fail(f"{name}: features of shape {maps.shape}, expected (T, {len(centres)}, N)")
        scores.append(Q.frame_scores(maps, events, centres, reference, tol_deg=args.tol))
        if k == 0:
            draw(out / "planes.png", maps, centres, events, name, label)

    summary = Q.summarise(Q.concat_scores(scores), Q.column_names(centres))
    summary.update(
        {
            "features": label,
            "split": args.split,
            "clips": len(clips),
            "reference": f"APGD em32 {ref_steering} steering ({with_ref} clips)" if with_ref else None,
            "tol_deg": args.tol,
        }
    )
    with atomic_open(out / "quality.json", "w") as f:
        json.dump(summary, f, indent=1)
    print(_table(summary))
    print(
        f"{label}: {len(clips)} clips, {summary['single_frames']} single-source frames (peak error), "
        f"{summary['multi_frames']} multi-source frames (top-k recall within {args.tol:g} deg); "
        f"{out / 'quality.json'}, {out / 'planes.png'}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
