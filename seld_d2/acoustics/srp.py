"""Classical steered-response-power maps of the 4-channel visibilities (SPEC §3, "the features
must localise"): the untrained baseline every learnt feature has to beat.

Per band, the tetrahedral array is steered at the band's centre frequency (``A_b`` complex
(4, N) over the Fibonacci grid) and the map over directions is one of

* ``bartlett`` (delay-and-sum): ``P(r) = Re(a_r^H S a_r) / M^2``;
* ``mvdr`` (Capon): ``P(r) = 1 / Re(a_r^H (S + d I)^-1 a_r)`` with diagonal loading ``d``;
* ``music``: ``P(r) = 1 / Re(a_r^H E_n E_n^H a_r)``, ``E_n`` the eigenvectors of the eigenvalues
  below ``signal_threshold`` x the largest (at least one signal and one noise dimension).

All three are the same quadratic form of a Hermitian matrix (S, the loaded inverse of S, the
noise-subspace projector), evaluated for every direction as one real GEMM per band
(:func:`~seld_d2.acoustics.solvers.steered_power_kernel`).

Scale: each map is min-max normalised per frame and band to [0, 1] (peak 1). The detector's
``InstanceNorm2d`` removes any per-plane affine scale, so this changes nothing the model sees;
it is the affine scale that uses the float16 cache best: a 4.2 cm array's low-band Bartlett map
varies by only a few percent around its mean (211 Hz: ~3 %), which plain max-normalisation would
leave to a few dozen float16 steps. A flat map (silence, or a perfectly diffuse field) becomes 0.
"""

from __future__ import annotations

import numpy as np

from ..utils.threads import blas_threads
from .geometry import fibonacci_grid, steering_matrix, tetra_positions
from .solvers import hermitian_coordinates, steered_power_kernel
from .visibility import BandSpec, band_centres

SRP_METHODS = ("bartlett", "mvdr", "music")
DEFAULT_LOADING = 1e-2  # MVDR diagonal loading, relative to the largest eigenvalue
DEFAULT_SIGNAL_THRESHOLD = 0.1  # MUSIC: eigenvalues >= this x the largest span the signal space


def tetra_steering(bands: BandSpec = "mel16", grid: np.ndarray | None = None) -> np.ndarray:
    """Per-band steering operators of the tetrahedral array at the band centres, complex (B, 4, N)."""
    grid = fibonacci_grid() if grid is None else grid
    return steering_matrix(tetra_positions(), grid, band_centres(bands))


def min_max_normalise(maps: np.ndarray, rel_eps: float = 1e-6) -> np.ndarray:
    """Maps (..., N) rescaled to [0, 1] per map; maps flatter than ``rel_eps`` x their peak become 0."""
    lo = maps.min(axis=-1, keepdims=True)
    hi = maps.max(axis=-1, keepdims=True)
    span = hi - lo
    ok = span > rel_eps * np.maximum(np.abs(hi), np.finfo(maps.dtype).tiny)
    return np.where(ok, (maps - lo) / np.where(ok, span, 1.0), 0.0).astype(maps.dtype, copy=False)


def _method_matrices(
    S: np.ndarray, method: str, loading: float, signal_threshold: float
) -> tuple[np.ndarray, bool]:
    """The Hermitian matrix whose quadratic form gives the map, and whether the map is its inverse."""
    if method == "bartlett":
        return S, False
    w, V = np.linalg.eigh(S)  # ascending eigenvalues, (..., M), (..., M, M)
    top = np.maximum(w[..., -1:], 0.0)
    if method == "mvdr":
        # (S + d I)^-1 = V diag(1 / (w + d)) V^H; the loading is relative, so a silent frame
        # (S = 0) gets an identity-like inverse and a flat map rather than a division by zero.
        d = loading * np.where(top > 0, top, 1.0)
        inv = 1.0 / (np.maximum(w, 0.0) + d)
        return (V * inv[..., None, :]) @ np.swapaxes(V.conj(), -1, -2), True
    # MUSIC: noise subspace = eigenvectors below the threshold, keeping >= 1 signal and >= 1
    # noise dimension (4 microphones resolve at most 3 sources).
    noise = w < signal_threshold * top
    noise[..., -1] = False
    noise[..., 0] = True
    Vn = V * noise[..., None, :]
    return Vn @ np.swapaxes(Vn.conj(), -1, -2), True


