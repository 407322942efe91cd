"""Acoustic imaging solvers (SPEC §4), batched over frames and bands.

Every solver minimises, independently for each visibility matrix S (one per frame and band),

    F(x) = ||S - A diag(x) A^H||_F^2 + lam * (gamma * ||x||_1 + (1 - gamma) * ||x||_2^2),  x >= 0

with ``A`` the (M, N) steering operator (or (B, M, N), one per band). Writing
``G = |A^H A|^2`` (elementwise) and ``b = Re diag(A^H S A)``, the data term is
``||S||^2 - 2 b.x + x.G.x``, its gradient ``2 (G x - b)``, and ``L = 2 lambda_max(G)`` its Lipschitz
constant. ``G`` is singular (32 microphones, 484 directions), so the exact minimiser is not
unique-by-curvature; early-stopped APGD is the STAIRS26 ground truth.

Shapes: S is complex (..., B, M, M) when A is (B, M, N), or (..., M, M) when A is (M, N);
maps x are real (..., [B,] N). All solvers accept a warm start ``x0`` of the map's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_GAMMA = 0.5


def hermitian_coordinates(S: np.ndarray) -> np.ndarray:
    """Real coordinates of Hermitian matrices (..., M, M): the diagonal, then the real and the
    imaginary parts of the strict upper triangle (row-major), real (..., M^2)."""
    iu, ju = np.triu_indices(S.shape[-1], k=1)
    upper = S[..., iu, ju]
    return np.concatenate([np.real(np.diagonal(S, axis1=-2, axis2=-1)), upper.real, upper.imag], axis=-1)


def steered_power_kernel(A: np.ndarray) -> np.ndarray:
    """Real (..., M^2, N) kernel K with ``hermitian_coordinates(S) @ K = Re diag(A^H S A)``.

    For Hermitian S, ``Re(a_n^H S a_n) = sum_m S_mm |A_mn|^2 + 2 sum_{m<k} (Re S_mk Re(conj A_mn
    A_kn) - Im S_mk Im(conj A_mn A_kn))``, so the quadratic form over every direction is one real
    GEMM. ``A`` is complex (..., M, N).
    """
    iu, ju = np.triu_indices(A.shape[-2], k=1)
    pairs = A.conj()[..., iu, :] * A[..., ju, :]  # (..., M(M-1)/2, N)
    return np.concatenate([np.abs(A) ** 2, 2.0 * pairs.real, -2.0 * pairs.imag], axis=-2)


class GramOperator:
    """Precomputed quantities of a steering operator shared by all solvers.

    Args:
        A: complex (M, N) or (B, M, N) steering operator.
    """

    def __init__(self, A: np.ndarray):
        A = np.asarray(A)
        if A.ndim not in (2, 3):
            raise ValueError(f"steering operator must be (M, N) or (B, M, N), got {A.shape}")
        self.A = A.astype(np.complex128, copy=False)
        self.AH = np.swapaxes(self.A.conj(), -1, -2)
        self.G = np.abs(self.AH @ self.A) ** 2  # (N, N) or (B, N, N), symmetric PSD
        self.per_band = A.ndim == 3
        self.lam_max = np.linalg.eigvalsh(self.G)[..., -1]  # () or (B,)
        self._eig: tuple[np.ndarray, np.ndarray] | None = None
        self._backproject_kernel = steered_power_kernel(self.A)  # (..., M^2, N)

    @property
    def num_directions(self) -> int:
        return self.A.shape[-1]

    def expand(self, v: np.ndarray) -> np.ndarray:
        """Per-band scalars (B,) -> (B, 1) so they broadcast against maps (..., B, N)."""
        return v[..., None] if self.per_band else v

    @property
    def lipschitz(self) -> np.ndarray:
        """L = 2 lambda_max(G), broadcastable to the maps."""
        return self.expand(2.0 * self.lam_max)

    @property
    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigendecomposition (w, Q) of G, computed once (for the ADMM linear solves)."""
        if self._eig is None:
            self._eig = np.linalg.eigh(self.G)
        return self._eig

    def _per_problem(self, v: np.ndarray, K: np.ndarray) -> np.ndarray:
        """v (..., [B,] F) @ K ([B,] F, N) as one GEMM (per band), (..., [B,] N)."""
        if not self.per_band:
            return (v.reshape(-1, v.shape[-1]) @ K).reshape(v.shape[:-1] + K.shape[-1:])
        # Bands first so each band is one matrix product over all frames.
        B = K.shape[0]
        vb = np.moveaxis(v, -2, 0).reshape(B, -1, v.shape[-1])
        return np.moveaxis((vb @ K).reshape((B,) + v.shape[:-2] + K.shape[-1:]), 0, -2)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """G x for maps (..., [B,] N)."""
        return self._per_problem(x, self.G)

    def backproject(self, S: np.ndarray) -> np.ndarray:
        """b = Re diag(A^H S A) of Hermitian S, (..., [B,] N) (the steered response power)."""
        return self._per_problem(hermitian_coordinates(S), self._backproject_kernel)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """A diag(x) A^H without forming diag(x), complex (..., [B,] M, M)."""
        return (self.A * x[..., None, :]) @ self.AH


