"""The official baseline's UpLAM checkpoint format (seld_d2.acoustics.uplam) and
tools/convert_uplam.py.

The checkpoint is built from the key list of the released ``UpLAM.pth`` (tests/data, 80 tensors),
with seeded random values. The baseline's forward is re-implemented here from its published
facts as a plain per-band loop (its own code is not used): the 4-ch visibilities, then per path
``feat1(feat0(x))``, ``h1 = up1(.)``, ``h2 = up2(down1(h1))``, ``output_conv(cat(h2, h1))`` with
no symmetrisation, then per band ``eigh`` of that (non-Hermitian) matrix,
``||D_b^H V sqrt(max(w, 0))||^2 - tau_b`` and four ``ReLU(conv_k(x) + skip)`` denoisers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FS, write_wav
from scipy.signal.windows import tukey

from seld_d2.acoustics.audio import check_wav
from seld_d2.acoustics.features import FeatureExtractor, build_feature_extractor
from seld_d2.acoustics.geometry import TETRA_CHANNELS, azel_to_unit, em32_positions
from seld_d2.acoustics.render import render_point_source
from seld_d2.acoustics.uplam import (
    UpLAM,
    checkpoint_hash,
    convert_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from seld_d2.acoustics.visibility import visibilities

REPO = Path(__file__).resolve().parents[1]
KEY_LIST = REPO / "tests" / "data" / "baseline-uplam-state-dict.txt"


def baseline_keys() -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in KEY_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, dtype = line.split()
            rows.append((key, tuple(int(n) for n in shape.split("x")), dtype))
    return rows


def make_baseline_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float64 (complex128 ``lam.D``) tensors with the released file's keys and shapes,
    scaled so that activations stay O(1) and the latent is mostly positive."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, dtype in baseline_keys():
        if key == "lam.D":
            z = torch.randn(*shape, dtype=torch.complex128, generator=g)
            value = 0.05 * z
        elif key.endswith("act.weight"):
            value = 0.25 + 0.1 * torch.randn(*shape, dtype=torch.float64, generator=g)
        elif key == "lam.tau":
            value = 1e-3 * torch.randn(*shape, dtype=torch.float64, generator=g)
        elif key.endswith("bias"):
            value = 0.02 * torch.randn(*shape, dtype=torch.float64, generator=g)
        else:  # conv / deconv / Conv1d weights: ~1/sqrt(fan) so the maps neither vanish nor blow up
            fan = int(np.prod(shape[1:]))
            value = torch.randn(*shape, dtype=torch.float64, generator=g) / np.sqrt(fan)
        assert str(value.dtype).removeprefix("torch.") == dtype
        sd[key] = value
    return sd


# ---- the baseline, from its facts ---------------------------------------------------------


def reference_visibilities(audio: np.ndarray, fs: int, centres) -> np.ndarray:
    """Per band, per 100 ms frame: 10 Hann (Tukey 1, symmetric) blocks of 10 ms, full FFT, sum
    of bins int((fc - 25) N / fs) .. int((fc + 25) N / fs), sum of conj(x) x^T, eigenvalues
    divided by the largest and clipped at 0. -> complex128 (T, B, M, M)."""
    n = fs // 100
    T, M = audio.shape[0] // (10 * n), audio.shape[1]
    out = np.zeros((T, len(centres), M, M), dtype=np.complex128)
    window = tukey(n, alpha=1.0, sym=True)[:, None]
    for b, fc in enumerate(centres):
        lo, hi = int((fc - 25) * n / fs), int((fc + 25) * n / fs)
        for t in range(T):
            for k in range(10):
                start = (10 * t + k) * n
                spec = np.fft.fft(audio[start : start + n] * window, axis=0)[lo : hi + 1].sum(axis=0)
                out[t, b] += np.outer(spec.conj(), spec)
            w, V = np.linalg.eigh(out[t, b])
            w = np.clip(w / w.max(), 0, None)
            out[t, b] = (V * w) @ V.conj().T
    return out


def reference_latent(sd: dict[str, torch.Tensor], S4: torch.Tensor) -> torch.Tensor:
    """The baseline UpLAM's latent, float64: complex (T, B, 4, 4) -> (T, B, 484)."""

    def block(x, name, kind, stride=1, padding=0, act=True):
        if kind == "conv":
            y = F.conv2d(x, sd[f"{name}.conv.weight"], sd[f"{name}.conv.bias"], stride, padding)
        else:
            w, b = sd[f"{name}.deconv.weight"], sd[f"{name}.deconv.bias"]
            y = F.conv_transpose2d(x, w, b, stride, padding)
        return F.prelu(y, sd[f"{name}.act.weight"]) if act else y

    def up(x, name):
        h0 = block(x, f"{name}.up_conv1", "deconv", 8, 2)
        l0 = block(h0, f"{name}.up_conv2", "conv", 8, 2)
        return block(l0 - x, f"{name}.up_conv3", "deconv", 8, 2) + h0

    def down(x, name):
        l0 = block(x, f"{name}.down_conv1", "conv", 8, 2)
        h0 = block(l0, f"{name}.down_conv2", "deconv", 8, 2)
        return block(h0 - x, f"{name}.down_conv3", "conv", 8, 2) + l0

    def path(x, side):
        x = block(block(x, f"cdbpn.feat0_{side}", "conv", 1, 1), f"cdbpn.feat1_{side}", "conv")
        h1 = up(x, f"cdbpn.up1_{side}")
        h2 = up(down(h1, f"cdbpn.down1_{side}"), f"cdbpn.up2_{side}")
        return block(torch.cat([h2, h1], dim=1), f"cdbpn.output_conv_{side}", "conv", 1, 1, act=False)

    S = torch.complex(path(S4.real, "rel"), path(S4.imag, "imag"))  # not Hermitian
    maps = []
    for b in range(S.shape[1]):
        w, V = torch.linalg.eigh(S[:, b])  # reads the lower triangle
        V = V * torch.sqrt(torch.clamp(w, min=0))[:, None, :]
        proj = sd["lam.D"][b].conj().T @ V  # (T, 484, 32)
        maps.append(torch.linalg.norm(proj, dim=2) ** 2 - sd["lam.tau"][b])
    x = skip = torch.stack(maps, dim=1)
    for k in range(1, 5):
        w = sd[f"lam.denoise{k}.weight"]
        x = torch.relu(F.conv1d(x, w, sd[f"lam.denoise{k}.bias"], padding=w.shape[-1] // 2) + skip)
    return x


def render_tetra(seconds: float = 0.5, seed: int = 3) -> np.ndarray:
    """Two white-noise point sources at the em32, its tetrahedral channels (num_samples, 4)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((int(FS * seconds), 32))
    for az, el in ((40, 10), (-120, -30)):
        pos = azel_to_unit(az, el) * 2.0
        out += render_point_source(rng.standard_normal(out.shape[0]), pos, em32_positions(), FS)
    return (0.1 * out / np.abs(out).max())[:, list(TETRA_CHANNELS)]


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baseline") / "UpLAM.pth"
    torch.save(make_baseline_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return render_tetra()


# ---- tests ----------------------------------------------------------------------------------


def test_key_list_is_the_released_layout():
    rows = baseline_keys()
    assert len(rows) == 80 and sum(int(np.prod(s)) for _, s, _ in rows) == 2840168


def test_latent_equals_the_baseline_forward(baseline_file, audio):
    sd = torch.load(baseline_file, weights_only=True)
    model = UpLAM.from_checkpoint(baseline_file, dtype=torch.float64)
    assert (model.band_name, model.steering, model.cdbpn.hermitian) == ("linear9", "fixed", "lower")
    edges = np.linspace(1500, 4500, 10)
    np.testing.assert_allclose(model.band_centres, (edges[1:] + edges[:-1]) / 2)

    S_ref = reference_visibilities(audio, FS, model.band_centres)
    S = visibilities(audio, FS, "linear9")
    assert np.max(np.abs(S - S_ref)) < 1e-9
    expected = reference_latent(sd, torch.from_numpy(S_ref))
    assert (expected > 0).float().mean() > 0.5  # a latent worth comparing, not all ReLU zeros
    with torch.no_grad():
        x = model.latent(torch.from_numpy(S))
    rel = (torch.max(torch.abs(x - expected)) / torch.max(torch.abs(expected))).item()
    assert rel < 1e-6, rel
    # The training path (gradients on: D^H V rather than the quadratic form) agrees as well.
    x_grad = model.latent(torch.from_numpy(S)).detach()
    assert (torch.max(torch.abs(x_grad - expected)) / torch.max(torch.abs(expected))).item() < 1e-6

    # Without the lower-triangle rule (this project's mean symmetrisation) it would not match.
    mean = UpLAM(bands="linear9", dtype=torch.float64)
    mean.load_state_dict(model.state_dict())
    with torch.no_grad():
        off = mean.latent(torch.from_numpy(S))
    assert (torch.max(torch.abs(off - expected)) / torch.max(torch.abs(expected))).item() > 1e-3


def test_feature_extractor_and_config_accept_the_baseline_file(baseline_file, audio, tmp_path):
    from detectron2.config import get_cfg

    from seld_d2.config import add_seld_config

    sd = torch.load(baseline_file, weights_only=True)
    expected = reference_latent(sd, torch.from_numpy(reference_visibilities(audio, FS, _linear9())))
    fe = FeatureExtractor(checkpoint=baseline_file)  # float32, the fast path
    x = torch.from_numpy(fe.latent_from_audio(audio)).double()
    assert (torch.max(torch.abs(x - expected)) / torch.max(torch.abs(expected))).item() < 1e-3

    wav = tmp_path / "clip.wav"
    write_wav(wav, audio.astype(np.float32))
    fe.cached(wav, tmp_path / "clip.npz")
    meta = fe.cache_metadata(check_wav(wav, channels=4))
    assert meta["bands"] == "linear9" and meta["steering"] == "fixed"
    assert meta["checkpoint"] == checkpoint_hash(baseline_file)

    cfg = add_seld_config(get_cfg())
    cfg.SELD.AUDIO.UPLAM_CHECKPOINT = str(baseline_file)
    cfg.MODEL.DEVICE = "cpu"
    from_cfg = build_feature_extractor(cfg)
    assert from_cfg.model.band_name == "linear9" and from_cfg.checkpoint_id == fe.checkpoint_id

    with pytest.raises(ValueError, match="UpLAM.pth: has 9 bands, but 16 band centres"):
        FeatureExtractor(checkpoint=baseline_file, bands="mel16")


def _linear9():
    edges = np.linspace(1500, 4500, 10)
    return (edges[1:] + edges[:-1]) / 2


def test_round_trip_between_the_formats(baseline_file, tmp_path):
    ours, back = tmp_path / "ours.pth", tmp_path / "back.pth"
    assert convert_checkpoint(baseline_file, ours) == "project"
    ckpt = load_checkpoint(ours)
    assert ckpt["config"]["hermitian"] == "lower" and ckpt["config"]["band_name"] == "linear9"
    assert ckpt["source_format"] == "baseline" and ckpt["source_hash"] == checkpoint_hash(baseline_file)
    assert len(ckpt["model"]) == 81 and all(v.dtype == torch.float64 for v in ckpt["model"].values())
    assert convert_checkpoint(ours, back) == "baseline"
    original, again = torch.load(baseline_file, weights_only=True), torch.load(back, weights_only=True)
    assert list(again) == list(original)  # the baseline's key order
    for key, value in original.items():
        assert again[key].dtype == value.dtype and torch.equal(again[key], value), key

    S4 = torch.from_numpy(visibilities(render_tetra(0.2, seed=5), FS, "linear9"))
    with torch.no_grad():
        a = UpLAM.from_checkpoint(baseline_file, dtype=torch.float64).latent(S4)
        b = UpLAM.from_checkpoint(ours, dtype=torch.float64).latent(S4)
    assert torch.equal(a, b)


def test_project_models_the_baseline_would_not_reproduce_are_refused(tmp_path):
    torch.manual_seed(0)
    path, out = tmp_path / "mel16.pth", tmp_path / "out.pth"
    save_checkpoint(path, UpLAM(bands="mel16", steering="per_band"))
    with pytest.raises(ValueError) as err:
        convert_checkpoint(path, out)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "hermitian='mean'" in msg and "steering='per_band'" in msg and "bands mel16" in msg
    assert not out.exists()
    assert convert_checkpoint(path, out, inexact=True) == "baseline"
    sd = torch.load(out, weights_only=True)
    assert sd["lam.D"].shape == (16, 32, 484) and sd["lam.D"].dtype == torch.complex128


def test_baseline_checkpoint_variants_and_errors(tmp_path):
    sd = make_baseline_state_dict(seed=1)
    # The baseline's training checkpoints (.tar: {"model": state dict, "epoch"}) and DataParallel
    # prefixes load too.
    tar = tmp_path / "UpLAM.tar"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 7}, tar)
    assert UpLAM.from_checkpoint(tar).band_name == "linear9"

    # A baseline-format file records no bands: a different layout can be named.
    model = UpLAM.from_checkpoint(tar, bands=[1000.0 + 300 * k for k in range(9)])
    assert model.band_name.startswith("hz:1000.0,1300.0")
    with pytest.raises(ValueError, match="has 9 bands, but 16 band centres"):
        UpLAM.from_checkpoint(tar, bands="mel16")

    cases = {
        "missing.pth": ({k: v for k, v in sd.items() if k != "lam.denoise4.bias"}, "missing tensors"),
        "shape.pth": ({**sd, "cdbpn.feat1_rel.conv.weight": torch.zeros(16, 128, 1, 1)}, "shape (16, 128"),
        "other.pth": ({"weight": torch.zeros(3)}, "not an UpLAM checkpoint"),
    }
    for name, (content, problem) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(ValueError) as err:
            UpLAM.from_checkpoint(tmp_path / name)
        assert problem in str(err.value) and name in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pth: not a readable torch checkpoint"):
        UpLAM.from_checkpoint(tmp_path / "text.pth")


# ---- tools/convert_uplam.py ---------------------------------------------------------------


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_uplam", REPO / "tools" / "convert_uplam.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["convert_uplam"] = module
    spec.loader.exec_module(module)
    return module


def test_convert_tool(baseline_file, tmp_path, capsys):
    tool = _load_tool()
    ours, back = tmp_path / "ours.pth", tmp_path / "back.pth"
    assert tool.main([str(baseline_file), str(ours)]) == 0
    assert "baseline -> seld_d2" in capsys.readouterr().out
    assert tool.main([str(ours), str(back)]) == 0
    assert "seld_d2 -> baseline" in capsys.readouterr().out
    assert torch.equal(torch.load(back, weights_only=True)["lam.D"], torch.load(baseline_file)["lam.D"])

    (tmp_path / "bad.pth").write_text("nope")
    assert tool.main([str(tmp_path / "bad.pth"), str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.pth" in err[0]
    assert tool.main([str(tmp_path / "absent.pth"), str(tmp_path / "x.pth")]) == 2
    assert "absent.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--help"])
    assert exit_.value.code == 0


def test_extract_features_tool_takes_the_baseline_file(baseline_file, audio, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("extract_features", REPO / "tools" / "extract_features.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root, split = tmp_path / "data", "dev-test-sony"
    write_wav(root / "mic_dev" / split / "clip.wav", audio[: FS // 5].astype(np.float32))
    assert tool.main(["--root", str(root), "--split", split, "--checkpoint", str(baseline_file)]) == 0
    assert "1 computed" in capsys.readouterr().out
    with np.load(root / "features_dev" / split / "clip.npz") as z:
        meta = json.loads(str(z["meta"]))
        assert z["latent"].shape == (2, 9, 484)
    assert (meta["bands"], meta["steering"]) == ("linear9", "fixed")
    assert meta["checkpoint"] == checkpoint_hash(baseline_file)
