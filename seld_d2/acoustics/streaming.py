"""Streaming acoustic imaging: warm-started maps over consecutive frames (SPEC §4, report §5).

Early-stopped APGD (the STAIRS26 ground truth) is smooth only because it stops early; warm-starting
it from the previous frame keeps iterating towards the ringing minimiser of the objective. Two
warm-started estimators are provided:

``rule="ridge"`` (default). Measured on generated em32 scenes: the map that APGD reaches from zero
when it stops after k iterations is, up to a scalar gain per band, the *exact* minimiser of the
same objective with an extra ridge ``mu ||x||^2``, ``mu(k) ~ lambda_max(G) (0.6 / k + 3 / k^2)``
(:func:`ridge_for_iterations`; Pearson correlation >= 0.995 for k = 2..300, linear9 and mel16,
fixed and per-band steering): early stopping acts as Tikhonov regularisation, as it does for
gradient descent on least squares. The estimator makes that implicit regularisation explicit.
Every frame warm-starts from the previous frame's iterate (momentum carried over) and iterates
this strongly convex surrogate until its step falls below ``tol`` of the map's norm. However
many iterations accumulate over frames, they converge to the current frame's surrogate minimiser,
which is smooth: there is no ringing minimiser to drift to. A cold-started APGD *keyframe* every
``keyframe_every`` frames calibrates ``mu`` from how far cold APGD goes (its iteration count per
band) and the gain from its map.

``rule="distance"``: the report's suggestion taken literally, kept for comparison. Warm-started
APGD on the original objective stops once the iterate has moved, since the warm start, as far as
cold-started APGD's maps move from one frame to the next (calibrated on pairs of consecutive
keyframes), or by APGD's own objective criterion, or after the keyframe's cold iteration count.
It drifts: the level sets of the objective are huge (G is singular) and the warm path heads for the
minimiser, not for the cold early stop (measured: roughness grows, Pearson ~0.95 to cold APGD).

Shapes: S complex (T, ..., M, M) with a leading frame axis (for maps per band: (T, B, M, M)); A as
for :mod:`solvers`; maps (T, ..., N).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .solvers import (
    DEFAULT_GAMMA,
    SOLVERS,
    GramOperator,
    _as_gram,
    _check_shapes,
    apgd,
    default_lambda,
)

RULES = ("ridge", "distance")

# mu(k) / lambda_max(G) = RIDGE_LINEAR / k' + RIDGE_QUADRATIC / k'^2 with k' = k (1 + k / RIDGE_MOMENTUM)
# (APGD's momentum (n - 1) / (n + 50) makes late iterations count more): fitted by maximising the
# Pearson correlation between the surrogate's minimiser and APGD stopped after k = 2..300
# iterations, on generated one- and two-source em32 scenes (linear9 and mel16, fixed steering).
RIDGE_LINEAR = 0.6
RIDGE_QUADRATIC = 3.0
RIDGE_MOMENTUM = 250.0


def ridge_for_iterations(k: np.ndarray | float, lam_max: np.ndarray | float) -> np.ndarray:
    """Extra ridge ``mu`` whose regularised minimiser matches APGD stopped after k iterations from
    zero, broadcasting k (..., [B]) against ``lambda_max(G)`` (() or (B,))."""
    k = np.maximum(np.asarray(k, np.float64), 1.0)
    k_eff = k * (1.0 + k / RIDGE_MOMENTUM)
    return np.asarray(lam_max, np.float64) * (RIDGE_LINEAR / k_eff + RIDGE_QUADRATIC / k_eff**2)


def ridge_problem(
    S: np.ndarray, lam: np.ndarray | float, gamma: float, ridge: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Express ``F(x) + ridge ||x||^2`` in the (lam, scalar gamma) form that :mod:`solvers` takes.

    With ``s = 1 + ridge / (lam (1 - gamma))`` per problem, the problem (``s S``, ``lam' = s lam``,
    the same gamma) is the regularised one in the variable ``x' = s x``, its objective scaled by
    ``s^2``. First-order steps with a fixed step size commute with that scaling, so every solver
    there takes the same iterations on it, its iterates ``s`` times the regularised problem's.

    Args:
        S: complex (..., M, M) visibilities.
        lam: lambda per problem (...) (or a scalar).
        gamma: the L1/L2 mix, 0 <= gamma < 1.
        ridge: extra ridge weight per problem (...) (or a scalar), >= 0.

    Returns:
        (s S, lam', s) with lam' and s of shape (...); divide the solution by ``s[..., None]``.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"a ridge needs 0 <= gamma < 1, got {gamma}")
    lam = np.asarray(lam, np.float64)
    l2 = lam * (1.0 - gamma)
    # A silent problem (lam = 0) has the zero map for any ridge: leave it unscaled.
    s = np.where(l2 > 0, 1.0 + np.asarray(ridge, np.float64) / np.where(l2 > 0, l2, 1.0), 1.0)
    s = np.broadcast_to(s, np.broadcast_shapes(s.shape, S.shape[:-2]))
    return S * s[..., None, None], lam * s, s


@dataclass
class StreamingInfo:
    """What the streaming estimator did, per frame and problem.

    ``iterations`` (T, ...) counts every G product spent on a frame, the keyframe's cold APGD
    included; ``keyframes`` (T,) marks the frames where cold APGD ran; ``lam`` (T, ...) the lambda
    used; ``ridge`` (T, ...) and ``gain`` (T, ...) the surrogate's calibration (rule ``ridge``).
    """

    iterations: np.ndarray
    keyframes: np.ndarray
    lam: np.ndarray
    ridge: np.ndarray
    gain: np.ndarray


def _norm(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x, axis=-1)


class _Iterate:
    """Accelerated proximal-gradient state of a batch of problems (maps (..., N)), kept across
    frames: the iterate, the previous iterate (momentum) and their G products."""

    def __init__(self, op: GramOperator, shape: tuple[int, ...]):
        self.op = op
        self.x = np.zeros(shape)
        self.gx = np.zeros(shape)
        self.x_prev, self.gx_prev = self.x, self.gx

    def reset(self, x: np.ndarray) -> None:
        self.x = x
        self.gx = self.op.apply(x)
        self.x_prev, self.gx_prev = self.x, self.gx

    def run(
        self,
        b: np.ndarray,
        l1: np.ndarray,
        l2: np.ndarray,
        beta: Callable[[int], np.ndarray | float],
        stop: Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        max_iter: int,
    ) -> np.ndarray:
        """Iterate on ``x.Gx - 2 b.x + l1 sum(x) + l2 |x|^2`` (x >= 0) with momentum ``beta(n)`` until
        ``stop(n, x_new, gx_new, x, gx)`` per problem; returns the iterations used (...)."""
        alpha = 1.0 / self.op.lipschitz
        active = np.ones(b.shape[:-1], dtype=bool)
        iters = np.zeros(b.shape[:-1], dtype=np.int64)
        for n in range(1, max_iter + 1):
            bn = beta(n)
            y = self.x + bn * (self.x - self.x_prev)
            gy = self.gx + bn * (self.gx - self.gx_prev)  # G is linear: no extra product
            x_new = np.maximum(y - alpha * (2.0 * (gy - b) + l1), 0.0) / (1.0 + 2.0 * alpha * l2)
            keep = active[..., None]
            x_new = np.where(keep, x_new, self.x)
            gx_new = self.op.apply(x_new)
            done = stop(n, x_new, gx_new, self.x, self.gx)
            iters += active
            # Problems already stopped keep their momentum pair for the next frame.
            self.x_prev = np.where(keep, self.x, self.x_prev)
            self.gx_prev = np.where(keep, self.gx, self.gx_prev)
            self.x, self.gx = x_new, gx_new
            active &= ~done
            if not active.any():
                break
        return iters


def _ridge_frame(
    state: _Iterate, b: np.ndarray, l1: np.ndarray, l2: np.ndarray, lipschitz, tol: float, max_iter: int
) -> np.ndarray:
    """Warm-started iterations on the ridge surrogate (its ridge already in ``l2``) until the step
    is below ``tol`` of the map's norm; momentum carries over from the previous frame."""
    q = np.sqrt(2.0 * l2 / lipschitz)
    beta = (1.0 - q) / (1.0 + q)  # the constant momentum of a strongly convex problem

    def small_step(n, x_new, gx_new, x, gx):
        return _norm(x_new - x) <= tol * _norm(x_new)

    return state.run(b, l1, l2, lambda n: beta, small_step, max_iter)


