"""Tests for seld_d2.acoustics.uplam and tools/train_uplam.py (CPU, small generated data)."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import plane_wave_em32  # noqa: E402

from seld_d2.acoustics.geometry import (
    TETRA_CHANNELS,
    azel_to_unit,
    em32_positions,
    fibonacci_grid,
    steering_matrix,
)
from seld_d2.acoustics.render import render_point_source
from seld_d2.acoustics.uplam import (
    LAM,
    UpLAM,
    checkpoint_hash,
    export_checkpoint,
    hermitian_features,
    interpolation_operator,
    load_checkpoint,
    map_agreement,
    max_normalise,
    mse_tv_loss,
    quadratic_operator,
    save_checkpoint,
    srp_reconstruction_gain,
    steered_reconstruction,
    steering_operator,
)
from seld_d2.acoustics.visibility import visibilities

FS = 24000
REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_uplam", REPO / "tools" / "train_uplam.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_uplam"] = module
    spec.loader.exec_module(module)
    return module


train_uplam = _load_tool()


def render_clip(rng: np.random.Generator, seconds: float, sources: int = 2) -> np.ndarray:
    """White-noise point sources 1-3 m away in random directions, (num_samples, 32)."""
    out = np.zeros((int(FS * seconds), 32))
    for _ in range(sources):
        pos = azel_to_unit(rng.uniform(-180, 180), rng.uniform(-60, 60)) * rng.uniform(1, 3)
        out += render_point_source(rng.standard_normal(out.shape[0]), pos, em32_positions(), FS)
    return 0.1 * out / np.abs(out).max()


def frame_pairs(audio: np.ndarray, bands) -> tuple[torch.Tensor, torch.Tensor]:
    S4 = visibilities(audio[:, list(TETRA_CHANNELS)], FS, bands)
    S32 = visibilities(audio, FS, bands)
    return torch.from_numpy(S4), torch.from_numpy(S32)


def random_hermitian(shape, dtype=torch.complex128, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*shape, dtype=dtype, generator=g)
    return 0.5 * (X + X.transpose(-1, -2).conj())


# --------------------------------------------------------------------------------------------
# LAM maths
# --------------------------------------------------------------------------------------------


def test_fast_reconstruction_matches_naive_product():
    A = torch.from_numpy(steering_operator([1000.0, 2500.0, 4000.0], "per_band"))  # (3, 32, 484)
    x = torch.rand(5, 3, 484, dtype=torch.float64) - 0.2
    fast = steered_reconstruction(A, x)
    naive = A @ torch.diag_embed(x).to(A.dtype) @ A.conj().transpose(-1, -2)
    assert fast.shape == (5, 3, 32, 32)
    assert torch.max(torch.abs(fast - naive)) < 1e-10


def test_quadratic_form_equals_row_norm_of_eigen_factor():
    """x = ||D^H V sqrt(max(L, 0))||^2 - tau, with and without gradients."""
    torch.manual_seed(0)
    lam = LAM(steering_operator("linear9"), bands=9, dtype=torch.float64)
    with torch.no_grad():
        lam.D_real.add_(0.01 * torch.randn_like(lam.D_real))
        lam.tau.add_(0.01 * torch.randn_like(lam.tau))
    S = random_hermitian((4, 9, 32, 32))
    w, V = torch.linalg.eigh(S)
    W = V * torch.sqrt(torch.clamp(w, min=0.0)).to(V.dtype)[..., None, :]
    expected = (lam.D.conj().transpose(-1, -2) @ W).abs().square().sum(-1) - lam.tau
    assert torch.allclose(lam.project(S.real, S.imag), expected, atol=1e-12, rtol=1e-10)
    with torch.no_grad():
        assert torch.allclose(lam.project(S.real, S.imag), expected, atol=1e-12, rtol=1e-10)
    Q = quadratic_operator(lam.D_real, lam.D_imag)
    assert Q.shape == (9, 32 * 32, 484)
    assert hermitian_features(S).shape == (4, 9, 1024)


def test_untrained_lam_is_steered_response_power():
    grid = fibonacci_grid()
    A = steering_matrix(em32_positions(), grid, 3000.0)
    n0 = 123
    a = A[:, n0]
    S = torch.from_numpy(np.outer(a, a.conj()) / 32.0)[None, None]  # one source, top eigval 1
    lam = LAM(A, bands=1, dtype=torch.float64)
    with torch.no_grad():
        x = lam.latent(S)[0, 0].numpy()
    srp = np.abs(A.conj().T @ a) ** 2 / 32.0**3
    np.testing.assert_allclose(x, srp + 1e-6, atol=1e-9)  # each denoiser: ReLU(1e-6 bias + skip)
    assert np.argmax(x) == n0
    assert x[n0] == pytest.approx(1.0 / 32.0, abs=1e-5)


def test_calibrated_lam_reconstructs_a_source_better_and_keeps_its_peak():
    A = steering_operator([1000.0, 3000.0], "per_band")  # (2, 32, 484)
    gain = srp_reconstruction_gain(A)
    assert np.all((gain > 0) & (gain < 1))  # the beam over-fills the reconstruction
    n0 = 200
    a = A[:, :, n0]
    S = torch.from_numpy(a[:, :, None] * a[:, None, :].conj() / 32.0)[None]  # (1, 2, 32, 32)
    errors = {}
    for calibrate in (False, True):
        lam = LAM(A, dtype=torch.float64, calibrate=calibrate)
        with torch.no_grad():
            S_hat, x = lam(S)
        assert x[0].argmax(-1).tolist() == [n0, n0]
        errors[calibrate] = ((S_hat - S).abs() ** 2).sum((-2, -1))[0]
    # The gain is the least-squares scale of the maps (pooled over directions, which the grid
    # makes nearly alike): 10 % more or less reconstructs worse.
    for scale in (0.9, 1.1):
        worse = ((steered_reconstruction(lam.A, x * scale) - S).abs() ** 2).sum((-2, -1))[0]
        assert torch.all(worse > errors[True])
    assert torch.all(errors[True] < errors[False])


def test_interpolation_prior_maps_tetrahedral_to_em32_visibilities():
    """A plane wave's 4-channel visibilities, interpolated, approximate its em32 ones below the
    array's aliasing frequency, and the untrained ``interpolation`` UpLAM upsamples to exactly
    that (its CDBPN correction starts at zero)."""
    bands = [500.0, 1000.0, 2000.0]
    T = interpolation_operator(bands)
    assert T.shape == (3, 32, 4)
    audio = plane_wave_em32(40, 20, seconds=0.3)
    S4, S32 = frame_pairs(audio, bands)
    P = torch.from_numpy(T) @ S4 @ torch.from_numpy(T).conj().transpose(-1, -2)
    rel = ((P - S32).abs() ** 2).sum((-2, -1)) / (S32.abs() ** 2).sum((-2, -1))
    assert torch.all(rel < 0.35), rel
    torch.manual_seed(0)
    model = UpLAM(bands, steering="per_band", prior="interpolation", calibrate=True, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.upsample(S4), P, rtol=1e-12, atol=1e-12)
        latent = model.latent(S4)
    peak = fibonacci_grid()[latent.mean(0).argmax(-1).numpy()]
    err = np.degrees(np.arccos(np.clip(peak @ azel_to_unit(40, 20), -1, 1)))
    assert np.all(err < 10), err
    assert model.config["prior"] == "interpolation" and model.config["calibrate"] is True
    from seld_d2.acoustics.uplam import baseline_incompatibilities

    assert any(w.startswith("prior='interpolation'") for w in baseline_incompatibilities(model))
    with pytest.raises(ValueError, match="unknown prior"):
        UpLAM(bands, prior="nearest")


# --------------------------------------------------------------------------------------------
# UpLAM module
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bands,num_bands", [("linear9", 9), ("mel16", 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_shapes_and_dtypes(bands, num_bands, dtype):
    torch.manual_seed(0)
    model = UpLAM(bands=bands, dtype=dtype)
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    S4 = random_hermitian((3, num_bands, 4, 4), seed=1)
    S32_hat, latent = model(S4)
    assert S32_hat.shape == (3, num_bands, 32, 32) and S32_hat.dtype == cdtype
    assert latent.shape == (3, num_bands, 484) and latent.dtype == dtype
    assert torch.allclose(S32_hat, S32_hat.transpose(-1, -2).conj())
    target = random_hermitian((3, num_bands, 32, 32), seed=2)
    loss = mse_tv_loss(S32_hat, target, latent, model.neighbours)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        assert torch.isfinite(p.grad).all(), name
    with torch.inference_mode():
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        fast = model.latent(S4, chunk_size=2)  # chunked, cached-Q path
        assert torch.allclose(fast, latent.detach(), atol=tol * latent.abs().max().item())


def test_dtype_switch_and_band_list():
    model = UpLAM(bands=[1000.0, 2000.0, 3000.0], steering="per_band")
    assert model.config["bands"] == [1000.0, 2000.0, 3000.0]
    assert model.config["band_name"].startswith("hz:")
    model = model.double()
    S32_hat, latent = model(random_hermitian((2, 3, 4, 4)))
    assert S32_hat.dtype == torch.complex128 and latent.dtype == torch.float64
    with pytest.raises(ValueError, match="expected visibilities"):
        model(random_hermitian((2, 4, 4, 4)))


def test_mse_tv_loss_terms():
    model = UpLAM(bands="linear9")
    S = random_hermitian((2, 9, 32, 32), dtype=torch.complex64)
    flat = torch.full((2, 9, 484), 0.5)
    loss, terms = mse_tv_loss(S, S, flat, model.neighbours, lam=1.0, return_terms=True)
    assert terms["mse"] == 0 and terms["tv"] == 0
    assert loss.item() == pytest.approx(0.5 * 484, rel=1e-6)  # only the L1 term is left


def test_map_agreement():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 3, 484))
    same = map_agreement(2.0 * maps, maps)  # max-normalisation removes the scale
    assert np.all(same["mad"] < 1e-12) and np.all(same["psnr"] > 100)
    zero = max_normalise(-maps)
    assert np.all(zero == 0)
    other = map_agreement(maps, rng.random((4, 3, 484)))
    assert other["psnr"].shape == (3,) and np.all(other["psnr"] < 20)


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    S4, S32 = frame_pairs(render_clip(rng, 1.2), "linear9")  # 12 frames
    model = UpLAM(bands="linear9")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_now() -> float:
        with torch.no_grad():
            S_hat, x = model(S4)
            return mse_tv_loss(S_hat, S32, x, model.neighbours).item()

    before = loss_now()
    for step in range(25):
        idx = torch.from_numpy(np.random.default_rng(step).permutation(len(S4))[:8])
        S_hat, x = model(S4[idx])
        loss = mse_tv_loss(S_hat, S32[idx], x, model.neighbours)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_now()
    assert np.isfinite(after) and after < 0.7 * before


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = UpLAM(bands="linear9", steering="per_band", prior="interpolation", calibrate=True)
    with torch.no_grad():
        model.lam.tau.add_(0.01)
        for p in model.cdbpn.parameters():  # the prior zeroes the CDBPN's tails: make them count
            p.add_(0.01)
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "model.pth"
    save_checkpoint(path, model, opt, epoch=3, best_val_loss=0.5)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temporary file left
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == model.config and ckpt["epoch"] == 3 and "optimizer" in ckpt
    loaded = UpLAM.from_checkpoint(path)
    S4 = random_hermitian((2, 9, 4, 4), dtype=torch.complex64)
    with torch.no_grad():
        assert torch.equal(model.latent(S4), loaded.latent(S4))
    h = checkpoint_hash(path)
    assert re.fullmatch(r"[0-9a-f]{16}", h) and h == checkpoint_hash(path)
    wide = UpLAM.from_checkpoint(path, dtype=torch.float64)
    assert wide.latent(S4).dtype == torch.float64


def test_trace_input_scaling_makes_the_upsampling_level_equivariant(tmp_path):
    torch.manual_seed(0)
    kw = dict(bands="linear9", steering="per_band", prior="interpolation", dtype=torch.float64)
    plain, scaled = UpLAM(**kw), UpLAM(**kw, input_scaling="trace")
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for model in (plain, scaled):
            for p in model.cdbpn.parameters():
                p.add_(0.01)  # biases included: a level-independent output the scaling removes
    S = random_hermitian((3, 9, 4, 4))
    S = S @ S.conj().transpose(-1, -2)  # PSD, positive trace
    with torch.no_grad():
        a, b = scaled.upsample(1e-4 * S), 1e-4 * scaled.upsample(S)
        assert torch.allclose(a, b, rtol=1e-9, atol=0)
        assert not torch.allclose(plain.upsample(1e-4 * S), 1e-4 * plain.upsample(S), rtol=1e-3)
        silent = scaled.upsample(torch.zeros_like(S))
    assert torch.isfinite(silent).all()
    save_checkpoint(tmp_path / "m.pth", scaled)
    assert UpLAM.from_checkpoint(tmp_path / "m.pth").input_scaling == "trace"
    with pytest.raises(ValueError, match="input scaling"):
        UpLAM(bands="linear9", input_scaling="rms")


def test_float16_export_keeps_the_latent(tmp_path):
    """export_checkpoint stores the weights as float16 and no trainer state: about half the size,
    and the float32 latent moves by a small fraction of its peak (the weights' relative rounding
    is 2^-11; the latent is a few multiply-accumulates deep in them)."""
    torch.manual_seed(0)
    model = UpLAM(bands="mel16", steering="per_band", prior="interpolation", calibrate=True)
    with torch.no_grad():
        for p in model.cdbpn.parameters():
            p.add_(0.01 * torch.randn_like(p))
    full, half = tmp_path / "full.pth", tmp_path / "half.pth"
    save_checkpoint(full, model, torch.optim.Adam(model.parameters()), epoch=1)
    export_checkpoint(full, half)
    ckpt = load_checkpoint(half)
    assert set(ckpt) == {"model", "config", "source_hash", "stored_dtype"}
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    assert half.stat().st_size < 0.55 * full.stat().st_size - 0  # the optimizer state is gone too
    S4, _ = frame_pairs(render_clip(np.random.default_rng(3), 0.5), "mel16")
    with torch.no_grad():
        a = UpLAM.from_checkpoint(full).latent(S4.to(torch.complex64))
        b = UpLAM.from_checkpoint(half).latent(S4.to(torch.complex64))
    assert b.dtype == torch.float32
    err = (a - b).abs().amax(dim=-1) / a.abs().amax(dim=-1).clamp_min(1e-30)
    print("float16 export: max latent error", float(err.max()))
    assert err.max() < 5e-3, err.max()
    with pytest.raises(ValueError, match="baseline|not an UpLAM checkpoint"):
        torch.save({"cdbpn.feat0_rel.conv.weight": torch.zeros(1)}, tmp_path / "base.pth")
        export_checkpoint(tmp_path / "base.pth", tmp_path / "x.pth")


# --------------------------------------------------------------------------------------------
# tools/train_uplam.py
# --------------------------------------------------------------------------------------------


def make_dataset(root: Path, train: int = 2, val: int = 1, seconds: float = 0.3) -> None:
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("val", val)):
        folder = root / "eigen_dev" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sf.write(folder / f"clip{i}.wav", render_clip(rng, seconds), FS, subtype="FLOAT")


def tool_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--root", str(root), "--train-split", "train", "--val-split", "val", "--out", str(out),
        "--bands", "linear9", "--batch-size", "2", "--lr", "1e-4", *extra,
    ]  # fmt: skip


def test_train_tool_end_to_end_and_resume(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert train_uplam.main(tool_args(tmp_path / "data", out, "--epochs", "1")) == 0
    assert (out / "last.pth").exists() and (out / "best.pth").exists()
    assert list(out.glob("events.out.tfevents.*"))
    first = load_checkpoint(out / "last.pth")
    assert first["epoch"] == 1 and np.isfinite(first["val"]["psnr"])
    assert "PSNR" in capsys.readouterr().out

    assert train_uplam.main(tool_args(tmp_path / "data", out, "--epochs", "2", "--resume")) == 0
    second = load_checkpoint(out / "last.pth")
    assert second["epoch"] == 2 and second["global_step"] > first["global_step"]
    assert "resuming" in capsys.readouterr().out


def test_train_tool_skips_bad_wavs(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    train = tmp_path / "data" / "eigen_dev" / "train"
    sf.write(train / "low_rate.wav", np.zeros((16000, 32)), 16000)
    sf.write(train / "four_ch.wav", np.zeros((FS, 4)), FS)
    (train / "garbage.wav").write_bytes(b"not a wav")
    nan = np.zeros((FS // 2, 32), dtype=np.float32)
    nan[100, 3] = np.nan
    sf.write(train / "nan.wav", nan, FS, subtype="FLOAT")
    sf.write(train / "short.wav", np.zeros((1000, 32)), FS)
    out = tmp_path / "run"
    assert train_uplam.main(tool_args(tmp_path / "data", out, "--epochs", "1")) != 0
    assert (out / "last.pth").exists()  # the good clips still trained
    err = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert len(err) == 5
    assert any("low_rate.wav" in line and "sample rate is 16000 Hz" in line for line in err)
    assert any("four_ch.wav" in line and "has 4 channels, expected 32" in line for line in err)
    assert any("garbage.wav" in line and "not a readable audio file" in line for line in err)
    assert any("nan.wav" in line and "NaN/inf samples" in line for line in err)
    assert any("short.wav" in line and "too short" in line for line in err)


def test_train_tool_no_usable_clips(tmp_path, capsys):
    make_dataset(tmp_path / "data", val=0)
    (tmp_path / "data" / "eigen_dev" / "val").mkdir(parents=True, exist_ok=True)
    assert train_uplam.main(tool_args(tmp_path / "data", tmp_path / "run")) == 1
    # (tqdm's transient progress bars share stderr; the tool's own lines carry its name)
    err = [line for line in capsys.readouterr().err.splitlines() if "train_uplam:" in line]
    assert len(err) == 1 and "no usable clips" in err[0]


def test_train_tool_help(capsys):
    with pytest.raises(SystemExit) as e:
        train_uplam.main(["--help"])
    assert e.value.code == 0
    assert "10 log10(1 / MSE)" in capsys.readouterr().out
    code = (
        "import runpy, sys\nsys.argv = ['train_uplam', '--help']\ntry:\n"
        "    runpy.run_path('tools/train_uplam.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "False"  # --help answers before the slow imports


def test_train_tool_config_file_and_opts(tmp_path, capsys):
    make_dataset(tmp_path / "data", train=1)
    cfg = tmp_path / "uplam.yaml"
    cfg.write_text("SELD:\n  UPLAM:\n    EPOCHS: 1\n    STEERING: fixed\n    PRIOR: none\n")
    out = tmp_path / "run"
    args = tool_args(
        tmp_path / "data", out, "--config-file", str(cfg), "SELD.UPLAM.UPSAMPLE_LOSS_WEIGHT", "0.5"
    )
    assert train_uplam.main(args) == 0
    ckpt = load_checkpoint(out / "last.pth")
    assert ckpt["config"]["steering"] == "fixed" and ckpt["config"]["prior"] == "none" and ckpt["epoch"] == 1
    assert "loss_upsample" in (out / "metrics.json").read_text()
    assert "UPSAMPLE_LOSS_WEIGHT: 0.5" in (out / "config.yaml").read_text()
    capsys.readouterr()
    assert train_uplam.main(tool_args(tmp_path / "data", out, "SELD.UPLAM.NO_SUCH_KEY", "1")) == 1
    assert train_uplam.main(tool_args(tmp_path / "data", out, "SELD.UPLAM.PRIOR", "nearest")) == 1
    (tmp_path / "file").write_text("")
    assert train_uplam.main(tool_args(tmp_path / "data", tmp_path / "file")) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "train_uplam:" in line]
    assert len(err) == 3, err
    assert "NO_SUCH_KEY" in err[0] and "PRIOR" in err[1] and "not a folder" in err[2]


def test_float32_model_matches_float64_copy():
    torch.manual_seed(0)
    model = UpLAM(bands="linear9", dtype=torch.float64)
    S4, _ = frame_pairs(render_clip(np.random.default_rng(2), 0.5), "linear9")
    narrow = copy.deepcopy(model).float()
    with torch.no_grad():
        x64 = model.latent(S4)
        x32 = narrow.latent(S4)
    assert x32.dtype == torch.float32
    assert torch.max(torch.abs(x32.double() - x64)) < 1e-3 * torch.max(torch.abs(x64))


def test_psd_part_gradient_is_the_spectral_derivative_and_finite_when_eigenvalues_coincide():
    from seld_d2.acoustics.uplam import psd_part

    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 5, 5, dtype=torch.complex128, generator=g)
    S = (0.5 * (X + X.mH)).requires_grad_()
    assert torch.autograd.gradcheck(lambda A: psd_part(0.5 * (A + A.mH)), (S,))
    for M in (torch.zeros(2, 4, 4, dtype=torch.complex64), torch.ones(6, 1) @ torch.ones(1, 6) + 0j):
        M.requires_grad_()
        (psd_part(M) @ torch.randn(M.shape[-1], 3, generator=g).to(M.dtype)).abs().sum().backward()
        assert torch.isfinite(M.grad).all()


def test_training_step_with_the_prior_over_a_silent_frame():
    """The interpolation prior upsamples a silent frame to an all-zero 32x32 matrix (32 equal
    eigenvalues) and any frame to rank 4; eigh's own backward gave 'ill-defined' errors there."""
    torch.manual_seed(0)
    model = UpLAM([1000.0, 2000.0], steering="per_band", prior="interpolation", calibrate=True)
    S4, S32 = frame_pairs(plane_wave_em32(30, 0, seconds=0.2), [1000.0, 2000.0])
    S4, S32 = torch.cat([S4, torch.zeros_like(S4[:1])]), torch.cat([S32, torch.zeros_like(S32[:1])])
    S_hat, latent = model(S4)
    mse_tv_loss(S_hat, S32, latent, model.neighbours).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
