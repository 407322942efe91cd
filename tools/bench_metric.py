#!/usr/bin/env python
"""Benchmark of the official metric: the fast implementation (seld_d2.evaluation.metric) against
the plain oracle (seld_d2.evaluation.reference) on generated clips, with a check that every
number agrees. Prints readable lines and, last, one JSON object (naive_s, fast_s, speedup, clips).

The generated clips are seld_d2.evaluation.synthetic's: STAIRS26-like ground truth and
dense-exporter-like predictions.

  python tools/bench_metric.py --clips 10 --frames 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from seld_d2.evaluation import metric, reference
from seld_d2.evaluation.synthetic import max_difference, synthetic_case


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--clips", type=int, default=10, help="generated clips")
    p.add_argument("--frames", type=int, default=300, help="frames per clip (10 fps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes for the fast implementation")
    p.add_argument("--skip-reference", action="store_true", help="time the fast implementation only")
    return p


def bench_metric(args: argparse.Namespace) -> dict:
    """Time reference vs fast evaluation of ``args.clips`` x ``args.frames`` generated frames."""
    pred, gt = synthetic_case(args.seed, args.clips, args.frames)
    n_gt = sum(map(len, gt.values()))
    n_pred = sum(map(len, pred.values()))
    n_pts = sum(len(p) for anns in (*gt.values(), *pred.values()) for a in anns for p in a.polygons)
    print(f"metric: {args.clips} clips x {args.frames} frames, {n_gt} GT and {n_pred} predicted annotations,")
    print(f"        {n_pts / (n_gt + n_pred):.0f} points per annotation on average")
    t0, c0 = time.perf_counter(), time.process_time()
    fast = metric.evaluate_annotations(pred, gt, workers=args.workers)
    fast_s, fast_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"fast      {fast_s:8.2f} s wall {fast_cpu:8.2f} s CPU (this process; workers={args.workers})")
    out = {"clips": args.clips, "frames": args.frames, "workers": args.workers, "fast_s": round(fast_s, 3)}
    if not args.skip_reference:
        t0, c0 = time.perf_counter(), time.process_time()
        ref = reference.evaluate_annotations(pred, gt)
        naive_s, naive_cpu = time.perf_counter() - t0, time.process_time() - c0
        diff, where = max_difference(fast, ref)
        print(
            f"reference {naive_s:8.2f} s wall {naive_cpu:8.2f} s CPU   speedup {naive_s / fast_s:.1f}x (wall)"
        )
        print(f"max |fast - reference| over all numbers = {diff:.2e}" + (f" at {where}" if diff > 0 else ""))
        out.update(naive_s=round(naive_s, 3), speedup=round(naive_s / fast_s, 2), max_abs_diff=diff)
    m = fast["macro"]
    print(f"macro mAP {m['mAP']:.4f}  macro Pearson {m['pearson']:.4f}  micro mAP {fast['micro']['mAP']:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = add_arguments(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )
    out = bench_metric(p.parse_args(argv))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