def _distance_frame(
    state: _Iterate,
    S: np.ndarray,
    b: np.ndarray,
    l1: np.ndarray,
    l2: np.ndarray,
    travel: np.ndarray,
    k_cap: np.ndarray,
    cold_tol: float,
    max_iter: int,
) -> np.ndarray:
    """Warm-started APGD (momentum restarted) on the original objective until the iterate has moved
    ``travel`` times its norm from the warm start, the objective settles, or ``k_cap`` iterations."""
    s_norm = np.sum(np.abs(S) ** 2, axis=(-2, -1))
    x_warm = state.x
    reach = travel * _norm(x_warm)

    def value(x, gx):
        reg = l1[..., 0] * np.sum(x, -1) + l2[..., 0] * np.sum(x * x, -1)
        return s_norm - 2.0 * np.sum(b * x, -1) + np.sum(x * gx, -1) + reg

    def moved_enough(n, x_new, gx_new, x, gx):
        f_new, f = value(x_new, gx_new), value(x, gx)
        settled = np.abs(f_new - f) <= cold_tol * np.abs(f_new)
        return (_norm(x_new - x_warm) >= reach) | settled | (n >= k_cap)

    state.reset(x_warm)
    return state.run(b, l1, l2, lambda n: (n - 1) / (n + 50.0), moved_enough, max_iter)


