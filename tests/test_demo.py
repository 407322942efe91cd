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
