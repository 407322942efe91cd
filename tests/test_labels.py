import json
import math

import numpy as np
import pytest

from seld_d2.data.labels import (
    Annotation,
    LabelError,
    LabelNotes,
    group_by_frame,
    load_labels,
    repeated_annotations,
    write_labels,
)


def ann(**over):
    a = {
        "metadata_frame_index": 3,
        "instance_id": 7,
        "category_id": 12,
        "distance": 150,
        "segmentation": [[[10, 20, 0.5], [11, 20, 1.0], [10, 21, 0.3]]],
    }
    a.update(over)
    return a


def write(tmp_path, data, name="clip_std.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_round_trip(tmp_path):
    a = Annotation(2, 1, 0, 123.0, [np.array([[359, 90, 0.7], [358, 91, 0.4], [359, 91, 1.0]], np.float32)])
    b = Annotation(2, 0, 4, 80.5, [np.array([[0, 90, 0.9]], np.float32), np.array([[1, 2, 1.0]], np.float32)])
    path = tmp_path / "out.json"
    write_labels(path, [a, b])
    back = load_labels(path)
    assert [x.instance_id for x in back] == [0, 1]  # sorted by frame, then id
    np.testing.assert_array_equal(back[1].polygons[0], a.polygons[0])
    assert back[0].distance == 80.5 and len(back[0].polygons) == 2
    assert json.loads(path.read_text())["annotations"][1]["segmentation"][0][0] == [359, 90, 0.7]
    assert list(group_by_frame(back)) == [2]
    assert back[1].bbox() == [358.0, 90.0, 360.0, 92.0]


@pytest.mark.parametrize(
    "data,where,problem",
    [
        ("{not json", "", "not valid JSON"),
        ({"annot": []}, "", 'an "annotations" list'),
        ({"annotations": {}}, "annotations", "must be a list"),
        ({"annotations": [5]}, "annotations[0]", "must be an object"),
        ({"annotations": [ann(category_id=13)]}, "annotations[0].category_id", "in [0, 12], got 13"),
        ({"annotations": [ann(category_id=True)]}, "annotations[0].category_id", "got True"),
        (
            {"annotations": [ann(metadata_frame_index=-1)]},
            "annotations[0].metadata_frame_index",
            "non-negative",
        ),
        ({"annotations": [ann(instance_id="a")]}, "annotations[0].instance_id", "must be an integer"),
        ({"annotations": [ann(distance=-3)]}, "annotations[0].distance", "non-negative number"),
        (
            {"annotations": [ann(segmentation={"a": 1})]},
            "annotations[0].segmentation",
            "must be a list of polygons, got dict",
        ),
        ({"annotations": [ann(distance=None)]}, "annotations[0].distance", "got None"),
        (
            {"annotations": [ann(segmentation=[[[1, 2, 0.5], [3, 4]]])]},
            "annotations[0].segmentation[0][1]",
            "triplet of numbers, got [3, 4]",
        ),
        (
            {"annotations": [ann(segmentation=[[[1, 2, 0.5], [361, 4, 0.5]]])]},
            "annotations[0].segmentation[0][1]",
            "x=361 outside the canvas [0, 360]",
        ),
        (
            {"annotations": [ann(), ann(segmentation=[[[1, -1, 0.5]]])]},
            "annotations[1].segmentation[0][0]",
            "y=-1 outside the canvas [0, 180]",
        ),
        ({"annotations": [ann(segmentation=[[[1, 2, 0.0]]])]}, "annotations[0].segmentation[0][0]", "v=0"),
    ],
)
def test_malformed_labels_give_one_line_naming_file_and_field(tmp_path, data, where, problem):
    path = write(tmp_path, data)
    with pytest.raises(LabelError) as err:
        load_labels(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and f": {where}: " in f": {err.value.where}: " and problem in text
    assert "\n" not in text


def test_frame_bound_score_and_missing(tmp_path):
    path = write(tmp_path, {"annotations": [ann(metadata_frame_index=10)]})
    with pytest.raises(LabelError, match="frame 10 is past the clip's 10 frames"):
        load_labels(path, num_frames=10)
    assert load_labels(path, num_frames=11)[0].frame == 10
    with pytest.raises(LabelError, match="missing key 'score'"):
        load_labels(path, require_score=True)
    scored = write(tmp_path, {"annotations": [ann(score=0.9)]}, "pred.json")
    assert load_labels(scored, require_score=True)[0].score == pytest.approx(0.9)
    with pytest.raises(LabelError, match="file not found"):
        load_labels(tmp_path / "nope.json")


def test_released_stairs26_files_are_read_and_counted(tmp_path):
    # What released STAIRS26 files hold and the project never writes (SPEC §5): an older script's
    # empty segmentation, a missing one, an empty polygon, the newer script's per-contour copies
    # of a seam-crossing event, float coordinates, no distance.
    seam = [[[358, 60, 0.8], [359, 60, 1.0], [359, 61, 0.7]], [[0, 60, 0.9], [1, 61, 0.4], [0, 61, 0.5]]]
    no_seg = ann(metadata_frame_index=5)
    del no_seg["segmentation"]
    no_dist = ann(segmentation=[[[10.5, 20.25, 0.5], [11, 20, 1.0], [10, 21, 0.3]]])
    del no_dist["distance"]
    data = {
        "annotations": [
            ann(segmentation=[]),
            no_seg,
            ann(segmentation=[[], [[1, 2, 0.5]]]),
            ann(metadata_frame_index=4, segmentation=seam),
            ann(metadata_frame_index=4, segmentation=seam),
            ann(metadata_frame_index=4, segmentation=seam[:1]),  # same event, other polygons: not a copy
            no_dist,
        ]
    }
    notes = LabelNotes()
    back = load_labels(write(tmp_path, data), notes=notes)
    assert [len(a.polygons) for a in back] == [0, 0, 1, 2, 2, 1, 1]
    assert math.isnan(back[6].distance) and back[6].polygons[0][0, 0] == np.float32(10.5)
    assert repeated_annotations(back) == {4}
    assert (notes["no_map"], notes["empty_polygon"], notes["no_distance"], notes["float_xy"]) == (2, 1, 1, 1)
    lines = notes.lines()
    assert "2 annotations with a missing or empty segmentation (all-zero maps): " in lines[0]
    assert lines[0].endswith(f"{tmp_path.name}/clip_std.json")
    assert "1 empty polygon ignored" in lines[1]
    with pytest.raises(ValueError, match="has no box"):
        back[0].bbox()


def test_writer_refuses_what_it_never_writes(tmp_path):
    poly = np.array([[1, 2, 0.5], [2, 2, 0.5], [1, 3, 0.5]], np.float32)
    for bad, problem in [
        (Annotation(0, 0, 0, 100.0, []), "no polygons"),
        (Annotation(0, 0, 0, 100.0, [poly, np.zeros((0, 3), np.float32)]), "an empty polygon"),
        (Annotation(0, 0, 0, math.nan, [poly]), "non-finite distance"),
    ]:
        with pytest.raises(ValueError, match=problem):
            write_labels(tmp_path / "x.json", [bad])
    assert not (tmp_path / "x.json").exists()


def test_notes_lines_plural_details_and_file_list():
    notes = LabelNotes()
    for i in range(5):
        notes.add("category", f"run3/c{i}.json", detail=13 if i else -1)
    notes.add("no_score", "run3/x.json", n=3)
    other = LabelNotes()
    other.add("no_score", "run3/y.json")
    notes.update(other)
    assert notes.lines() == [
        '4 predictions without "score" (scored as 0): run3/x.json, run3/y.json',
        "5 annotations with category -1, 13 dropped: run3/c0.json, run3/c1.json, run3/c2.json and 2 more",
    ]
    with pytest.raises(KeyError):
        notes.add("nonsense", "x")
