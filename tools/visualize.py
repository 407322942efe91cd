#!/usr/bin/env python
"""Draw a clip's ground truth and predictions on its 360-degree video frames.

    python tools/visualize.py --root R --split dev-test-sony --seq fold4_room23_mix001 \\
        --pred output/run/inference --every 10 --gif

Ground truth is ``<root>/labels_dev/<split>/<seq>_std.json`` (or ``<seq>.json``); predictions,
if given, ``<pred>/<seq>.json`` (submission format, with scores). Each instance is drawn in its
class colour with opacity proportional to its energy, an outline and a label (class, score,
instance id). Writes into ``--out`` (default ``output/visualize/<split>/<seq>``):

* ``<seq>_<k:04d>.png`` for the chosen frames: ground truth | prediction, azimuth/elevation axes;
* ``<seq>.gif`` / ``<seq>.mp4`` (``--gif`` / ``--mp4``): the whole clip, ground truth | prediction;
* ``<seq>_features_<k:04d>.png`` (``--features``): the cached acoustic feature planes of frame k
  (``<root>/features_dev/<split>/<seq>.npz``, written by ``tools/extract_features.py``), with the
  ground-truth energy peaks marked.

A missing frame PNG is drawn black (one warning). Bad input ends the run with one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seld_d2.acoustics.audio import AudioError, check_wav
from seld_d2.acoustics.features import latent_to_canvas, load_cached_latent, read_cache_metadata
from seld_d2.acoustics.geometry import canvas_nearest_index, fibonacci_grid, pixel_to_azel
from seld_d2.acoustics.visibility import FRAME_RATE
from seld_d2.data.datasets import FrameError, frame_file, label_path, load_frame
from seld_d2.data.labels import Annotation, LabelError, group_by_frame, load_labels
from seld_d2.utils.io import WriteError, prepare_output_dir
from seld_d2.utils.visualize import (
    annotation_energy,
    overlay_annotations,
    plot_band_grid,
    plot_overlays,
    save_gif,
    save_mp4,
    side_by_side,
)

PNG_SCALE = 2  # per-frame PNGs: overlays drawn at 720x360 so labels stay sharp in the figure


class InputError(Exception):
    """Bad command-line input; the message is the one line printed."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root (holds frames_dev/, labels_dev/, ...)")
    p.add_argument("--split", required=True, help="split name, e.g. dev-test-sony")
    p.add_argument("--seq", required=True, help="clip name, e.g. fold4_room23_mix001")
    p.add_argument("--pred", default=None, help="folder of prediction files <seq>.json (submission format)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--frames", default=None, help="comma-separated frame indices for PNGs, e.g. 0,10,20")
    pick.add_argument("--every", type=int, default=None, help="a PNG every N frames (default 10)")
    p.add_argument("--out", default=None, help="output folder (default output/visualize/<split>/<seq>)")
    p.add_argument("--gif", action="store_true", help="write the whole clip as <seq>.gif")
    p.add_argument("--mp4", action="store_true", help="write the whole clip as <seq>.mp4 (PyAV)")
    p.add_argument("--fps", type=float, default=float(FRAME_RATE), help="animation frame rate (default 10)")
    p.add_argument("--min-score", type=float, default=0.0, help="hide predictions scoring below this")
    p.add_argument("--features", action="store_true", help="draw the cached acoustic feature planes")
    p.add_argument(
        "--feature-frame", type=int, default=None, help="frame of --features (default: first chosen frame)"
    )
    return p.parse_args(argv)


@dataclass
class Clip:
    """Everything drawn for one clip."""

    seq: str
    frames_dir: Path
    num_frames: int
    gt: dict[int, list[Annotation]]
    pred: dict[int, list[Annotation]] | None
    gt_file: Path
    pred_file: Path | None


def count_frames(frames_dir: Path, seq: str) -> int:
    """1 + the largest frame index among ``<seq>_<k:04d>.png`` files (0 without any)."""
    if not frames_dir.is_dir():
        return 0
    pattern = re.compile(rf"^{re.escape(seq)}_(\d{{4,}})\.png$")
    found = [int(m.group(1)) for name in os.listdir(frames_dir) if (m := pattern.match(name))]
    return max(found) + 1 if found else 0


