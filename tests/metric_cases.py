"""Hand-made annotations for the official metric's tests (test_rendering, test_matching,
test_files, test_metric): STAIRS26-like blobs, clips of them and predictions made from them."""

from pathlib import Path

import numpy as np
import pytest

from seld_d2.data.labels import Annotation, write_labels
from seld_d2.utils.threads import blas_threads


@pytest.fixture
def one_blas_thread():
    """Renders called directly (not through evaluate_*) still want single-threaded LAPACK; a test
    module uses it with ``pytestmark = pytest.mark.usefixtures("one_blas_thread")``."""
    with blas_threads(1):
        yield


def blob(cx: int, cy: int, r: int, seed: int = 0) -> np.ndarray:
    """STAIRS26-like polygon: integer pixels of a disc on the 360x180 canvas (x wrapped), values
    peaking at the centre with a little noise; float32 (K, 3)."""
    xs, ys = np.meshgrid(np.arange(cx - r, cx + r + 1), np.arange(cy - r, cy + r + 1))
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    x, y = xs[inside], ys[inside]
    rho2 = ((x - cx) ** 2 + (y - cy) ** 2) / r**2
    v = 0.24 + 0.76 * np.exp(-2 * rho2) * np.random.default_rng(seed).uniform(0.95, 1.0, len(x))
    return np.column_stack([np.mod(x, 360), y, v]).astype(np.float32)


def ann(frame: int, cls: int, polys: list[np.ndarray], score: float | None = None, dist: float = 200.0):
    return Annotation(frame, 0, cls, dist, polys, score)


def gt_clip(n: int = 4, cls: int = 0) -> list[Annotation]:
    """n frames, one event each, at different places."""
    return [ann(f, cls, [blob(40 + 60 * f, 60 + 10 * f, 10, seed=f)]) for f in range(n)]


def as_pred(anns: list[Annotation], scores: list[float], dx: int = 0) -> list[Annotation]:
    out = []
    for a, s in zip(anns, scores, strict=True):
        polys = [p.copy() for p in a.polygons]
        for p in polys:
            p[:, 0] = np.mod(p[:, 0] + dx, 360)
        out.append(Annotation(a.frame, a.instance_id, a.category_id, a.distance, polys, s))
    return out


def write(path: Path, anns: list[Annotation]) -> Path:
    write_labels(path, anns)
    return path
