#!/usr/bin/env python
"""Acoustic imaging solver study (report §5, SPEC §4).

On a 32-ch clip (a 24 kHz em32 wav, or a scene this tool renders with known sources) compares, per
band and frame, early-stopped APGD (the STAIRS26 labels, the reference), APGD at fixed iteration
budgets, the exact solvers (ADMM, Chambolle-Pock, subgradient) and the streaming estimators
(warm-started, seld_d2.acoustics.streaming): iterations, time per frame, objective value relative
to APGD's, roughness (total variation on the 6-neighbour grid graph over the map's L1 mass),
Pearson correlation and relative error against APGD's maps, and the peak direction error against
the known sources. Writes ``table.md``, ``table.json`` and ``maps.png`` (one map per solver, same
frame) into ``--out``.

APGD and the streaming estimators run on every frame of ``--frames`` (streaming needs consecutive
frames); the fixed-budget APGD runs and the exact solvers, far slower, on ``--exact-frames``
frames spread over that range (always including ``--frame``).

``--quadratic Q`` adds ``Q * lambda_max(G) * ||x||^2`` to every method's objective (on top of the
elastic net's own ``lambda (1 - gamma) ||x||^2``): Q sets the regularised problem's condition
number to about 1 / Q, the report's well-posed variant.

Example (the streaming evaluation over a minute of a slowly moving source):
  tools/compare_solvers.py --generate moving --seconds 60 --sources 1 --solvers apgd,streaming --out out/s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seld_d2.acoustics import geometry as geo
from seld_d2.acoustics.audio import SAMPLE_RATE, AudioError, read_wav
from seld_d2.acoustics.render import render_plane_wave
from seld_d2.acoustics.solvers import (
    DEFAULT_GAMMA,
    SOLVERS,
    GramOperator,
    default_lambda,
    graph_total_variation,
    objective,
)
from seld_d2.acoustics.streaming import ridge_problem, streaming_apgd
from seld_d2.acoustics.visibility import FRAME_RATE, band_centres, visibilities
from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir
from seld_d2.utils.visualize import save_figure

EXACT = ("admm", "chambolle_pock", "subgradient")
STREAMING = {"streaming": "ridge", "streaming_distance": "distance"}
METHODS = ("apgd", "apgd_budgets", *EXACT, *STREAMING)

# Generated sources: (azimuth, elevation, amplitude); with --generate moving the first one moves.
SCENE_SOURCES = ((40.0, 10.0, 1.0), (-100.0, -20.0, 0.7), (150.0, 35.0, 0.5))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", help="a 32-ch em32 recording, 24 kHz")
    src.add_argument("--generate", choices=["static", "moving"], help="render a scene with known sources")
    p.add_argument("--seconds", type=float, default=3.0, help="generated scene length (default 3 s)")
    p.add_argument("--sources", type=int, default=2, choices=[1, 2, 3], help="generated sources (default 2)")
    p.add_argument(
        "--speed", type=float, default=10.0, help="moving source's azimuth speed, deg/s (default 10)"
    )
    p.add_argument("--noise", type=float, default=0.05, help="generated sensor noise std (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generated scene (default 0)")
    p.add_argument("--bands", default="linear9", help="band layout (default linear9)")
    p.add_argument("--steering", default="fixed", choices=["fixed", "per_band"], help="default fixed")
    p.add_argument("--frames", default=None, help="frame range START:STOP (default: the whole clip)")
    p.add_argument("--frame", type=int, default=None, help="frame drawn in maps.png (default: mid-range)")
    p.add_argument(
        "--band",
        default="-1",
        help="band drawn in maps.png: an index, or 'median' over bands >= 1 kHz (default -1)",
    )
    p.add_argument(
        "--exact-frames", type=int, default=5, help="frames for budgets/exact solvers (default 5, >= 1)"
    )
    p.add_argument(
        "--solvers",
        default=",".join(METHODS),
        help=f"comma list of {', '.join(METHODS)} (default all; apgd always runs)",
    )
    p.add_argument("--apgd-iters", default="10,50,200", help="fixed APGD budgets (default 10,50,200)")
    p.add_argument("--exact-iters", type=int, default=1000, help="exact solvers' max_iter (default 1000)")
    p.add_argument("--quadratic", type=float, default=0.0, help="extra ridge Q * lambda_max(G) (default 0)")
    p.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="L1/L2 mix (default 0.5)")
    p.add_argument("--stream-tol", type=float, default=0.05, help="streaming step tolerance (default 0.05)")
    p.add_argument("--keyframe-every", type=int, default=100, help="streaming keyframes (default 100)")
    p.add_argument("--out", default="output/solvers", help="output folder (default output/solvers)")
    return p.parse_args(argv)


def generate_scene(
    kind: str, seconds: float, num_sources: int, speed: float, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """White-noise plane waves at the em32 plus sensor noise -> (audio (n, 32), truth (T, J, 3)).

    Each 100 ms frame is rendered from its own direction (a margin of samples around it keeps the
    fractional delays exact); with ``kind="moving"`` the first source's azimuth moves at ``speed``
    deg/s and its elevation swings by 10 degrees once a minute, the others stay put.
    """
    rng = np.random.default_rng(seed)
    mics = geo.em32_positions()
    n, margin = SAMPLE_RATE // FRAME_RATE, 16
    T = max(int(round(seconds * FRAME_RATE)), 1)
    audio = np.zeros((T * n, 32))
    truth = np.zeros((T, num_sources, 3))
    for j, (az0, el0, amp) in enumerate(SCENE_SOURCES[:num_sources]):
        signal = rng.standard_normal(T * n + 2 * margin)
        for t in range(T):
            sec = (t + 0.5) / FRAME_RATE
            moving = kind == "moving" and j == 0
            az = az0 + speed * sec if moving else az0
            el = el0 + 10.0 * np.sin(2 * np.pi * sec / 60.0) if moving else el0
            seg = render_plane_wave(signal[t * n : (t + 1) * n + 2 * margin], az, el, mics, SAMPLE_RATE)
            audio[t * n : (t + 1) * n] += amp * seg[margin : margin + n]
            truth[t, j] = geo.azel_to_unit(az, el)
    audio += noise * rng.standard_normal(audio.shape)
    return audio, truth


def parse_range(spec: str | None, T: int) -> range:
    if spec is None:
        return range(T)
    try:
        start, stop = (int(s) if s else None for s in spec.split(":"))
    except ValueError:
        raise ValueError(f"--frames must be START:STOP, got {spec!r}") from None
    r = range(T)[slice(start, stop)]
    if len(r) == 0:
        raise ValueError(f"--frames {spec} selects no frame of a {T}-frame clip")
    return r


def parse_band(spec: str, num_bands: int) -> int:
    try:
        band = int(spec)
    except ValueError:
        raise ValueError(f"--band must be a band index or 'median', got {spec!r}") from None
    if not -num_bands <= band < num_bands:
        raise ValueError(f"--band {band} is not one of the {num_bands} bands")
    return band


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of maps along the last axis; NaN where a map is constant."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt(np.sum(a * a, -1) * np.sum(b * b, -1))
    return np.where(den > 0, np.sum(a * b, -1) / np.where(den > 0, den, 1.0), np.nan)


def roughness(x: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Graph total variation over the map's L1 mass (scale-free), (...)."""
    mass = np.sum(np.abs(x), -1)
    return np.where(mass > 0, graph_total_variation(x, neighbours) / np.where(mass > 0, mass, 1.0), 0.0)