def streaming_apgd(
    S: np.ndarray,
    A: np.ndarray | GramOperator,
    *,
    gamma: float = DEFAULT_GAMMA,
    lam: np.ndarray | float | None = None,
    rule: str = "ridge",
    tol: float = 0.05,
    max_iter: int = 50,
    keyframe_every: int = 100,
    cold_tol: float = 1e-3,
    cold_max_iter: int = 200,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    return_info: bool = False,
):
    """Warm-started maps of consecutive frames that stay close to cold-started, early-stopped APGD.

    Args:
        S: complex (T, ..., M, M) visibilities, frames first (e.g. (T, B, M, M)).
        A: steering operator (M, N) or (B, M, N), or its :class:`GramOperator`.
        gamma: L1/L2 mix of the objective.
        lam: lambda per problem (T, ...) or a scalar; default the APGD rule per frame.
        rule: ``"ridge"`` (calibrated surrogate) or ``"distance"`` (see the module docstring).
        tol: ridge: stop a frame when the step is below ``tol`` times the map's norm (keyframes:
            ``tol / 10``).
        max_iter: most iterations per problem on an ordinary (non-key) frame.
        keyframe_every: a cold-started APGD keyframe every this many frames (frame 0 is one; the
            distance rule uses pairs of consecutive keyframes).
        cold_tol, cold_max_iter: the keyframes' APGD (its objective stopping rule).
        progress: optional wrapper of the frame loop, e.g. ``tqdm``.

    Returns:
        maps (T, ..., N) float64; with ``return_info`` also a :class:`StreamingInfo`.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if keyframe_every < 1 or max_iter < 1:
        raise ValueError("keyframe_every and max_iter must be >= 1")
    op = _as_gram(A)
    S = np.asarray(S)
    if S.ndim < 3:
        raise ValueError(f"streaming needs frames first, (T, ..., M, M); got {S.shape}")
    _check_shapes(S[0], op)
    T, N = S.shape[0], op.num_directions
    shape = S.shape[1:-2]
    lam_all = None if lam is None else np.broadcast_to(np.asarray(lam, np.float64), (T,) + shape)
    lam_max = op.lam_max  # () or (B,)

    out = np.zeros((T,) + shape + (N,))
    info = StreamingInfo(
        iterations=np.zeros((T,) + shape, np.int64),
        keyframes=np.zeros(T, bool),
        lam=np.zeros((T,) + shape),
        ridge=np.zeros((T,) + shape),
        gain=np.ones((T,) + shape),
    )
    state = _Iterate(op, shape + (N,))
    k_avg = gain = travel = None
    for t in range(T) if progress is None else progress(range(T)):
        b = op.backproject(S[t])
        lam_t = default_lambda(b, gamma) if lam_all is None else lam_all[t][..., None]  # (..., 1)
        l1, l2 = lam_t * gamma, lam_t * (1.0 - gamma)
        info.lam[t] = lam_t[..., 0]
        pair = rule == "distance" and t % keyframe_every == 1 and info.keyframes[t - 1]
        key = info.keyframes[t] = t % keyframe_every == 0 or pair
        if key:
            x_cold, cold = apgd(
                S[t],
                op,
                gamma=gamma,
                lam=lam_t[..., 0],
                tol=cold_tol,
                max_iter=cold_max_iter,
                return_info=True,
            )
            info.iterations[t] += cold.iterations
            # Smoothed over keyframes: one frame's iteration count jumps by whole iterations.
            k_avg = cold.iterations if k_avg is None else 0.5 * (k_avg + cold.iterations)

        if rule == "ridge":
            mu = ridge_for_iterations(k_avg, lam_max)
            info.ridge[t] = mu
            info.iterations[t] += _ridge_frame(
                state,
                b,
                l1,
                l2 + mu[..., None],
                op.lipschitz,
                tol / 10.0 if key else tol,
                cold_max_iter if key else max_iter,
            )
            if key:  # the gain that best maps the surrogate's minimiser onto the cold map
                xx = np.sum(state.x**2, axis=-1)
                g = np.where(xx > 0, np.sum(state.x * x_cold, axis=-1) / np.where(xx > 0, xx, 1.0), 1.0)
                gain = g if gain is None else 0.5 * (gain + g)
            info.gain[t] = gain
            out[t] = gain[..., None] * state.x
        elif key:
            if pair:  # how far cold APGD's map moves from one frame to the next
                d = _norm(x_cold - state.x) / np.maximum(_norm(state.x), np.finfo(float).tiny)
                travel = d if travel is None else 0.5 * (travel + d)
            state.reset(x_cold)
            out[t] = x_cold
        else:
            info.iterations[t] += _distance_frame(
                state, S[t], b, l1, l2, 0.1 if travel is None else travel, k_avg, cold_tol, cold_max_iter
            )
            out[t] = state.x

    return (out, info) if return_info else out


MAP_SOLVERS = ("apgd", "streaming", "streaming_distance", "admm", "chambolle_pock", "subgradient")


def solve_maps(S: np.ndarray, A: np.ndarray | GramOperator, solver: str = "apgd", **kw):
    """Maps of a clip's visibilities with a named solver: complex (T, B, M, M) -> (T, B, N).

    ``apgd`` (the STAIRS26 labels), ``streaming`` (:func:`streaming_apgd`, rule ``ridge``),
    ``streaming_distance`` (rule ``distance``), or one of the exact solvers; keyword arguments go to
    the solver (``return_info`` included).
    """
    if solver == "streaming":
        return streaming_apgd(S, A, **kw)
    if solver == "streaming_distance":
        return streaming_apgd(S, A, rule="distance", **kw)
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {MAP_SOLVERS}")
    return SOLVERS[solver](S, A, **kw)