def load_clip(args: argparse.Namespace) -> Clip:
    """Read and check labels, predictions and the frame folder; raises :class:`InputError`."""
    root = Path(args.root)
    gt_file = label_path(root, args.split, args.seq)
    if gt_file is None:
        missing = root / "labels_dev" / args.split / f"{args.seq}_std.json"
        raise InputError(f"{missing}: label file not found (nor {args.seq}.json)")
    try:
        gt = load_labels(gt_file)
        pred_file, pred = None, None
        if args.pred is not None:
            pred_file = Path(args.pred) / f"{args.seq}.json"
            if not pred_file.is_file():
                raise InputError(f"{pred_file}: prediction file not found")
            pred = [a for a in load_labels(pred_file, gt_values=False) if (a.score or 0.0) >= args.min_score]
    except LabelError as err:
        raise InputError(str(err)) from None
    frames_dir = root / "frames_dev" / args.split / args.seq
    n = count_frames(frames_dir, args.seq)
    if n == 0:
        # Still useful without video: draw on black, the clip as long as its audio (or its labels).
        wav = root / "mic_dev" / args.split / f"{args.seq}.wav"
        try:
            n = check_wav(wav, channels=4).num_frames
        except AudioError:
            n = max((a.frame for a in gt), default=-1) + 1
        if n == 0:
            raise InputError(f"{frames_dir}: no frames, no audio, and no labelled events to set the length")
    return Clip(
        args.seq,
        frames_dir,
        n,
        group_by_frame(gt),
        group_by_frame(pred) if pred is not None else None,
        gt_file,
        pred_file,
    )


def chosen_frames(args: argparse.Namespace, num_frames: int) -> list[int]:
    """Frames to draw as PNGs, from --frames or --every (default every 10th)."""
    if args.frames is not None:
        try:
            frames = [int(t) for t in args.frames.split(",") if t.strip()]
        except ValueError:
            raise InputError(f"--frames: expected comma-separated integers, got {args.frames!r}") from None
        bad = [k for k in frames if not 0 <= k < num_frames]
        if bad:
            raise InputError(f"--frames: frame {bad[0]} is outside the clip's frames 0-{num_frames - 1}")
        return sorted(set(frames))
    every = 10 if args.every is None else args.every
    if every < 1:
        raise InputError(f"--every: must be a positive number of frames, got {every}")
    return list(range(0, num_frames, every))


class FrameReader:
    """RGB frames of a clip; a missing or unreadable frame is black, with one warning per clip."""

    def __init__(self, clip: Clip):
        self.clip = clip
        self.warned = False
        self.black = np.zeros((180, 360, 3), np.uint8)

    def __call__(self, k: int) -> np.ndarray:
        try:
            return load_frame(frame_file(self.clip.frames_dir, self.clip.seq, k))
        except FrameError as err:
            if not self.warned:
                tqdm.write(f"warning: {err}; drawing missing frames black", file=sys.stderr)
                self.warned = True
            return self.black


def frame_overlays(
    clip: Clip, rgb: np.ndarray, k: int, *, scale: int, font_size: int
) -> tuple[list[np.ndarray], list[str]]:
    """Ground-truth (and prediction) overlays of frame k with their panel titles."""
    gt = clip.gt.get(k, [])
    images = [overlay_annotations(rgb, gt, scale=scale, font_size=font_size)]
    titles = [f"ground truth ({len(gt)})"]
    if clip.pred is not None:
        pred = clip.pred.get(k, [])
        images.append(overlay_annotations(rgb, pred, show_score=True, scale=scale, font_size=font_size))
        titles.append(f"prediction ({len(pred)})")
    return images, titles


def animation_frames(clip: Clip, read: FrameReader) -> Iterator[np.ndarray]:
    """GT | prediction composites of every frame, with a frame/time header."""
    for k in range(clip.num_frames):
        images, titles = frame_overlays(clip, read(k), k, scale=1, font_size=9)
        header = f"{clip.seq}   frame {k}   t = {k / FRAME_RATE:.1f} s"
        yield side_by_side(images, titles=titles, header=header)


