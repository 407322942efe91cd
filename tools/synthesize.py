#!/usr/bin/env python
"""Generate a synthetic SELD split in the STARSS23/STAIRS26 layout (SPEC §1, §5).

Writes, under --out, for each clip <seq> of --split:
  eigen_dev/<split>/<seq>.wav               32-ch Eigenmike em32, float32, 24 kHz
  mic_dev/<split>/<seq>.wav                 its 4 tetrahedral capsules (STARSS23 MIC order)
  frames_dev/<split>/<seq>/<seq>_<k>.png    360x180 RGB video at 10 fps (--video-size to change)
  labels_dev/<split>/<seq>_std.json         STAIRS26-style energy labels (APGD x Gaussian)
  events_dev/<split>/<seq>.csv              the true events: class, az, el, distance, onset, offset
  events_dev/<split>/<seq>_scene.json       room, noise and rendering settings

Defaults are the technical report's settings: 5-20 static events per 60 s, at most 4 at once,
0.5-3 m from the array within +-0.3 m of its height, reference level -50 dB, diffuse background
noise with probability 0.5. The video varies each object's look within its class's family, leaves
30 % of the sounding events invisible and adds 3 silent distractors per clip (--video-style plain:
flat class colours, every event, no distractor, the old frames). Video settings never change the
audio, labels or event table. The same --seed gives byte-identical files. BLAS runs single-threaded
(many tiny matrix operations; threads only contend on small machines).

Example:
  python tools/synthesize.py --out datasets/synth --split dev-train-synth --num-clips 10 --seed 0
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from functools import partial
from pathlib import Path

from seld_d2.acoustics.streaming import MAP_SOLVERS, solve_maps
from seld_d2.data.classes import NUM_CLASSES, class_index
from seld_d2.data.synth import (
    BackendUnavailable,
    SceneConfig,
    SynthConfig,
    SynthesisError,
    VideoConfig,
    synthesize_split,
)
from seld_d2.data.synth.al_video import VIDEO_RENDERERS
from seld_d2.data.synth.render import BACKENDS
from seld_d2.utils.io import WriteError, prepare_output_dir, remove_stale_temps


def video_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 4:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT (e.g. 360x180), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_classes(text: str) -> tuple[int, ...]:
    """``"all"`` or comma-separated class ids/names -> sorted unique ids (ValueError if none)."""
    if text.strip().lower() == "all":
        return tuple(range(NUM_CLASSES))
    classes = tuple(sorted({class_index(c.strip()) for c in text.split(",") if c.strip()}))
    if not classes:
        raise ValueError("--classes: no class given")
    return classes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="dataset root to write into")
    p.add_argument("--split", required=True, help="split name, e.g. dev-train-synth")
    p.add_argument("--num-clips", type=int, required=True, help="number of clips")
    p.add_argument("--duration", type=float, default=60.0, help="clip length in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--backend", default="freefield", choices=BACKENDS, help="renderer (default freefield)")
    p.add_argument("--dry-sources", default=None, help="folder of dry clips, DIR/<class id or name>/*.wav")
    p.add_argument(
        "--video-size", type=video_size, default=(360, 180), help="frame size WxH (default 360x180)"
    )
    p.add_argument("--no-video", action="store_true", help="skip the frames")
    p.add_argument(
        "--video-renderer",
        default="project",
        choices=VIDEO_RENDERERS,
        help="project: the project's ray-cast video (default); audiblelight: AudibleLight's pyvista/VTK "
        "360-degree renderer with its culling and camera-azimuth faults fixed (extra synth-video)",
    )
    p.add_argument(
        "--video-render-size",
        type=video_size,
        default=None,
        help="audiblelight video: render size WxH, 2:1, resized to --video-size (default: --video-size)",
    )
    p.add_argument(
        "--video-images",
        default=None,
        help="audiblelight video: folder of event images DIR/<class name>/*.png|jpg (default: the "
        "objects' own looks)",
    )
    p.add_argument(
        "--video-style",
        default="varied",
        choices=("varied", "plain"),
        help="varied: each object's own look within its class's family (default); plain: flat class "
        "colours (the old look; with it the next two default to 0)",
    )
    p.add_argument(
        "--invisible-share",
        type=float,
        default=None,
        help="share of sounding events without an object in the video (default 0.3; plain 0)",
    )
    p.add_argument(
        "--distractors", type=int, default=None, help="silent objects per clip (default 3; plain 0)"
    )
    p.add_argument("--no-labels", action="store_true", help="skip the labels (APGD maps)")
    p.add_argument(
        "--label-solver",
        default="apgd",
        choices=MAP_SOLVERS,
        help="imaging solver of the labels: apgd (STAIRS26's, default) or a streaming/exact solver",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="clips rendered in parallel processes (default 1); the files do not depend on it",
    )
    p.add_argument("--first-index", type=int, default=1, help="index of the first clip's name (default 1)")
    p.add_argument(
        "--prefix", default=None, help="clip name prefix (default fold9_room<R>, R from the split)"
    )
    g = p.add_argument_group("scene settings (defaults: the report's)")
    g.add_argument(
        "--classes",
        default="all",
        help="comma-separated class ids or names the events are drawn from (default all 13)",
    )
    g.add_argument("--min-events", type=int, default=5, help="events per 60 s, minimum (default 5)")
    g.add_argument("--max-events", type=int, default=20, help="events per 60 s, maximum (default 20)")
    g.add_argument("--max-overlap", type=int, default=4, help="most simultaneous events (default 4)")
    g.add_argument("--min-distance", type=float, default=0.5, help="metres (default 0.5)")
    g.add_argument("--max-distance", type=float, default=3.0, help="metres (default 3.0)")
    g.add_argument(
        "--max-height", type=float, default=0.3, help="|height| re the array, metres (default 0.3)"
    )
    g.add_argument("--ref-db", type=float, default=-50.0, help="reference (noise) level, dBFS (default -50)")
    g.add_argument(
        "--snr",
        type=float,
        nargs=2,
        default=(5.0, 30.0),
        metavar=("LOW", "HIGH"),
        help="event level re ref-db at 1 m, dB (default 5 30)",
    )
    g.add_argument(
        "--noise-prob", type=float, default=0.5, help="probability of background noise (default 0.5)"
    )
    g.add_argument(
        "--min-separation",
        type=float,
        default=0.0,
        help="degrees between simultaneous events (default 0: unconstrained)",
    )
    g.add_argument(
        "--reflection-order",
        type=int,
        default=0,
        help="freefield: shoebox image-source order for early reflections (default 0)",
    )
    g.add_argument(
        "--sensor-noise-db", type=float, default=None, help="capsule self-noise, dBFS (default off)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_clips < 1:
        print(f"error: --num-clips must be >= 1, got {args.num_clips}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.dry_sources is not None and not Path(args.dry_sources).is_dir():
        print(f"error: {args.dry_sources}: dry-source folder not found", file=sys.stderr)
        return 2
    try:  # before any work; the temporaries of a killed run are removed from the split's folders
        prepare_output_dir(args.out, clean=False)
        for folder in Path(args.out).glob(f"*/{args.split}"):
            remove_stale_temps(folder, recursive=True)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        scene = SceneConfig(
            duration=args.duration,
            min_events=args.min_events,
            max_events=args.max_events,
            max_overlap=args.max_overlap,
            min_distance=args.min_distance,
            max_distance=args.max_distance,
            max_height=args.max_height,
            ref_db=args.ref_db,
            snr_range=tuple(args.snr),
            noise_probability=args.noise_prob,
            min_separation_deg=args.min_separation,
            classes=parse_classes(args.classes),
        )
        plain = args.video_style == "plain"
        video = VideoConfig(
            args.video_style,
            (0.0 if plain else 0.3) if args.invisible_share is None else args.invisible_share,
            (0 if plain else 3) if args.distractors is None else args.distractors,
        )
        config = SynthConfig(
            scene=scene,
            video=video,
            backend=args.backend,
            reflection_order=args.reflection_order,
            video_size=None if args.no_video else args.video_size,
            video_renderer=args.video_renderer,
            video_render_size=args.video_render_size,
            video_images=args.video_images,
            labels=not args.no_labels,
            dry_sources=args.dry_sources,
            sensor_noise_db=args.sensor_noise_db,
        )
        t0 = time.perf_counter()
        solver = None if args.label_solver == "apgd" else partial(solve_maps, solver=args.label_solver)
        names = synthesize_split(
            args.out,
            args.split,
            args.num_clips,
            args.seed,
            config,
            args.first_index,
            args.prefix,
            label_solver=solver,
            workers=args.workers,
        )
    except SynthesisError as err:  # the other clips were written
        for name, problem in err.failed.items():
            print(f"error: clip {name} failed: {problem}", file=sys.stderr)
        print(
            f"{len(err.written)} clips written -> {args.out} [{args.split}]; {len(err.failed)} failed",
            file=sys.stderr,
        )
        return 1
    except (BackendUnavailable, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    audio_s = len(names) * scene.num_frames / 10.0
    print(
        f"{len(names)} clips ({audio_s:.0f} s of audio) -> {args.out} [{args.split}] in {elapsed:.1f} s "
        f"({audio_s / max(elapsed, 1e-9):.2f}x real time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
