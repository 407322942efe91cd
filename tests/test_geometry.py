import numpy as np
import pytest

from seld_d2.acoustics import geometry as g


def test_canvas_convention_matches_spec():
    # SPEC §1: x = (180 - az) mod 360, y = 90 - el; az = +90 (left), el = 0 -> (90, 90).
    x, y = g.azel_to_pixel(90.0, 0.0)
    assert (x, y) == (90.0, 90.0)
    assert g.azel_to_pixel(0.0, 0.0) == (180.0, 90.0)
    assert g.azel_to_pixel(180.0, 45.0) == (0.0, 45.0)
    assert g.azel_to_pixel(-90.0, -30.0) == (270.0, 120.0)


@pytest.mark.parametrize("az,el", [(0, 0), (90, 0), (-179.5, 10), (179.5, -10), (33, 80), (-120, -60)])
def test_pixel_azel_round_trip(az, el):
    x, y = g.azel_to_pixel(az, el)
    az2, el2 = g.pixel_to_azel(x, y)
    assert np.isclose(np.mod(az2 - az + 180, 360) - 180, 0, atol=1e-9)
    assert np.isclose(el2, el)


def test_direction_conventions():
    # +x ahead, +y left, +z up; azimuth counter-clockwise seen from above.
    np.testing.assert_allclose(g.azel_to_unit(0, 0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(g.azel_to_unit(90, 0), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(g.azel_to_unit(0, 90), [0, 0, 1], atol=1e-12)
    az, el = g.unit_to_azel(g.azel_to_unit(-135.0, 35.0))
    assert np.isclose(az, -135.0) and np.isclose(el, 35.0)


def test_em32_and_tetrahedral_subset():
    P = g.em32_positions()
    assert P.shape == (32, 3)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), g.EM32_RADIUS)
    # STARSS23 MIC order: (45, 35), (-45, -35), (135, -35), (-135, 35).
    az, el = g.unit_to_azel(g.tetra_positions())
    np.testing.assert_allclose(az, [45, -45, 135, -135], atol=1e-9)
    np.testing.assert_allclose(el, [35, -35, -35, 35], atol=1e-9)


def test_fibonacci_grid():
    R = g.fibonacci_grid()
    assert R.shape == (484, 3)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0)
    # Roughly uniform: every direction has a neighbour within ~11 degrees, none closer than ~5.
    cos = R @ R.T
    np.fill_diagonal(cos, -1)
    nearest = np.rad2deg(np.arccos(cos.max(axis=1)))
    assert 5.0 < nearest.min() and nearest.max() < 11.0
    colat0 = np.arccos(1 - 1 / 484)
    assert np.isclose(np.arccos(R[0, 2]), colat0)


def test_grid_neighbours_are_nearest():
    R = g.fibonacci_grid()
    nb = g.grid_neighbours(R, 6)
    assert nb.shape == (484, 6)
    assert not np.any(nb == np.arange(484)[:, None])
    d = g.angular_distance_deg(R[:, None, :], R[nb])
    assert d.max() < 16.0


def test_steering_matrix_shapes_and_phase():
    P, R = g.em32_positions(), g.fibonacci_grid()
    A = g.steering_matrix(P, R)
    assert A.shape == (32, 484) and A.dtype == np.complex128
    np.testing.assert_allclose(np.abs(A), 1.0)
    k = 2 * np.pi * g.DEFAULT_STEERING_FREQ / g.SPEED_OF_SOUND
    np.testing.assert_allclose(A[3, 7], np.exp(-1j * k * P[3] @ R[7]))
    Ab = g.steering_matrix(P, R, np.array([1000.0, 2000.0, 3000.0]))
    assert Ab.shape == (3, 32, 484)


def test_canvas_nearest_index_is_great_circle_nearest():
    R = g.fibonacci_grid()
    idx = g.canvas_nearest_index(R)
    assert idx.shape == (180, 360)
    dirs = g.canvas_directions()
    rng = np.random.default_rng(0)
    for j, i in zip(rng.integers(0, 180, 50), rng.integers(0, 360, 50), strict=True):
        d = g.angular_distance_deg(dirs[j, i], R)
        assert np.isclose(d[idx[j, i]], d.min())
    # Pixel (90, 90) looks 90 degrees to the left.
    np.testing.assert_allclose(dirs[90, 90], [0, 1, 0], atol=1e-12)
