"""Does a feature localise? Scores of acoustic maps over the direction grid against the true
events of a clip (SPEC §3, "the features must localise").

* **Peak error** on single-source frames (exactly one event active): the angle between the map's
  maximum and the source, per band and for the median over bands >= 1 kHz.
* **Top-k recall** on multi-source frames (k >= 2 events active): the share of the k sources
  matched one-to-one, within ``tol_deg``, by the k highest local maxima of the map on the grid's
  6-nearest-neighbour graph.
* **Agreement** with a reference map (the 32-ch APGD map): PSNR and mean absolute difference of
  max-normalised maps over all frames, as in UpLAM validation
  (:func:`~seld_d2.acoustics.uplam.map_differences`, :func:`~seld_d2.acoustics.uplam.psnr_db`).

Frame k covers [0.1 k, 0.1 (k + 1)) s; an event is active in frames ``onset_frame <= k <
offset_frame`` (``seld_d2.data.synth`` events, ``events_dev/<split>/<seq>.csv``). Per-frame
scores are NaN where they do not apply, so clips concatenate along the frame axis and summaries
are NaN-aware.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .geometry import angular_distance_deg, fibonacci_grid, grid_neighbours
from .solvers import GramOperator, apgd
from .uplam import map_differences, max_normalise, psnr_db, steering_operator
from .visibility import BandSpec, visibilities

USABLE_MIN_HZ = 1000.0  # SPEC §3: below ~1 kHz the 4.2 cm array barely resolves direction
MEDIAN_NAME = "median>=1kHz"


def event_activity(events: Sequence, num_frames: int) -> np.ndarray:
    """Which event is active in which frame, bool (T, E)."""
    t = np.arange(num_frames)[:, None]
    on = np.array([e.onset_frame for e in events], np.int64).reshape(1, -1)
    off = np.array([e.offset_frame for e in events], np.int64).reshape(1, -1)
    return (t >= on) & (t < off)


def event_directions(events: Sequence) -> np.ndarray:
    """Unit vectors of the events, (E, 3)."""
    return np.array([e.direction for e in events], np.float64).reshape(-1, 3)


def band_median(maps: np.ndarray, centres: Sequence[float], min_hz: float = USABLE_MIN_HZ) -> np.ndarray:
    """Median over the bands centred at >= ``min_hz`` of per-band max-normalised maps.

    Args:
        maps: (T, B, N). centres: (B,) band centres in Hz.

    Returns:
        (T, N).
    """
    usable = np.asarray(centres) >= min_hz
    if not usable.any():
        raise ValueError(f"no band is centred at >= {min_hz:g} Hz")
    return np.median(max_normalise(maps[:, usable]), axis=1)


def peak_errors(maps: np.ndarray, events: Sequence, grid: np.ndarray | None = None) -> np.ndarray:
    """Angle in degrees from each map's maximum to the source, on single-source frames.

    Args:
        maps: (T, ..., N) maps over the grid, e.g. (T, B, 484).
        events: the clip's events (``onset_frame``, ``offset_frame``, ``direction``).
        grid: (N, 3) directions (default: the Fibonacci grid).

    Returns:
        (T, ...) degrees; NaN on frames without exactly one active event.
    """
    grid = fibonacci_grid() if grid is None else grid
    T = maps.shape[0]
    active = event_activity(events, T)
    single = active.sum(axis=1) == 1
    out = np.full(maps.shape[:-1], np.nan)
    if single.any():
        source = event_directions(events)[np.argmax(active[single], axis=1)]  # (F, 3)
        peaks = grid[np.argmax(maps[single], axis=-1)]  # (F, ..., 3)
        source = source.reshape((len(source),) + (1,) * (peaks.ndim - 2) + (3,))
        out[single] = angular_distance_deg(peaks, source)
    return out


def local_maxima(maps: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Directions not below any of their graph neighbours, bool (..., N); ``neighbours`` (N, K)."""
    return maps >= maps[..., neighbours].max(axis=-1)


def _matched(angles: np.ndarray, tol_deg: float) -> np.ndarray:
    """Largest one-to-one matching of k peaks to k sources within ``tol_deg`` (exhaustive over
    the k! assignments; k is the overlap, <= 4 in the report's scenes), (...) counts from
    angles (..., k peaks, k sources)."""
    k = angles.shape[-1]
    close = angles <= tol_deg
    best = np.zeros(angles.shape[:-2], np.int64)
    rows = np.arange(k)
    for perm in itertools.permutations(range(k)):
        best = np.maximum(best, close[..., rows, list(perm)].sum(axis=-1))
    return best


def topk_recall(
    maps: np.ndarray,
    events: Sequence,
    grid: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
    tol_deg: float = 20.0,
) -> np.ndarray:
    """Share of the active sources found among the k highest local maxima, on multi-source frames.

    Args:
        maps: (T, ..., N). events: the clip's events. grid: (N, 3).
        neighbours: (N, K) graph (default: the grid's 6 nearest neighbours).
        tol_deg: a peak finds a source within this angle; peaks and sources match one-to-one.

    Returns:
        (T, ...) in [0, 1]; NaN on frames with fewer than two active events.
    """
    grid = fibonacci_grid() if grid is None else grid
    neighbours = grid_neighbours(grid, 6) if neighbours is None else neighbours
    active = event_activity(events, maps.shape[0])
    counts = active.sum(axis=1)
    dirs = event_directions(events)
    out = np.full(maps.shape[:-1], np.nan)
    for k in np.unique(counts[counts >= 2]):
        frames = np.flatnonzero(counts == k)
        m = maps[frames]
        ranked = np.where(local_maxima(m, neighbours), m, -np.inf)
        top = np.argsort(-ranked, axis=-1, kind="stable")[..., :k]  # (F, ..., k)
        valid = np.take_along_axis(ranked, top, axis=-1) > -np.inf  # fewer than k maxima
        src = np.stack([dirs[np.flatnonzero(active[f])] for f in frames])  # (F, k, 3)
        src = src.reshape((len(frames),) + (1,) * (m.ndim - 2) + (1, k, 3))
        angles = angular_distance_deg(grid[top][..., :, None, :], src)  # (F, ..., k, k)
        angles = np.where(valid[..., None], angles, np.inf)
        out[frames] = _matched(angles, tol_deg) / k
    return out