def feature_grid(root: Path, split: str, clip: Clip, k: int, path: Path) -> None:
    """The cached feature planes of frame k as a grid PNG, ground-truth peaks marked."""
    cache = root / "features_dev" / split / f"{clip.seq}.npz"
    if not cache.is_file():
        raise InputError(f"{cache}: feature cache not found (run tools/extract_features.py)")
    try:
        latent = load_cached_latent(cache)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{cache}: unreadable feature cache ({err})") from None
    if not 0 <= k < latent.shape[0]:
        raise InputError(f"--feature-frame: frame {k} is outside the cache's frames 0-{latent.shape[0] - 1}")
    n_dirs = latent.shape[-1]
    order = int(round(np.sqrt(n_dirs / 4))) - 1
    if 4 * (order + 1) ** 2 != n_dirs:
        raise InputError(f"{cache}: {n_dirs} directions is not a Fibonacci grid size 4(N+1)^2")
    planes = latent_to_canvas(latent[k], canvas_nearest_index(fibonacci_grid(order)))
    meta = read_cache_metadata(cache) or {}
    centres = meta.get("band_centres")
    if centres is not None and len(centres) == len(planes):
        titles = [f"band {b}: {c:.0f} Hz" for b, c in enumerate(centres)]
    else:
        centres, titles = list(range(len(planes))), [f"band {b}" for b in range(len(planes))]
    marks = []
    for ann in clip.gt.get(k, []):
        y, x = np.unravel_index(np.argmax(annotation_energy(ann)), (180, 360))
        az, el = pixel_to_azel(float(x), float(y))
        marks.append((float(az), float(el)))
    suptitle = f"{clip.seq} frame {k}: {meta.get('bands', 'features')} (x: ground-truth energy peaks)"
    plot_band_grid(planes, centres, path, marks=marks, suptitle=suptitle, titles=titles)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (InputError, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    clip = load_clip(args)
    frames = chosen_frames(args, clip.num_frames)
    feature_frame = args.feature_frame if args.feature_frame is not None else (frames[0] if frames else 0)
    if args.fps <= 0:
        raise InputError(f"--fps: must be positive, got {args.fps:g}")
    out = Path(args.out) if args.out else Path("output/visualize") / args.split / args.seq
    written: list[Path] = []
    # Features first: a bad cache is bad input and should stop the run before the long parts.
    if args.features:
        path = out / f"{clip.seq}_features_{feature_frame:04d}.png"
        feature_grid(root, args.split, clip, feature_frame, path)
        written.append(path)
    try:  # after the input checks (a bad input leaves no folder), before the long parts
        prepare_output_dir(out)
    except WriteError as err:
        raise InputError(str(err)) from None

    read = FrameReader(clip)
    for k in tqdm(frames, desc=f"PNG {clip.seq}", unit="frame", disable=not frames):
        images, titles = frame_overlays(clip, read(k), k, scale=PNG_SCALE, font_size=10)
        path = out / f"{clip.seq}_{k:04d}.png"
        plot_overlays(images, titles, path, suptitle=f"{clip.seq}  frame {k}  t = {k / FRAME_RATE:.1f} s")
        written.append(path)

    gif = args.gif
    if args.mp4:
        try:
            import av  # noqa: F401  (only checking that PyAV is there)
        except ImportError:
            print("warning: PyAV (the av package) is not installed; writing a GIF instead", file=sys.stderr)
            gif = True
        else:
            path = out / f"{clip.seq}.mp4"
            bar = tqdm(animation_frames(clip, read), total=clip.num_frames, desc="MP4", unit="frame")
            save_mp4(bar, path, fps=args.fps)
            written.append(path)
    if gif:
        path = out / f"{clip.seq}.gif"
        bar = tqdm(animation_frames(clip, read), total=clip.num_frames, desc="GIF", unit="frame")
        save_gif(bar, path, fps=args.fps)
        written.append(path)

    if not written:
        print("nothing to draw (no frames chosen, no --gif/--mp4/--features)")
        return 0
    pngs = [p for p in written if p.suffix == ".png" and "_features_" not in p.name]
    print(f"{clip.seq}: {clip.num_frames} frames, labels {clip.gt_file}, predictions {clip.pred_file or '-'}")
    if pngs:
        print(f"  {len(pngs)} frame PNGs: {pngs[0]}" + (f" ... {pngs[-1].name}" if len(pngs) > 1 else ""))
    for p in written:
        if p not in pngs:
            print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
