"""UpLAM: upsample tetrahedral visibilities to em32 ones (CDBPN), then image them (LAM) (SPEC §3).

``UpLAM(S4) -> (S32_hat, latent)``: complex (batch, B, 4, 4) band visibilities of the tetrahedral
array become complex (batch, B, 32, 32) em32-like visibilities, whose learnt acoustic image
``latent`` (batch, B, 484) over the Fibonacci grid reconstructs them as ``A diag(x) A^H``.

Precision: every parameter and buffer is real (complex weights are stored as real/imaginary
pairs), so ``UpLAM(..., dtype=torch.float64)``, ``model.double()`` and ``model.to(torch.float32)``
all switch the whole model; the complex dtype follows (float32 <-> complex64, float64 <->
complex128) and inputs are cast to it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..utils.io import atomic_open
from .geometry import (
    DEFAULT_STEERING_FREQ,
    TETRA_CHANNELS,
    em32_positions,
    fibonacci_grid,
    grid_neighbours,
    steering_matrix,
)
from .visibility import BandSpec, band_centres, band_name

STEERING_MODES = ("fixed", "per_band")
PRIORS = ("none", "interpolation")
INPUT_SCALINGS = ("none", "trace")
HERMITIAN_MODES = ("mean", "lower")
DENOISER_KERNELS = (3, 5, 7, 9)


def _complex_dtype(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def _hermitian_part(re: Tensor, im: Tensor) -> tuple[Tensor, Tensor]:
    """(S + S^H) / 2 of S = re + j im, on the real and imaginary parts separately."""
    return 0.5 * (re + re.transpose(-1, -2)), 0.5 * (im - im.transpose(-1, -2))


def _hermitian_lower(re: Tensor, im: Tensor) -> tuple[Tensor, Tensor]:
    """The Hermitian matrix with S's lower triangle and real diagonal: what ``torch.linalg.eigh``
    reads of a non-Hermitian S, and so what the official baseline's LAM images."""
    low_re, low_im = torch.tril(re, -1), torch.tril(im, -1)
    diag = torch.diag_embed(re.diagonal(dim1=-2, dim2=-1))
    return low_re + low_re.transpose(-1, -2) + diag, low_im - low_im.transpose(-1, -2)


_HERMITIAN = {"mean": _hermitian_part, "lower": _hermitian_lower}


def steering_operator(bands: BandSpec = "mel16", steering: str = "fixed") -> np.ndarray:
    """The em32 steering operator over the Fibonacci grid for a band layout.

    ``fixed`` is the reference UpLAM's single wavelength (4833 Hz) for every band, complex
    (32, 484); ``per_band`` steers each band at its centre frequency, complex (B, 32, 484).
    """
    if steering not in STEERING_MODES:
        raise ValueError(f"unknown steering {steering!r}; use one of {STEERING_MODES}")
    freqs = DEFAULT_STEERING_FREQ if steering == "fixed" else band_centres(bands)
    return steering_matrix(em32_positions(), fibonacci_grid(), freqs)


def steered_reconstruction(A: Tensor, x: Tensor) -> Tensor:
    """``A diag(x) A^H`` for maps x, without forming diag(x).

    Args:
        A: complex (..., M, N) steering operator (broadcast against x's leading axes).
        x: real (..., N) maps.

    Returns:
        complex (..., M, M).
    """
    return (A * x[..., None, :].to(A.dtype)) @ A.conj().transpose(-1, -2)


def interpolation_operator(bands: BandSpec = "mel16", ridge: float = 1e-3) -> np.ndarray:
    """Per-band linear map from the tetrahedral array's manifold to the em32's, complex (B, 32, 4).

    ``T_b = argmin sum_n |a32_n - T a4_n|^2 + ridge N |T|^2`` over the grid's directions n (a4
    the tetrahedral channels' rows of the band's steering vectors), scaled by ``sqrt(4 / 32)``
    so that a single source's normalised visibilities ``a4 a4^H / 4`` map to about
    ``a32 a32^H / 32``. ``T S4 T^H`` is UpLAM's ``interpolation`` prior: measured on the demo's
    free-field scenes, its per-band delay-and-sum map peaks 5.2 degrees (median) from the source,
    and it leaves 7-55 % of the em32 visibilities' energy unexplained below 3 kHz (the 4-channel
    array aliases above about 2.5 kHz).
    """
    A32 = steering_matrix(em32_positions(), fibonacci_grid(), band_centres(bands))  # (B, 32, N)
    A4 = A32[:, list(TETRA_CHANNELS)]
    cross = A32 @ A4.conj().transpose(0, 2, 1)  # (B, 32, 4)
    gram = A4 @ A4.conj().transpose(0, 2, 1) + ridge * A32.shape[-1] * np.eye(4)
    return np.sqrt(4 / 32) * np.linalg.solve(gram.transpose(0, 2, 1), cross.transpose(0, 2, 1)).transpose(
        0, 2, 1
    )


