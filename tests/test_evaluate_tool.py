"""tools/evaluate.py end to end: the official evaluator's input semantics on a folder with every
case it scores (the plain reference implementation is the oracle), and one line + exit code 1
wherever it stops."""

import json
import sys
from pathlib import Path

import pytest
from conftest import official_cases_folders

from seld_d2.data.labels import write_labels
from seld_d2.evaluation import reference
from seld_d2.evaluation.synthetic import max_difference, synthetic_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import evaluate  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    pred, gt = synthetic_case(7, clips=2, frames=6)
    for clip in gt:
        write_labels(root / "gt" / f"{clip}_std.json", gt[clip])
    first = sorted(pred)[0]  # the other clip has no prediction file: not scored
    write_labels(root / "pred" / f"{first}.json", pred[first])
    return root


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return official_cases_folders(tmp_path_factory.mktemp("cases"))


@pytest.mark.parametrize("which", ["official", "baseline"])
def test_evaluate_writes_metrics_table_and_plot(folders, which, capsys):
    out = folders / f"out_{which}"
    rc = evaluate.main(
        ["--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--out", str(out)]
        + (["--metric", which])
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "**macro**" in captured.out and "**micro**" in captured.out
    assert "warning: GT clip fold4_room1_mix001 has no prediction file: not scored" in captured.err
    result = json.loads((out / "metrics.json").read_text())
    assert result["metric"] == which and result["clips"] == 1
    assert result["missing_predictions"] == ["fold4_room1_mix001"]
    assert 0.0 <= result["macro"]["mAP"] <= 1.0
    table = (out / "table.md").read_text()
    assert ("AP@0.25" in table) == (which == "official") and "AP@0.5" in table
    assert (out / "ap_vs_threshold.png").stat().st_size > 1000
    if which == "official":
        assert len(result["micro"]["ap_curve"]) == 19


@pytest.mark.parametrize("missing_as_empty", [False, True])
def test_every_scored_case_gives_the_official_numbers_with_warnings(
    cases, tmp_path, capsys, missing_as_empty
):
    pred_dir, gt_dir = cases
    out = tmp_path / "out"
    flag = ["--missing-as-empty"] if missing_as_empty else []
    rc = evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--no-plot", *flag])
    assert rc == 0
    err = capsys.readouterr().err
    result = json.loads((out / "metrics.json").read_text())
    oracle = reference.evaluate_folders(str(pred_dir), str(gt_dir), missing_as_empty=missing_as_empty)
    diff, where = max_difference(result, oracle)
    assert diff <= 1e-6, where
    scored = ["fold4_room0_mix001", "fold4_room1_mix001"] + ["fold4_room2_mix001"] * missing_as_empty
    assert result["clip_names"] == scored and result["clips"] == len(scored)
    assert result["unpaired_predictions"] == ["fold4_room3_mix001.json", "fold4_room9_mix001.json"]
    warnings = [line.removeprefix("warning: ") for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == result["warnings"]
    expected = [
        '3 predictions without "score" (scored as 0): pred/fold4_room0_mix001.json',
        "2 annotations with category 13 dropped: pred/fold4_room0_mix001.json, "
        "dev-test-sony/fold4_room0_mix001_std.json",
        "4 annotations with a missing or empty segmentation (all-zero maps): "
        "pred/fold4_room0_mix001.json, dev-test-sony/fold4_room0_mix001_std.json",
        "1 empty polygon ignored: dev-test-sony/fold4_room0_mix001_std.json",
        "3 category_id, metadata_frame_index values that are not plain integers, read with int() "
        "(as the official evaluator does): pred/fold4_room0_mix001.json",
        "2 annotations without a numeric distance (no distance value for them): "
        "pred/fold4_room0_mix001.json, dev-test-sony/fold4_room0_mix001_std.json",
        "2 prediction files without ground truth skipped (as the official evaluator does): "
        "pred/fold4_room3_mix001.json, pred/fold4_room9_mix001.json",
        (
            "GT clip fold4_room2_mix001 has no prediction file: scored as an empty prediction "
            "(--missing-as-empty)"
            if missing_as_empty
            else "GT clip fold4_room2_mix001 has no prediction file: not scored, as the official evaluator "
            "does; --missing-as-empty scores it as an empty prediction"
        ),
        "1 GT file not named <clip>_std.json: not paired, as the official evaluator does: "
        "gt/fold4_room3_mix001.json",
    ]
    assert warnings == expected
    # The dropped category and the map-less annotations: GT counts what the oracle counts.
    assert result["micro"]["gt"] == oracle["micro"]["gt"] and result["micro"]["detections"] > 0


def _one_clip(tmp_path: Path, cases, edit_pred=None, edit_gt=None) -> tuple[Path, Path]:
    """A copy of room1's prediction and GT, one of them edited (a dict -> None function)."""
    pred_dir, gt_dir = cases
    p, g = tmp_path / "p", tmp_path / "g"
    p.mkdir()
    g.mkdir()
    for src, dst, edit in (
        (pred_dir / "fold4_room1_mix001.json", p / "fold4_room1_mix001.json", edit_pred),
        (gt_dir / "fold4_room1_mix001_std.json", g / "fold4_room1_mix001_std.json", edit_gt),
    ):
        data = json.loads(src.read_text())
        if edit:
            edit(data)
        dst.write_text(json.dumps(data))
    return p, g


def _seg(data: dict, k: int = 0) -> list:
    return data["annotations"][k]["segmentation"]


def _set(key: str, value):
    def edit(data):
        data["annotations"][0][key] = value

    return edit


HARD_ERRORS = {
    "x off the canvas (prediction)": (
        dict(edit_pred=lambda d: _seg(d)[0][0].__setitem__(0, 360.5)),
        "x=360.5",
    ),
    "y off the canvas (GT)": (dict(edit_gt=lambda d: _seg(d)[0][1].__setitem__(1, -1)), "y=-1 outside"),
    "polygon not N x 3": (dict(edit_pred=lambda d: _seg(d).append([[1, 2], [3, 4]])), "N x 3 array"),
    "ragged polygon": (dict(edit_gt=lambda d: _seg(d)[0].append([1, 2])), "N x 3 array"),
    "int() rejects the frame": (dict(edit_pred=_set("metadata_frame_index", "3.5")), "int() rejects '3.5'"),
    "int() rejects the category": (dict(edit_gt=_set("category_id", None)), "int() rejects None"),
    "no frame index": (
        dict(edit_pred=lambda d: d["annotations"][0].pop("metadata_frame_index")),
        "missing key",
    ),
    "no annotations list": (dict(edit_pred=lambda d: d.pop("annotations")), '"annotations" list'),
}


@pytest.mark.parametrize("case", list(HARD_ERRORS))
def test_where_the_official_evaluator_stops_one_line_and_exit_1(cases, tmp_path, capsys, case):
    edits, message = HARD_ERRORS[case]
    p, g = _one_clip(tmp_path, cases, **edits)
    with pytest.raises((ValueError, TypeError, KeyError)):  # the oracle stops too
        reference.evaluate_folders(str(p), str(g))
    rc = evaluate.main(["--pred", str(p), "--gt", str(g), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: ") and "fold4_room1_mix001" in last and message in last, last
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_prediction_file_over_20_mib_stops_it(cases, tmp_path, capsys):
    p, g = _one_clip(tmp_path, cases)
    path = p / "fold4_room1_mix001.json"
    text = path.read_text()
    path.write_text(text[:-1] + " " * (20 * 1024 * 1024 - len(text) + 1) + "}")  # 20 MiB + 1 byte
    assert path.stat().st_size == 20 * 1024 * 1024 + 1
    with pytest.raises(ValueError):
        reference.evaluate_folders(str(p), str(g))
    assert evaluate.main(["--pred", str(p), "--gt", str(g), "--out", str(tmp_path / "o")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"error: {path}: 20.0 MiB (20971521 bytes) exceeds the 20 MiB (20971520-byte) limit "
        "of the official evaluator"
    )
    path.write_text(text[:-1] + " " * (20 * 1024 * 1024 - len(text)) + "}")  # exactly 20 MiB: scored
    assert evaluate.main(["--pred", str(p), "--gt", str(g), "--out", str(tmp_path / "o"), "--no-plot"]) == 0
