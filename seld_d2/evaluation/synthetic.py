"""Generated inputs of the official metric, for its tests and benchmark: STAIRS26-like ground truth
(1-3 events per frame, each a solid blob of a few hundred integer pixels with values in [0.24, 1],
split in two polygons at the azimuth seam) and predictions written like the dense exporter (a box
of integer pixels above a fraction of the peak, every N-th kept), shifted, sometimes missing,
duplicated, of the wrong class, or extra; and :func:`max_difference` between two results."""

from __future__ import annotations

import math

import numpy as np

from ..data.labels import Annotation


def _blob_pixels(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixels inside a wobbly ellipse around (cx, cy) on the 360x180 canvas, x wrapped, with
    a smooth peak profile; returns x, y (int) and normalised distance from the centre (0 at the peak)."""
    x0, x1 = int(math.floor(cx - rx)), int(math.ceil(cx + rx))
    y0, y1 = max(int(math.floor(cy - ry)), 0), min(int(math.ceil(cy + ry)), 179)
    xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
    ang = np.arctan2(ys - cy, xs - cx)
    wobble = 1.0 + 0.15 * np.sin(3 * ang + rng.uniform(0, 2 * np.pi))
    rho = np.hypot((xs - cx) / rx, (ys - cy) / ry) / wobble
    inside = rho <= 1.0
    return np.mod(xs[inside], 360), ys[inside], rho[inside]


def _split_seam(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """One polygon, or two when the pixels touch both edges of the canvas (as STAIRS26 writes)."""
    pts = np.column_stack([x, y, v]).astype(np.float32)
    left = x < 180
    if left.all() or not left.any() or not ((x < 20).any() and (x > 340).any()):
        return [pts]
    return [pts[left], pts[~left]]


def gt_annotation(
    rng: np.random.Generator, frame: int, inst: int, cls: int, cx: float, cy: float
) -> Annotation:
    """A STAIRS26-like label: a solid blob of integer pixels, v = sigmoid-like profile in [0.24, 1]."""
    r = rng.uniform(6.0, 11.0)
    x, y, rho = _blob_pixels(rng, cx, cy, r * rng.uniform(0.9, 1.3), r)
    v = 0.24 + 0.76 * np.exp(-2.0 * rho**2) * rng.uniform(0.95, 1.0, len(x))
    return Annotation(frame, inst, cls, float(rng.uniform(80, 400)), _split_seam(x, y, v))


def pred_annotation(
    rng: np.random.Generator, frame: int, inst: int, cls: int, cx: float, cy: float, score: float
) -> Annotation:
    """A dense-exporter-like prediction: pixels of a box >= dense_thr x peak, every N-th by value."""
    r = rng.uniform(7.0, 14.0)
    x, y, rho = _blob_pixels(rng, cx, cy, r * 1.2, r)
    v = np.exp(-2.5 * rho**2) + 0.03 * rng.standard_normal(len(x))
    keep = v >= 0.25 * v.max()
    x, y, v = x[keep], y[keep], v[keep]
    order = np.argsort(-v, kind="stable")[:: int(rng.integers(1, 3))]
    ann = _split_seam(x[order], y[order], np.clip(v[order], 0.01, 1.0))
    return Annotation(frame, inst, cls, float(rng.uniform(80, 400)), ann, score=score)


def synthetic_clip(
    rng: np.random.Generator, frames: int, num_classes: int = 13
) -> tuple[list[Annotation], list[Annotation]]:
    """(predictions, ground truth) of one clip: 1-3 slowly moving events per frame."""
    gt: list[Annotation] = []
    pred: list[Annotation] = []
    events = []  # [class, az, el, d_az, frames left, instance]
    inst = 0
    for f in range(frames):
        events = [e for e in events if e[4] > 0]
        while len(events) < 1 or (len(events) < 3 and rng.random() < 0.03):
            near_seam = rng.random() < 0.15
            x = rng.uniform(-10, 10) % 360 if near_seam else rng.uniform(0, 360)
            events.append(
                [int(rng.integers(num_classes)), x, rng.uniform(30, 150), rng.normal(0, 0.3), 0, inst]
            )
            events[-1][4] = int(rng.integers(10, 120))
            inst += 1
        for e in events:
            e[1] = (e[1] + e[3]) % 360
            e[4] -= 1
            cls, cx, cy = e[0], e[1], e[2]
            gt.append(gt_annotation(rng, f, e[5], cls, cx, cy))
            u = rng.random()
            if u < 0.15:
                continue  # missed
            pcls = cls if u < 0.92 else int(rng.integers(num_classes))
            shift = rng.normal(0, 4.0, 2)
            score = float(np.clip(rng.normal(0.75, 0.12), 0.05, 1.0))
            pred.append(pred_annotation(rng, f, e[5], pcls, cx + shift[0], cy + shift[1], score))
            if rng.random() < 0.08:  # a duplicate a bit further away
                shift = rng.normal(0, 8.0, 2)
                pred.append(pred_annotation(rng, f, e[5], pcls, cx + shift[0], cy + shift[1], score * 0.8))
        if rng.random() < 0.2:  # an extra false positive somewhere
            pred.append(
                pred_annotation(
                    rng,
                    f,
                    10_000 + f,
                    int(rng.integers(num_classes)),
                    rng.uniform(0, 360),
                    rng.uniform(30, 150),
                    float(rng.uniform(0.05, 0.8)),
                )
            )
    return pred, gt


def synthetic_case(
    seed: int, clips: int, frames: int, num_classes: int = 13
) -> tuple[dict[str, list[Annotation]], dict[str, list[Annotation]]]:
    """(predictions, ground truth) keyed by clip name ``fold4_room{k}_mix001``; deterministic."""
    rng = np.random.default_rng(seed)
    pred, gt = {}, {}
    for k in range(clips):
        name = f"fold4_room{k}_mix001"
        pred[name], gt[name] = synthetic_clip(rng, frames, num_classes)
    return pred, gt


def max_difference(a, b, path: str = "") -> tuple[float, str]:
    """Largest absolute difference between the numbers of two result dicts, and where it is
    (inf on a structural mismatch: a key missing, or None against a number)."""
    if isinstance(b, dict):
        worst = (0.0, "")
        for key, vb in b.items():
            if not isinstance(a, dict) or key not in a:
                return math.inf, f"{path}/{key}"
            worst = max(worst, max_difference(a[key], vb, f"{path}/{key}"))
        return worst
    if isinstance(b, list):
        if not isinstance(a, list) or len(a) != len(b):
            return math.inf, path
        return max(
            (max_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))),
            default=(0.0, ""),
        )
    if isinstance(b, bool | str) or b is None or a is None:
        return (0.0, "") if a == b else (math.inf, path)
    return abs(float(a) - float(b)), path