def srp_reconstruction_gain(steering: np.ndarray) -> np.ndarray:
    """Per band, the factor g that makes ``A diag(g x) A^H`` the least-squares reconstruction of a
    single source's visibilities ``a a^H / M`` from its delay-and-sum map ``x_n = |a_n^H a|^2 /
    M^3``, pooled over sources at every grid direction, (B,).

    The unscaled map over-fills the reconstruction by the integral of its beam (x 18 at 4.5 kHz,
    x 480 at 50 Hz with per-band steering), so the first training steps would only shrink it.
    """
    A = np.asarray(steering)
    M = A.shape[-2]
    K = np.abs(A.conj().transpose(0, 2, 1) @ A) ** 2  # (B, N, N) |a_n^H a_m|^2
    X = K / M**3  # column m: the map of a source at direction m
    num = np.sum(X * K, axis=(1, 2)) / M
    den = np.sum(X * (K @ X), axis=(1, 2))
    return num / den


# --------------------------------------------------------------------------------------------
# CDBPN
# --------------------------------------------------------------------------------------------


class UpProjection(nn.Module):
    """DBPN up-projection unit: upsample, project back down, upsample the error, correct.

    (batch, C, h, w) -> (batch, C, 8h, 8w) with the default kernel 12 / stride 8 / padding 2.
    """

    def __init__(self, channels: int, kernel: int = 12, stride: int = 8, padding: int = 2):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, kernel, stride, padding)
        self.down = nn.Conv2d(channels, channels, kernel, stride, padding)
        self.up_error = nn.ConvTranspose2d(channels, channels, kernel, stride, padding)
        self.act_up, self.act_down, self.act_error = nn.PReLU(), nn.PReLU(), nn.PReLU()

    def forward(self, low: Tensor) -> Tensor:
        high = self.act_up(self.up(low))
        error = self.act_down(self.down(high)) - low
        return high + self.act_error(self.up_error(error))


class DownProjection(nn.Module):
    """DBPN down-projection unit, the mirror of :class:`UpProjection`: (batch, C, H, W) ->
    (batch, C, H/8, W/8)."""

    def __init__(self, channels: int, kernel: int = 12, stride: int = 8, padding: int = 2):
        super().__init__()
        self.down = nn.Conv2d(channels, channels, kernel, stride, padding)
        self.up = nn.ConvTranspose2d(channels, channels, kernel, stride, padding)
        self.down_error = nn.Conv2d(channels, channels, kernel, stride, padding)
        self.act_down, self.act_up, self.act_error = nn.PReLU(), nn.PReLU(), nn.PReLU()

    def forward(self, high: Tensor) -> Tensor:
        low = self.act_down(self.down(high))
        error = self.act_up(self.up(low)) - high
        return low + self.act_error(self.down_error(error))


