import numpy as np
import pytest
from conftest import FS, plane_wave_em32
from scipy.signal.windows import tukey

from seld_d2.acoustics import visibility as v
from seld_d2.acoustics.geometry import TETRA_CHANNELS


def test_band_layouts():
    mel = v.band_centres("mel16")
    assert len(mel) == 16
    # SPEC: 50, 211, 371, ..., 3813, 4500 Hz (librosa's slaney mel scale).
    np.testing.assert_allclose(mel[[0, 1, 2, -2, -1]], [50, 211, 371, 3813, 4500], atol=0.6)
    lin = v.band_centres("linear9")
    np.testing.assert_allclose(lin[[0, -1]], [1666.667, 4333.333], atol=1e-3)
    np.testing.assert_allclose(v.band_centres([1000, 2000.5]), [1000, 2000.5])
    with pytest.raises(ValueError, match="unknown band layout"):
        v.band_centres("mel99")


def _slaney_mel_frequencies(n: int, fmin: float, fmax: float) -> np.ndarray:
    """The Slaney mel scale written out (linear below 1 kHz, logarithmic above): the oracle the
    ``mel16`` centres were first computed with, kept so a change of implementation is checked."""
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(f):
        return min_log_mel + np.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    m = np.linspace(to_mel(fmin), to_mel(fmax), n)
    safe = np.maximum(m, min_log_mel)
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (safe - min_log_mel)), f_sp * m)


def test_mel16_centres_and_bins_equal_the_slaney_formula():
    # rtol 1e-12: each centre is a few correctly rounded operations plus one log and one exp
    # (<= 1 ulp each); exp multiplies the mel-domain error by logstep * m <= ~3.3, so two
    # evaluations of the same formula differ by well under 100 ulp (~2e-14). (They agree bit for
    # bit today.) The band bins, int((fc +- 25) N / fs) with N / fs = 1 / 100, are compared exactly:
    # every fc +- 25 of mel16 lies >= 0.03 bin (3 Hz) from a bin boundary, far beyond that rounding.
    mel = v.band_centres("mel16")
    np.testing.assert_allclose(mel, _slaney_mel_frequencies(16, 50.0, 4500.0), rtol=1e-12, atol=0)
    assert mel.dtype == np.float64 and len(mel) == 16
    expected = np.stack([((mel - 25) / 100).astype(int), ((mel + 25) / 100).astype(int)], axis=1)
    for fs in (FS, 48000):
        np.testing.assert_array_equal(v.band_bin_ranges(mel, fs, fs // 100), expected)
    edges = np.concatenate([mel - 25, mel + 25]) / 100
    assert np.min(np.abs(edges - np.round(edges))) > 0.03


def test_band_bins_are_inclusive():
    r = v.band_bin_ranges(np.array([50.0, 1666.667, 4500.0]), FS, 240)
    # 50 Hz is the DC bin; linear bands hit one bin; 4500 Hz spans bins 44-45.
    np.testing.assert_array_equal(r, [[0, 0], [16, 16], [44, 45]])


def test_shapes_hermitian_and_normalised():
    audio = plane_wave_em32(30, 10, seconds=0.35)
    S = v.visibilities(audio, FS, "mel16")
    assert S.shape == (3, 16, 32, 32)  # 0.35 s -> 3 complete frames
    np.testing.assert_allclose(S, np.conj(np.swapaxes(S, -1, -2)), atol=1e-12)
    w = np.linalg.eigvalsh(S[:, 1:])
    np.testing.assert_allclose(w[..., -1], 1.0, atol=1e-9)
    assert w.min() > -1e-9


def test_tetra_visibilities_are_subblock_of_em32():
    audio = plane_wave_em32(-70, 25, seconds=0.3, seed=3)
    idx = list(TETRA_CHANNELS)
    for bands in ("linear9", "mel16"):
        S32 = v.visibilities(audio, FS, bands, normalize=False)
        S4 = v.visibilities(audio[:, idx], FS, bands, normalize=False)
        np.testing.assert_allclose(S4, S32[:, :, idx][:, :, :, idx], rtol=1e-12, atol=1e-12)
        # Normalised, the two differ only by one positive scale per frame and band.
        n32 = v.visibilities(audio, FS, bands)[:, :, idx][:, :, :, idx]
        n4 = v.visibilities(audio[:, idx], FS, bands)
        ratio = np.linalg.norm(n32, axis=(-2, -1)) / np.maximum(np.linalg.norm(n4, axis=(-2, -1)), 1e-30)
        np.testing.assert_allclose(n32, n4 * ratio[..., None, None], atol=1e-9)


def test_vectorised_equals_per_frame_loop():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((FS // 10 * 4, 4))
    S = v.visibilities(audio, FS, "linear9", normalize=False)
    n = FS // 100
    win = tukey(n, 1.0)  # Hann window (Tukey alpha = 1)
    for t in range(4):
        for b, (lo, hi) in enumerate(v.band_bin_ranges(v.band_centres("linear9"), FS, n)):
            ref = np.zeros((4, 4), complex)
            for k in range(10):
                blk = audio[t * 2400 + k * n : t * 2400 + (k + 1) * n] * win[:, None]
                x = np.fft.rfft(blk, axis=0)[lo : hi + 1].sum(axis=0)
                ref += np.outer(np.conj(x), x)
            np.testing.assert_allclose(S[t, b], ref, rtol=1e-10, atol=1e-10)


def test_silence_and_short_input():
    S = v.visibilities(np.zeros((4800, 4)), FS, "mel16")
    assert S.shape == (2, 16, 4, 4) and np.all(S == 0)
    assert v.visibilities(np.zeros((100, 4)), FS).shape == (0, 16, 4, 4)
    with pytest.raises(ValueError):
        v.visibilities(np.zeros(4800), FS)
