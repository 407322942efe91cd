import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FS, plane_wave_em32, write_wav

from seld_d2.acoustics import features as F
from seld_d2.acoustics.geometry import TETRA_CHANNELS, canvas_nearest_index, fibonacci_grid
from seld_d2.acoustics.uplam import UpLAM, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))


@pytest.fixture(scope="module")
def extractor():
    return F.FeatureExtractor(batch_size=3)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "mic_dev" / "split" / "clip1.wav"
    write_wav(path, plane_wave_em32(60, 10, seconds=0.75)[:, list(TETRA_CHANNELS)].astype(np.float32))
    return path


def test_latent_shape_and_batching(extractor):
    audio = plane_wave_em32(-30, 0, seconds=0.5)[:, list(TETRA_CHANNELS)]
    latent = extractor.latent_from_audio(audio, FS)
    assert latent.shape == (5, 16, 484) and latent.dtype == np.float32
    one_batch = F.FeatureExtractor(batch_size=64).latent_from_audio(audio, FS)
    np.testing.assert_allclose(latent, one_batch, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="4-channel"):
        extractor.latent_from_audio(np.zeros((2400, 32)), FS)


def test_cache_round_trip_within_float16(extractor, clip, tmp_path):
    cache = tmp_path / "cache" / "clip1.npz"
    fresh = extractor.extract_file(clip)
    first = extractor.cached(clip, cache)
    assert cache.is_file() and extractor.is_cached(clip, cache)
    np.testing.assert_array_equal(first, fresh.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(first, fresh, rtol=2**-10, atol=1e-6)  # float16 rounding
    # The second call reads the cache (identical numbers, no recomputation).
    mtime = cache.stat().st_mtime_ns
    np.testing.assert_array_equal(extractor.cached(clip, cache), first)
    assert cache.stat().st_mtime_ns == mtime
    meta = F.read_cache_metadata(cache)
    assert meta["bands"] == "mel16" and meta["num_frames"] == 7 and meta["sample_rate"] == FS
    assert meta["checkpoint"] == "random-init-seed0" and meta["steering"] == "fixed"


def test_changed_layout_or_checkpoint_invalidates_cache(extractor, clip, tmp_path):
    cache = tmp_path / "clip1.npz"
    extractor.cached(clip, cache)
    linear = F.FeatureExtractor(bands="linear9")
    assert not linear.is_cached(clip, cache)
    assert linear.cached(clip, cache).shape == (7, 9, 484)
    assert F.read_cache_metadata(cache)["bands"] == "linear9"
    assert not extractor.is_cached(clip, cache)

    torch.manual_seed(1)
    ckpt = tmp_path / "uplam.pth"
    save_checkpoint(ckpt, UpLAM("mel16"))
    trained = F.FeatureExtractor(checkpoint=ckpt)
    assert not trained.is_cached(clip, cache)
    trained.cached(clip, cache)
    assert trained.is_cached(clip, cache)
    torch.manual_seed(2)
    save_checkpoint(ckpt, UpLAM("mel16"))  # same path, other weights -> other hash
    assert not F.FeatureExtractor(checkpoint=ckpt).is_cached(clip, cache)
    with pytest.raises(ValueError, match="trained for bands mel16"):
        F.FeatureExtractor(checkpoint=ckpt, bands="linear9")


def test_damaged_cache_is_recomputed(extractor, clip, tmp_path):
    cache = tmp_path / "clip1.npz"
    cache.write_bytes(b"garbage")
    assert not extractor.is_cached(clip, cache)
    assert extractor.cached(clip, cache).shape == (7, 16, 484)


def test_canvas_gather_numpy_and_torch(extractor):
    latent = np.random.default_rng(0).random((2, 16, 484)).astype(np.float32)
    planes = extractor.to_canvas(latent)
    assert planes.shape == (2, 16, 180, 360)
    idx = canvas_nearest_index(fibonacci_grid())
    assert planes[1, 3, 17, 200] == latent[1, 3, idx[17, 200]]
    np.testing.assert_array_equal(extractor.to_canvas(torch.from_numpy(latent)).numpy(), planes)


def test_srp_kind_is_cached_under_its_own_key(extractor, clip, tmp_path):
    cache = tmp_path / "clip1.npz"
    srp = F.FeatureExtractor(kind="srp")  # Bartlett, mel16, per-band steering
    fresh = srp.extract_file(clip)
    assert fresh.shape == (7, 16, 484) and fresh.dtype == np.float32
    assert np.allclose(fresh[:, 1:].max(axis=-1), 1.0)
    np.testing.assert_array_equal(srp.cached(clip, cache), fresh.astype(np.float16).astype(np.float32))
    meta = F.read_cache_metadata(cache)
    assert meta["kind"] == "srp" and meta["method"] == "bartlett" and meta["checkpoint"] is None
    assert meta["steering"] == "per_band" and F.cache_kind(meta) == "srp"
    # Neither a UpLAM extractor nor another SRP method takes this cache for its own, and back.
    assert not extractor.is_cached(clip, cache)
    assert not F.FeatureExtractor(kind="srp", method="mvdr").is_cached(clip, cache)
    extractor.cached(clip, cache)
    assert F.cache_kind(F.read_cache_metadata(cache)) == "uplam" and not srp.is_cached(clip, cache)
    assert F.cache_kind({"num_frames": 3}) == "uplam"  # version-1 files hold UpLAM latents
    with pytest.raises(ValueError, match="checkpoint was given for srp"):
        F.FeatureExtractor(kind="srp", checkpoint="uplam.pth")
    with pytest.raises(ValueError, match="steered per band"):
        F.FeatureExtractor(kind="srp", steering="fixed")
    with pytest.raises(ValueError, match="unknown feature kind"):
        F.FeatureExtractor(kind="apgd")


def test_feature_kind_from_config():
    from detectron2.config import get_cfg

    from seld_d2.config import add_seld_config

    cfg = add_seld_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    assert F.build_feature_extractor(cfg).kind == "uplam"
    cfg.SELD.AUDIO.FEATURE_KIND, cfg.SELD.AUDIO.SRP_METHOD = "srp", "music"
    cfg.SELD.AUDIO.UPLAM_CHECKPOINT = "ignored.pth"  # does not apply to srp
    fe = F.build_feature_extractor(cfg)
    assert (fe.kind, fe.method, fe.band_name, fe.model) == ("srp", "music", "mel16", None)


def test_extract_features_kind_srp_round_trip(clip, capsys):
    import extract_features

    root = clip.parents[2]
    assert extract_features.main(["--root", str(root), "--split", "split", "--kind", "srp"]) == 0
    cache = root / "features_dev" / "split" / "clip1.npz"
    assert F.read_cache_metadata(cache)["kind"] == "srp"
    srp = F.FeatureExtractor(kind="srp")
    np.testing.assert_allclose(F.load_cached_latent(cache), srp.extract_file(clip), atol=2**-11)
    assert extract_features.main(["--root", str(root), "--split", "split", "--kind", "srp"]) == 0
    assert "0 computed, 1 up to date" in capsys.readouterr().out
    # Another method, then the UpLAM kind, each recompute it.
    assert (
        extract_features.main(["--root", str(root), "--split", "split", "--kind", "srp", "--method", "mvdr"])
        == 0
    )
    assert F.read_cache_metadata(cache)["method"] == "mvdr"
    assert extract_features.main(["--root", str(root), "--split", "split"]) == 0
    assert "1 computed" in capsys.readouterr().out and F.read_cache_metadata(cache)["kind"] == "uplam"
    args = ["--root", str(root), "--split", "split", "--kind", "srp", "--steering", "fixed"]
    assert extract_features.main(args) == 2
    assert "steered per band" in capsys.readouterr().err


def run_tool(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "extract_features.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_extract_features_tool_reports_bad_clips_and_finishes_the_rest(tmp_path):
    root, split = tmp_path / "data", "dev-test-sony"
    wavs = root / "mic_dev" / split
    good = plane_wave_em32(10, 0, seconds=0.3)[:, list(TETRA_CHANNELS)].astype(np.float32)
    write_wav(wavs / "good_a.wav", good)
    write_wav(wavs / "good_b.wav", good[::-1].copy())
    write_wav(wavs / "rate.wav", good, fs=16000)
    write_wav(wavs / "chans.wav", np.zeros((7200, 3), np.float32))
    write_wav(wavs / "short.wav", good[:1000])
    nan = good.copy()
    nan[5, 1] = np.nan
    write_wav(wavs / "nan.wav", nan)
    labels = root / "labels_dev" / split
    labels.mkdir(parents=True)
    (labels / "missing_std.json").write_text(json.dumps({"annotations": []}))

    res = run_tool("--root", str(root), "--split", split)
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    expected = {
        "rate.wav": "sample rate is 16000 Hz",
        "chans.wav": "has 3 channels",
        "short.wav": "too short",
        "nan.wav": "NaN/inf samples",
        "missing.wav": "file not found",
    }
    assert len(errors) == len(expected)
    for name, problem in expected.items():
        assert any(name in e and problem in e for e in errors), (name, errors)
    cache = root / "features_dev" / split
    assert sorted(p.name for p in cache.glob("*.npz")) == ["good_a.npz", "good_b.npz"]
    assert "2 computed, 0 up to date, 5 failed" in res.stdout

    # Second run: the good clips are current and skipped.
    for bad in ("rate", "chans", "short", "nan"):
        (wavs / f"{bad}.wav").unlink()
    (labels / "missing_std.json").unlink()
    res = run_tool("--root", str(root), "--split", split)
    assert res.returncode == 0, res.stderr
    assert "0 computed, 2 up to date, 0 failed" in res.stdout


def test_extract_features_tool_usage_errors(tmp_path):
    assert run_tool("--help").returncode == 0
    res = run_tool("--root", str(tmp_path), "--split", "nope")
    assert res.returncode == 2 and "split folder not found" in res.stderr


def test_extract_features_tool_refuses_a_truncated_wav(tmp_path):
    # libsndfile reads a wav cut short as the shorter clip; it used to give a 25-frame cache for
    # a 50-frame clip and exit 0.
    root, split = tmp_path / "data", "dev-test-sony"
    wavs = root / "mic_dev" / split
    good = plane_wave_em32(10, 0, seconds=0.5)[:, list(TETRA_CHANNELS)].astype(np.float32)
    write_wav(wavs / "good.wav", good)
    write_wav(wavs / "cut.wav", good)
    data = (wavs / "cut.wav").read_bytes()
    (wavs / "cut.wav").write_bytes(data[: len(data) // 2])
    (wavs / "empty.wav").write_bytes(b"")
    res = run_tool("--root", str(root), "--split", split)
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any(f"{wavs / 'cut.wav'}: truncated: its data chunk holds" in e for e in errors), errors
    assert any(f"{wavs / 'empty.wav'}: empty file (0 bytes)" in e for e in errors), errors
    assert sorted(p.name for p in (root / "features_dev" / split).glob("*.npz")) == ["good.npz"]


def test_from_config_returns_the_keyword_arguments():
    from detectron2.config import get_cfg

    from seld_d2.config import add_seld_config

    cfg = add_seld_config(get_cfg())
    kwargs = F.FeatureExtractor.from_config(cfg, device="cpu")
    assert (
        kwargs["kind"] == "uplam"
        and kwargs["device"] == "cpu"
        and kwargs["seed"] == cfg.SELD.AUDIO.RANDOM_INIT_SEED
    )
