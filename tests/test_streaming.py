"""Tests for seld_d2.acoustics.streaming and tools/compare_solvers.py (report §5 solver study).

Small generated em32 scenes only; the whole module runs in well under a minute on two cores.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FS, plane_wave_em32, write_wav

from seld_d2.acoustics import geometry as g
from seld_d2.acoustics import solvers as so
from seld_d2.acoustics import streaming as st
from seld_d2.acoustics import visibility as v

REPO = Path(__file__).resolve().parents[1]
GRID = g.fibonacci_grid()
NEIGHBOURS = g.grid_neighbours(GRID)
OP = so.GramOperator(g.steering_matrix(g.em32_positions(), GRID))


def _load_tool():
    spec = importlib.util.spec_from_file_location("compare_solvers", REPO / "tools" / "compare_solvers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


@pytest.fixture(scope="module")
def moving_clip():
    """3 s of one white-noise source moving 10 deg/s (1 degree per frame), weak sensor noise:
    linear9 visibilities (30, 9, 32, 32) and the cold early-stopped APGD maps and iterations."""
    audio, _ = TOOL.generate_scene("moving", 3.0, 1, 10.0, 0.01, seed=0)
    S = v.visibilities(audio, FS, "linear9")
    x, info = so.apgd(S, OP, return_info=True)
    return S, x, info.iterations


@pytest.fixture(scope="module")
def static_run(moving_clip):
    """One frame repeated 15 times (an exactly static scene), streamed with both rules."""
    S = np.repeat(moving_clip[0][:1], 15, axis=0)
    cold = so.apgd(S[:1], OP)[0]
    ridge = st.streaming_apgd(S, OP, return_info=True)
    distance = st.streaming_apgd(S, OP, rule="distance", return_info=True)
    return cold, ridge, distance


def pearson(a, b):
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    return np.sum(a * b, -1) / np.sqrt(np.sum(a * a, -1) * np.sum(b * b, -1))


def relative_error(x, ref):
    return np.linalg.norm(x - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


def roughness(x):
    return so.graph_total_variation(x, NEIGHBOURS) / np.sum(x, axis=-1)


# --------------------------------------------------------------------------------------------
# Solvers: monotone where theory says so; exact solvers agree on the regularised minimiser


def test_proximal_gradient_decreases_objective_monotonically(moving_clip):
    # Without momentum APGD is proximal gradient with step 1/L (L the data term's Lipschitz
    # constant, the elastic net in the prox): the descent lemma makes every step decrease F.
    # With momentum (FISTA-type APGD) F is not monotone in general, so APGD proper is not tested.
    S = moving_clip[0][3, [0, 4, 8]]
    _, info = so.apgd(
        S, OP, momentum_offset=1e12, max_iter=40, tol=0.0, track_objective=True, return_info=True
    )
    f = np.array(info.history)  # (40, 3), F of the actual iterates
    f0 = np.sum(np.abs(S) ** 2, axis=(-2, -1))  # F(0)
    assert np.all(f[0] < f0)
    assert np.all(np.diff(f, axis=0) <= 1e-12 * np.abs(f[1:]))


def test_constant_step_subgradient_iterates_decrease(moving_clip):
    # On x >= 0 the L1 term is linear, so the constant-step method is projected gradient on a
    # smooth F with step 1/(2 lambda_max(G)) < 2 / L(F): monotone. Its history is the best value so
    # far; a *strict* decrease at every step means every new iterate beat the previous one. (The
    # diminishing step, ADMM and Chambolle-Pock are not descent methods: only their limit is tested.)
    S = moving_clip[0][3, [0, 4, 8]]
    _, info = so.subgradient(
        S, OP, step="constant", max_iter=40, tol=0.0, track_objective=True, return_info=True
    )
    assert np.all(np.diff(np.array(info.history), axis=0) < 0)


def test_admm_and_chambolle_pock_agree_on_regularised_minimiser(moving_clip):
    # The report's well-posed variant: a ridge of 1% of lambda_max(G) (condition number ~100).
    S = moving_clip[0][5, 6]
    lam = so.default_lambda(OP.backproject(S))[0]
    ridge = 0.01 * OP.lam_max
    S_r, lam_r, s = st.ridge_problem(S, lam, 0.5, ridge)
    # ADMM's stop asks the primal residual below sqrt(tol): 1e-8 gives 1e-4 of the map.
    x_admm = so.admm(S_r, OP, lam=lam_r, tol=1e-8, max_iter=4000)
    x_cp = so.chambolle_pock(S_r, OP, lam=lam_r, tol=1e-6, max_iter=4000)
    assert np.linalg.norm(x_admm - x_cp) <= 1e-4 * np.linalg.norm(x_admm)
    # And it is the minimiser of F + ridge |x|^2 (KKT): zero gradient on the support, >= 0 off it.
    x = x_admm / s
    b = OP.backproject(S)
    grad = 2 * (OP.apply(x) - b) + lam * 0.5 + 2 * (lam * 0.5 + ridge) * x
    scale = 2 * b.max()
    on = x > 1e-6 * x.max()
    assert on.sum() >= 3
    assert np.abs(grad[on]).max() <= 1e-3 * scale and grad[~on].min() >= -1e-3 * scale


def test_ridge_problem_is_a_rescaling(moving_clip):
    S = moving_clip[0][2]  # (9, 32, 32)
    lam = so.default_lambda(OP.backproject(S))[..., 0]
    ridge = 0.02 * OP.lam_max
    S_r, lam_r, s = st.ridge_problem(S, lam, 0.5, ridge)
    assert S_r.shape == S.shape and lam_r.shape == s.shape == (9,) and np.all(s > 1)
    x = np.random.default_rng(0).uniform(0, 1e-3, (9, 484))
    regularised = so.objective(x, S, OP, lam[:, None]) + ridge * np.sum(x * x, -1)
    np.testing.assert_allclose(so.objective(s[:, None] * x, S_r, OP, lam_r[:, None]), s**2 * regularised)
    # A silent problem stays unscaled.
    _, lam_0, s_0 = st.ridge_problem(np.zeros((2, 32, 32)), np.zeros(2), 0.5, ridge)
    assert np.all(s_0 == 1) and np.all(lam_0 == 0)


def test_ridge_surrogate_matches_early_stopped_apgd(moving_clip):
    # The finding the streaming estimator rests on: APGD stopped after k iterations from zero is,
    # up to a gain, the minimiser of the objective plus mu(k) ||x||^2.
    S = moving_clip[0][10]
    lam = so.default_lambda(OP.backproject(S))[..., 0]
    for k in (3, 10, 40):
        x_k = so.apgd(S, OP, lam=lam, max_iter=k, tol=0.0)
        S_r, lam_r, s = st.ridge_problem(S, lam, 0.5, st.ridge_for_iterations(k, OP.lam_max))
        x_r = so.apgd(S_r, OP, lam=lam_r, max_iter=600, tol=1e-6, stop="iterate") / s[:, None]
        assert np.all(pearson(x_r, x_k) >= 0.995), k


# --------------------------------------------------------------------------------------------
# Streaming


def test_streaming_static_source_converges_to_cold_start(static_run):
    cold, (x, info), _ = static_run
    assert info.keyframes.tolist() == [True] + [False] * 14
    # After the keyframe the warm start is the surrogate's minimiser: one check step per frame.
    assert np.all(info.iterations[5:] == 1)
    np.testing.assert_allclose(x[-1], x[-2], rtol=0, atol=1e-3 * np.abs(x[-1]).max())
    # ... and that fixed point is the cold map up to the surrogate's fit (1-4 % per band).
    assert np.all(pearson(x[-1], cold) >= 0.998)
    assert np.all(relative_error(x[-1], cold) <= 0.06)
    ratio = roughness(x[-1]) / roughness(cold)
    assert np.all(np.abs(ratio - 1) <= 0.08) and abs(np.mean(ratio) - 1) <= 0.02


def test_distance_rule_drifts_on_a_static_scene(static_run):
    # The report's literal rule keeps moving the warm start towards the ringing minimiser.
    cold, _, (x, _) = static_run
    assert np.mean(roughness(x[-1])) >= 1.05 * np.mean(roughness(cold))
    assert np.mean(relative_error(x[-1], cold)) >= 0.05


def test_streaming_moving_source_accuracy_and_iterations(moving_clip):
    """The issue's targets on a short clip. Measured here: 6.3x fewer iterations per frame than
    cold APGD (10x on non-key frames), Pearson 0.9965 on average (min 0.965), relative error 7 %.
    The 1 % relative-error target is not met: the surrogate's own fit to early-stopped APGD is
    1-4 % per band, and APGD's map itself moves ~3 % when its stopping tolerance moves by 25 %."""
    S, cold, cold_iters = moving_clip
    x, info = st.streaming_apgd(S, OP, return_info=True)
    assert x.shape == cold.shape and info.iterations.shape == cold_iters.shape
    assert np.mean(cold_iters) >= 5 * np.mean(info.iterations)  # keyframe cost included
    r = pearson(x, cold)
    assert np.mean(r) >= 0.99 and np.min(r) >= 0.95
    assert np.mean(relative_error(x, cold)) <= 0.1
    rough = roughness(x).mean(-1)
    assert rough[-10:].mean() <= 1.03 * rough[:10].mean()  # no drift towards the checkerboard


