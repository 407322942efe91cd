"""Band layouts and batched visibility (spatial covariance) matrices (SPEC §3).

A 100 ms frame is split into ten 10 ms blocks; each block is Hann windowed and Fourier
transformed; per band the complex bins within +-25 Hz of the centre are summed; the outer
products ``conj(x) x^T`` of the ten blocks are summed; the result is normalised by its largest
eigenvalue (negative eigenvalues clipped). Everything is vectorised over frames and bands.
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa  # loads its submodules (and numba) on first use, not here
import numpy as np
from scipy.signal.windows import tukey

FRAME_RATE = 10  # label / video frames per second
BLOCKS_PER_FRAME = 10  # 10 ms FFT blocks per 100 ms frame
BAND_HALF_WIDTH = 25.0  # Hz: the 50 Hz band around each centre

BandSpec = str | Sequence[float] | np.ndarray
BAND_LAYOUTS = ("linear9", "mel16")


def band_centres(bands: BandSpec = "mel16") -> np.ndarray:
    """Centre frequencies in Hz of a named layout (``linear9``, ``mel16``) or an explicit list."""
    if isinstance(bands, str):
        if bands == "linear9":
            edges = np.linspace(1500.0, 4500.0, 10)
            return (edges[:-1] + edges[1:]) / 2.0
        if bands == "mel16":
            return librosa.mel_frequencies(n_mels=16, fmin=50.0, fmax=4500.0)  # Slaney (SPEC §3)
        raise ValueError(f"unknown band layout {bands!r}; use one of {BAND_LAYOUTS} or a list of Hz")
    centres = np.asarray(bands, dtype=np.float64).reshape(-1)
    if centres.size == 0 or np.any(centres <= 0):
        raise ValueError(f"band centres must be a non-empty list of positive frequencies, got {bands!r}")
    return centres


def band_name(bands: BandSpec) -> str:
    """A short stable name for a band layout (the layout name, or the rounded list of centres)."""
    if isinstance(bands, str):
        band_centres(bands)
        return bands
    return "hz:" + ",".join(f"{f:.1f}" for f in band_centres(bands))


def band_bin_ranges(centres: np.ndarray, fs: int, n_fft: int) -> np.ndarray:
    """Inclusive FFT bin range ``[int((fc - 25) N / fs), int((fc + 25) N / fs)]`` per band, (B, 2)."""
    lo = ((centres - BAND_HALF_WIDTH) * n_fft / fs).astype(np.int64)
    hi = ((centres + BAND_HALF_WIDTH) * n_fft / fs).astype(np.int64)
    if np.any(hi > n_fft // 2):
        raise ValueError(f"band centres {centres.max():.0f} Hz exceed the Nyquist limit at fs={fs}")
    return np.stack([np.maximum(lo, 0), hi], axis=1)


def frame_count(num_samples: int, fs: int) -> int:
    """Number of complete 100 ms frames in a signal (frame k covers [k fs/10, (k+1) fs/10))."""
    return int(num_samples) // (fs // FRAME_RATE)


def normalise_visibilities(S: np.ndarray) -> np.ndarray:
    """Divide the eigenvalues of Hermitian matrices (..., M, M) by their largest, clip at 0, rebuild.

    All-zero (silent) matrices stay zero. (:func:`visibilities` takes a shortcut valid for its
    positive semi-definite matrices; this is the general operation.)
    """
    w, V = np.linalg.eigh(S)
    top = w[..., -1:]
    scale = np.where(top > np.finfo(w.dtype).tiny * 1e6, top, np.inf)
    w = np.clip(w / scale, 0.0, None)
    return (V * w[..., None, :]) @ np.swapaxes(V.conj(), -1, -2)


def band_dft(centres: np.ndarray, fs: int, n_fft: int, dtype: type = np.float64) -> np.ndarray:
    """Windowed band-sum DFT as a real (n_fft, 2B) matrix: ``block @ W`` gives, per band, the real
    then imaginary parts of the sum of the Hann-windowed block's DFT bins in the band.

    ``sum_{k in band} sum_n w[n] x[n] e^{-2 pi i k n / N} = sum_n x[n] (w[n] sum_k e^{...})``, so
    the whole FFT-then-sum step is one matrix product with only the bins the bands use.
    """
    ranges = band_bin_ranges(centres, fs, n_fft)
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    in_band = ((k >= ranges[:, :1]) & (k <= ranges[:, 1:])).astype(np.float64)  # (B, F)
    kernel = in_band @ np.exp(-2j * np.pi * np.outer(k, n) / n_fft)  # (B, N)
    kernel = kernel * tukey(n_fft, alpha=1.0)[None, :]
    return np.concatenate([kernel.real.T, kernel.imag.T], axis=1).astype(dtype)


def visibilities(
    audio: np.ndarray,
    fs: int,
    bands: BandSpec = "mel16",
    normalize: bool = True,
    dtype: type = np.complex128,
) -> np.ndarray:
    """Per-frame, per-band visibility matrices of multichannel audio.

    Args:
        audio: (num_samples, M) real signal, M microphones (4 tetrahedral or 32 em32).
        fs: sample rate in Hz; must be a multiple of 100 (24000 in the challenge).
        bands: band layout name or list of centre frequencies.
        normalize: apply the largest-eigenvalue normalisation (disable for raw covariances).
        dtype: complex dtype of the computation and result.

    Returns:
        complex (T, B, M, M) with ``S[t, b, m, n] = sum_blocks conj(x_m) x_n`` (normalised),
        T = number of complete 100 ms frames.
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"audio must be (num_samples, channels), got shape {audio.shape}")
    if fs % (FRAME_RATE * BLOCKS_PER_FRAME):
        raise ValueError(f"sample rate {fs} is not a multiple of {FRAME_RATE * BLOCKS_PER_FRAME}")
    real = np.float64 if np.dtype(dtype) == np.complex128 else np.float32
    centres = band_centres(bands)
    n_blk = fs // (FRAME_RATE * BLOCKS_PER_FRAME)
    T, M, B, K = frame_count(audio.shape[0], fs), audio.shape[1], len(centres), BLOCKS_PER_FRAME
    if T == 0:
        return np.zeros((0, B, M, M), dtype=dtype)

    # Band sums of every block of every channel: one real GEMM against the band DFT.
    blocks = audio[: T * K * n_blk].astype(real, copy=False).reshape(T * K, n_blk, M)
    xb = np.swapaxes(blocks, 1, 2).reshape(-1, n_blk) @ band_dft(centres, fs, n_blk, real)
    xb = xb.reshape(T, K, M, 2 * B).transpose(0, 3, 2, 1)  # (T, 2B, M, K)
    xr, xi = np.ascontiguousarray(xb[:, :B]), np.ascontiguousarray(xb[:, B:])
    # S = sum over blocks of conj(x_m) x_n, with x = xr + i xi, as real GEMMs.
    q = xr @ np.swapaxes(xi, -1, -2)
    S = np.empty((T, B, M, M), dtype=dtype)
    S.real = xr @ np.swapaxes(xr, -1, -2) + xi @ np.swapaxes(xi, -1, -2)
    S.imag = q - np.swapaxes(q, -1, -2)
    if normalize:
        # S = X^H X with X the (K, M) block spectra: positive semi-definite, so clipping negative
        # eigenvalues changes nothing and normalising is a division by the largest eigenvalue,
        # which is also that of the smaller K x K matrix X X^H when M > K (em32: 10 x 10).
        if M > K:
            X = (xr + 1j * xi).swapaxes(-1, -2)  # (T, B, K, M)
            top = np.linalg.eigvalsh(X.conj() @ X.swapaxes(-1, -2))[..., -1]
        else:
            top = np.linalg.eigvalsh(S)[..., -1]
        scale = np.where(top > np.finfo(real).tiny * 1e6, top, np.inf)
        S /= scale[..., None, None]
    return S
