"""Free-field rendering of sources at a microphone array (exact fractional delays in the
frequency domain). Used by the tests' closed-form cases and by the synthetic-scene renderer."""

from __future__ import annotations

import numpy as np

from .geometry import SPEED_OF_SOUND, azel_to_unit


def _delay_and_gain(signal: np.ndarray, delays: np.ndarray, gains: np.ndarray, fs: int) -> np.ndarray:
    """Apply per-channel delays (s) and gains to a mono signal -> (num_samples, M).

    Delays are realised as linear phase on a zero-padded FFT, so they are exact for any fraction
    of a sample; the output keeps the input length.
    """
    n = signal.shape[0]
    pad = int(np.ceil(max(float(np.max(np.abs(delays))) * fs, 0.0))) + 8
    n_fft = int(2 ** np.ceil(np.log2(n + 2 * pad)))
    spec = np.fft.rfft(signal, n=n_fft)
    f = np.fft.rfftfreq(n_fft, d=1.0 / fs)
    phase = np.exp(-2j * np.pi * f[:, None] * delays[None, :])
    out = np.fft.irfft(spec[:, None] * phase * gains[None, :], n=n_fft, axis=0)
    return out[:n]


def render_plane_wave(
    signal: np.ndarray,
    az_deg: float,
    el_deg: float,
    mic_positions: np.ndarray,
    fs: int,
    c: float = SPEED_OF_SOUND,
) -> np.ndarray:
    """A far-field plane wave arriving from (az, el) at every microphone, (num_samples, M).

    Microphones further along the arrival direction hear the wave earlier; the array centre is
    the time reference.
    """
    u = azel_to_unit(az_deg, el_deg)
    delays = -(mic_positions @ u) / c
    return _delay_and_gain(np.asarray(signal, np.float64), delays, np.ones(len(mic_positions)), fs)


def render_point_source(
    signal: np.ndarray,
    source_position: np.ndarray,
    mic_positions: np.ndarray,
    fs: int,
    c: float = SPEED_OF_SOUND,
) -> np.ndarray:
    """A spherical wave from a point source (metres, array-centred frame): delay r/c and 1/r
    spreading at every microphone, (num_samples, M)."""
    r = np.linalg.norm(mic_positions - np.asarray(source_position, np.float64)[None, :], axis=1)
    return _delay_and_gain(np.asarray(signal, np.float64), r / c, 1.0 / r, fs)