def peak_errors(maps: np.ndarray, truth: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Angle from each frame's map peak (F, N) to the nearest true source (F, J, 3), degrees (F,);
    NaN for an all-zero map (no peak)."""
    peaks = grid[np.argmax(maps, axis=-1)]
    err = geo.angular_distance_deg(peaks[:, None, :], truth).min(axis=1)
    return np.where(maps.max(axis=-1) > 0, err, np.nan)


def _finite_stat(values: np.ndarray, stat) -> float | None:
    """A statistic of the finite values, None when there is none (e.g. every map all-zero)."""
    values = values[np.isfinite(values)]
    return float(stat(values)) if values.size else None


def plot_solver_maps(
    planes: list[np.ndarray], titles: list[str], path: Path, marks: list[tuple[float, float]], suptitle: str
) -> None:
    """The report's Fig. 1 layout: one (180, 360) canvas per solver, three to a row, sources marked."""
    import matplotlib.pyplot as plt  # visualize (imported above) has chosen the headless backend

    cols = min(3, len(planes))
    rows = -(-len(planes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(planes):
            ax.axis("off")
            continue
        ax.imshow(planes[k], extent=(0, 360, 180, 0), cmap="magma", interpolation="nearest")
        for az, el in marks:
            x, y = geo.azel_to_pixel(az, el)
            ax.plot([x], [y], marker="x", color="cyan", markersize=8, mew=2)
        ax.set_xticks([0, 90, 180, 270, 360], ["180", "90", "0", "-90", "-180"])
        ax.set_yticks([0, 90, 180], ["90", "0", "-90"])
        ax.set_title(titles[k], fontsize=8)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| method | frames | iterations | ms/frame | F / F_apgd | roughness | roughness first→last"
        " | Pearson vs APGD | rel. error vs APGD | peak error ° |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        first_last = (
            "n/a" if r["roughness_first"] is None else f"{r['roughness_first']:.3f}→{r['roughness_last']:.3f}"
        )
        lines.append(
            f"| {r['method']} | {r['frames']} | {r['iterations']:.2f} | {r['ms_per_frame']:.1f}"
            f" | {r['objective_vs_apgd']:.4f} | {r['roughness']:.3f} | {first_last}"
            f" | {_fmt(r['pearson_vs_apgd'], 4)} | {_fmt(r['rel_error_vs_apgd'], 4)}"
            f" | {_fmt(r['peak_error_deg'], 1)} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        methods = [m.strip() for m in args.solvers.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown solvers {unknown}; use {', '.join(METHODS)}")
        budgets = [int(b) for b in args.apgd_iters.split(",") if b.strip()]
        if any(b < 1 for b in budgets):
            raise ValueError(f"--apgd-iters must be positive integers, got {args.apgd_iters!r}")
        if args.exact_frames < 1 or args.exact_iters < 1:
            raise ValueError("--exact-frames and --exact-iters must be >= 1")
        if args.quadratic < 0 or not 0 < args.gamma < 1:
            raise ValueError("--quadratic must be >= 0 and --gamma in (0, 1)")
        centres = band_centres(args.bands)
        if args.wav:
            audio, _ = read_wav(args.wav, channels=(32,), sample_rate=SAMPLE_RATE)
            truth = None
        else:
            audio, truth = generate_scene(
                args.generate, args.seconds, args.sources, args.speed, args.noise, args.seed
            )
        S_all = visibilities(audio.astype(np.float64), SAMPLE_RATE, args.bands)
        frames = parse_range(args.frames, len(S_all))
        frame = frames[len(frames) // 2] if args.frame is None else args.frame
        if frame not in frames:
            raise ValueError(f"--frame {frame} is outside --frames ({frames.start}:{frames.stop})")
        band = None if args.band == "median" else parse_band(args.band, len(centres))
    except (AudioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = Path(args.out)
    try:
        prepare_output_dir(out)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    grid = geo.fibonacci_grid()
    neighbours = geo.grid_neighbours(grid)
    freqs = geo.DEFAULT_STEERING_FREQ if args.steering == "fixed" else centres
    op = GramOperator(geo.steering_matrix(geo.em32_positions(), grid, freqs))
    usable = centres >= 1000.0  # SPEC §3: lower bands barely resolve direction on the em32
    S = S_all[frames.start : frames.stop]
    T = len(S)
    gamma = args.gamma

    # Every method solves the same problem: lambda from the unregularised first gradient step, and
    # with --quadratic the ridge folded into (S, lambda) by a per-problem rescaling.
    lam0 = default_lambda(op.backproject(S), gamma)[..., 0]  # (T, B)
    ridge = args.quadratic * np.broadcast_to(op.lam_max, lam0.shape)
    S_sc, lam, scale = ridge_problem(S, lam0, gamma, ridge)

    # Exact solvers: --exact-frames frames spread over the range, one of them the drawn frame.
    spread = np.linspace(0, T - 1, args.exact_frames).round().astype(int) if args.exact_frames > 1 else []
    exact_idx = np.unique(np.concatenate([spread, [frame - frames.start]])).astype(int)
    runs = [("apgd", None)]
    if "apgd_budgets" in methods:
        runs += [(f"apgd@{b}", b) for b in budgets]
    runs += [(m, None) for m in methods if m in EXACT or m in STREAMING]

    results: dict[str, dict] = {}
    bar = tqdm(runs, desc="solvers", unit="solver")
    for name, budget in bar:
        bar.set_postfix_str(name)
        every = name == "apgd" or name in STREAMING
        idx = np.arange(T) if every else exact_idx
        t0 = time.perf_counter()
        if name in STREAMING:
            x, info = streaming_apgd(
                S_sc,
                op,
                gamma=gamma,
                lam=lam,
                rule=STREAMING[name],
                tol=args.stream_tol,
                keyframe_every=args.keyframe_every,
                progress=lambda it, name=name: tqdm(it, desc=name, unit="frame", leave=False),
                return_info=True,
            )
        elif name.startswith("apgd"):
            kw = {} if budget is None else {"max_iter": budget, "tol": 0.0}
            x, info = SOLVERS["apgd"](S_sc[idx], op, gamma=gamma, lam=lam[idx], return_info=True, **kw)
        else:
            x, info = SOLVERS[name](
                S_sc[idx], op, gamma=gamma, lam=lam[idx], max_iter=args.exact_iters, return_info=True
            )
        elapsed = time.perf_counter() - t0
        s = scale[idx]  # back from the rescaled problem: maps / s, objective / s^2
        results[name] = {
            "idx": idx,
            "x": x / s[..., None],
            "f": objective(x, S_sc[idx], op, lam[idx][..., None], gamma) / s**2,
            "iterations": float(np.mean(info.iterations)),
            "ms_per_frame": 1000.0 * elapsed / len(idx),
        }

    ref = results["apgd"]
    q = max(min(10 * FRAME_RATE, T // 3), 1)  # first / last 10 s (a third of shorter clips)
    rows = []
    for name, r in results.items():
        idx, x = r["idx"], r["x"]
        xr, fr = ref["x"][idx], ref["f"][idx]
        rough = roughness(x, neighbours)  # (F, B)
        corr = pearson(x, xr)
        rel = np.linalg.norm(x - xr, axis=-1) / np.maximum(np.linalg.norm(xr, axis=-1), np.finfo(float).tiny)
        every = len(idx) == T and T >= 2
        err = None
        if truth is not None:
            med = np.median(x[:, usable], axis=1)
            err = _finite_stat(peak_errors(med, truth[frames.start + idx], grid), np.median)
        rows.append(
            {
                "method": name,
                "frames": int(len(idx)),
                "iterations": r["iterations"],
                "ms_per_frame": r["ms_per_frame"],
                "objective_vs_apgd": float(np.mean(r["f"] / np.where(fr > 0, fr, 1.0))),
                "roughness": float(np.mean(rough)),
                "roughness_first": float(np.mean(rough[:q])) if every else None,
                "roughness_last": float(np.mean(rough[-q:])) if every else None,
                "pearson_vs_apgd": _finite_stat(corr, np.mean),
                "pearson_vs_apgd_min": _finite_stat(corr, np.min),
                "rel_error_vs_apgd": float(np.mean(rel)),
                "peak_error_deg": err,
            }
        )

    # One map per solver at the same frame and band (or band median), max-normalised.
    pixel = geo.canvas_nearest_index(grid)
    planes, titles = [], []
    for name, r in results.items():
        pos = int(np.flatnonzero(r["idx"] == frame - frames.start)[0])
        m = np.median(r["x"][pos][usable], axis=0) if band is None else r["x"][pos][band]
        planes.append((m / m.max() if m.max() > 0 else m)[pixel])
        row = next(rr for rr in rows if rr["method"] == name)
        titles.append(f"{name}: F/F_apgd {row['objective_vs_apgd']:.3f}, roughness {row['roughness']:.2f}")
    marks = []
    if truth is not None:
        az, el = geo.unit_to_azel(truth[frame])
        marks = list(zip(az.tolist(), el.tolist(), strict=True))
    source = args.wav or f"generated {args.generate} scene, {args.sources} source(s), seed {args.seed}"
    drawn = "median over bands >= 1 kHz" if band is None else f"{centres[band]:.0f} Hz band"
    plot_solver_maps(
        planes, titles, out / "maps.png", marks, f"{source}: frame {frame}, {args.bands} {drawn}"
    )

    summary = {
        "input": source,
        "bands": args.bands,
        "steering": args.steering,
        "frames": [frames.start, frames.stop],
        "frame": frame,
        "exact_frames": (exact_idx + frames.start).tolist(),
        "quadratic": args.quadratic,
        "gamma": gamma,
        "stream_tol": args.stream_tol,
        "keyframe_every": args.keyframe_every,
        "roughness_window_frames": q,
        "methods": rows,
    }
    with atomic_open(out / "table.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    table = markdown_table(rows)
    with atomic_open(out / "table.md", "w") as fh:
        fh.write(f"{source}; {args.bands}, {args.steering} steering; frames {frames.start}:{frames.stop}\n\n")
        fh.write(table)
    print(table)
    print(f"wrote {out / 'table.md'}, {out / 'table.json'}, {out / 'maps.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
