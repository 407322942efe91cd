#!/usr/bin/env python
"""Score a submission folder with the official DCASE2026 Task 3 metric (SPEC §2).

    python tools/evaluate.py --pred output/run3/submission \\
        --gt datasets/STARSS23/labels_dev/dev-test-sony datasets/STARSS23/labels_dev/dev-test-tau

Files are paired and read as the official evaluator does (SPEC §2.7): each ``<pred>/<clip>.json``
(names starting with "." ignored) with ``<clip>_std.json`` in a --gt folder or one level below it;
a prediction file without ground truth is skipped, a ground-truth clip without prediction file is
not scored (``--missing-as-empty`` scores it as an empty prediction), a plain ``<clip>.json``
ground truth is not paired. A missing ``score`` ranks at 0, a category outside 0-12 is dropped, a
missing or empty segmentation renders as nothing; each such leniency is one ``warning:`` line with
its count and files. Prints a table per class (GT count, detections, AP at each IoU threshold,
mAP, Pearson r, relative distance error) with macro and micro rows and writes, under --out
(default ``<pred>_eval``):

  metrics.json          every number (per class, macro, micro), undefined values as null
  table.md              the printed table
  ap_vs_threshold.png   AP against the IoU threshold per class, macro and micro

``--metric baseline`` scores with the older baseline metric instead (COCO mask AP@0.50:0.95 of
sigma = 6 deg Gaussian renderings). Where the official evaluator stops (a prediction file over
20 MiB, malformed JSON, a polygon that is not N x 3, a coordinate off the canvas, a frame or
category that int() rejects) the tool reports the file in one line and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seld_d2.data.classes import CLASS_COLORS
from seld_d2.evaluation import baseline_metric, metric
from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path, help="folder of <clip>.json prediction files")
    p.add_argument("--gt", required=True, nargs="+", type=Path, help="folder(s) of ground-truth label files")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <pred>_eval)")
    p.add_argument("--metric", choices=("official", "baseline"), default="official")
    p.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score ground-truth clips without prediction file as empty predictions (the official "
        "evaluator does not score them)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes evaluating clips in parallel")
    p.add_argument("--no-plot", action="store_true", help="skip ap_vs_threshold.png")
    return p.parse_args(argv)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_thresholds(result: dict) -> list[float]:
    """The thresholds shown as AP columns: all of them when few (official), else 0.5 and 0.75."""
    ts = result["thresholds"]
    return ts if len(ts) <= 4 else [t for t in ts if t in (0.5, 0.75)]


def format_table(result: dict) -> list[str]:
    """The per-class table with macro and micro rows, as Markdown lines."""
    ts = table_thresholds(result)
    lo, hi = result["thresholds"][0], result["thresholds"][-1]
    map_head = "mAP" if len(ts) == len(result["thresholds"]) else f"mAP@{lo:g}:{hi:g}"
    head = ["Class", "GT", "Det", *(f"AP@{t:g}" for t in ts), map_head, "Pearson r", "Dist. err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]

    def row(name: str, r: dict, gt: str, det: str) -> str:
        aps = [_fmt(r["ap"][metric.threshold_key(t)]) for t in ts]
        cells = [name, gt, det, *aps, _fmt(r["mAP"]), _fmt(r["pearson"]), _fmt(r["distance_error"])]
        return "| " + " | ".join(cells) + " |"

    for c in result["classes"]:
        if c["gt"] or c["detections"]:
            lines.append(row(c["name"], c, str(c["gt"]), str(c["detections"])))
    m, u = result["macro"], result["micro"]
    lines.append(row(f"**macro** ({m['classes']} classes)", m, "", ""))
    lines.append(row("**micro**", u, str(u["gt"]), str(u["detections"])))
    return lines


def plot_ap(result: dict, path: Path) -> None:
    """AP against IoU threshold: one thin line per class with ground truth, macro and micro bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = "ap_curve" if "curve_thresholds" in result else "ap"
    ts = result.get("curve_thresholds", result["thresholds"])

    def ys(row: dict) -> list[float]:
        return [row[curve][metric.threshold_key(t)] or 0.0 for t in ts]

    fig, ax = plt.subplots(figsize=(8, 5))
    for c in result["classes"]:
        if c["gt"]:
            colour = [v / 255 for v in CLASS_COLORS[c["id"] % len(CLASS_COLORS)]]
            ax.plot(ts, ys(c), color=colour, lw=1.0, alpha=0.8, label=c["name"])
    ax.plot(ts, ys(result["macro"]), color="black", lw=2.5, label="macro")
    ax.plot(ts, ys(result["micro"]), color="black", lw=2.5, ls="--", label="micro")
    for t in result["thresholds"]:
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="IoU threshold", ylabel="AP", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"{result['metric']} metric: AP vs IoU threshold ({result['clips']} clips)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pred = args.pred.resolve()  # a name even for "." or "dir/"
    out = args.out or pred.with_name(pred.name + "_eval")
    try:
        prepare_output_dir(out)  # before any work
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.metric == "official":
            result = metric.evaluate_folders(
                args.pred,
                args.gt,
                missing_as_empty=args.missing_as_empty,
                curve_thresholds=metric.CURVE_THRESHOLDS,
                workers=args.workers,
                progress=True,
            )
        else:
            result = baseline_metric.evaluate_folders(
                args.pred,
                args.gt,
                missing_as_empty=args.missing_as_empty,
                workers=args.workers,
                progress=True,
            )
    except (ValueError, OSError) as err:  # MetricError / LabelError: one line naming the file
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in result["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    lines = format_table(result)
    print("\n".join(lines))
    m, u = result["macro"], result["micro"]
    print(
        f"macro mAP {_fmt(m['mAP'])}  Pearson {_fmt(m['pearson'])}  |  "
        f"micro mAP {_fmt(u['mAP'])}  Pearson {_fmt(u['pearson'])}  ({result['clips']} clips)"
    )
    try:
        with atomic_open(out / "metrics.json", "w") as f:
            json.dump(result, f, indent=2)
        with atomic_open(out / "table.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        if not args.no_plot:
            plot_ap(result, out / "ap_vs_threshold.png")
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}/metrics.json, table.md" + ("" if args.no_plot else ", ap_vs_threshold.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