def _as_gram(A: np.ndarray | GramOperator) -> GramOperator:
    return A if isinstance(A, GramOperator) else GramOperator(A)


def _check_shapes(S: np.ndarray, op: GramOperator) -> None:
    M = op.A.shape[-2]
    if S.shape[-2:] != (M, M):
        raise ValueError(f"visibilities of shape {S.shape} do not match steering operator {op.A.shape}")
    if op.per_band and (S.ndim < 3 or S.shape[-3] != op.A.shape[0]):
        raise ValueError(f"per-band steering {op.A.shape} needs visibilities (..., B, M, M), got {S.shape}")


def default_lambda(b: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The APGD rule: ``lam = max(x1) / (10 alpha gamma)`` with ``x1 = -alpha grad F(0) = 2 alpha b``.

    The step size cancels, so ``lam = max(2 b) / (10 gamma)`` per problem, shape (..., [B,] 1).
    """
    if gamma <= 0:
        raise ValueError("the default lambda rule needs gamma > 0; pass lam explicitly")
    return np.maximum(np.max(2.0 * b, axis=-1, keepdims=True), 0.0) / (10.0 * gamma)


def prox_elastic_nonneg(v: np.ndarray, step: np.ndarray, lam: np.ndarray, gamma: float) -> np.ndarray:
    """Proximal map of ``step * lam * (gamma |x|_1 + (1 - gamma) |x|^2) + indicator(x >= 0)``."""
    return np.maximum(v - step * lam * gamma, 0.0) / (1.0 + 2.0 * step * lam * (1.0 - gamma))


def objective(
    x: np.ndarray,
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    lam: np.ndarray | float,
    gamma: float = DEFAULT_GAMMA,
) -> np.ndarray:
    """F(x) per problem, (..., [B]); the data term is evaluated directly, not by expansion."""
    op = _as_gram(A)
    resid = S - op.forward(x)
    data = np.sum(np.abs(resid) ** 2, axis=(-2, -1))
    lam = np.asarray(lam, dtype=np.float64)
    # lam may carry a trailing axis (..., 1) like the maps (..., N), or match the problems (...).
    lam = lam[..., 0] if lam.ndim == x.ndim else lam
    reg = gamma * np.sum(np.abs(x), axis=-1) + (1.0 - gamma) * np.sum(x * x, axis=-1)
    return data + lam * reg


def graph_total_variation(x: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Roughness of maps (..., N) on a k-nearest-neighbour graph (N, k): half the sum of
    |x_i - x_j| over every (i, neighbour j) pair, (...)."""
    return 0.5 * np.sum(np.abs(x[..., :, None] - x[..., neighbours]), axis=(-2, -1))


@dataclass
class SolverInfo:
    """What a solver did, per problem: iterations used, the lambda it solved with, and whether it
    met its tolerance before max_iter."""

    iterations: np.ndarray
    lam: np.ndarray
    converged: np.ndarray
    history: list[np.ndarray] = field(default_factory=list)


def _relative_change(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    num = np.linalg.norm(new - old, axis=-1)
    den = np.linalg.norm(new, axis=-1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def _setup(S, A, lam, gamma, x0):
    op = _as_gram(A)
    S = np.asarray(S)
    _check_shapes(S, op)
    b = op.backproject(S)
    lam = (
        default_lambda(b, gamma)
        if lam is None
        else np.broadcast_to(
            np.asarray(lam, np.float64)[..., None] if np.ndim(lam) else np.float64(lam), b.shape[:-1] + (1,)
        )
    )
    x = np.zeros_like(b) if x0 is None else np.array(np.broadcast_to(x0, b.shape), dtype=np.float64)
    return op, S, b, lam, x


def apgd(
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    *,
    gamma: float = DEFAULT_GAMMA,
    lam: np.ndarray | float | None = None,
    max_iter: int = 200,
    tol: float = 1e-3,
    x0: np.ndarray | None = None,
    momentum_offset: float = 50.0,
    stop: str = "objective",
    return_info: bool = False,
    track_objective: bool = False,
):
    """Accelerated proximal gradient descent, the STAIRS26 ground-truth solver.

    Nesterov momentum ``(n - 1) / (n + 50)``, step ``1 / L``, lambda from the first gradient step
    (:func:`default_lambda`) unless given, start from zero unless ``x0`` is given. Each problem
    stops on its own when the relative change drops below ``tol`` or at ``max_iter``. The
    relative change is that of the objective value (``stop="objective"``, the reading of the
    DeepWave/LAM reference, whose solver stops on the objective's relative tolerance) or of the
    iterate (``stop="iterate"``, runs much longer and drifts towards the ringing minimiser).

    Returns:
        x (..., [B,] N) float64; with ``return_info`` also a :class:`SolverInfo`.
    """
    if stop not in ("objective", "iterate"):
        raise ValueError(f"stop must be 'objective' or 'iterate', got {stop!r}")
    op, S, b, lam, x = _setup(S, A, lam, gamma, x0)
    alpha = 1.0 / op.lipschitz
    s_norm = np.sum(np.abs(S) ** 2, axis=(-2, -1))
    reg_lam = lam[..., 0]

    def value(x: np.ndarray, gx: np.ndarray) -> np.ndarray:
        # ||S||^2 - 2 b.x + x.G.x + reg: reuses G x, so one G product per iteration suffices.
        reg = gamma * np.sum(x, axis=-1) + (1.0 - gamma) * np.sum(x * x, axis=-1)
        return s_norm - 2.0 * np.sum(b * x, axis=-1) + np.sum(x * gx, axis=-1) + reg_lam * reg

    gx = op.apply(x)
    f = value(x, gx)
    x_prev, gx_prev = x, gx
    active = np.ones(b.shape[:-1], dtype=bool)
    iters = np.zeros(b.shape[:-1], dtype=np.int64)
    history = []
    for n in range(1, max_iter + 1):
        beta = (n - 1) / (n + momentum_offset)
        y = x + beta * (x - x_prev)
        gy = gx + beta * (gx - gx_prev)  # G is linear: G y without another product
        x_new = prox_elastic_nonneg(y - alpha * 2.0 * (gy - b), alpha, lam, gamma)
        x_new = np.where(active[..., None], x_new, x)
        gx_new = op.apply(x_new)
        f_new = value(x_new, gx_new)
        if stop == "objective":
            done = np.abs(f_new - f) <= tol * np.abs(f_new)
        else:
            done = _relative_change(x_new, x) < tol
        iters += active
        x_prev, gx_prev, x, gx, f = x, gx, x_new, gx_new, f_new
        active &= ~done
        if track_objective:
            history.append(f.copy())
        if not active.any():
            break
    if not return_info:
        return x
    return x, SolverInfo(iters, lam[..., 0], ~active, history)


def admm(
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    *,
    gamma: float = DEFAULT_GAMMA,
    lam: np.ndarray | float | None = None,
    rho: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    x0: np.ndarray | None = None,
    return_info: bool = False,
    track_objective: bool = False,
):
    """ADMM on the split ``x = z``: an exact quadratic step for the data term (one
    eigendecomposition of G shared by all problems) and the elastic-net/non-negativity prox for z.
    Converges to the exact minimiser. ``rho`` defaults to lambda_max(G) / 100 per band (the
    fastest of the scales tried on em32 frames).

    Returns:
        z (..., [B,] N) (non-negative); with ``return_info`` also a :class:`SolverInfo`.
    """
    op, S, b, lam, z = _setup(S, A, lam, gamma, x0)
    w, Q = op.eig
    rho_v = op.expand(op.lam_max / 100.0 if rho is None else np.broadcast_to(rho, np.shape(op.lam_max)))
    inv = 1.0 / (2.0 * w + rho_v)  # (N,) or (B, N): spectrum of (2G + rho I)^-1

    def solve(rhs: np.ndarray) -> np.ndarray:
        if not op.per_band:
            return ((rhs @ Q) * inv) @ Q.T
        rb = np.moveaxis(rhs, -2, 0).reshape(Q.shape[0], -1, Q.shape[-1])
        out = ((rb @ Q) * inv[:, None, :]) @ np.swapaxes(Q, -1, -2)
        return np.moveaxis(out.reshape((Q.shape[0],) + rhs.shape[:-2] + rhs.shape[-1:]), 0, -2)

    u = np.zeros_like(z)
    active = np.ones(b.shape[:-1], dtype=bool)
    iters = np.zeros(b.shape[:-1], dtype=np.int64)
    history = []
    for _ in range(max_iter):
        x = solve(2.0 * b + rho_v * (z - u))
        z_new = prox_elastic_nonneg(x + u, 1.0 / rho_v, lam, gamma)
        u_new = u + x - z_new
        z_new = np.where(active[..., None], z_new, z)
        u = np.where(active[..., None], u_new, u)
        primal = _relative_change(z_new, x)
        done = (_relative_change(z_new, z) < tol) & (primal < np.sqrt(tol))
        iters += active
        z = z_new
        active &= ~done
        if track_objective:
            history.append(objective(z, S, op, lam, gamma))
        if not active.any():
            break
    if not return_info:
        return z
    return z, SolverInfo(iters, lam[..., 0], ~active, history)


def chambolle_pock(
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    *,
    gamma: float = DEFAULT_GAMMA,
    lam: np.ndarray | float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    x0: np.ndarray | None = None,
    return_info: bool = False,
    track_objective: bool = False,
):
    """Chambolle-Pock primal-dual iterations with K x = A diag(x) A^H and F(v) = ||v - S||^2:
    the dual lives in the M x M visibility space. Step sizes ``tau = sigma = 0.99 / ||K||``
    (``||K||^2 = lambda_max(G)``), extrapolation theta = 1. Converges to the exact minimiser.

    Returns:
        x (..., [B,] N); with ``return_info`` also a :class:`SolverInfo`.
    """
    op, S, b, lam, x = _setup(S, A, lam, gamma, x0)
    step = op.expand(0.99 / np.sqrt(op.lam_max))
    step_m = step[..., None] if op.per_band else step  # broadcast against (..., B, M, M)
    y = np.zeros_like(S, dtype=np.complex128)
    x_bar = x.copy()
    active = np.ones(b.shape[:-1], dtype=bool)
    iters = np.zeros(b.shape[:-1], dtype=np.int64)
    history = []
    for _ in range(max_iter):
        y_new = (y + step_m * (op.forward(x_bar) - S)) / (1.0 + step_m / 2.0)
        y_new = np.where(active[..., None, None], y_new, y)
        x_new = prox_elastic_nonneg(x - step * op.backproject(y_new), step, lam, gamma)
        x_new = np.where(active[..., None], x_new, x)
        x_bar = 2.0 * x_new - x
        # Both variables must settle: from x0 = 0 the primal stays at 0 until the dual has grown.
        dual_change = _relative_change(y_new.reshape(y.shape[:-2] + (-1,)), y.reshape(y.shape[:-2] + (-1,)))
        done = (_relative_change(x_new, x) < tol) & (dual_change < tol)
        y = y_new
        iters += active
        x = x_new
        active &= ~done
        if track_objective:
            history.append(objective(x, S, op, lam, gamma))
        if not active.any():
            break
    if not return_info:
        return x
    return x, SolverInfo(iters, lam[..., 0], ~active, history)


def subgradient(
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    *,
    gamma: float = DEFAULT_GAMMA,
    lam: np.ndarray | float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    step: str = "diminishing",
    x0: np.ndarray | None = None,
    return_info: bool = False,
    track_objective: bool = False,
):
    """Projected subgradient descent on the full objective (the L1 term's subgradient on the
    non-negative orthant is ``lam gamma``). ``step="diminishing"`` uses ``1 / (L sqrt(k))`` and
    returns the best iterate seen (classic subgradient method); ``"constant"`` uses ``1 / L``, a
    monotone projected-gradient method.

    Returns:
        x (..., [B,] N); with ``return_info`` also a :class:`SolverInfo`.
    """
    if step not in ("diminishing", "constant"):
        raise ValueError(f"step must be 'diminishing' or 'constant', got {step!r}")
    op, S, b, lam, x = _setup(S, A, lam, gamma, x0)
    alpha = 1.0 / op.lipschitz
    s_norm = np.sum(np.abs(S) ** 2, axis=(-2, -1))
    reg_lam = lam[..., 0]

    def value(x: np.ndarray, gx: np.ndarray) -> np.ndarray:
        # The expansion ||S||^2 - 2 b.x + x.G.x reuses G x, already needed for the step.
        reg = gamma * np.sum(x, axis=-1) + (1.0 - gamma) * np.sum(x * x, axis=-1)
        return s_norm - 2.0 * np.sum(b * x, axis=-1) + np.sum(x * gx, axis=-1) + reg_lam * reg

    gx = op.apply(x)
    best, best_f = x.copy(), value(x, gx)
    active = np.ones(b.shape[:-1], dtype=bool)
    iters = np.zeros(b.shape[:-1], dtype=np.int64)
    history = []
    for k in range(1, max_iter + 1):
        g = 2.0 * (gx - b) + lam * gamma + 2.0 * lam * (1.0 - gamma) * x
        eta = alpha / np.sqrt(k) if step == "diminishing" else alpha
        x_new = np.where(active[..., None], np.maximum(x - eta * g, 0.0), x)
        done = _relative_change(x_new, x) < tol
        iters += active
        x = x_new
        gx = op.apply(x)
        f = value(x, gx)
        better = f < best_f
        best = np.where(better[..., None], x, best)
        best_f = np.minimum(f, best_f)
        active &= ~done
        if track_objective:
            history.append(best_f.copy())
        if not active.any():
            break
    if not return_info:
        return best
    return best, SolverInfo(iters, lam[..., 0], ~active, history)


SOLVERS = {"apgd": apgd, "admm": admm, "chambolle_pock": chambolle_pock, "subgradient": subgradient}
