"""tools/demo.py: its arguments (the whole run is `make demo`, minutes long, not a unit test)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import demo  # noqa: E402


def test_classes_by_id_name_or_all():
    assert demo.parse_classes("2,6,8,11") == (2, 6, 8, 11)
    assert demo.parse_classes("bell, 2 ,Walk/footsteps,2") == (2, 6, 11)
    assert demo.parse_classes("all") == tuple(range(13))
    with pytest.raises(ValueError):
        demo.parse_classes(" , ")
    assert demo.scene_config(20.0, (3, 4)).scene.classes == (3, 4)


def test_unknown_class_is_one_error_line(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "demo"), "--classes", "2,kazoo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kazoo" in err[0]
    assert not (tmp_path / "demo").exists()


def test_help_describes_the_steps(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0
    assert "--classes" in capsys.readouterr().out


def test_pictures_show_frames_with_ground_truth(tmp_path):
    import numpy as np

    from seld_d2.data.labels import Annotation, write_labels

    pts = np.array([[10, 10, 1.0], [11, 10, 0.5], [10, 11, 0.5]], np.float32)
    write_labels(tmp_path / "a.json", [Annotation(k, 0, 2, 100.0, [pts]) for k in (3, 4, 9, 20, 21, 40)])
    assert demo.frames_to_draw(tmp_path / "a.json") == [3, 9, 20, 40]  # positions 0, 2, 3, 5 of 6
    write_labels(tmp_path / "b.json", [Annotation(7, 0, 2, 100.0, [pts])])
    assert demo.frames_to_draw(tmp_path / "b.json") == [7]
    write_labels(tmp_path / "c.json", [])
    assert demo.frames_to_draw(tmp_path / "c.json") == [0]


def test_bad_tracks_and_missing_uplam_are_one_error_line(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "a"), "--tracks", "av,video"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tracks" in err[0]
    assert not (tmp_path / "a").exists()
    assert demo.TRACKS["audio"][2] == ["MODEL.SELD.AUDIO_ONLY", "True"] and demo.TRACKS["av"][2] == []


def test_default_features_are_the_classical_mvdr_maps():
    args = demo.parse_args([])
    assert (args.feature_kind, args.srp_method, args.tracks) == ("srp", "mvdr", "av,audio")


def test_uplam_features_need_a_checkpoint_or_training(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "b"), "--feature-kind", "uplam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--uplam" in err[0]
    assert (
        demo.main(
            ["--out", str(tmp_path / "b"), "--feature-kind", "uplam", "--uplam", str(tmp_path / "x.pth")]
        )
        == 2
    )
    assert not (tmp_path / "b").exists()