def test_streaming_per_band_steering_and_lambda():
    centres = v.band_centres("mel16")[[10, 14]]
    op = so.GramOperator(g.steering_matrix(g.em32_positions(), GRID, centres))
    audio, _ = TOOL.generate_scene("moving", 0.4, 1, 10.0, 0.01, seed=1)
    S = v.visibilities(audio, FS, centres)  # (4, 2, 32, 32)
    x, info = st.streaming_apgd(S, op, lam=2.0, keyframe_every=2, return_info=True)
    assert x.shape == (4, 2, 484) and np.all(x >= 0)
    assert info.keyframes.tolist() == [True, False, True, False]
    assert np.all(info.lam == 2.0) and np.all(info.ridge > 0)
    cold = so.apgd(S, op, lam=2.0)
    assert np.all(pearson(x, cold) >= 0.98)


def test_solve_maps_dispatch(moving_clip):
    S = moving_clip[0][:3]
    np.testing.assert_array_equal(st.solve_maps(S, OP), so.apgd(S, OP))
    assert st.solve_maps(S, OP, "streaming").shape == (3, 9, 484)
    _, info = st.solve_maps(S, OP, "streaming_distance", return_info=True)
    assert info.keyframes.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="unknown solver"):
        st.solve_maps(S, OP, "newton")
    with pytest.raises(ValueError, match="rule"):
        st.streaming_apgd(S, OP, rule="nope")
    with pytest.raises(ValueError, match="frames first"):
        st.streaming_apgd(S[0, 0], OP)


