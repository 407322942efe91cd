"""End to end on a tiny generated dataset (CPU): train a few iterations -> tools/infer.py ->
submission files the official evaluator accepts -> the metric; a bad clip is reported and the
others finish; the single-clip form; the Detectron2 evaluator behind --eval-only."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from detectron2.data import DatasetCatalog
from test_datasets import SPLIT, make_clip
from test_train_net import SMALL, args_for

from seld_d2.acoustics.features import write_cache
from seld_d2.data.labels import load_labels
from seld_d2.evaluation.metric import evaluate_folders

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import evaluate  # noqa: E402
import infer  # noqa: E402
import train_net  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAMES = 6
# Everything a barely trained model outputs is kept, so that the export path runs.
LOOSE = [
    "SELD.INFER.SCORE_THRESH", "0.0", "SELD.INFER.CLASS_SCORE_THRESH", "[]", "SELD.INFER.MIN_AGE", "1",
    "SELD.INFER.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset root, trained weights): two good clips with noise audio and one clip missing a frame."""
    root = tmp_path_factory.mktemp("stairs")
    rng = np.random.default_rng(0)
    for i in range(2):
        make_clip(root, f"clip{i}", frames=FRAMES)
        sf.write(
            root / "mic_dev" / SPLIT / f"clip{i}.wav", 0.1 * rng.standard_normal((FRAMES * 2400, 4)), 24000
        )
        latent = rng.random((FRAMES, 16, 484)).astype(np.float16)
        write_cache(root / "features_dev" / SPLIT / f"clip{i}.npz", latent, {"num_frames": FRAMES})
    make_clip(root, "clip9", frames=FRAMES, skip_frame=3)
    out = tmp_path_factory.mktemp("train")
    train_net.main(args_for(root, out, "SELD.TRAIN.MAX_EPOCHS", "1"))
    weights = out / "model_final.pth"
    assert weights.is_file()
    yield root, weights
    for name in (f"train_{out.name}", f"val_{out.name}"):
        DatasetCatalog.remove(name)


def infer_argv(weights, out, *form):
    return [
        "--config-file", str(REPO / "configs/SELD/run3_mel16.yaml"), "--checkpoint", str(weights),
        "--out", str(out), "--device", "cpu", *form, *SMALL, *LOOSE,
    ]  # fmt: skip


