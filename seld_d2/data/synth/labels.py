"""STAIRS26-style energy labels of a 32-channel recording (SPEC §5).

Per 100 ms frame: APGD acoustic map of the em32 visibilities (``linear9`` bands, fixed-wavelength
steering, median over bands), interpolated to the 360x180 canvas, multiplied by a Gaussian
(sigma 10 deg of great-circle angle) centred on each active event's true direction, thresholded;
every connected region (8-connectivity, holes filled: "every pixel inside its contour") becomes a
polygon of ``[x, y, v]`` triplets, split in two at the azimuth seam x = 0/360.

Choices where STAIRS26 leaves freedom or our units differ:

* **Interpolation**: linear (barycentric) on the spherical Delaunay triangulation of the 484
  Fibonacci directions (their convex hull), the spherical analogue of STAIRS26's ``griddata``
  linear interpolation in the (az, el) plane, without its seam/pole gaps.
* **Threshold and standardisation**: STAIRS26's own constants. Pixels whose masked value is
  >= 4e-5 are kept and every value m becomes ``v = sigmoid((m - mu) / sd)`` with mu = 6.107e-4,
  sd = 4.970e-4 (the mean and standard deviation of the polygons' peak values over STARSS23), so
  v >= 0.24 at the threshold and v lies in (0, 1). Our maps (eigenvalue-normalised visibilities,
  the same APGD) have the same scale: on default synthetic scenes the mean peak is ~7e-4
  (sd ~5e-4), and v spans ~[0.24, 0.75] (1st-99th percentile).
* **Invisible events**: when an event's masked map stays below the threshold in a frame (it is
  drowned by louder events, or a tonal sound misses the 50 Hz-wide bands), that frame gets no
  annotation (as the newer STAIRS26 script; an older one wrote an empty segmentation there).
* **Gaussian support**: the product is evaluated within 40 deg (4 sigma) of the event, where the
  Gaussian is above 3e-4; beyond it a pixel would need a map value > 0.1 (maps peak at ~1e-3) to
  reach the threshold.
* **Regions**: regions under 3 pixels are dropped unless nothing larger exists (a polygon needs
  >= 3 points to be drawn as a surface).
* Distance is written in centimetres (event distance x 100; 2 decimals, exact for the table's 0.1 mm).

Labels are produced only for the frames the caller marks active (see ``generate.py``: frames
inside the event where its own signal is within 30 dB of its loudest frame).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from ...acoustics.audio import SAMPLE_RATE
from ...acoustics.geometry import (
    CANVAS_HEIGHT,
    CANVAS_WIDTH,
    angular_distance_deg,
    azel_to_pixel,
    canvas_directions,
    canvas_nearest_index,
    em32_positions,
    fibonacci_grid,
    steering_matrix,
)
from ...acoustics.solvers import GramOperator, apgd
from ...acoustics.visibility import FRAME_RATE, BandSpec, visibilities
from .scene import Event

# STAIRS26's standardisation: mean and standard deviation of the polygons' peak values, and the
# pixel threshold (expressed below as ratios to the mean, so a user can rescale all three).
MAP_PEAK_MEAN = 6.106861602095730e-4
STAIRS_THRESHOLD_RATIO = 4e-5 / 6.106861602095730e-4  # 0.0655: threshold / mean peak
STAIRS_SD_RATIO = 4.970147144300499e-4 / 6.106861602095730e-4  # 0.814: sd / mean peak

LABEL_SIGMA_DEG = 10.0
SUPPORT_DEG = 40.0
MIN_REGION_PIXELS = 3

Solver = Callable[[np.ndarray, GramOperator], np.ndarray]


@lru_cache(maxsize=2)
def label_operator(order: int = 10) -> GramOperator:
    """The Gram operator of the em32 at the default fixed steering wavelength (built once)."""
    return GramOperator(steering_matrix(em32_positions(), fibonacci_grid(order)))


# ----------------------------------------------------------------------------------------------
# grid -> canvas interpolation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasInterpolation:
    """For every canvas pixel, the 3 grid directions of its spherical Delaunay triangle and the
    barycentric weights: ``canvas = sum_k weights[..., k] * maps[..., index[..., k]]``."""

    index: np.ndarray  # (H, W, 3) int
    weights: np.ndarray  # (H, W, 3) float

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        """Maps (..., N) -> canvas (..., H, W)."""
        return np.sum(maps[..., self.index] * self.weights, axis=-1)


@lru_cache(maxsize=4)
def canvas_interpolation(
    order: int = 10, width: int = CANVAS_WIDTH, height: int = CANVAS_HEIGHT
) -> CanvasInterpolation:
    """Linear interpolation weights from the Fibonacci grid to the canvas (computed once)."""
    grid = fibonacci_grid(order)
    tris = ConvexHull(grid).simplices  # (T, 3): the spherical Delaunay triangulation
    inv = np.linalg.inv(np.transpose(grid[tris], (0, 2, 1)))  # (T, 3, 3): d -> barycentric
    dirs = canvas_directions(width, height).reshape(-1, 3)
    nearest = canvas_nearest_index(grid, width, height).reshape(-1)
    # Candidate triangles: those around each pixel's nearest grid direction.
    incident: list[list[int]] = [[] for _ in range(len(grid))]
    for t, tri in enumerate(tris):
        for v in tri:
            incident[v].append(t)
    deg = max(len(v) for v in incident)
    inc = np.array([v + [v[0]] * (deg - len(v)) for v in incident])  # (N, deg)
    cand = inc[nearest]  # (P, deg)
    w = np.einsum("pcij,pj->pci", inv[cand], dirs)  # (P, deg, 3)
    best = np.argmax(w.min(axis=-1), axis=1)
    tri_of = cand[np.arange(len(dirs)), best]
    wts = w[np.arange(len(dirs)), best]
    miss = np.flatnonzero(wts.min(axis=-1) < -1e-9)
    if len(miss):  # the containing triangle does not touch the nearest direction: search all
        wm = np.einsum("tij,pj->pti", inv, dirs[miss])
        bm = np.argmax(wm.min(axis=-1), axis=1)
        tri_of[miss] = bm
        wts[miss] = wm[np.arange(len(miss)), bm]
    wts = np.clip(wts, 0.0, None)
    wts /= wts.sum(axis=-1, keepdims=True)
    return CanvasInterpolation(tris[tri_of].reshape(height, width, 3), wts.reshape(height, width, 3))


# ----------------------------------------------------------------------------------------------
# annotations
# ----------------------------------------------------------------------------------------------


@dataclass
class Annotation:
    """One event in one frame: polygons are float arrays (P, 3) of ``[x, y, v]``."""

    frame: int
    instance_id: int
    category_id: int
    distance_cm: float
    polygons: list[np.ndarray]

    def to_dict(self) -> dict:
        """The SPEC §1 JSON object (plain Python types)."""
        return {
            "metadata_frame_index": int(self.frame),
            "instance_id": int(self.instance_id),
            "category_id": int(self.category_id),
            "distance": float(self.distance_cm),
            "segmentation": [
                [[int(x), int(y), round(float(v), 4)] for x, y, v in poly] for poly in self.polygons
            ],
        }


def annotations_to_json(annotations: Sequence[Annotation]) -> str:
    """Serialise to the label JSON text (fixed key order, v with 4 decimals); equivalent to
    ``json.dumps({"annotations": [a.to_dict() ...]})`` but fast for millions of triplets."""
    parts = []
    for a in annotations:
        polys = []
        for poly in a.polygons:
            xs = poly[:, 0].astype(np.int64).tolist()
            ys = poly[:, 1].astype(np.int64).tolist()
            vs = poly[:, 2].tolist()
            polys.append("[" + ", ".join(map("[{}, {}, {:.4f}]".format, xs, ys, vs)) + "]")
        parts.append(
            f'{{"metadata_frame_index": {int(a.frame)}, "instance_id": {int(a.instance_id)}, '
            f'"category_id": {int(a.category_id)}, "distance": {float(a.distance_cm)!r}, '
            f'"segmentation": [{", ".join(polys)}]}}'
        )
    return '{"annotations": [' + ",\n".join(parts) + "]}\n"


@dataclass(frozen=True)
class _Window:
    """The canvas pixels within SUPPORT_DEG of an event, as a rectangular window in a column
    frame rolled so the event sits mid-canvas (so regions never touch the window's sides)."""

    rows: np.ndarray  # (h,) canvas rows
    cols: np.ndarray  # (w,) original canvas columns of the rolled window's columns
    seam: int  # first window column whose original x wrapped to 0 (w if none)
    gauss: np.ndarray  # (h, w) Gaussian weight, 0 outside the support
    index: np.ndarray  # (h, w, 3) interpolation vertices
    weights: np.ndarray  # (h, w, 3) interpolation weights


def _event_window(
    direction: np.ndarray, interp: CanvasInterpolation, sigma: float, support: float
) -> _Window:
    H, W = interp.index.shape[:2]
    az, el = np.rad2deg(np.arctan2(direction[1], direction[0])), np.rad2deg(np.arcsin(direction[2]))
    x0, y0 = azel_to_pixel(az, el)
    x0, y0 = float(x0) * W / 360.0, float(y0) * H / 180.0
    dy = support * H / 180.0
    rows = np.arange(max(0, math.floor(y0 - dy)), min(H - 1, math.ceil(y0 + dy)) + 1)
    lat = np.deg2rad(90.0 - rows * 180.0 / H)
    phi0 = math.radians(float(el))
    cosr = math.cos(math.radians(support))
    with np.errstate(divide="ignore", invalid="ignore"):
        arg = (cosr - np.sin(lat) * math.sin(phi0)) / (np.cos(lat) * math.cos(phi0))
    half = np.where(arg <= -1.0, 180.0, np.rad2deg(np.arccos(np.clip(arg, -1.0, 1.0))))
    half = np.nan_to_num(half, nan=180.0)
    hw = min(W // 2 - 1, math.ceil(float(half.max()) * W / 360.0) + 1)
    xc = int(round(x0)) % W
    rolled = np.arange(W // 2 - hw, W // 2 + hw + 1)
    cols = (rolled - W // 2 + xc) % W
    wrap = np.flatnonzero(np.diff(cols) < 0)
    seam = int(wrap[0] + 1) if len(wrap) else len(cols)
    dirs = canvas_directions(W, H)[rows][:, cols]
    theta = angular_distance_deg(dirs, direction[None, None, :])
    gauss = np.where(theta <= support, np.exp(-0.5 * (theta / sigma) ** 2), 0.0)
    return _Window(rows, cols, seam, gauss, interp.index[rows][:, cols], interp.weights[rows][:, cols])


class LabelMaker:
    """Energy labels of em32 recordings.

    Args:
        fs: sample rate of the 32-ch audio.
        bands: band layout of the APGD maps (STAIRS26: ``linear9``).
        sigma_deg: Gaussian width around each event.
        threshold: pixel threshold in units of ``map_peak_mean``.
        map_peak_mean: the standardisation's centre (see the module docstring).
        sd_ratio: the standardisation's spread / ``map_peak_mean``.
        solver: callable (S (T, B, 32, 32), GramOperator) -> maps (T, B, 484); default plain
            APGD (:func:`seld_d2.acoustics.solvers.apgd`).
    """

    def __init__(
        self,
        fs: int = SAMPLE_RATE,
        bands: BandSpec = "linear9",
        sigma_deg: float = LABEL_SIGMA_DEG,
        threshold: float = STAIRS_THRESHOLD_RATIO,
        map_peak_mean: float = MAP_PEAK_MEAN,
        sd_ratio: float = STAIRS_SD_RATIO,
        solver: Solver | None = None,
        width: int = CANVAS_WIDTH,
        height: int = CANVAS_HEIGHT,
    ):
        if sigma_deg <= 0 or threshold <= 0 or map_peak_mean <= 0 or sd_ratio <= 0:
            raise ValueError("sigma_deg, threshold, map_peak_mean and sd_ratio must be positive")
        self.fs = int(fs)
        self.bands = bands
        self.sigma = float(sigma_deg)
        self.support = max(SUPPORT_DEG, 4.0 * self.sigma)
        self.threshold = float(threshold) * map_peak_mean
        self.mu = float(map_peak_mean)
        self.sd = float(sd_ratio) * map_peak_mean
        self.solver = solver or apgd
        self.op = label_operator()
        self.interp = canvas_interpolation(10, width, height)

    def maps(self, audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Band-median APGD maps of the given 100 ms frames.

        Args:
            audio: channels-first (32, num_samples) em32 audio ((num_samples, 32) also accepted).
            frames: (F,) frame indices.

        Returns:
            (F, 484) float64.
        """
        audio = np.asarray(audio)
        if audio.shape[1] == self.op.A.shape[0] and audio.shape[0] != audio.shape[1]:
            audio = audio.T  # (num_samples, 32) -> channels first
        frames = np.asarray(frames, np.int64)
        if len(frames) == 0:
            return np.zeros((0, self.op.num_directions))
        T = audio.shape[1] // (self.fs // FRAME_RATE)
        if frames.min() < 0 or frames.max() >= T:
            raise ValueError(f"frames must be in [0, {T}) for this audio, got {frames.min()}..{frames.max()}")
        S = visibilities(audio.T, self.fs, self.bands)[frames]
        return np.median(self.solver(S, self.op), axis=1)

    def _polygons(self, masked: np.ndarray, win: _Window) -> list[np.ndarray]:
        """Regions of one frame's masked window -> polygons of [x, y, v]."""
        if not float(masked.max()) >= self.threshold:
            return []  # the event is not visible in the acoustic map in this frame
        mask = ndimage.binary_fill_holes(masked >= self.threshold)
        lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            return []
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        keep = [i + 1 for i in range(n) if sizes[i] >= MIN_REGION_PIXELS] or [int(np.argmax(sizes)) + 1]
        v_all = 1.0 / (1.0 + np.exp(-(masked - self.mu) / self.sd))
        polygons = []
        for k in keep:
            r, c = np.nonzero(lab == k)
            v = np.clip(np.round(v_all[r, c], 4), 1e-4, 1.0)
            # The seam splits a region into the part left of x = 0/360 and the part right of it.
            for part in (c < win.seam, c >= win.seam):
                if part.any():
                    polygons.append(
                        np.stack([win.cols[c[part]], win.rows[r[part]], v[part]], axis=1).astype(np.float64)
                    )
        return polygons

    def annotations(self, audio: np.ndarray, events: Sequence[Event], active: np.ndarray) -> list[Annotation]:
        """Labels of a clip.

        Args:
            audio: em32 audio, (num_samples, 32) or (32, num_samples).
            events: the clip's events (true directions and distances).
            active: bool (len(events), num_frames): frames to label per event.

        Returns:
            annotations sorted by (frame, instance_id).
        """
        active = np.asarray(active, dtype=bool)
        frames = np.flatnonzero(active.any(axis=0))
        maps = self.maps(audio, frames)
        pos = np.full(active.shape[1], -1)
        pos[frames] = np.arange(len(frames))
        out: list[Annotation] = []
        for ev, act in zip(events, active, strict=True):
            ks = np.flatnonzero(act)
            if len(ks) == 0:
                continue
            win = _event_window(ev.direction, self.interp, self.sigma, self.support)
            m = maps[pos[ks]]  # (F_e, N)
            canvas = np.sum(m[:, win.index] * win.weights, axis=-1)  # (F_e, h, w)
            masked = canvas * win.gauss
            for k, frame_masked in zip(ks, masked, strict=True):
                polys = self._polygons(frame_masked, win)
                if polys:
                    out.append(
                        Annotation(
                            int(k), ev.instance_id, ev.category_id, round(ev.distance * 100.0, 2), polys
                        )
                    )
        out.sort(key=lambda a: (a.frame, a.instance_id))
        return out
