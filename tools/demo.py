#!/usr/bin/env python
"""The whole job on a small generated dataset, in one command (``make demo``).

1. Synthesise audiovisual scenes with the project's generator (free-field em32, procedural
   sources of the ``--classes``, 360x180 video, STAIRS26-style labels) into the STARSS23 layout.
2. Acoustic features of both splits (``tools/extract_features.py``): by default the classical
   4-ch MVDR maps (``--feature-kind srp``, no training; ``--srp-method`` to change); with
   ``--feature-kind uplam`` the latent of ``--uplam PATH``, or of an UpLAM trained here on the
   training scenes' 32-ch recordings (``--train-uplam``; no trained UpLAM localises well enough
   to be the default yet, see the README). Then their feature-quality line on the test split
   (``tools/feature_quality.py``: peak error on single-source frames, agreement with the 32-ch
   APGD map).
3. Train the detectors briefly on the CPU (``configs/SELD/demo_cpu.yaml``, ``tools/train_net.py``):
   the audiovisual one (Track B, RGB + features) and the audio-only one (Track A,
   ``MODEL.SELD.AUDIO_ONLY``: the RGB planes are zero), on the same data (``--tracks``).
4. Run each on the test split into submission files (``tools/infer.py``).
5. Score them with the official metric (``tools/evaluate.py``): one table per track.
6. Draw: the loss curves, GT-vs-prediction overlays of a test clip (PNGs of four annotated frames
   and a GIF) and a frame's 16 acoustic feature planes (``tools/visualize.py``), for the first track.

Everything goes into ``--out`` (one folder per track: ``av/``, ``audio/``); the last lines printed
say where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling tools

import evaluate  # noqa: E402
import extract_features  # noqa: E402
import feature_quality  # noqa: E402
import infer  # noqa: E402
import train_net  # noqa: E402
import train_uplam  # noqa: E402
import visualize  # noqa: E402

from seld_d2.data.classes import CLASS_NAMES, NUM_CLASSES, class_index  # noqa: E402
from seld_d2.data.labels import load_labels  # noqa: E402
from seld_d2.data.synth import SceneConfig, SynthConfig, synthesize_split  # noqa: E402
from seld_d2.utils.io import atomic_open  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN, TEST = "dev-train-demo", "dev-test-demo"
# track -> (folder, title, extra config options)
TRACKS = {
    "av": ("av", "audiovisual (Track B: RGB + acoustic features)", []),
    "audio": (
        "audio",
        "audio-only (Track A: acoustic features, RGB planes zero)",
        ["MODEL.SELD.AUDIO_ONLY", "True"],
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/demo", help="output folder (default output/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train-clips", type=int, default=6, help="training scenes (default 6)")
    p.add_argument("--test-clips", type=int, default=2, help="test scenes (default 2)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of a training scene (default 30 s)")
    p.add_argument("--test-seconds", type=float, default=20.0, help="length of a test scene (default 20 s)")
    p.add_argument(
        "--classes",
        default="2,6,8,11",
        help="sound classes of the scenes, ids or names, comma-separated, or 'all' (default 2,6,8,11: "
        "Clapping, Walk/footsteps, Music, Bell; a few classes so that a few minutes of training see "
        "each of them often)",
    )
    p.add_argument("--epochs", type=int, default=None, help="detector epochs (default: the config's)")
    p.add_argument(
        "--feature-kind",
        default="srp",
        choices=["uplam", "srp"],
        help="acoustic features: srp (classical 4-ch maps, no training; the default) or uplam "
        "(--uplam PATH or --train-uplam)",
    )
    p.add_argument(
        "--srp-method",
        default="mvdr",
        choices=["bartlett", "mvdr", "music"],
        help="SRP method (default mvdr)",
    )
    p.add_argument("--uplam", default=None, help="with --feature-kind uplam: the UpLAM checkpoint")
    p.add_argument(
        "--train-uplam", action="store_true", help="with --feature-kind uplam: train UpLAM here instead"
    )
    p.add_argument("--uplam-epochs", type=int, default=2, help="with --train-uplam: epochs (default 2)")
    p.add_argument(
        "--uplam-clips", type=int, default=2, help="with --train-uplam: scenes per split (default 2)"
    )
    p.add_argument(
        "--tracks",
        default="av,audio",
        help="detectors to train and score, comma-separated: av (audiovisual), audio (audio-only); "
        "default both",
    )
    p.add_argument("--config-file", default=str(REPO / "configs/SELD/demo_cpu.yaml"), help="detector config")
    return p.parse_args(argv)


def scene_config(seconds: float, classes: tuple[int, ...]) -> SynthConfig:
    """A few well-separated, long events per scene, so that minutes of training see each class."""
    scene = SceneConfig(
        duration=seconds, min_events=3, max_events=5, max_overlap=2, min_separation_deg=45.0, classes=classes
    )
    return SynthConfig(scene=scene)


def parse_classes(text: str) -> tuple[int, ...]:
    """``"all"`` or comma-separated class ids/names -> sorted unique ids."""
    if text.strip().lower() == "all":
        return tuple(range(NUM_CLASSES))
    classes = tuple(sorted({class_index(c.strip()) for c in text.split(",") if c.strip()}))
    if not classes:
        raise ValueError("no class given")
    return classes


def frames_to_draw(label_file: Path, count: int = 4) -> list[int]:
    """``count`` frames spread evenly over those with ground truth (frame 0 if none has any)."""
    annotated = sorted({a.frame for a in load_labels(label_file)})
    if not annotated:
        return [0]
    picks = np.linspace(0, len(annotated) - 1, min(count, len(annotated))).round().astype(int)
    return sorted({annotated[i] for i in picks})


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def step(title: str) -> None:
    print(f"\n==== {title}", flush=True)


def loss_curve(metrics_files: dict[str, Path], path: Path) -> dict:
    """Training and validation loss against iteration of each track, from Detectron2's
    metrics.json files; returns each track's first and last training loss."""
    from seld_d2.utils.visualize import plot_curves

    curves, ends = {}, {}
    for track, metrics_file in metrics_files.items():
        train, val = [], []
        with open(metrics_file) as f:
            for line in f:
                rec = json.loads(line)
                if "total_loss" in rec:
                    train.append((rec["iteration"], rec["total_loss"]))
                if "validation_loss" in rec:
                    val.append((rec["iteration"], rec["validation_loss"]))
        curves[f"{track}: training loss"] = train
        curves[f"{track}: validation loss"] = val
        ends[track] = {
            "train_first": train[0][1] if train else None,
            "train_last": train[-1][1] if train else None,
        }
    plot_curves(curves, path, xlabel="iteration", ylabel="loss")
    return ends


