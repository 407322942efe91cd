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


def test_released_stairs26_labels_train_what_they_can_and_keep_everything(tmp_path, caplog):
    """SPEC §5: an older script's ``segmentation: []``, the newer script's per-contour copies of a
    seam-crossing event, float coordinates, and no distance are read; the map-less annotation and
    the repeated copy train nothing (``iscrowd``) but stay in the records for evaluation."""
    import torch
    from detectron2.layers import ShapeSpec
    from detectron2.structures import Instances

    from seld_d2.acoustics.features import write_cache
    from seld_d2.data.mapper import SeldDatasetMapper
    from seld_d2.data.sampler import class_frequencies
    from seld_d2.evaluation.evaluator import record_annotations
    from seld_d2.modeling.distance_head import DistanceHead

    seq = "fold4_room1_mix003"
    make_clip(tmp_path, seq, labels=False)
    seam = [[[358, 60, 0.8], [359, 60, 1.0], [359, 61, 0.7]], [[0, 60, 0.9], [1, 61, 0.4], [0, 61, 0.5]]]
    base = {"instance_id": 1, "category_id": 8, "distance": 95.5}
    anns = [
        {**base, "metadata_frame_index": 0, "segmentation": []},
        {**base, "metadata_frame_index": 2, "segmentation": seam},
        {**base, "metadata_frame_index": 2, "segmentation": seam},
        {
            "metadata_frame_index": 3,
            "instance_id": 2,
            "category_id": 3,
            "segmentation": [[[200.5, 80, 1.0], [201, 80, 0.6], [200, 81.5, 0.5]]],
        },
    ]
    latent = np.zeros((5, 16, 484), np.float16)
    write_cache(tmp_path / "features_dev" / SPLIT / f"{seq}.npz", latent, {"num_frames": 5})
    (tmp_path / "labels_dev" / SPLIT).mkdir(parents=True)
    (tmp_path / "labels_dev" / SPLIT / f"{seq}_std.json").write_text(json.dumps({"annotations": anns}))
    with caplog.at_level(logging.WARNING, logger="seld_d2.data.datasets"):
        records = D.load_stairs26(tmp_path, SPLIT)
        first = [r.getMessage() for r in caplog.records]
        caplog.clear()
        D.load_stairs26(tmp_path, SPLIT)  # from the cache: logged again
        again = [r.getMessage() for r in caplog.records]
    name = f"{SPLIT}/{seq}_std.json"
    assert (
        first
        == again
        == [
            f"{SPLIT} labels: 1 annotation with a missing or empty segmentation (an all-zero map): {name}",
            f"{SPLIT} labels: 1 annotation without a numeric distance (no distance value for it): {name}",
            f"{SPLIT} labels: 1 annotation with non-integer coordinates (kept as they are): {name}",
            f"{SPLIT} labels: 1 repeated annotation (same frame, instance_id, category_id and polygons) "
            f"trained once: {name}",
        ]
    )
    r0, r2, r3 = records[0]["annotations"], records[2]["annotations"], records[3]["annotations"]
    assert len(r0) == 1 and r0[0]["iscrowd"] == 1 and "bbox" not in r0[0] and r0[0]["segmentation"] == []
    assert [a["iscrowd"] for a in r2] == [0, 1]
    assert (
        r3[0]["iscrowd"] == 0 and np.isnan(r3[0]["distance"]) and r3[0]["bbox"] == [200.0, 80.0, 202.0, 82.5]
    )
    # Evaluation sees every annotation of the file, as the official evaluator counts them.
    assert len(record_annotations(records)[seq]) == 4
    # Training: no instance from the map-less one, the seam event once (two halves), counted once.
    assert class_frequencies(records).tolist()[8] == 1 and class_frequencies(records).tolist()[3] == 1
    mapper = SeldDatasetMapper(True, augmentations=[])
    assert len(mapper(records[0])["instances"]) == 0
    assert len(mapper(records[2])["instances"]) == 2  # the two seam halves, not four
    inst = mapper(records[3])["instances"]
    assert len(inst) == 1 and torch.isnan(inst.gt_distance).all()
    # The distance head takes no loss from a target it does not have.
    head = DistanceHead(ShapeSpec(channels=4), hidden_dim=8, normaliser=500.0, loss_weight=1.0).train()
    target = Instances((180, 360), gt_distance=torch.tensor([float("nan"), 250.0]))
    loss = head(torch.ones(2, 4), [target])["loss_distance"]
    assert torch.isfinite(loss) and loss.requires_grad


def test_audio_shorter_than_its_frames_names_the_wav(tmp_path):
    from seld_d2.acoustics.audio import AudioError

    make_clip(tmp_path, "clip", frames=6)
    wav = tmp_path / "mic_dev" / SPLIT / "clip.wav"
    write_wav(wav, np.zeros((3 * 2400, 4), np.float32))  # a consistent header, half the length
    with pytest.raises(AudioError) as err:
        D.check_clip(tmp_path, SPLIT, "clip")
    assert str(err.value) == f"{wav}: shorter than its clip: 3 frames of audio (10 fps), 6 video frames"


def test_dataset_errors_are_one_hierarchy():
    from seld_d2.acoustics.audio import AudioError
    from seld_d2.data.labels import LabelError

    for err in (AudioError("a.wav", "x"), D.FrameError("f.png", "x"), LabelError("l.json", "frame 3", "x")):
        assert isinstance(err, D.DatasetError) and isinstance(err, ValueError)
        with pytest.raises(D.DatasetError):
            raise err


def test_one_record_builder_and_layout_paths(tmp_path):
    assert D.clip_wav(tmp_path, "dev-test", "s1") == tmp_path / "mic_dev" / "dev-test" / "s1.wav"
    assert D.clip_wav(tmp_path, "dev-test", "s1", "eigen") == tmp_path / "eigen_dev" / "dev-test" / "s1.wav"
    assert D.clip_frames_dir(tmp_path, "dev-test", "s1") == tmp_path / "frames_dev" / "dev-test" / "s1"
    rec = D.frame_record(tmp_path / "f", "dev-test", "s1", 7, tmp_path / "s1.npz")
    assert rec["image_id"] == "dev-test/s1/7" and rec["file_name"] == str(tmp_path / "f" / "s1_0007.png")
    assert (rec["height"], rec["width"], rec["feature_file"]) == (180, 360, str(tmp_path / "s1.npz"))
    assert D.frame_record(tmp_path, None, "s1", 7)["image_id"] == "s1/7"