def frame_scores(
    maps: np.ndarray,
    events: Sequence,
    centres: Sequence[float],
    reference: np.ndarray | None = None,
    grid: np.ndarray | None = None,
    tol_deg: float = 20.0,
) -> dict[str, np.ndarray]:
    """Per-frame scores of a clip's band maps, each band and the >= 1 kHz median.

    Args:
        maps: (T, B, N). events: the clip's events. centres: (B,) band centres in Hz.
        reference: optional (T, B, N) reference maps (the 32-ch APGD map).

    Returns:
        ``{"errors": (T, B + 1), "recall": (T, B + 1)}`` (the last column for the median map; see
        :func:`peak_errors`, :func:`topk_recall`), plus ``"mse"``, ``"mad"`` (T, B + 1) against
        the reference when one is given.
    """
    stacked = np.concatenate([maps, band_median(maps, centres)[:, None]], axis=1)
    out = {
        "errors": peak_errors(stacked, events, grid),
        "recall": topk_recall(stacked, events, grid, tol_deg=tol_deg),
    }
    if reference is not None:
        if reference.shape != maps.shape:
            raise ValueError(f"reference maps {reference.shape} do not match the maps {maps.shape}")
        ref = np.concatenate([reference, band_median(reference, centres)[:, None]], axis=1)
        out.update(map_differences(stacked, ref))
    return out


def concat_scores(scores: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Clips' :func:`frame_scores` joined along the frame axis (keys common to all clips)."""
    keys = set.intersection(*(set(s) for s in scores)) if scores else set()
    return {k: np.concatenate([s[k] for s in scores]) for k in sorted(keys)}


def _share(x: np.ndarray, limit: float) -> np.ndarray:
    n = np.sum(~np.isnan(x), axis=0)
    return np.where(n > 0, np.sum(x <= limit, axis=0) / np.maximum(n, 1), np.nan)


def _round(x: float, digits: int) -> float | None:
    return None if not np.isfinite(x) else round(float(x), digits)


def summarise(scores: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, Any]:
    """Summary of per-frame scores (one clip's :func:`frame_scores`, or :func:`concat_scores`).

    Returns:
        ``{"single_frames", "multi_frames", "columns": {name: {"median_deg", "within_10",
        "within_20", "recall"[, "psnr_db", "mad"]}}}`` with one column per name (the bands,
        then the median): median peak error and shares within 10 and 20 degrees over the
        single-source frames, mean top-k recall over the multi-source frames, and agreement
        with the reference over all frames. None where no frame applies.
    """
    errors, recall = scores["errors"], scores["recall"]
    single, multi = ~np.isnan(errors[:, 0]), ~np.isnan(recall[:, 0])
    nan = np.full(len(names), np.nan)
    med = np.median(errors[single], axis=0) if single.any() else nan
    rec = np.mean(recall[multi], axis=0) if multi.any() else nan
    w10, w20 = _share(errors[single], 10.0), _share(errors[single], 20.0)
    has_ref = "mse" in scores and len(scores["mse"]) > 0
    if has_ref:
        psnr, mad = psnr_db(np.mean(scores["mse"], axis=0)), np.mean(scores["mad"], axis=0)
    columns = {}
    for c, name in enumerate(names):
        col = {
            "median_deg": _round(med[c], 2),
            "within_10": _round(w10[c], 3),
            "within_20": _round(w20[c], 3),
            "recall": _round(rec[c], 3),
        }
        if has_ref:
            col["psnr_db"] = _round(psnr[c], 2)
            col["mad"] = _round(mad[c], 5)
        columns[name] = col
    return {"single_frames": int(single.sum()), "multi_frames": int(multi.sum()), "columns": columns}


def column_names(centres: Sequence[float]) -> list[str]:
    """Names of the score columns: each band's centre in Hz, then the >= 1 kHz median."""
    return [f"{f:.0f} Hz" for f in centres] + [MEDIAN_NAME]


def apgd_reference(audio32: np.ndarray, fs: int, bands: BandSpec, steering: str = "fixed") -> np.ndarray:
    """The STAIRS26 ground-truth solver on a 32-ch em32 recording: APGD maps of its band
    visibilities with the em32 steering (``fixed`` or ``per_band``), float (T, B, 484)."""
    return apgd(visibilities(audio32, fs, bands), GramOperator(steering_operator(bands, steering)))


__all__ = [
    "MEDIAN_NAME",
    "apgd_reference",
    "band_median",
    "column_names",
    "concat_scores",
    "event_activity",
    "event_directions",
    "frame_scores",
    "local_maxima",
    "peak_errors",
    "summarise",
    "topk_recall",
]
