import numpy as np
import pytest
from conftest import FS, plane_wave_em32

from seld_d2.acoustics import geometry as g
from seld_d2.acoustics import srp as P
from seld_d2.acoustics import visibility as v
from seld_d2.acoustics.quality import band_median, topk_recall
from seld_d2.acoustics.render import render_plane_wave
from seld_d2.data.synth.scene import Event

GRID = g.fibonacci_grid()
CENTRES = v.band_centres("mel16")
# Below the tetrahedron's spatial-aliasing limit: capsules 6.9 cm apart, half a wavelength at
# ~2.5 kHz. The 3.2-4.5 kHz bands have grating lobes as high as the main lobe for some directions.
UNALIASED = (CENTRES >= 200) & (CENTRES < 3000)
# Near the seam, high and low elevation, ordinary directions; each has one clearly nearest grid
# direction (checked below), so "peaks at the nearest grid direction" is well defined.
DIRECTIONS = [(30, 20), (179, 0), (-178, 10), (90, 0), (-60, -40), (120, -62), (10, 80)]


def tetra(audio32: np.ndarray) -> np.ndarray:
    return audio32[:, list(g.TETRA_CHANNELS)]


def nearest(az: float, el: float) -> int:
    d = g.angular_distance_deg(GRID, g.azel_to_unit(az, el))
    first, second = np.sort(d)[:2]
    assert second - first >= 1.0, "test direction too close to two grid directions"
    return int(np.argmin(d))


@pytest.mark.parametrize("method", P.SRP_METHODS)
@pytest.mark.parametrize("az,el", DIRECTIONS)
def test_plane_wave_peaks_at_the_nearest_grid_direction(method, az, el):
    srp = P.SteeredResponsePower("mel16", method)
    maps = srp(v.visibilities(tetra(plane_wave_em32(az, el, seconds=0.3, seed=7)), FS, "mel16"))
    assert maps.shape == (3, 16, 484) and maps.dtype == np.float32
    n = nearest(az, el)
    # Every band from 211 Hz to 2.74 kHz, every frame.
    assert np.all(np.argmax(maps[:, UNALIASED], axis=-1) == n)
    # Above, the nearest direction still sits on a top lobe (an alias may tie with it) ...
    assert maps[:, CENTRES >= 3000, n].min() > (0.95 if method == "bartlett" else 0.3)
    # ... and the median over the bands >= 1 kHz peaks there.
    assert np.all(np.argmax(band_median(maps, CENTRES), axis=-1) == n)


def test_maps_are_min_max_normalised_and_silence_is_zero():
    S = v.visibilities(tetra(plane_wave_em32(40, 0, seconds=0.2)), FS, "mel16")
    S = np.concatenate([S, np.zeros_like(S[:1])])  # a silent frame
    for method in P.SRP_METHODS:
        maps = P.SteeredResponsePower("mel16", method)(S)
        assert np.allclose(maps[:2, 1:].max(axis=-1), 1.0) and np.allclose(maps[:2, 1:].min(axis=-1), 0.0)
        assert np.all(maps[2] == 0.0)


def test_quadratic_forms_equal_the_complex_formulas():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3, 4, 6)) + 1j * rng.standard_normal((5, 3, 4, 6))
    S = X @ np.swapaxes(X.conj(), -1, -2)  # Hermitian PSD (T, B, 4, 4)
    S /= np.linalg.eigvalsh(S)[..., -1:, None]
    A = P.tetra_steering([500.0, 1500.0, 3000.0])  # (B, 4, N)
    K = P.steered_power_kernel(A)
    quad = lambda Q: np.einsum("bmn,tbmk,bkn->tbn", A.conj(), Q, A).real  # noqa: E731
    np.testing.assert_allclose(P.srp_maps(S, K, "bartlett", normalise=False), quad(S) / 16, rtol=1e-10)
    loaded = S + 1e-2 * np.eye(4)  # largest eigenvalue 1: the relative loading is absolute here
    mvdr = 1.0 / quad(np.linalg.inv(loaded))
    np.testing.assert_allclose(P.srp_maps(S, K, "mvdr", normalise=False), mvdr, rtol=1e-8)
    w, V = np.linalg.eigh(S)
    keep = w < 0.1 * w[..., -1:]  # noise subspace: below 0.1 x the largest, >= 1 dimension
    keep[..., 0], keep[..., -1] = True, False
    noise = V * keep[..., None, :]
    music = 1.0 / quad(noise @ np.swapaxes(noise.conj(), -1, -2))
    np.testing.assert_allclose(P.srp_maps(S, K, "music", normalise=False), music, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown SRP method"):
        P.srp_maps(S, K, "capon")
    with pytest.raises(ValueError, match="do not match"):
        P.srp_maps(S[:, :2], K)


@pytest.mark.parametrize("method,recall", [("bartlett", 0.3), ("mvdr", 1.0), ("music", 1.0)])
def test_two_sources_are_the_top_two_local_maxima_of_mvdr_and_music(method, recall):
    """Two equal white-noise plane waves 140 degrees apart, 10 frames: MVDR and MUSIC resolve
    both in every frame; delay-and-sum's broad 4-mic lobes merge them (measured: 0.3)."""
    rng = np.random.default_rng(3)
    P32 = g.em32_positions()
    a = render_plane_wave(rng.standard_normal(FS), 40, 10, P32, FS)
    a += render_plane_wave(rng.standard_normal(FS), -100, -20, P32, FS)
    maps = P.SteeredResponsePower("mel16", method)(v.visibilities(tetra(a), FS, "mel16"))
    events = [Event(0, 0, 0.0, 1.0, 40, 10, 1, 20, -20), Event(1, 0, 0.0, 1.0, -100, -20, 1, 20, -20)]
    assert np.nanmean(topk_recall(band_median(maps, CENTRES), events, tol_deg=10.0)) == pytest.approx(recall)
