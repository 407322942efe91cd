import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FS, write_wav

from seld_d2.acoustics import geometry as g
from seld_d2.acoustics import quality as Q
from seld_d2.acoustics.features import FeatureExtractor
from seld_d2.acoustics.render import render_plane_wave
from seld_d2.data.synth.generate import event_table
from seld_d2.data.synth.scene import Event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import extract_features  # noqa: E402
import feature_quality  # noqa: E402

GRID = g.fibonacci_grid()
# Frames 0-4: event 0 alone; 5-9: both; 10-14: event 1 alone.
EVENTS = [
    Event(0, 2, 0.0, 1.0, 60.0, 10.0, 1.0, 20.0, -20.0),
    Event(1, 8, 0.5, 1.5, -100.0, -20.0, 2.0, 20.0, -20.0),
]


def scene_em32(seed: int = 0) -> np.ndarray:
    """The two events as gated white-noise plane waves at the em32, 1.5 s, (36000, 32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.5 * FS)) / FS
    out = np.zeros((len(t), 32))
    for e in EVENTS:
        gate = (t >= e.onset) & (t < e.offset)
        out += render_plane_wave(
            rng.standard_normal(len(t)) * gate, e.azimuth, e.elevation, g.em32_positions(), FS
        )
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    em32 = scene_em32()
    write_wav(root / "eigen_dev" / "s" / "clip.wav", em32.astype(np.float32))
    write_wav(root / "mic_dev" / "s" / "clip.wav", em32[:, list(g.TETRA_CHANNELS)].astype(np.float32))
    (root / "events_dev" / "s").mkdir(parents=True)
    (root / "events_dev" / "s" / "clip.csv").write_text(event_table(EVENTS))
    return root


@pytest.fixture(scope="module")
def srp_maps(split):
    return FeatureExtractor(kind="srp", method="mvdr").extract_file(split / "mic_dev" / "s" / "clip.wav")


def rotate_azimuth(maps: np.ndarray, degrees: float) -> np.ndarray:
    """Maps (..., N) turned by ``degrees`` of azimuth (nearest grid direction)."""
    c, s = np.cos(np.deg2rad(-degrees)), np.sin(np.deg2rad(-degrees))
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return maps[..., np.argmax((GRID @ R.T) @ GRID.T, axis=1)]


def test_activity_and_which_frames_are_scored():
    active = Q.event_activity(EVENTS, 16)
    assert active.shape == (16, 2)
    assert active[:, 0].tolist() == [True] * 10 + [False] * 6
    assert active[:, 1].tolist() == [False] * 5 + [True] * 10 + [False]
    maps = np.random.default_rng(0).random((16, 3, 484))
    err, rec = Q.peak_errors(maps, EVENTS), Q.topk_recall(maps, EVENTS)
    assert err.shape == rec.shape == (16, 3)
    single = [*range(5), *range(10, 15)]
    assert np.flatnonzero(np.isfinite(err[:, 0])).tolist() == single
    assert np.flatnonzero(np.isfinite(rec[:, 0])).tolist() == list(range(5, 10))


def test_classical_map_scores_the_grid_resolution_and_a_rotated_map_does_not(srp_maps):
    centres = FeatureExtractor(kind="srp").bands
    names = Q.column_names(centres)
    good = Q.summarise(Q.frame_scores(srp_maps, EVENTS, centres), names)
    assert good["single_frames"] == 10 and good["multi_frames"] == 5
    med = good["columns"][Q.MEDIAN_NAME]
    # The nearest grid directions of the two sources are 2.4 and 2.6 degrees away.
    assert med["median_deg"] <= 4.5 and med["within_10"] == 1.0 and med["recall"] == 1.0
    assert all(good["columns"][f"{f:.0f} Hz"]["within_10"] == 1.0 for f in centres if 200 < f < 3000)
    bad = Q.summarise(Q.frame_scores(rotate_azimuth(srp_maps, 90.0), EVENTS, centres), names)
    assert bad["columns"][Q.MEDIAN_NAME]["median_deg"] > 60.0
    assert (
        bad["columns"][Q.MEDIAN_NAME]["within_20"] == 0.0 and bad["columns"][Q.MEDIAN_NAME]["recall"] == 0.0
    )


def test_topk_recall_counts_one_to_one_matches():
    dirs = Q.event_directions(EVENTS)
    both = np.exp(8.0 * (GRID @ dirs.T)).sum(axis=1)  # two bumps at the sources
    one = np.exp(8.0 * (GRID @ dirs[0]))  # a single bump: its second local maximum is elsewhere
    maps = np.stack([both, one])[None].repeat(15, axis=0)  # (T, 2, N)
    rec = Q.topk_recall(maps, EVENTS)
    assert np.all(rec[5:10, 0] == 1.0) and np.all(rec[5:10, 1] == 0.5)
    flat = Q.topk_recall(np.zeros((15, 484)), EVENTS)  # every direction a local maximum, ranked arbitrarily
    assert np.all(np.isfinite(flat[5:10]))


def test_agreement_uses_the_uplam_validation_measures(srp_maps):
    centres = FeatureExtractor(kind="srp").bands
    same = Q.summarise(Q.frame_scores(srp_maps, EVENTS, centres, reference=srp_maps), Q.column_names(centres))
    assert same["columns"]["1014 Hz"]["psnr_db"] == 120.0 and same["columns"]["1014 Hz"]["mad"] == 0.0
    with pytest.raises(ValueError, match="do not match"):
        Q.frame_scores(srp_maps, EVENTS, centres, reference=srp_maps[:3])


def test_tool_scores_computed_and_cached_features(split, tmp_path, capsys):
    out = tmp_path / "q"
    args = ["--root", str(split), "--split", "s", "--kind", "srp", "--method", "mvdr", "--out", str(out)]
    assert feature_quality.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    med = summary["columns"][Q.MEDIAN_NAME]
    assert med["median_deg"] <= 4.5 and med["recall"] == 1.0 and med["psnr_db"] is not None
    assert summary["reference"].startswith("APGD em32 per_band") and (out / "planes.png").stat().st_size > 0
    assert json.loads((out / "quality.json").read_text()) == summary

    # The same features from an extract_features cache (any kind; bands from its metadata).
    assert (
        extract_features.main(["--root", str(split), "--split", "s", "--kind", "srp", "--method", "mvdr"])
        == 0
    )
    capsys.readouterr()
    cached = ["--root", str(split), "--split", "s", "--features-dir", str(split / "features_dev" / "s")]
    assert feature_quality.main([*cached, "--out", str(tmp_path / "c"), "--no-reference"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["columns"][Q.MEDIAN_NAME]["median_deg"] == med["median_deg"] and again["reference"] is None


def test_tool_bad_input_is_one_line(split, tmp_path, capsys):
    assert feature_quality.main(["--root", str(tmp_path), "--split", "s"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "mic_dev" / "s").mkdir(parents=True)
    assert feature_quality.main(["--root", str(tmp_path), "--split", "s"]) == 2
    assert "no true event tables" in capsys.readouterr().err
    args = [
        "--root",
        str(split),
        "--split",
        "s",
        "--kind",
        "srp",
        "--checkpoint",
        "x.pth",
        "--out",
        str(tmp_path),
    ]
    assert feature_quality.main(args) == 2
    assert "srp features" in capsys.readouterr().err