# --------------------------------------------------------------------------------------------
# tools/compare_solvers.py


def test_compare_solvers_end_to_end(tmp_path):
    out = tmp_path / "study"
    argv = ["--generate", "moving", "--seconds", "0.5", "--exact-frames", "1", "--exact-iters", "20"]
    argv += ["--apgd-iters", "5,10", "--quadratic", "0.01", "--out", str(out)]
    assert TOOL.main(argv) == 0
    for name in ("table.md", "table.json", "maps.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "table.json").read_text())
    methods = [row["method"] for row in summary["methods"]]
    assert methods == ["apgd", "apgd@5", "apgd@10", "admm", "chambolle_pock", "subgradient", "streaming",
                       "streaming_distance"]  # fmt: skip
    apgd = summary["methods"][0]
    assert apgd["pearson_vs_apgd"] == pytest.approx(1.0) and apgd["objective_vs_apgd"] == pytest.approx(1.0)
    assert apgd["peak_error_deg"] < 10
    assert summary["frame"] == 2 and summary["exact_frames"] == [2]
    assert "| streaming |" in (out / "table.md").read_text()


def test_compare_solvers_on_a_wav(tmp_path):
    wav = tmp_path / "em32.wav"
    write_wav(wav, plane_wave_em32(-60, 20, seconds=0.4).astype(np.float32))
    out = tmp_path / "o"
    assert (
        TOOL.main(["--wav", str(wav), "--solvers", "apgd,streaming", "--band", "median", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "table.json").read_text())
    assert [row["method"] for row in summary["methods"]] == ["apgd", "streaming"]
    assert summary["methods"][1]["peak_error_deg"] is None  # no known sources in a recording
    assert summary["methods"][1]["pearson_vs_apgd"] >= 0.99


def test_compare_solvers_bad_input(tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    assert TOOL.main(["--wav", str(missing), "--out", str(tmp_path / "o")]) == 2
    four = tmp_path / "four.wav"
    write_wav(four, np.zeros((FS // 5, 4), np.float32))
    assert TOOL.main(["--wav", str(four), "--out", str(tmp_path / "o")]) == 2
    assert TOOL.main(["--generate", "static", "--seconds", "0.3", "--frames", "5:9"]) == 2
    assert TOOL.main(["--generate", "static", "--seconds", "0.3", "--solvers", "apgd,magic"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "file not found" in lines[0] and "4 channels" in lines[1]
    assert not (tmp_path / "o").exists()