def test_train_infer_evaluate(trained, tmp_path, capsys):
    root, weights = trained
    sub = tmp_path / "submission"
    form = ["--root", str(root), "--split", SPLIT, "--feature-dir", str(tmp_path / "features")]
    rc = infer.main(infer_argv(weights, sub, *form))
    err = capsys.readouterr().err
    assert rc == 1  # clip9 is bad ...
    assert "clip9" in err and "missing 1 frame(s)" in err
    assert sorted(p.name for p in sub.iterdir()) == ["clip0.json", "clip1.json"]  # ... the others finish
    total = 0
    for path in sub.iterdir():
        assert path.stat().st_size <= 20 * 2**20
        anns = load_labels(path, require_score=True, gt_values=False, num_frames=FRAMES)
        total += len(anns)
        for a in anns:
            assert all(len(p) >= 3 for p in a.polygons)
            pts = np.concatenate(a.polygons)
            assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= 360).all()
            assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= 180).all()
    assert total > 0
    # Features were computed from the wavs (their cache did not match) into --feature-dir.
    assert (tmp_path / "features" / "clip0.npz").is_file()
    summary = json.loads((tmp_path / "submission_infer_summary.json").read_text())
    assert set(summary["clips"]) == {"clip0", "clip1"} and set(summary["failed"]) == {"clip9"}

    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for seq in ("clip0", "clip1"):  # the bad clip has no submission and is left out of the score
        (gt_dir / f"{seq}_std.json").write_text((root / "labels_dev" / SPLIT / f"{seq}_std.json").read_text())
    result = evaluate_folders(sub, gt_dir)
    assert result["micro"]["gt"] == 4 and result["micro"]["detections"] == total
    assert 0.0 <= result["micro"]["mAP"] <= 1.0
    assert evaluate.main(["--pred", str(sub), "--gt", str(gt_dir), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_single_clip_form(trained, tmp_path):
    root, weights = trained
    form = [
        "--wav",
        str(root / "mic_dev" / SPLIT / "clip0.wav"),
        "--frames",
        str(root / "frames_dev" / SPLIT / "clip0"),
    ]
    assert infer.main(infer_argv(weights, tmp_path / "one", *form)) == 0
    load_labels(tmp_path / "one" / "clip0.json", require_score=True, gt_values=False)
    assert (tmp_path / "one" / ".features" / "clip0.npz").is_file()


def test_eval_only_reports_the_official_metric(trained, tmp_path):
    root, weights = trained
    out = tmp_path / "eval_run"
    results = train_net.main(args_for(root, out, "MODEL.WEIGHTS", str(weights), *LOOSE, eval_only=True))
    seld = results["seld"]
    assert {"mAP_macro", "mAP_micro", "pearson_macro", "AP0.5_micro"} <= set(seld)
    assert 0.0 <= seld["mAP_micro"] <= 1.0
    assert np.isfinite(sum(results["validation_losses"].values()))
    written = list((out / "inference").glob("*/submission/*.json"))
    assert {p.name for p in written} == {"clip0.json", "clip1.json"}
    for name in (f"train_{out.name}", f"val_{out.name}"):
        DatasetCatalog.remove(name)


def test_corrupt_png_with_loader_workers_fails_only_its_clip(trained, tmp_path, capsys):
    # In a loader worker, the FrameError of an undecodable frame used to reach the main process
    # as "RuntimeError: Caught FrameError in DataLoader worker process 0" and end the run.
    root, weights = trained
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns(".seld_index"))
    bad = data / "frames_dev" / SPLIT / "clip0" / "clip0_0004.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG: the header is there, the pixels are not
    sub = tmp_path / "submission"
    form = ["--root", str(data), "--split", SPLIT, "--feature-dir", str(tmp_path / "features")]
    rc = infer.main(infer_argv(weights, sub, *form, "--num-workers", "2"))
    err = capsys.readouterr().err
    assert rc == 1
    (line,) = [x for x in err.splitlines() if x.startswith("failed clip clip0")]
    assert f"{bad}: not a readable image" in line
    assert "RuntimeError" not in err and "Traceback" not in err
    assert sorted(p.name for p in sub.iterdir()) == ["clip1.json"]  # the clip after it finished
    summary = json.loads((tmp_path / "submission_infer_summary.json").read_text())
    assert set(summary["clips"]) == {"clip1"} and set(summary["failed"]) == {"clip0", "clip9"}


def test_a_disk_that_fills_mid_run_is_one_line(trained, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from seld_d2.utils import io as IO

    root, weights = trained
    sub = tmp_path / "submission"
    real = os.replace

    def replace(src, dst):  # the submission folder's disk is full
        if os.path.dirname(dst) == str(sub):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(IO.os, "replace", replace)
    form = ["--root", str(root), "--split", SPLIT, "--feature-dir", str(tmp_path / "features")]
    assert infer.main(infer_argv(weights, sub, *form)) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert errors == [
        f"error: {sub / 'clip0.json'}: cannot be written (No space left on device); stopped after 0 clip(s)"
    ]
    assert list(sub.iterdir()) == []  # no temporary left


def test_rerun_removes_the_temps_of_a_killed_run(trained, tmp_path):
    import os
    import time

    root, weights = trained
    sub = tmp_path / "submission"
    sub.mkdir()
    import subprocess

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer killed mid-write: its pid names no live process
    summary_tmp = f".submission_infer_summary.json.abcdefgh.pid{gone.pid}.tmp"
    stale = [sub / ".clip0.json.k2j3h4g5.tmp", tmp_path / summary_tmp]
    keep = tmp_path / ".unrelated.json.abcdefgh.tmp"  # not a file this run writes
    for path in (*stale, keep):
        path.write_text("{")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    form = ["--root", str(root), "--split", SPLIT, "--feature-dir", str(tmp_path / "features")]
    infer.main(infer_argv(weights, sub, *form))
    assert [p.name for p in stale if p.exists()] == [] and keep.exists()
