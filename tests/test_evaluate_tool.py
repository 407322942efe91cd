"""tools/evaluate.py end to end on a tiny generated submission/ground-truth folder pair."""

import json
import sys
from pathlib import Path

import pytest

from seld_d2.data.labels import write_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import evaluate  # noqa: E402
from bench_metric import synthetic_case  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    pred, gt = synthetic_case(7, clips=2, frames=6)
    for clip in gt:
        write_labels(root / "gt" / f"{clip}_std.json", gt[clip])
    first = sorted(pred)[0]  # the other clip has no prediction file: scored as empty
    write_labels(root / "pred" / f"{first}.json", pred[first])
    return root


@pytest.mark.parametrize("which", ["official", "baseline"])
def test_evaluate_writes_metrics_table_and_plot(folders, which, capsys):
    out = folders / f"out_{which}"
    rc = evaluate.main(
        ["--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--out", str(out)]
        + (["--metric", which])
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "**macro**" in printed and "**micro**" in printed and "1 clip(s) without prediction" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["metric"] == which and result["clips"] == 2
    assert 0.0 <= result["macro"]["mAP"] <= 1.0
    table = (out / "table.md").read_text()
    assert ("AP@0.25" in table) == (which == "official") and "AP@0.5" in table
    assert (out / "ap_vs_threshold.png").stat().st_size > 1000
    if which == "official":
        assert len(result["micro"]["ap_curve"]) == 19


def test_evaluate_bad_file_is_one_line_and_exit_1(folders, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "fold4_room0_mix001.json").write_text(
        '{"annotations": [{"metadata_frame_index": 0, "instance_id": 0, "category_id": 1, "distance": 100,'
        ' "score": 0.5, "segmentation": [[[10, 200, 0.5], [11, 20, 0.5], [12, 21, 0.4]]]}]}'
    )
    rc = evaluate.main(["--pred", str(pred), "--gt", str(folders / "gt"), "--out", str(tmp_path / "o")])
    assert rc == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: ") and "fold4_room0_mix001.json" in last and "y=200" in last
    assert not (tmp_path / "o" / "metrics.json").exists()
