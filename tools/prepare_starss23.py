#!/usr/bin/env python
"""Prepare a STARSS23/STAIRS26 dataset root: extract 10 fps 360x180 frames from the videos and
check the layout.

For every ``<root>/video_dev/<split>/<seq>.mp4`` without a complete frame folder, decodes the
video with PyAV and writes ``<root>/frames_dev/<split>/<seq>/<seq>_<k:04d>.png`` (k zero-based,
frame k = the picture shown at time k x 100 ms), resized to 360x180. Then checks every clip of
every split (wav header, frame naming and count, label JSON) and lists what is missing or wrong.
Exit code 1 if any clip has a problem.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from seld_d2.acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH
from seld_d2.acoustics.visibility import FRAME_RATE
from seld_d2.data.datasets import AUDIO_FORMATS, DatasetError, check_clip, frame_file, list_sequences
from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir, remove_stale_temps

FRAME_SIZE = (CANVAS_WIDTH, CANVAS_HEIGHT)


def extract_frames(video: Path, out_dir: Path, seq: str, fps: int = FRAME_RATE) -> int:
    """Decode ``video`` and write its frames at ``fps`` as PNGs; returns the number written.

    Output frame k is the last decoded picture whose presentation time is <= k / fps (the picture
    on screen at that instant). Raises ValueError with a one-line message if it cannot decode.
    """
    import av

    try:
        container = av.open(str(video))
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"{video}: cannot open video ({err})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written, shown, last_time = 0, None, 0.0

    def emit(picture: Image.Image) -> None:
        nonlocal written
        with atomic_open(frame_file(out_dir, seq, written), "wb") as f:
            picture.save(f, format="PNG")
        written += 1

    with container:
        stream = container.streams.video[0]
        frame_step = 1.0 / float(stream.average_rate or 30)
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else last_time + frame_step
                # Every output instant before this picture's time shows the previous picture.
                while shown is not None and written / fps < t - 1e-6:
                    emit(shown)
                shown = frame.to_image().convert("RGB").resize(FRAME_SIZE, Image.BILINEAR)
                last_time = t
        except av.error.FFmpegError as err:
            raise ValueError(f"{video}: decoding failed after {written} frames ({err})") from None
    if shown is None:
        raise ValueError(f"{video}: no video frames")
    end = last_time + frame_step
    while written / fps < end - 1e-6:
        emit(shown)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--splits", nargs="*", default=None, help="splits to process (default: all found)")
    p.add_argument("--audio", default="mic", choices=sorted(AUDIO_FORMATS), help="which wavs to check")
    p.add_argument("--overwrite", action="store_true", help="re-extract frames even if present")
    p.add_argument("--no-labels-ok", action="store_true", help="clips without labels are not a problem")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root}: dataset root not found", file=sys.stderr)
        return 2
    found = {
        p.name for sub in ("video_dev", "mic_dev", "eigen_dev", "labels_dev") for p in (root / sub).glob("*/")
    }
    splits = args.splits or sorted(found)
    if not splits:
        print(
            f"error: {root}: no splits under video_dev/, mic_dev/, eigen_dev/ or labels_dev/", file=sys.stderr
        )
        return 2

    videos = [(s, v) for s in splits for v in sorted((root / "video_dev" / s).glob("*.mp4"))]
    try:  # before any work: frames are written under frames_dev/<split>/<seq>/
        for split in sorted({s for s, _ in videos}):
            prepare_output_dir(root / "frames_dev" / split, clean=False)
            remove_stale_temps(root / "frames_dev" / split, recursive=True)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems: list[str] = []
    for split, video in tqdm(videos, desc="extracting frames", unit="video", disable=not videos):
        seq = video.stem
        out_dir = root / "frames_dev" / split / seq
        if out_dir.is_dir() and any(out_dir.iterdir()) and not args.overwrite:
            continue
        try:
            n = extract_frames(video, out_dir, seq)
            tqdm.write(f"{video.name}: {n} frames")
        except WriteError as err:  # full disk or the like: the other videos would fail the same way
            print(f"error: {err}", file=sys.stderr)
            return 2
        except ValueError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            problems.append(str(err))

    counts = {}
    for split in splits:
        seqs = list_sequences(root, split, args.audio)
        ok = 0
        for seq in tqdm(seqs, desc=f"checking {split}", unit="clip"):
            try:
                check_clip(root, split, seq, args.audio, require_labels=not args.no_labels_ok)
                ok += 1
            except DatasetError as err:
                tqdm.write(f"problem: {err}", file=sys.stderr)
                problems.append(str(err))
        counts[split] = (ok, len(seqs))
    for split, (ok, total) in counts.items():
        print(f"{split}: {ok}/{total} clips complete")
    if problems:
        print(f"{len(problems)} problem(s); see the lines above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
