"""Array and sphere geometry: em32 capsules, the Fibonacci direction grid, steering operators and
the equirectangular canvas convention (SPEC §1, §3).

Directions are unit vectors in a right-handed frame: +x straight ahead, +y to the left, +z up.
Azimuth is counter-clockwise seen from above (positive to the left), elevation positive up, both
in degrees. Canvas pixel (x, y) on the 360x180 equirectangular image: ``x = (180 - az) mod 360``,
``y = 90 - el``; column i of a canvas array is x = i and row j is y = j.
"""

from __future__ import annotations

import numpy as np

SPEED_OF_SOUND = 340.5  # m/s
EM32_RADIUS = 0.042  # m

# Eigenmike em32 capsules 1-32 as (colatitude, azimuth) in degrees.
EM32_COLAT_AZ_DEG = np.array(
    [
        (69, 0), (90, 32), (111, 0), (90, 328), (32, 0), (55, 45), (90, 69), (125, 45),
        (148, 0), (125, 315), (90, 291), (55, 315), (21, 91), (58, 90), (121, 90), (159, 89),
        (69, 180), (90, 212), (111, 180), (90, 148), (32, 180), (55, 225), (90, 249), (125, 225),
        (148, 180), (125, 135), (90, 111), (55, 135), (21, 269), (58, 270), (122, 270), (159, 271),
    ],
    dtype=np.float64,
)  # fmt: skip

# 0-based em32 channels forming the STARSS23 tetrahedral "MIC" array, in MIC channel order.
TETRA_CHANNELS = (5, 9, 25, 21)

# Default Fibonacci grid order: N_px = 4 (N + 1)^2 = 484 directions.
FIBONACCI_ORDER = 10

# Canvas size of the challenge's equirectangular images.
CANVAS_WIDTH = 360
CANVAS_HEIGHT = 180

# Fixed-wavelength steering of the reference UpLAM: the highest linear9 band centre + 500 Hz.
DEFAULT_STEERING_FREQ = 4333.333333333333 + 500.0


def sph2cart(colat: np.ndarray, azi: np.ndarray, r: float | np.ndarray = 1.0) -> np.ndarray:
    """Spherical (colatitude, azimuth) in radians -> Cartesian, shape (..., 3)."""
    colat, azi = np.asarray(colat, dtype=np.float64), np.asarray(azi, dtype=np.float64)
    s = np.sin(colat)
    return np.stack([s * np.cos(azi), s * np.sin(azi), np.cos(colat)], axis=-1) * np.asarray(r)[..., None]


def azel_to_unit(az_deg: np.ndarray | float, el_deg: np.ndarray | float) -> np.ndarray:
    """Azimuth/elevation in degrees -> unit vectors, shape (..., 3)."""
    az, el = np.broadcast_arrays(
        np.deg2rad(np.asarray(az_deg, np.float64)), np.deg2rad(np.asarray(el_deg, np.float64))
    )
    ce = np.cos(el)
    return np.stack([ce * np.cos(az), ce * np.sin(az), np.sin(el)], axis=-1)


def unit_to_azel(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (..., 3) -> (azimuth in (-180, 180], elevation in [-90, 90]) in degrees."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    az = np.rad2deg(np.arctan2(v[..., 1], v[..., 0]))
    el = np.rad2deg(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    return az, el


def em32_positions(radius: float = EM32_RADIUS) -> np.ndarray:
    """Positions of the 32 em32 capsules in metres, shape (32, 3)."""
    ca = np.deg2rad(EM32_COLAT_AZ_DEG)
    return sph2cart(ca[:, 0], ca[:, 1], radius)


def tetra_positions(radius: float = EM32_RADIUS) -> np.ndarray:
    """Positions of the 4 tetrahedral capsules in STARSS23 MIC order, shape (4, 3)."""
    return em32_positions(radius)[list(TETRA_CHANNELS)]


def fibonacci_grid(order: int = FIBONACCI_ORDER) -> np.ndarray:
    """Fibonacci sphere directions, unit vectors of shape (4 (order + 1)^2, 3).

    ``colat_n = arccos(1 - (2n + 1) / N_px)``, ``lon_n = 4 pi n / (1 + sqrt 5)``.
    """
    n_px = 4 * (order + 1) ** 2
    n = np.arange(n_px, dtype=np.float64)
    colat = np.arccos(1.0 - (2.0 * n + 1.0) / n_px)
    lon = np.mod(4.0 * np.pi * n / (1.0 + np.sqrt(5.0)), 2.0 * np.pi)
    return sph2cart(colat, lon)


def grid_neighbours(grid: np.ndarray, k: int = 6) -> np.ndarray:
    """Indices of the k nearest (great-circle) neighbours of every grid direction, shape (N, k)."""
    cos = grid @ grid.T
    np.fill_diagonal(cos, -np.inf)
    return np.argsort(-cos, axis=1, kind="stable")[:, :k]


def steering_matrix(
    mic_positions: np.ndarray,
    grid: np.ndarray,
    freqs: float | np.ndarray = DEFAULT_STEERING_FREQ,
    c: float = SPEED_OF_SOUND,
) -> np.ndarray:
    """Steering operator ``A = exp(-j 2 pi f / c * P^T R)``.

    A scalar ``freqs`` gives one complex (M, N) matrix (fixed-wavelength steering); an array of
    B band centres gives (B, M, N), one operator per band.
    """
    delays = mic_positions @ grid.T  # (M, N), metres along each direction
    f = np.asarray(freqs, dtype=np.float64)
    phase = -2j * np.pi / c * f[..., None, None] * delays
    return np.exp(phase)


def azel_to_pixel(az_deg: np.ndarray | float, el_deg: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth/elevation in degrees -> canvas coordinates (x in [0, 360), y in [0, 180])."""
    x = np.mod(180.0 - np.asarray(az_deg, np.float64), 360.0)
    y = 90.0 - np.asarray(el_deg, np.float64)
    return x, y


def pixel_to_azel(x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Canvas coordinates -> (azimuth in (-180, 180], elevation) in degrees."""
    az = 180.0 - np.asarray(x, np.float64)
    az = np.where(az <= -180.0, az + 360.0, az)
    return az, 90.0 - np.asarray(y, np.float64)


def canvas_directions(width: int = CANVAS_WIDTH, height: int = CANVAS_HEIGHT) -> np.ndarray:
    """Unit vector of every canvas pixel (column i at x = i * 360 / width), shape (height, width, 3)."""
    xs = np.arange(width) * (360.0 / width)
    ys = np.arange(height) * (180.0 / height)
    az, el = pixel_to_azel(xs[None, :], ys[:, None])
    return azel_to_unit(az, el)


def canvas_nearest_index(
    grid: np.ndarray, width: int = CANVAS_WIDTH, height: int = CANVAS_HEIGHT
) -> np.ndarray:
    """Index of the nearest grid direction (great-circle distance) for every pixel, (height, width)."""
    dirs = canvas_directions(width, height).reshape(-1, 3)
    return np.argmax(dirs @ grid.T, axis=1).reshape(height, width).astype(np.int64)


def angular_distance_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Great-circle angle in degrees between unit vectors, broadcasting over (..., 3)."""
    cos = np.sum(np.asarray(u) * np.asarray(v), axis=-1)
    return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
