"""Pictures on the 360x180 canvas: acoustic maps (matplotlib, no display needed) and detection
overlays (numpy/Pillow compositing, fast enough for whole-clip animations).

The overlay functions are pure (arrays in, arrays out) so that tools, demos and evaluators can
share them; only the ``save_*`` / ``plot_*`` helpers write files, always atomically.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH, azel_to_pixel  # noqa: E402
from ..data.classes import CLASS_COLORS, CLASS_NAMES  # noqa: E402
from ..data.labels import Annotation  # noqa: E402
from ..data.mapper import render_energy, split_at_seam, support_box  # noqa: E402
from .io import atomic_open  # noqa: E402


def _draw_canvas(ax, plane: np.ndarray, title: str, marks: Sequence[tuple[float, float]] = ()) -> None:
    """One equirectangular map with azimuth/elevation ticks and true directions as crosses."""
    ax.imshow(
        plane,
        extent=(0, CANVAS_WIDTH, CANVAS_HEIGHT, 0),
        cmap="magma",
        aspect="equal",
        interpolation="nearest",
    )
    for az, el in marks:
        x, y = azel_to_pixel(az, el)
        ax.plot([x], [y], marker="x", color="cyan", markersize=9, mew=2)
    _azel_ticks(ax)
    ax.set_title(title, fontsize=9)


def _azel_ticks(ax) -> None:
    """Azimuth / elevation tick labels (degrees) on an axis showing the canvas at extent 360x180."""
    ax.set_xticks([0, 90, 180, 270, 360], ["180", "90", "0", "-90", "-180"])
    ax.set_yticks([0, 90, 180], ["90", "0", "-90"])


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
    titles: Sequence[str] | None = None,
) -> None:
    """The acoustic feature planes of one frame, (B, 180, 360), one panel per band, as PNG.

    Panels are titled ``band k: <centre> Hz`` unless ``titles`` are given (e.g. when the band
    centres are unknown)."""
    if titles is None:
        titles = [f"band {k}: {centres[k]:.0f} Hz" for k in range(len(planes))]
    rows = int(np.ceil(len(planes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 1.95 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k < len(planes):
            _draw_canvas(ax, planes[k], titles[k], marks)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Detection overlays: numpy/Pillow only, so a whole clip renders in seconds.

Instance = Annotation | Mapping[str, Any]
"""An :class:`~seld_d2.data.labels.Annotation`, or a mapping with ``category_id`` and either
``segmentation`` (list of (K, 3) ``[x, y, v]`` arrays, as in dataset records) or ``energy`` (a
(180, 360) map, as a model predicts it); ``instance_id`` and ``score`` are optional."""

SPARSE_POINTS = 50  # fewer triplets than this: the points are drawn as discs to be visible
SPARSE_RADIUS = 3  # disc radius in canvas pixels for sparse annotations


def _instance_fields(inst: Instance) -> tuple[int, int | None, float | None, list | None, Any]:
    """(category, instance id, score, polygons, energy map) of either instance form."""
    if isinstance(inst, Annotation):
        return inst.category_id, inst.instance_id, inst.score, inst.polygons, None
    return (
        int(inst["category_id"]),
        inst.get("instance_id"),
        inst.get("score"),
        inst.get("segmentation"),
        inst.get("energy"),
    )


def _dilate(a: np.ndarray, radius: int = 1) -> np.ndarray:
    """Grey (or binary) dilation of an (H, W) map by a square of ``radius`` pixels; x wraps around
    (the azimuth seam), y does not (the poles)."""
    out = a.copy()
    h = a.shape[0]
    for dx in range(-radius, radius + 1):
        moved = np.roll(a, dx, axis=1) if dx else a
        for dy in range(-radius, radius + 1):
            if dy > 0:
                np.maximum(out[dy:], moved[: h - dy], out=out[dy:])
            elif dy < 0:
                np.maximum(out[:dy], moved[-dy:], out=out[:dy])
            elif dx:
                np.maximum(out, moved, out=out)
    return out


def _disc_points(pts: np.ndarray, v: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every point repeated at the integer offsets of a disc of ``radius`` pixels, rows outside
    the canvas dropped (columns wrap in :func:`render_energy`). -> ((K', 3) points, (K',) values)."""
    d = np.arange(-radius, radius + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    keep = dy * dy + dx * dx <= radius * radius
    dy, dx = dy[keep], dx[keep]
    xs = (np.round(pts[:, 0])[:, None] + dx).ravel()
    ys = (np.round(pts[:, 1])[:, None] + dy).ravel()
    vs = np.repeat(v, len(dx))
    inside = (ys >= 0) & (ys < CANVAS_HEIGHT)
    return np.column_stack([np.mod(xs[inside], CANVAS_WIDTH), ys[inside], vs[inside]]), vs[inside]


def annotation_energy(
    inst: Instance, *, sparse_points: int = SPARSE_POINTS, radius: int = SPARSE_RADIUS
) -> np.ndarray:
    """An instance's energy on the canvas, divided by its own maximum: float32 (180, 360) in [0, 1].

    Triplets go to their nearest pixel (dense labels cover their region that way); an instance
    with fewer than ``sparse_points`` triplets (typical of predictions) is dilated by a disc of
    ``radius`` pixels so that it stays visible. Listed points with v <= 0 still count as support.
    """
    _, _, _, polygons, energy = _instance_fields(inst)
    if energy is not None:
        e = np.clip(np.asarray(energy, np.float32), 0.0, None)
    else:
        polys = [np.asarray(p, np.float32).reshape(-1, 3) for p in polygons or []]
        polys = [p for p in polys if len(p)]
        if not polys:
            return np.zeros((CANVAS_HEIGHT, CANVAS_WIDTH), np.float32)
        pts = np.concatenate(polys)
        v = np.clip(pts[:, 2], 0.0, None)
        # Points whose value is 0 would vanish; give them the smallest positive level so the
        # support (and its outline) still shows where the annotation lies.
        peak = float(v.max())
        v = np.maximum(v, 1e-3 * peak if peak > 0 else 1.0)
        if len(pts) < sparse_points and radius > 0:
            pts, v = _disc_points(pts, v, radius)
        e = render_energy([np.column_stack([pts[:, :2], v])], CANVAS_HEIGHT, CANVAS_WIDTH)
    peak = float(e.max())
    return e / peak if peak > 0 else e


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


def instance_label(inst: Instance, *, show_score: bool = False) -> str:
    """``"Telephone 0.87 #3"``: class name, score (if asked and known) and instance id."""
    cat, inst_id, score, _, _ = _instance_fields(inst)
    name = CLASS_NAMES[cat] if 0 <= cat < len(CLASS_NAMES) else f"class {cat}"
    parts = [name]
    if show_score and score is not None:
        parts.append(f"{float(score):.2f}")
    if inst_id is not None:
        parts.append(f"#{int(inst_id)}")
    return " ".join(parts)


def overlay_annotations(
    rgb: np.ndarray,
    annotations: Sequence[Instance],
    *,
    show_score: bool = False,
    alpha: float = 0.6,
    outline: bool = True,
    labels: bool = True,
    scale: int = 1,
    font_size: int = 10,
    energies: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Draw instances on an RGB frame: a translucent layer in the class colour (opacity
    ``alpha * energy``, energy normalised per instance), a one-pixel outline just outside the
    support (so it never hides the map) and a text label above or below the instance.

    Args:
        rgb: uint8 (180, 360, 3) frame.
        annotations: instances, see :data:`Instance`.
        show_score: put the score in the label (predictions).
        scale: integer upscaling of the output (nearest), so labels can be legible.
        font_size: label height in output pixels at scale 1 (multiplied by ``scale``).
        energies: precomputed :func:`annotation_energy` maps, one per instance (saves work when
            the same instances are drawn more than once).
    Returns:
        uint8 (180 * scale, 360 * scale, 3).
    """
    rgb = np.asarray(rgb)
    if rgb.shape != (CANVAS_HEIGHT, CANVAS_WIDTH, 3):
        raise ValueError(f"expected a ({CANVAS_HEIGHT}, {CANVAS_WIDTH}, 3) frame, got {rgb.shape}")
    if energies is None:
        energies = [annotation_energy(a) for a in annotations]
    cats = [_instance_fields(a)[0] for a in annotations]
    colours = [np.asarray(CLASS_COLORS[c % len(CLASS_COLORS)], np.float32) for c in cats]
    img = rgb.astype(np.uint8, copy=True)
    # Blend only the support pixels: instances cover a small part of the canvas, and a
    # whole-canvas float composite per instance was most of the cost of an animation frame.
    for e, colour in zip(energies, colours, strict=True):
        ys, xs = np.nonzero(e)
        a = (alpha * e[ys, xs])[:, None]
        img[ys, xs] = np.clip(np.rint(img[ys, xs] * (1.0 - a) + colour * a), 0, 255).astype(np.uint8)
    if outline:
        # Outlines after every fill, so one instance's layer does not wash out another's outline.
        for e, colour in zip(energies, colours, strict=True):
            rows = np.flatnonzero(e.any(axis=1))
            if rows.size == 0:
                continue
            # Dilate only the band of rows around the support (one row of margin each side).
            r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, CANVAS_HEIGHT)
            support = e[r0:r1] > 0
            ring = _dilate(support) & ~support
            img[r0:r1][ring] = colour.astype(np.uint8)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    if labels and len(annotations):
        pil = Image.fromarray(img)
        draw = ImageDraw.Draw(pil)
        font = _font(font_size * scale)
        for inst, e, colour in zip(annotations, energies, colours, strict=True):
            _draw_label(draw, font, instance_label(inst, show_score=show_score), e, colour, scale)
        img = np.asarray(pil)
    return img


def _draw_label(draw, font, text: str, energy: np.ndarray, colour: np.ndarray, scale: int) -> None:
    """Text in the class colour on a black plate, above the instance's box (below it when the box
    touches the top); for a seam-crossing instance, the part holding the peak is used."""
    if not energy.any():
        return
    peak_col = int(np.argmax(energy.max(axis=0)))
    part = next(p for p in split_at_seam(energy) if p[:, peak_col].any())
    x0, y0, x1, y1 = (int(v) * scale for v in support_box(part))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2, bottom - top + 2
    width, height = CANVAS_WIDTH * scale, CANVAS_HEIGHT * scale
    tx = min(max(x0, 0), max(width - tw, 0))
    ty = y0 - th - scale if y0 - th - scale >= 0 else min(y1 + scale, height - th)
    draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=(0, 0, 0))
    draw.text((tx + 1 - left, ty + 1 - top), text, font=font, fill=tuple(int(c) for c in colour))


def side_by_side(
    images: Sequence[np.ndarray],
    *,
    titles: Sequence[str] = (),
    header: str = "",
    gap: int = 4,
    font_size: int = 11,
    background: tuple[int, int, int] = (24, 24, 24),
) -> np.ndarray:
    """Panels (uint8 (H, W_i, 3), same H) next to each other with ``gap`` pixels between them, a
    title strip above each (when ``titles`` are given) and a header line on top. -> uint8 RGB."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    heights = {im.shape[0] for im in images}
    if len(heights) != 1:
        raise ValueError(f"panels must have the same height, got {sorted(heights)}")
    h = heights.pop()
    font = _font(font_size)
    line = font_size + 6
    top = (line if header else 0) + (line if titles else 0)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = np.empty((top + h, width, 3), np.uint8)
    canvas[:] = background
    x = 0
    offsets = []
    for im in images:
        canvas[top:, x : x + im.shape[1]] = im[..., :3]
        offsets.append(x)
        x += im.shape[1] + gap
    if header or titles:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        if header:
            draw.text((4, 3), header, font=font, fill=(235, 235, 235))
        for title, x0 in zip(titles, offsets, strict=False):
            draw.text((x0 + 4, top - line + 3), title, font=font, fill=(200, 200, 200))
        canvas = np.asarray(pil)
    return canvas


def plot_overlays(
    images: Sequence[np.ndarray], titles: Sequence[str], path: str | os.PathLike, suptitle: str = ""
) -> None:
    """Overlay images (uint8, any integer upscaling of the 360x180 canvas) side by side with
    azimuth/elevation ticks, saved as PNG."""
    fig, axes = plt.subplots(1, len(images), figsize=(6.4 * len(images), 3.6), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles, strict=True):
        ax.imshow(image, extent=(0, 360, 180, 0), aspect="equal", interpolation="antialiased")
        _azel_ticks(ax)
        ax.set_xlabel("azimuth (deg)", fontsize=8)
        ax.set_ylabel("elevation (deg)", fontsize=8)
        ax.set_title(title, fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def save_image(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 RGB array as PNG, atomically."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")


def save_gif(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> int:
    """Write uint8 RGB frames as a looping GIF (Pillow; frames may come from a generator and are
    quantised one by one). Returns the number of frames; raises ``ValueError`` when there are none.

    Pillow merges a frame identical to the previous one into it (longer duration), so a GIF of
    repeated pictures may hold fewer frames than it was given.
    """
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"{path}: no frames to write") from None
    count = 1

    def quantised(arrays: Iterator[np.ndarray]) -> Iterator[Image.Image]:
        nonlocal count
        for a in arrays:
            count += 1
            yield _to_palette(a)

    # GIF durations are in centiseconds; Pillow rounds the milliseconds down.
    duration = int(round(1000.0 / fps))
    with atomic_open(path, "wb") as f:
        _to_palette(first).save(
            f, format="GIF", save_all=True, append_images=quantised(it), duration=duration, loop=0
        )
    return count


def _to_palette(frame: np.ndarray) -> Image.Image:
    # Fast octree quantisation: Pillow's default (median cut) is several times slower per frame.
    return Image.fromarray(np.asarray(frame, np.uint8)).quantize(256, method=Image.Quantize.FASTOCTREE)


def save_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 10.0, crf: int = 23) -> int:
    """Write uint8 RGB frames as an H.264 MP4 with PyAV (MPEG-4 part 2 where libx264 is missing),
    atomically. Odd sizes are padded by one pixel (yuv420p needs even ones). Returns the frame
    count. Raises ``ImportError`` when PyAV is not installed, ``ValueError`` with no frames."""
    import av  # optional dependency: only this helper needs it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    count = 0
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame, np.uint8)[..., :3]
                h, w = frame.shape[:2]
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
                if stream is None:
                    if "libx264" in av.codecs_available:
                        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        stream.options = {"crf": str(crf)}
                    else:
                        stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
                        stream.bit_rate = 4_000_000
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        umask = os.umask(0)  # mkstemp made the file 0600; give it what a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


def plot_curves(
    curves: dict[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logy: bool = True,
) -> None:
    """Named (x, y) series on one axis (e.g. training and validation loss), saved as PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    if logy and any(y > 0 for pts in curves.values() for _, y in pts):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