class _BackProjectionPath(nn.Module):
    """One real-valued CDBPN path: (batch, B, 4, 4) -> (batch, B, 32, 32)."""

    def __init__(self, bands: int, features: int = 128, base: int = 32):
        super().__init__()
        # A PReLU after the 3x3 as well as the 1x1 (as in DBPN): without it the two linear convs
        # would collapse into a single bands->base 3x3 and the 128-wide layer would be pointless.
        self.head = nn.Sequential(
            nn.Conv2d(bands, features, 3, padding=1),
            nn.PReLU(),
            nn.Conv2d(features, base, 1),
            nn.PReLU(),
        )
        self.up1 = UpProjection(base)
        self.down1 = DownProjection(base)
        self.up2 = UpProjection(base)
        self.tail = nn.Conv2d(2 * base, bands, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # NHWC lets oneDNN run the kernel-12/stride-8 (transposed) convolutions without layout
        # reorders: about 2x faster on CPU, and harmless elsewhere.
        low = self.head(x.contiguous(memory_format=torch.channels_last))
        high1 = self.up1(low)
        high2 = self.up2(self.down1(high1))
        # "Concat of the last two stages": the two 32x32 (up) stages; the down stage is 4x4.
        return self.tail(torch.cat([high2, high1], dim=1))


class CDBPN(nn.Module):
    """Complex deep back-projection network: upsamples band visibilities from 4x4 to 32x32.

    Real and imaginary parts go through separate real-valued paths; the result is made Hermitian
    by ``(S + S^H) / 2`` (``hermitian="mean"``) or from its lower triangle (``"lower"``, the
    official baseline's: its CDBPN output is not Hermitian and ``eigh`` reads the lower triangle).

    Args:
        bands: number of frequency bands B (the convolution channels).
        features: width of the 3x3 head convolution.
        base: width of the back-projection stages.
        hermitian: ``mean`` or ``lower``.
    """

    def __init__(self, bands: int, features: int = 128, base: int = 32, hermitian: str = "mean"):
        super().__init__()
        if hermitian not in HERMITIAN_MODES:
            raise ValueError(f"unknown hermitian mode {hermitian!r}; use one of {HERMITIAN_MODES}")
        self.bands = bands
        self.hermitian = hermitian
        self.real_path = _BackProjectionPath(bands, features, base)
        self.imag_path = _BackProjectionPath(bands, features, base)

    def forward_parts(self, re: Tensor, im: Tensor) -> tuple[Tensor, Tensor]:
        """Real-arithmetic forward: real and imaginary parts (batch, B, 4, 4) -> Hermitian
        (batch, B, 32, 32) real and imaginary parts."""
        return _HERMITIAN[self.hermitian](self.real_path(re), self.imag_path(im))

    def forward(self, S4: Tensor) -> Tensor:
        """complex (batch, B, 4, 4) -> Hermitian complex (batch, B, 32, 32)."""
        re, im = self.forward_parts(S4.real, S4.imag)
        return torch.complex(re, im)


# --------------------------------------------------------------------------------------------
# LAM
# --------------------------------------------------------------------------------------------


class LAM(nn.Module):
    """Learnt acoustic imaging: visibilities -> direction map -> reconstructed visibilities.

    ``x_b = ||D_b^H V sqrt(max(L, 0))||^2 (row-wise) - tau_b`` from ``S_b = V L V^H``, then four
    residual Conv1d denoisers over the direction axis (channels = bands), ``ReLU(conv_k(x) + skip)``
    with ``skip`` the map before the first. The row-wise norm is
    evaluated without the square root (whose gradient is infinite at 0) as
    ``sum_k |D^H V|^2_nk max(L_k, 0)`` when gradients are on, and, without gradients (inference,
    large batches), as the equal quadratic form ``d_n^H S+ d_n`` of the PSD part
    ``S+ = V max(L, 0) V^H`` (:func:`quadratic_operator`): one real GEMM per band.

    D starts as the steering operator divided by the number of microphones (delay-and-sum
    weights), so before training x is the steered-response-power map ``a^H S+ a / M^2``, scaled
    so that a single source's visibilities ``a a^H / M`` give the peak value ``1 / M`` that
    reconstructs them. The denoisers start as identities with a tiny positive bias: zero
    weights keep the SRP map (plus 1e-6), and the bias keeps their ReLUs open so the weights get
    gradients.

    Args:
        steering: complex (M, N) (shared by all bands) or (B, M, N) steering operator.
        bands: B; required when ``steering`` is (M, N).
        dtype: real dtype of the parameters (complex arithmetic follows it).
        calibrate: scale D's start per band by :func:`srp_reconstruction_gain`, so that the
            untrained reconstruction of a single source is the best-scaled one (instead of peak
            ``1 / M``).
    """

    def __init__(
        self,
        steering: np.ndarray,
        bands: int | None = None,
        dtype: torch.dtype = torch.float32,
        calibrate: bool = False,
    ):
        super().__init__()
        A = np.asarray(steering, dtype=np.complex128)
        if A.ndim == 2:
            if bands is None:
                raise ValueError("bands is required with a shared (M, N) steering operator")
            A = np.broadcast_to(A, (bands,) + A.shape)
        if A.ndim != 3 or (bands is not None and A.shape[0] != bands):
            raise ValueError(f"steering must be (M, N) or (bands, M, N), got {np.shape(steering)}")
        self.bands, self.num_mics, self.num_directions = A.shape
        # Derived from the geometry, so kept out of the state dict; held in complex128 and cast
        # on use so that a float64 model never sees a float32-rounded operator.
        self._steering = np.ascontiguousarray(A)
        self._steering_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._q_cache: tuple[tuple, Tensor] | None = None
        D0 = A / self.num_mics
        if calibrate:
            D0 = D0 * np.sqrt(srp_reconstruction_gain(A))[:, None, None]
        self.D_real = nn.Parameter(torch.tensor(D0.real, dtype=torch.float64))
        self.D_imag = nn.Parameter(torch.tensor(D0.imag, dtype=torch.float64))
        self.tau = nn.Parameter(torch.zeros(self.bands, self.num_directions, dtype=torch.float64))
        self.denoisers = nn.ModuleList(
            nn.Conv1d(self.bands, self.bands, k, padding=k // 2) for k in DENOISER_KERNELS
        )
        for conv in self.denoisers:
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, 1e-6)
        self.to(dtype)

    @property
    def A(self) -> Tensor:
        """complex (B, M, N) steering operator of the reconstruction, on the model's device and
        complex dtype."""
        key = (self.tau.device, _complex_dtype(self.tau.dtype))
        if key not in self._steering_cache:
            A = torch.from_numpy(self._steering).to(device=key[0], dtype=key[1])
            self._steering_cache[key] = A
        return self._steering_cache[key]

    @property
    def D(self) -> Tensor:
        """complex (B, M, N) learnt imaging operator."""
        return torch.complex(self.D_real, self.D_imag)

    def project(self, re: Tensor, im: Tensor) -> Tensor:
        """Imaging before the denoisers: Hermitian S = re + j im (batch, B, M, M) -> x
        (batch, B, N)."""
        S = torch.complex(re, im)
        if torch.is_grad_enabled():
            # Training batches are small: the per-frame product S+ D is cheaper than building
            # (and back-propagating through) the quadratic-form operator. psd_part's own backward
            # stays finite where eigenvalues coincide (silent frames, the rank-4 prior), where
            # eigh's backward divides by their differences.
            D = self.D
            x = ((psd_part(S) @ D) * D.conj()).sum(-2).real
        else:
            w, V = torch.linalg.eigh(S)
            S_psd = (V * torch.relu(w).to(V.dtype)[..., None, :]) @ V.conj().transpose(-1, -2)
            x = quadratic_form(S_psd, self.quadratic_operator())
        return x - self.tau

    def quadratic_operator(self) -> Tensor:
        """:func:`quadratic_operator` of D, (B, M^2, N), for the no-gradient path; cached, keyed
        on D's in-place version counters so optimiser steps and ``load_state_dict`` invalidate
        it."""
        D_re, D_im = self.D_real, self.D_imag
        key = (D_re._version, D_im._version, D_re.data_ptr(), D_im.data_ptr(), D_re.dtype)
        if self._q_cache is None or self._q_cache[0] != key:
            self._q_cache = (key, quadratic_operator(D_re.detach(), D_im.detach()))
        return self._q_cache[1]

    def denoise(self, x: Tensor) -> Tensor:
        """(batch, B, N) -> (batch, B, N) through the residual Conv1d stack: each denoiser gives
        ``ReLU(conv_k(x) + skip)``, ``skip`` the map before the first one (as the reference LAM),
        so the latent is a non-negative image. (``ReLU(conv_k(x)) + x`` instead lets negative
        values through, and training then fits the visibilities with maps whose maximum points
        anywhere: measured 15 -> 160 degrees median peak error from the first to the second
        epoch on the demo's scenes.)"""
        skip = x
        for conv in self.denoisers:
            x = torch.relu(conv(x) + skip)
        return x

    def latent(self, S: Tensor) -> Tensor:
        """Hermitian complex (batch, B, M, M) -> real latent map (batch, B, N)."""
        return self.denoise(self.project(S.real, S.imag))

    def forward(self, S: Tensor) -> tuple[Tensor, Tensor]:
        """Hermitian complex (batch, B, M, M) -> (reconstruction complex (batch, B, M, M),
        latent (batch, B, N))."""
        x = self.latent(S)
        return steered_reconstruction(self.A, x), x


class _PSDPart(torch.autograd.Function):
    """``V max(L, 0) V^H`` of Hermitian ``S = V L V^H``, with the derivative of a spectral
    function (Daleckii-Krein): ``dS+ = V (K o V^H dS V) V^H``, ``K_ij = (p_i - p_j) / (l_i - l_j)``
    for distinct eigenvalues and the mean of the two slopes (0 or 1) for coinciding ones. ``K`` is
    real and symmetric, so the same map is its own adjoint: the backward."""

    @staticmethod
    def forward(ctx, S: Tensor) -> Tensor:
        w, V = torch.linalg.eigh(S)
        ctx.save_for_backward(w, V)
        return (V * torch.relu(w).to(V.dtype)[..., None, :]) @ V.conj().transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        w, V = ctx.saved_tensors
        p = torch.relu(w)
        dw = w[..., :, None] - w[..., None, :]
        dp = p[..., :, None] - p[..., None, :]
        # Eigenvalues closer than float rounding of the largest count as equal.
        tol = 64 * torch.finfo(w.dtype).eps * w.abs().amax(-1, keepdim=True)[..., None]
        distinct = dw.abs() > tol
        pos = (w > 0).to(w.dtype)
        slope = 0.5 * (pos[..., :, None] + pos[..., None, :])
        K = torch.where(distinct, dp / torch.where(distinct, dw, torch.ones_like(dw)), slope)
        Vh = V.conj().transpose(-1, -2)
        return V @ (K.to(V.dtype) * (Vh @ grad @ V)) @ Vh


def psd_part(S: Tensor) -> Tensor:
    """The positive semidefinite part ``V max(L, 0) V^H`` of Hermitian S (..., M, M), with a
    backward that stays finite for repeated eigenvalues."""
    return _PSDPart.apply(S)


def hermitian_features(S: Tensor) -> Tensor:
    """The M^2 free real numbers of Hermitian S (..., M, M): the diagonal, then the real and the
    imaginary parts of the strict upper triangle (row-major), shape (..., M^2)."""
    M = S.shape[-1]
    iu, ju = torch.triu_indices(M, M, offset=1, device=S.device)
    diag = S.diagonal(dim1=-2, dim2=-1).real
    return torch.cat([diag, S.real[..., iu, ju], S.imag[..., iu, ju]], dim=-1)


def quadratic_operator(D_re: Tensor, D_im: Tensor) -> Tensor:
    """Q with ``hermitian_features(S) @ Q[b] = (d_n^H S d_n)_n`` for every band, (B, M^2, N).

    With ``c_ijn = conj(D_in) D_jn``: ``d_n^H S d_n = sum_i |D_in|^2 S_ii + 2 sum_{i<j}
    (Re c Re S - Im c Im S)_ij``, because the (i, j) and (j, i) terms are complex conjugates.

    Args:
        D_re, D_im: (B, M, N) real and imaginary parts of D.
    """
    M = D_re.shape[-2]
    iu, ju = torch.triu_indices(M, M, offset=1, device=D_re.device)
    c_re = D_re[:, iu] * D_re[:, ju] + D_im[:, iu] * D_im[:, ju]
    c_im = D_re[:, iu] * D_im[:, ju] - D_im[:, iu] * D_re[:, ju]
    return torch.cat([D_re.square() + D_im.square(), 2.0 * c_re, -2.0 * c_im], dim=1)


def quadratic_form(S: Tensor, Q: Tensor) -> Tensor:
    """``x_n = d_n^H S d_n`` for Hermitian S (batch, B, M, M) and Q from
    :func:`quadratic_operator`, (batch, B, N).

    One real GEMM per band over the whole batch, with 4x fewer multiplies than ``D^H V``.
    """
    return torch.bmm(hermitian_features(S).transpose(0, 1), Q).transpose(0, 1)


# --------------------------------------------------------------------------------------------
# UpLAM
# --------------------------------------------------------------------------------------------


class UpLAM(nn.Module):
    """CDBPN followed by LAM.

    Args:
        bands: band layout name (``linear9``, ``mel16``) or list of centre frequencies in Hz;
            any number of bands works.
        steering: ``fixed`` (one 4833 Hz operator, as the reference) or ``per_band``.
        dtype: ``torch.float32`` (complex64 arithmetic) or ``torch.float64`` (complex128); can
            also be switched later with ``model.to(dtype)`` / ``model.double()``.
        prior: ``none`` (the reference: the CDBPN alone upsamples) or ``interpolation``: the
            CDBPN learns a correction to :func:`interpolation_operator`'s ``T S4 T^H`` (its last
            convolutions start at zero, so the untrained upsampling is the prior).
        calibrate: LAM's ``calibrate`` (see :class:`LAM`).
        hermitian: how the CDBPN output is made Hermitian (:class:`CDBPN`): ``mean`` (this
            project's) or ``lower`` (the official baseline's, set when loading its checkpoint).
        input_scaling: ``none`` (the reference) or ``trace``: the CDBPN sees each frame's and
            band's visibilities divided by their mean power ``tr(S4) / 4`` and its output is
            multiplied back, so the upsampling is level-equivariant (``CDBPN(a S) = a CDBPN(S)``)
            and its biases cannot add a level-independent visibility that outweighs quiet frames.
    """

    def __init__(
        self,
        bands: BandSpec = "mel16",
        steering: str = "fixed",
        dtype: torch.dtype = torch.float32,
        prior: str = "none",
        calibrate: bool = False,
        hermitian: str = "mean",
        input_scaling: str = "none",
    ):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; use one of {PRIORS}")
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"unknown input scaling {input_scaling!r}; use one of {INPUT_SCALINGS}")
        self.input_scaling = input_scaling
        centres = band_centres(bands)
        self.band_centres = [float(f) for f in centres]
        self.band_name = band_name(bands)
        self.steering = steering
        self.num_bands = len(centres)
        self.prior = prior
        self.calibrate = calibrate
        self.cdbpn = CDBPN(self.num_bands, hermitian=hermitian)
        self.lam = LAM(
            steering_operator(centres, steering), bands=self.num_bands, dtype=dtype, calibrate=calibrate
        )
        # Derived from the geometry (not in the state dict), complex128, cast on use.
        self._prior_op = interpolation_operator(centres) if prior == "interpolation" else None
        self._prior_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        if self._prior_op is not None:
            for path in (self.cdbpn.real_path, self.cdbpn.imag_path):
                nn.init.zeros_(path.tail.weight)
                nn.init.zeros_(path.tail.bias)
        # For the TV term of the loss; long, so dtype switches leave it alone.
        neighbours = torch.from_numpy(grid_neighbours(fibonacci_grid(), k=6))
        self.register_buffer("neighbours", neighbours, persistent=False)
        self.to(dtype)

    @property
    def config(self) -> dict[str, Any]:
        """What :meth:`from_checkpoint` needs to rebuild the model."""
        return {
            "bands": list(self.band_centres),
            "band_name": self.band_name,
            "steering": self.steering,
            "prior": self.prior,
            "calibrate": self.calibrate,
            "hermitian": self.cdbpn.hermitian,
            "input_scaling": self.input_scaling,
        }

    @property
    def complex_dtype(self) -> torch.dtype:
        return _complex_dtype(self.lam.tau.dtype)

    def _parts(self, S4: Tensor) -> tuple[Tensor, Tensor]:
        if S4.ndim != 4 or S4.shape[1:] != (self.num_bands, 4, 4):
            raise ValueError(f"expected visibilities (batch, {self.num_bands}, 4, 4), got {tuple(S4.shape)}")
        S4 = S4.to(device=self.lam.tau.device, dtype=self.complex_dtype)
        if self.input_scaling == "trace":
            power = torch.diagonal(S4.real, dim1=-2, dim2=-1).mean(-1)[..., None, None]
            scale = power.clamp_min(torch.finfo(power.dtype).tiny)
            re, im = self.cdbpn.forward_parts(S4.real / scale, S4.imag / scale)
            re, im = re * scale, im * scale
        else:
            re, im = self.cdbpn.forward_parts(S4.real, S4.imag)
        if self._prior_op is None:
            return re, im
        key = (S4.device, S4.dtype)
        if key not in self._prior_cache:
            self._prior_cache[key] = torch.from_numpy(self._prior_op).to(device=key[0], dtype=key[1])
        T = self._prior_cache[key]
        P = T @ S4 @ T.conj().transpose(-1, -2)  # Hermitian (batch, B, 32, 32)
        return re + P.real, im + P.imag

    def forward(self, S4: Tensor) -> tuple[Tensor, Tensor]:
        """complex (batch, B, 4, 4) -> (S32_hat complex (batch, B, 32, 32), latent
        (batch, B, 484))."""
        re, im = self._parts(S4)
        x = self.lam.denoise(self.lam.project(re, im))
        return steered_reconstruction(self.lam.A, x), x

    def latent(self, S4: Tensor, chunk_size: int | None = 64) -> Tensor:
        """complex (batch, B, 4, 4) -> latent (batch, B, 484); skips the reconstruction (the
        feature extractor's path; run it under ``torch.inference_mode()`` for speed).

        Frames are independent, so large batches are processed ``chunk_size`` frames at a time:
        the CDBPN's (chunk, 32, 32, 32) activations then stay in cache, which on a 2-core CPU is
        worth about 1.3x over a single batch of 256 (``None`` disables chunking).
        """
        if chunk_size is not None and S4.shape[0] > chunk_size:
            return torch.cat([self.latent(c, None) for c in S4.split(chunk_size)], dim=0)
        re, im = self._parts(S4)
        return self.lam.denoise(self.lam.project(re, im))

    def upsample(self, S4: Tensor) -> Tensor:
        """complex (batch, B, 4, 4) -> the upsampled Hermitian complex (batch, B, 32, 32) (CDBPN,
        plus the prior if any)."""
        return torch.complex(*self._parts(S4))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        bands: BandSpec | None = None,
    ) -> UpLAM:
        """Rebuild a model (in eval mode) from a :func:`save_checkpoint` file or from the official
        baseline's format (its ``UpLAM.pth``, recognised by its keys; see
        :func:`from_baseline_state_dict`, to which ``bands`` goes; ignored otherwise)."""
        ckpt = load_checkpoint(path, map_location)
        if checkpoint_format(ckpt, path) == "baseline":
            sd = baseline_state_dict(ckpt)
            return from_baseline_state_dict(sd, bands, dtype, source=path).to(map_location).eval()
        cfg = ckpt["config"]
        model = cls(
            bands=cfg["bands"],
            steering=cfg["steering"],
            dtype=dtype,
            prior=cfg.get("prior", "none"),
            calibrate=cfg.get("calibrate", False),
            hermitian=cfg.get("hermitian", "mean"),
            input_scaling=cfg.get("input_scaling", "none"),
        )
        model.band_name = cfg.get("band_name", model.band_name)
        model.load_state_dict(ckpt["model"])
        return model.to(map_location).eval()