def srp_maps(
    S: np.ndarray,
    kernel: np.ndarray,
    method: str = "bartlett",
    loading: float = DEFAULT_LOADING,
    signal_threshold: float = DEFAULT_SIGNAL_THRESHOLD,
    normalise: bool = True,
) -> np.ndarray:
    """Steered response power maps of band visibilities.

    Args:
        S: complex (T, B, M, M) visibilities (Hermitian).
        kernel: real (B, M^2, N), ``steered_power_kernel`` of the per-band steering (B, M, N).
        method: ``bartlett``, ``mvdr`` or ``music``.
        loading: MVDR diagonal loading relative to the largest eigenvalue.
        signal_threshold: MUSIC signal-space threshold relative to the largest eigenvalue.
        normalise: min-max normalise each map (see the module docstring).

    Returns:
        float (T, B, N), the dtype of ``kernel``.
    """
    if method not in SRP_METHODS:
        raise ValueError(f"unknown SRP method {method!r}; use one of {SRP_METHODS}")
    S = np.asarray(S)
    B, F, N = kernel.shape
    M = S.shape[-1]
    if S.ndim != 4 or S.shape[1] != B or M * M != F:
        raise ValueError(f"visibilities of shape {S.shape} do not match a kernel of {B} bands, {F} = M^2")
    Q, inverse = _method_matrices(S, method, loading, signal_threshold)
    # One GEMM per band over all frames: (B, T, M^2) @ (B, M^2, N) -> (B, T, N). The operands
    # must be contiguous: numpy's matmul leaves BLAS for a slow loop on strided ones (100x).
    coords = np.ascontiguousarray(np.swapaxes(hermitian_coordinates(Q), 0, 1), dtype=kernel.dtype)
    power = np.matmul(coords, kernel).swapaxes(0, 1)
    if inverse:
        power = 1.0 / np.maximum(power, np.finfo(kernel.dtype).tiny)
    else:
        power = power / (M * M)
    return min_max_normalise(power) if normalise else np.ascontiguousarray(power)


class SteeredResponsePower:
    """Per-band SRP maps of 4-ch visibilities with the steering kernel computed once.

    Args:
        bands: band layout (the steering frequencies are its centres).
        method: ``bartlett``, ``mvdr`` or ``music``.
        dtype: real dtype of the GEMM and the maps. float32 is ample (the low bands' few-percent
            contrast keeps ~5 significant digits) and 5-10x faster than float64 here.
    """

    def __init__(self, bands: BandSpec = "mel16", method: str = "bartlett", dtype: type = np.float32):
        if method not in SRP_METHODS:
            raise ValueError(f"unknown SRP method {method!r}; use one of {SRP_METHODS}")
        self.method = method
        self.centres = band_centres(bands)
        self.kernel = steered_power_kernel(tetra_steering(bands)).astype(dtype)  # (B, 16, N)

    @property
    def num_directions(self) -> int:
        return self.kernel.shape[-1]

    def __call__(self, S: np.ndarray) -> np.ndarray:
        """complex (T, B, 4, 4) -> float (T, B, N) maps in [0, 1]."""
        # One OpenBLAS thread: once torch is loaded, these skinny GEMMs (inner size 16) and the
        # 4x4 eigh calls ran ~1000x slower with two threads on two cores (worker threads of the
        # two BLAS/OpenMP runtimes spinning against each other), and are no faster threaded.
        with blas_threads(1):
            return srp_maps(S, self.kernel, self.method)
