import json
import logging

import numpy as np
import pytest
from conftest import write_wav
from PIL import Image

from seld_d2.data import datasets as D
from seld_d2.data.labels import LabelError

SPLIT = "dev-test-sony"


def make_clip(root, seq, frames=5, channels=4, fs=24000, size=(360, 180), labels=True, skip_frame=None):
    write_wav(root / "mic_dev" / SPLIT / f"{seq}.wav", np.zeros((frames * 2400, channels), np.float32), fs)
    fdir = root / "frames_dev" / SPLIT / seq
    fdir.mkdir(parents=True, exist_ok=True)
    for k in range(frames):
        if k != skip_frame:
            Image.new("RGB", size, (k * 20, 0, 0)).save(fdir / f"{seq}_{k:04d}.png")
    if labels:
        anns = [
            {
                "metadata_frame_index": 1,
                "instance_id": 0,
                "category_id": 3,
                "distance": 210,
                "segmentation": [[[200, 80, 1.0], [201, 80, 0.6], [200, 81, 0.5]]],
            },
            {  # seam-crossing event: two polygons
                "metadata_frame_index": 2,
                "instance_id": 1,
                "category_id": 8,
                "distance": 95.5,
                "segmentation": [
                    [[358, 60, 0.8], [359, 60, 1.0], [359, 61, 0.7]],
                    [[0, 60, 0.9], [1, 61, 0.4], [0, 61, 0.5]],
                ],
            },
        ]
        ldir = root / "labels_dev" / SPLIT
        ldir.mkdir(parents=True, exist_ok=True)
        (ldir / f"{seq}_std.json").write_text(json.dumps({"annotations": anns}))


def test_index_and_records(tmp_path):
    make_clip(tmp_path, "fold4_room1_mix001")
    make_clip(tmp_path, "fold4_room1_mix002", frames=6)
    records = D.load_stairs26(tmp_path, SPLIT)
    assert len(records) == 11  # one per frame, frames without events included
    r = records[2]
    assert r["file_name"].endswith(f"frames_dev/{SPLIT}/fold4_room1_mix001/fold4_room1_mix001_0002.png")
    assert r["frame_index"] == 2 and r["height"] == 180 and r["width"] == 360
    assert r["wav_file"].endswith("mic_dev/dev-test-sony/fold4_room1_mix001.wav")
    assert r["feature_file"].endswith("features_dev/dev-test-sony/fold4_room1_mix001.npz")
    (a,) = r["annotations"]
    assert a["category_id"] == 8 and a["instance_id"] == 1 and a["distance"] == 95.5
    assert len(a["segmentation"]) == 2 and a["segmentation"][0].dtype == np.float32
    assert records[1]["annotations"][0]["bbox"] == [200.0, 80.0, 202.0, 82.0]
    assert records[0]["annotations"] == []


def test_register_with_detectron2(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    make_clip(tmp_path, "fold4_room1_mix001")
    name = f"stairs26_test_{id(tmp_path)}"
    D.register_stairs26(name, tmp_path, [SPLIT], feature_cache=tmp_path / "feats")
    meta = MetadataCatalog.get(name)
    assert len(meta.thing_classes) == 13 and meta.thing_classes[12] == "Knock"
    assert len(meta.thing_colors) == 13
    recs = DatasetCatalog.get(name)
    assert len(recs) == 5 and recs[0]["feature_file"].startswith(str(tmp_path / "feats" / SPLIT))
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"channels": 3}, "has 3 channels, expected 4"),
        ({"fs": 16000}, "sample rate is 16000 Hz"),
        ({"skip_frame": 2}, "missing 1 frame(s): bad_0002.png"),
        ({"labels": False}, "bad_std.json: file not found"),
    ],
)
def test_bad_clips_skip_or_raise(tmp_path, caplog, kwargs, message):
    make_clip(tmp_path, "good")
    make_clip(tmp_path, "bad", **kwargs)
    with caplog.at_level(logging.WARNING):
        records = D.load_stairs26(tmp_path, SPLIT, on_error="skip")
    assert {r["sequence"] for r in records} == {"good"}
    assert any(message in rec.getMessage() and "bad" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(D.DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        D.index_split(tmp_path, SPLIT, on_error="raise", use_cache=False)


def test_bad_label_json_and_out_of_range(tmp_path, caplog):
    make_clip(tmp_path, "good")
    make_clip(tmp_path, "badjson")
    (tmp_path / "labels_dev" / SPLIT / "badjson_std.json").write_text("{oops")
    make_clip(tmp_path, "badcoord")
    path = tmp_path / "labels_dev" / SPLIT / "badcoord_std.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"][0][1][0] = 400
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        clips = D.index_split(tmp_path, SPLIT)
    assert [c.sequence for c in clips] == ["good"]
    text = caplog.text
    assert "badjson_std.json: not valid JSON" in text
    assert "badcoord_std.json: annotations[0].segmentation[0][1]: x=400 outside the canvas" in text
    with pytest.raises(LabelError):
        D.index_split(tmp_path, SPLIT, on_error="raise", use_cache=False)


def test_frame_count_and_size(tmp_path, caplog):
    make_clip(tmp_path, "big", size=(720, 360))
    with caplog.at_level(logging.WARNING):
        assert D.index_split(tmp_path, SPLIT)[0].num_frames == 5
    assert "720x360, will be resized" in caplog.text
    frame = D.load_frame(tmp_path / "frames_dev" / SPLIT / "big" / "big_0001.png")
    assert frame.shape == (180, 360, 3) and frame.dtype == np.uint8
    # Frames far from the audio's length are an error: of the wav when it is the shorter one, of
    # the frames otherwise.
    make_clip(tmp_path, "long", frames=5)
    for k in range(5, 9):
        Image.new("RGB", (360, 180)).save(tmp_path / "frames_dev" / SPLIT / "long" / f"long_{k:04d}.png")
    with pytest.raises(D.AudioError, match="long.wav: shorter than its clip: 5 frames of audio"):
        D.check_clip(tmp_path, SPLIT, "long")
    make_clip(tmp_path, "few", frames=5)
    for k in (3, 4):
        (tmp_path / "frames_dev" / SPLIT / "few" / f"few_{k:04d}.png").unlink()
    with pytest.raises(D.FrameError, match="few: 3 frames, but the audio has 5"):
        D.check_clip(tmp_path, SPLIT, "few")


def test_index_cache_is_reused_and_invalidated(tmp_path):
    for i in range(3):
        make_clip(tmp_path, f"clip{i}")
    D.index_split(tmp_path, SPLIT)
    assert len(list((tmp_path / ".seld_index").glob("*.pkl"))) == 1
    clips = D.index_split(tmp_path, SPLIT)
    assert len(clips) == 3
    make_clip(tmp_path, "clip3")
    assert len(D.index_split(tmp_path, SPLIT)) == 4
    assert len(list((tmp_path / ".seld_index").glob("*.pkl"))) == 2


def test_audio_shorter_than_its_frames_names_the_wav(tmp_path):
    from seld_d2.acoustics.audio import AudioError

    make_clip(tmp_path, "clip", frames=6)
    wav = tmp_path / "mic_dev" / SPLIT / "clip.wav"
    write_wav(wav, np.zeros((3 * 2400, 4), np.float32))  # a consistent header, half the length
    with pytest.raises(AudioError) as err:
        D.check_clip(tmp_path, SPLIT, "clip")
    assert str(err.value) == f"{wav}: shorter than its clip: 3 frames of audio (10 fps), 6 video frames"