# --------------------------------------------------------------------------------------------
# Loss, metrics, checkpoints
# --------------------------------------------------------------------------------------------


def mse_tv_loss(
    S_hat: Tensor,
    S: Tensor,
    latent: Tensor,
    neighbours: Tensor,
    lam: float = 1e-5,
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Complex MSE plus ``lam`` times (graph TV + L1) of the latent.

    The MSE is the mean of ``|S_hat - S|^2`` over all entries; TV (half the sum of
    ``|x_i - x_j|`` over every direction and its 6 nearest neighbours, the convention of
    ``solvers.graph_total_variation``) and L1 are sums over the grid, averaged over maps.

    Args:
        S_hat, S: complex (batch, B, M, M).
        latent: (batch, B, N).
        neighbours: long (N, k) neighbour indices.
        return_terms: also return the unweighted terms ``{"mse", "tv", "l1"}``.
    """
    diff = S_hat - S.to(S_hat.dtype)
    mse = (diff.real.square() + diff.imag.square()).mean()
    tv = 0.5 * (latent[..., :, None] - latent[..., neighbours]).abs().sum(dim=(-2, -1)).mean()
    l1 = latent.abs().sum(dim=-1).mean()
    loss = mse + lam * (tv + l1)
    if return_terms:
        return loss, {"mse": mse.detach(), "tv": tv.detach(), "l1": l1.detach()}
    return loss


def max_normalise(maps: np.ndarray) -> np.ndarray:
    """Divide maps (..., N) by their maximum; maps whose maximum is not positive become zero."""
    maps = np.asarray(maps, dtype=np.float64)
    top = maps.max(axis=-1, keepdims=True)
    return np.where(top > 0, maps / np.where(top > 0, top, 1.0), 0.0)


def map_differences(latent: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Mean squared (``mse``) and mean absolute (``mad``) difference over directions of
    max-normalised maps, per map: (..., N) inputs -> (...) each."""
    diff = max_normalise(latent) - max_normalise(reference)
    return {"mse": np.mean(diff**2, axis=-1), "mad": np.mean(np.abs(diff), axis=-1)}


def psnr_db(mse: np.ndarray) -> np.ndarray:
    """Peak SNR ``10 log10(1 / MSE)`` of max-normalised maps (peak 1), in dB."""
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def map_agreement(latent: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Per-band agreement of max-normalised maps.

    ``psnr = 10 log10(1 / MSE)`` and ``mad`` = mean absolute difference, both over frames and
    directions of the max-normalised maps (peak 1), per band.

    Args:
        latent, reference: (T, B, N).

    Returns:
        ``{"psnr": (B,), "mad": (B,)}``.
    """
    d = map_differences(latent, reference)
    return {"psnr": psnr_db(np.mean(d["mse"], axis=0)), "mad": np.mean(d["mad"], axis=0)}


def save_checkpoint(
    path: str | os.PathLike,
    model: UpLAM,
    optimizer: torch.optim.Optimizer | None = None,
    **extra: Any,
) -> None:
    """Write ``{"model", "config", ["optimizer"], **extra}`` atomically (a temporary file in the
    same directory, then ``os.replace``), so a crash never leaves a truncated checkpoint."""
    path = Path(path)
    state: dict[str, Any] = {"model": model.state_dict(), "config": model.config}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    state.update(extra)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict written by :func:`save_checkpoint` (or any dict of tensors: a baseline-format
    state dict loads too); a file torch cannot read raises one ``ValueError`` line naming it."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not an UpLAM checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def checkpoint_hash(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a checkpoint file (names the features it made)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The official DCASE2026 Task 3 baseline's checkpoint format
# --------------------------------------------------------------------------------------------

# The baseline's UpLAM.pth is a plain float64 state dict of its UpLAM (module names of its
# lam_model.py, complex128 ``lam.D``); its numerics are this module's with hermitian="lower" and
# the fixed steering. Layer of a back-projection unit -> the baseline's (each baseline layer's
# PReLU ``<block>.act`` is this project's ``act_<up|down|error>`` of the same layer).
_BASELINE_UNIT = {
    "up": {"up": "up_conv1.deconv", "down": "up_conv2.conv", "up_error": "up_conv3.deconv"},
    "down": {"down": "down_conv1.conv", "up": "down_conv2.deconv", "down_error": "down_conv3.conv"},
}
BASELINE_MARKER = "cdbpn.feat0_rel.conv.weight"


def baseline_key_map() -> dict[str, str]:
    """Baseline state-dict key -> this project's key, in the baseline's order (its modules'
    registration order), for every tensor but ``lam.D`` (this project's ``lam.D_real`` and
    ``lam.D_imag``; it follows ``lam.tau``): 79 of the baseline's 80 tensors."""
    keys: dict[str, str] = {}
    sides = (("rel", "cdbpn.real_path"), ("imag", "cdbpn.imag_path"))
    for k, block in enumerate(("feat0", "feat1")):
        for side, p in sides:
            keys[f"cdbpn.{block}_{side}.conv.weight"] = f"{p}.head.{2 * k}.weight"
            keys[f"cdbpn.{block}_{side}.conv.bias"] = f"{p}.head.{2 * k}.bias"
            keys[f"cdbpn.{block}_{side}.act.weight"] = f"{p}.head.{2 * k + 1}.weight"
    for stage, kind in (("up1", "up"), ("down1", "down"), ("up2", "up")):
        for side, p in sides:
            for ours, theirs in _BASELINE_UNIT[kind].items():
                act = "act_error" if ours.endswith("_error") else f"act_{ours}"
                layer = theirs.split(".")[0]
                for sfx in ("weight", "bias"):
                    keys[f"cdbpn.{stage}_{side}.{theirs}.{sfx}"] = f"{p}.{stage}.{ours}.{sfx}"
                keys[f"cdbpn.{stage}_{side}.{layer}.act.weight"] = f"{p}.{stage}.{act}.weight"
    for side, p in sides:
        keys[f"cdbpn.output_conv_{side}.conv.weight"] = f"{p}.tail.weight"
        keys[f"cdbpn.output_conv_{side}.conv.bias"] = f"{p}.tail.bias"
    keys["lam.tau"] = "lam.tau"
    for k in range(len(DENOISER_KERNELS)):
        for sfx in ("weight", "bias"):
            keys[f"lam.denoise{k + 1}.{sfx}"] = f"lam.denoisers.{k}.{sfx}"
    return keys


def checkpoint_format(ckpt: dict[str, Any], source: str | os.PathLike = "checkpoint") -> str:
    """``"project"`` (:func:`save_checkpoint`: ``model`` and ``config``) or ``"baseline"`` (the
    baseline's plain state dict, or its training ``.tar`` dict holding one under ``model``);
    anything else raises one ``ValueError`` line naming ``source``."""
    if "config" in ckpt and isinstance(ckpt.get("model"), dict):
        return "project"
    try:
        baseline_state_dict(ckpt)
        return "baseline"
    except KeyError:
        pass
    shown = ", ".join(sorted(map(str, ckpt))[:6])
    raise ValueError(
        f"{source}: not an UpLAM checkpoint: neither seld_d2's ({{'model', 'config'}}) nor the "
        f"official baseline's state dict ({BASELINE_MARKER}, ...); its keys: {shown}"
    )


def baseline_state_dict(ckpt: dict[str, Any]) -> dict[str, Tensor]:
    """The baseline state dict in a loaded baseline-format file (``module.`` prefixes of a
    DataParallel save removed); ``KeyError`` if it holds none."""
    sd = ckpt.get("model", ckpt) if isinstance(ckpt.get("model"), dict) else ckpt
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if BASELINE_MARKER not in sd or "lam.D" not in sd:
        raise KeyError(BASELINE_MARKER)
    return sd


def baseline_band_centres(num_bands: int) -> np.ndarray:
    """Band centres the baseline code computes for a ``num_bands`` model: the midpoints of
    ``linspace(1500, 4500, num_bands + 1)`` (9 bands: ``linear9``)."""
    edges = np.linspace(1500.0, 4500.0, num_bands + 1)
    return (edges[:-1] + edges[1:]) / 2.0


def from_baseline_state_dict(
    sd: dict[str, Tensor],
    bands: BandSpec | None = None,
    dtype: torch.dtype = torch.float32,
    source: str | os.PathLike = "baseline state dict",
) -> UpLAM:
    """An :class:`UpLAM` computing what the baseline's UpLAM with these weights computes.

    The band count comes from ``lam.tau`` (B, 484); the layout is ``bands`` if given, else the
    baseline's linear layout for B bands (:func:`baseline_band_centres`, ``linear9`` for 9);
    steering ``fixed`` (the baseline's only one), ``hermitian="lower"``. Missing, extra or
    mis-shaped tensors raise one ``ValueError`` line naming ``source``.
    """
    key_map = baseline_key_map()
    expected = set(key_map) | {"lam.D"}
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise ValueError(
            f"{source}: baseline-format UpLAM state dict with missing tensors {missing[:4]} "
            f"(of {len(missing)}) and unexpected ones {extra[:4]} (of {len(extra)})"
        )
    num_bands = int(sd["lam.tau"].shape[0])
    if bands is None:
        centres = baseline_band_centres(num_bands)
        bands = "linear9" if num_bands == 9 else centres
    model = UpLAM(bands=bands, steering="fixed", dtype=dtype, hermitian="lower")
    if model.num_bands != num_bands:
        raise ValueError(f"{source}: has {num_bands} bands, but {model.num_bands} band centres were given")
    ours = model.state_dict()
    converted = baseline_to_project_state_dict(sd)
    for key, value in converted.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            theirs = next((b for b, p in key_map.items() if p == key), "lam.D")
            raise ValueError(
                f"{source}: {theirs} has shape {tuple(value.shape)}, expected {tuple(ours[key].shape)} "
                f"for a {num_bands}-band UpLAM (feat 128, base_filter 32, 32 x 484 LAM)"
            )
    model.load_state_dict(converted)
    return model


def baseline_to_project_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Baseline keys -> this project's (``lam.D`` split into real and imaginary parts); values
    keep their precision (float64 for the released file)."""
    out = {ours: sd[theirs] for theirs, ours in baseline_key_map().items()}
    D = torch.as_tensor(sd["lam.D"])
    out["lam.D_real"], out["lam.D_imag"] = D.real.clone(), D.imag.clone()
    return out


def project_to_baseline_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """This project's keys -> the baseline's, as float64 with complex128 ``lam.D`` (what its
    double-precision modules hold); keys in the baseline's order."""
    out = {}
    for theirs, ours in baseline_key_map().items():
        out[theirs] = sd[ours].detach().to(torch.float64).clone()
        if theirs == "lam.tau":
            out["lam.D"] = torch.complex(sd["lam.D_real"].double(), sd["lam.D_imag"].double())
    return out


def baseline_incompatibilities(model: UpLAM) -> list[str]:
    """Why the baseline's code would not compute what ``model`` computes (empty: it would)."""
    why = []
    if model.cdbpn.hermitian != "lower":
        why.append(
            f"hermitian={model.cdbpn.hermitian!r}: the baseline images the CDBPN output's lower "
            "triangle, this model the mean (S + S^H)/2"
        )
    if model.steering != "fixed":
        why.append(f"steering={model.steering!r}: the baseline reconstructs with the fixed 4833 Hz operator")
    if model.prior != "none":
        why.append(f"prior={model.prior!r}: the baseline's CDBPN upsamples alone, without T S4 T^H")
    if not np.allclose(model.band_centres, baseline_band_centres(model.num_bands)):
        why.append(
            f"bands {model.band_name}: the baseline code computes the visibilities of "
            f"linspace(1500, 4500, {model.num_bands + 1}) midpoints for {model.num_bands} bands"
        )
    return why


def export_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype = torch.float16
) -> None:
    """Write a project checkpoint's model alone (no trainer state) with its floating-point tensors
    stored as ``dtype``: a float16 mel16 UpLAM is half the size of the float32 one (~6.5 MB).
    Loading casts back to the model's dtype (:meth:`UpLAM.from_checkpoint`); the latent error
    this costs is measured by ``tests/test_uplam.py`` (float16 weights, float32 arithmetic)."""
    ckpt = load_checkpoint(src)
    if checkpoint_format(ckpt, src) == "baseline":
        raise ValueError(f"{src}: a baseline-format file; convert it first (tools/convert_uplam.py)")
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    extra = {"source_hash": checkpoint_hash(src), "stored_dtype": str(dtype).removeprefix("torch.")}
    with atomic_open(Path(dst), "wb") as f:
        torch.save({"model": state, "config": ckpt["config"], **extra}, f)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    bands: BandSpec | None = None,
    inexact: bool = False,
) -> str:
    """Convert an UpLAM checkpoint to the other format; returns the format written.

    baseline -> project: :func:`from_baseline_state_dict` (float64 weights kept), written by
    :func:`save_checkpoint` with ``source_format="baseline"``. project -> baseline: a plain
    float64 state dict; refused (one ``ValueError`` line) when the baseline's code would compute
    something else (:func:`baseline_incompatibilities`) unless ``inexact``.
    """
    ckpt = load_checkpoint(src)
    if checkpoint_format(ckpt, src) == "baseline":
        model = from_baseline_state_dict(baseline_state_dict(ckpt), bands, torch.float64, source=src)
        save_checkpoint(dst, model, source_format="baseline", source_hash=checkpoint_hash(src))
        return "project"
    model = UpLAM.from_checkpoint(src, dtype=torch.float64)
    why = baseline_incompatibilities(model)
    if why and not inexact:
        raise ValueError(f"{src}: the baseline's code would not reproduce this model ({'; '.join(why)})")
    with atomic_open(Path(dst), "wb") as f:
        torch.save(project_to_baseline_state_dict(model.state_dict()), f)
    return "baseline"
