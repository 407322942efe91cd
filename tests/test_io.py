"""Atomic writes (a failed write is one line naming the file, its temporary removed), the up-front
output-folder check, and the removal of temporaries that killed writers left behind; and each
tool's output check, which comes before any work."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seld_d2.utils import io as IO
from seld_d2.utils.io import WriteError, atomic_open, prepare_output_dir, remove_stale_temps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

UNCREATABLE = "/proc/nonexistent/x"  # mkdir fails there, for root too


def full_disk(monkeypatch, folder):
    """Writes of files into ``folder`` fail as on a full disk (at the rename; others pass)."""
    real = os.replace

    def replace(src, dst):
        if Path(dst).parent == Path(folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(IO.os, "replace", replace)


def read_only_folder(tmp_path) -> Path:
    """A folder no file can be created in: chmod for a normal user; as root (who writes through
    any mode bits) /proc, where no one can create files."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/proc")


def temps(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")]


def test_full_disk_is_one_line_naming_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old")
    monkeypatch.setattr(IO.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(WriteError) as err:
        with atomic_open(path, "w") as f:
            f.write("new")
    assert str(err.value) == f"{path}: cannot be written (No space)"
    assert path.read_text() == "old" and temps(tmp_path) == []


def test_errors_of_other_files_pass_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_open(tmp_path / "out.txt", "w"):
            open(tmp_path / "missing.txt")
    assert temps(tmp_path) == []


def test_prepare_output_dir(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    with pytest.raises(WriteError, match="^/proc/nonexistent/x: cannot create the output folder"):
        prepare_output_dir(UNCREATABLE)
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="file: is a file, not a folder$"):
        prepare_output_dir(tmp_path / "file")
    ro = read_only_folder(tmp_path)
    with pytest.raises(WriteError, match=f"^{ro}: the output folder is not writable"):
        prepare_output_dir(ro)


def test_stale_temps_are_removed_and_live_ones_kept(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 3600
    names = {
        "legacy": ".model_0000011.pth.k2j3h4g5.tmp",  # written by an older version: no pid
        "dead": f".clip0.json.abcdefgh.pid{dead.pid}.tmp",
        "mine_old": f".x.wav.abcdefgh.pid{os.getpid()}.tmp",  # our pid, but written before we started
        "live": f".x.wav.zyxwvuts.pid{os.getppid()}.tmp",  # a live writer that started before it
        "fresh": ".y.wav.qwertyui.tmp",  # written after this process started
        "other": ".not-ours.tmp",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x" * 1000)
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    os.utime(tmp_path / names["live"], (time.time() - 1, time.time() - 1))
    parent_start = IO._process_start(os.getppid())
    with caplog.at_level("WARNING", logger="seld_d2.utils.io"):
        removed = remove_stale_temps(tmp_path)
    assert {p.name for p in removed} == {names["legacy"], names["dead"], names["mine_old"]}
    assert {p.name for p in tmp_path.iterdir()} == {names["live"], names["fresh"], names["other"]}
    (line,) = caplog.messages
    assert line == f"removed 3 stale temporary file(s) (0.0 MB) left in {tmp_path} by an interrupted run"
    assert parent_start is not None and parent_start < time.time()
    assert remove_stale_temps(tmp_path) == []


def test_only_the_named_files_temps(tmp_path):
    old = time.time() - 3600
    for name in (".a_infer_summary.json.abcdefgh.tmp", ".b.json.abcdefgh.tmp"):
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (old, old))
    assert [p.name for p in remove_stale_temps(tmp_path, names=["a_infer_summary.json"])] == [
        ".a_infer_summary.json.abcdefgh.tmp"
    ]


# ---- the tools: an unusable output location is one line and a non-zero exit, before any work


@pytest.mark.parametrize("where", ["uncreatable", "read_only", "a_file"])
def test_infer_checks_out_first(tmp_path, capsys, where):
    import infer

    out = {"uncreatable": UNCREATABLE, "read_only": str(read_only_folder(tmp_path)), "a_file": None}[where]
    if out is None:
        (tmp_path / "f").write_text("")
        out = str(tmp_path / "f")
    # The checkpoint and config do not exist: the check must come before anything reads them.
    argv = ["--config-file", "nope.yaml", "--checkpoint", "nope.pth", "--out", out]
    assert infer.main([*argv, "--wav", "x.wav", "--frames", "x"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {out}: ")


def test_evaluate_checks_out_first(tmp_path, capsys, monkeypatch):
    import evaluate

    monkeypatch.setattr(evaluate.metric, "evaluate_folders", lambda *a, **k: pytest.fail("did the work"))
    ro = read_only_folder(tmp_path)
    out = ro / "eval" if os.geteuid() != 0 else ro
    assert evaluate.main(["--pred", str(tmp_path), "--gt", str(tmp_path), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {out}: ")


def test_extract_features_output_checks(tmp_path, capsys, monkeypatch):
    import extract_features
    from conftest import write_wav

    root, split = tmp_path / "data", "dev-test-sony"
    for name in ("a", "b"):
        write_wav(root / "mic_dev" / split / f"{name}.wav", np.zeros((4800, 4), np.float32))
    argv = ["--root", str(root), "--split", split]
    assert extract_features.main([*argv, "--cache-dir", UNCREATABLE]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {UNCREATABLE}: cannot create")
    # A disk that fills at the first clip: one line naming the file, no temporary, the rest not tried.
    cache = root / "features_dev" / split
    full_disk(monkeypatch, cache)
    assert extract_features.main(argv) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    problem = "cannot be written (No space left on device); stopped after 0 computed clip(s)"
    assert errors == [f"error: {cache / 'a.npz'}: {problem}"]
    assert list(cache.iterdir()) == []


def test_synthesize_checks_out_and_removes_stale_temps(tmp_path, capsys):
    import synthesize

    argv = ["--split", "s", "--num-clips", "1", "--duration", "1", "--no-video", "--no-labels"]
    assert synthesize.main(["--out", UNCREATABLE, *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {UNCREATABLE}: cannot create")
    stale = tmp_path / "mic_dev" / "s" / ".synth_s_0000.wav.k2j3h4g5.tmp"  # a kill -9 mid-write
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert synthesize.main(["--out", str(tmp_path), *argv]) == 0
    assert not stale.exists() and temps(stale.parent) == []


@pytest.mark.parametrize("pid", [7, 22399, 1234567])
def test_temp_names_parse_whatever_the_pid_length(pid):
    """``pid22399`` is 8 characters, like the random part: the name must not swallow the random
    part and take the pid for it (the temp of a killed run was then never matched by name)."""
    m = IO._TEMP.match(f".submission_infer_summary.json.abcdefgh.pid{pid}.tmp")
    assert m["name"] == "submission_infer_summary.json" and m["pid"] == str(pid)
    legacy = IO._TEMP.match(".model_0000011.pth.k2j3h4g5.tmp")
    assert legacy["name"] == "model_0000011.pth" and legacy["pid"] is None
