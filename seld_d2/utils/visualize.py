"""Pictures of acoustic maps on the 360x180 canvas (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from ..acoustics.geometry import azel_to_pixel  # noqa: E402
from .io import atomic_open  # noqa: E402


def _draw_canvas(ax, plane: np.ndarray, title: str, marks: Sequence[tuple[float, float]] = ()) -> None:
    """One equirectangular map with azimuth/elevation ticks and true directions as crosses."""
    ax.imshow(plane, extent=(0, 360, 180, 0), cmap="magma", aspect="equal", interpolation="nearest")
    for az, el in marks:
        x, y = azel_to_pixel(az, el)
        ax.plot([x], [y], marker="x", color="cyan", markersize=9, mew=2)
    ax.set_xticks([0, 90, 180, 270, 360], ["180", "90", "0", "-90", "-180"])
    ax.set_yticks([0, 90, 180], ["90", "0", "-90"])
    ax.set_title(title, fontsize=9)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a figure as PNG atomically and close it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_maps(
    planes: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    marks: Sequence[tuple[float, float]] = (),
    suptitle: str = "",
) -> None:
    """Side-by-side canvases (each (180, 360)), true directions (az, el) marked, saved as PNG."""
    fig, axes = plt.subplots(1, len(planes), figsize=(4.2 * len(planes), 2.6), squeeze=False)
    for ax, plane, title in zip(axes[0], planes, titles, strict=True):
        _draw_canvas(ax, plane, title, marks)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    save_figure(fig, path)


def plot_band_grid(
    planes: np.ndarray,
    centres: Sequence[float],
    path: str | os.PathLike,
    marks: Sequence[tuple[float, float]] = (),
    suptitle: str = "",
    columns: int = 4,
) -> None:
    """The acoustic feature planes of one frame, (B, 180, 360), one panel per band, as PNG."""
    rows = int(np.ceil(len(planes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 1.95 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k < len(planes):
            _draw_canvas(ax, planes[k], f"band {k}: {centres[k]:.0f} Hz", marks)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