def feature_quality_line(root: Path, out: Path) -> dict | None:
    """The feature-quality measure of the test split's cached features (``tools/feature_quality.py``
    on them, its table and line printed); returns its summary (None where it failed)."""
    rc = feature_quality.main(
        ["--root", str(root), "--split", TEST, "--features-dir", str(root / "features_dev" / TEST),
         "--out", str(out)]
    )  # fmt: skip
    if rc:
        return None
    with open(out / "quality.json") as f:
        return json.load(f)


def run_track(
    args: argparse.Namespace, root: Path, out: Path, track_opts: list[str], label: str
) -> dict | None:
    """Train one detector on the demo's data, write the test split's submission files and score
    them; returns the metric's summary (None where a step failed)."""
    step(f"{label}: training the detector on the CPU")
    train_dir = out / "train"
    opts = [
        "SELD.DATA.ROOT", str(root), "SELD.DATA.TRAIN_SPLITS", f"['{TRAIN}']",
        "SELD.DATA.VAL_SPLITS", f"['{TEST}']", "DATASETS.TRAIN", "('demo_train',)",
        "DATASETS.TEST", "('demo_test',)", *track_opts, "OUTPUT_DIR", str(train_dir),
        "MODEL.DEVICE", "cpu", "SEED", str(args.seed),
    ]  # fmt: skip
    if args.epochs:
        opts += ["SELD.TRAIN.MAX_EPOCHS", str(args.epochs)]
    train_args = train_net.default_argument_parser().parse_args(["--config-file", args.config_file, *opts])
    train_net.main(train_args)

    step(f"{label}: inference on the test split -> submission files")
    submission = out / "submission"
    infer_opts = [o for o in opts if o not in ("MODEL.DEVICE", "cpu")]
    rc = infer.main(
        ["--config-file", args.config_file, "--checkpoint", str(train_dir / "model_final.pth"),
         "--root", str(root), "--split", TEST, "--out", str(submission), "--device", "cpu", *infer_opts]
    )  # fmt: skip
    if rc:
        return None

    step(f"{label}: the official DCASE2026 Task 3 metric")
    rc = evaluate.main(
        ["--pred", str(submission), "--gt", str(root / "labels_dev" / TEST), "--out", str(out / "evaluation")]
    )
    if rc:
        return None
    with open(out / "evaluation" / "metrics.json") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        classes = parse_classes(args.classes)
    except ValueError as e:
        print(f"error: --classes: {e}", file=sys.stderr)
        return 2
    tracks = list(dict.fromkeys(t.strip() for t in args.tracks.split(",") if t.strip()))  # each once
    if not tracks or any(t not in TRACKS for t in tracks):
        print(f"error: --tracks: use a comma-separated subset of {', '.join(TRACKS)}", file=sys.stderr)
        return 2
    if (
        args.feature_kind == "uplam"
        and not args.train_uplam
        and not (args.uplam and Path(args.uplam).is_file())
    ):
        print(
            f"error: --uplam {args.uplam or '(not given)'}: no UpLAM checkpoint there "
            "(--train-uplam trains one)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out).resolve()
    root = out / "data"
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    step(
        f"[1/{len(tracks) + 3}] synthesising {args.train_clips} training scenes of {args.seconds:g} s and "
        f"{args.test_clips} test scenes of {args.test_seconds:g} s into {root}\n     classes: "
        + ", ".join(CLASS_NAMES[c] for c in classes)
    )
    t = time.perf_counter()
    synthesize_split(root, TRAIN, args.train_clips, args.seed, scene_config(args.seconds, classes))
    test_clips = synthesize_split(
        root, TEST, args.test_clips, args.seed + 1000, scene_config(args.test_seconds, classes)
    )
    t = lap("synthesis", t)

    if args.feature_kind == "srp":
        uplam = None
    elif args.train_uplam:
        step(f"[2/{len(tracks) + 3}] training UpLAM (self-supervised, 4x4 -> 32x32 visibilities)")
        rc = train_uplam.main(
            ["--root", str(root), "--train-split", TRAIN, "--val-split", TEST, "--out", str(out / "uplam"),
             "--epochs", str(args.uplam_epochs), "--max-clips", str(args.uplam_clips),
             "--seed", str(args.seed)]
        )  # fmt: skip
        if rc:
            return rc
        uplam = out / "uplam" / "best.pth"
        t = lap("uplam_training", t)
    else:
        uplam = Path(args.uplam)
    if uplam is None:
        step(
            f"[2/{len(tracks) + 3}] extracting the classical 4-ch features (srp {args.srp_method}, no UpLAM)"
        )
        kind_args = ["--kind", "srp", "--method", args.srp_method]
        feature_opts = ["SELD.AUDIO.FEATURE_KIND", "srp", "SELD.AUDIO.SRP_METHOD", args.srp_method]
    else:
        step(f"[2/{len(tracks) + 3}] extracting UpLAM features with {uplam}")
        kind_args = ["--checkpoint", str(uplam)]
        feature_opts = ["SELD.AUDIO.UPLAM_CHECKPOINT", str(uplam)]
    for split in (TRAIN, TEST):
        rc = extract_features.main(["--root", str(root), "--split", split, *kind_args])
        if rc:
            return rc
    quality = feature_quality_line(root, out / "feature_quality")
    t = lap("features", t)

    results = {}
    for k, track in enumerate(tracks):
        folder, title, track_opts = TRACKS[track]
        label = f"[{3 + k}/{len(tracks) + 3}] {title}"
        results[track] = run_track(args, root, out / folder, [*feature_opts, *track_opts], label)
        if results[track] is None:
            return 1
        t = lap(f"{track}_detector", t)

    step(f"[{len(tracks) + 3}/{len(tracks) + 3}] pictures")
    first = out / TRACKS[tracks[0]][0]
    curve = loss_curve(
        {tr: out / TRACKS[tr][0] / "train" / "metrics.json" for tr in tracks}, out / "loss_curve.png"
    )
    seq = test_clips[0]
    frames = frames_to_draw(root / "labels_dev" / TEST / f"{seq}_std.json")
    rc = visualize.main(
        ["--root", str(root), "--split", TEST, "--seq", seq, "--pred", str(first / "submission"),
         "--frames", ",".join(map(str, frames)), "--gif", "--features", "--out", str(out / "pictures")]
    )  # fmt: skip
    if rc:
        return rc
    lap("pictures", t)

    timings["total"] = round(time.perf_counter() - t0, 1)
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(
            {"timings_s": timings, "loss": curve, "feature_quality": quality, "metrics": results}, f, indent=1
        )
    print(f"\ndone in {timings['total']:.0f} s ({', '.join(f'{k} {v:g} s' for k, v in timings.items())})")
    for track in tracks:
        macro, micro = results[track]["macro"], results[track]["micro"]
        print(f"  {TRACKS[track][1]}: macro mAP {_fmt(macro.get('mAP'))}, micro mAP {_fmt(micro.get('mAP'))}")
    print(f"outputs in {out}/:")
    for track in tracks:
        print(
            f"  {TRACKS[track][0] + '/':<17}train/ (checkpoints, log, TensorBoard), submission/, evaluation/"
        )
    print("  feature_quality/ quality.json, planes.png (the test split's acoustic features)")
    print("  pictures/        GT vs prediction overlays (PNG, GIF), the 16 acoustic feature planes")
    print("  loss_curve.png   training and validation loss of each track")
    print("  summary.json     timings, losses, feature quality, every metric")
    print("  data/            the generated dataset (STARSS23 layout) and its feature cache")
    return 0


if __name__ == "__main__":
    sys.exit(main())
