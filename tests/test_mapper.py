import numpy as np
import pytest
import torch
from test_datasets import SPLIT, make_clip

from seld_d2.acoustics.features import write_cache
from seld_d2.data import augment as A
from seld_d2.data.datasets import load_stairs26
from seld_d2.data.mapper import SeldDatasetMapper, render_energy, split_at_seam, support_box


@pytest.fixture
def records(tmp_path):
    make_clip(tmp_path, "clip")
    latent = np.random.default_rng(0).random((5, 16, 484)).astype(np.float16)
    write_cache(tmp_path / "features_dev" / SPLIT / "clip.npz", latent, {"num_frames": 5})
    return load_stairs26(tmp_path, SPLIT)


def test_input_tensor_and_targets(records):
    out = SeldDatasetMapper(True, augmentations=[])(records[1])
    img = out["image"]
    assert img.shape == (19, 180, 360) and img.dtype.is_floating_point
    assert float(img[0].max()) == 20.0  # frame 1 is red 20 (see make_clip)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3] and inst.gt_distance.tolist() == [210.0]
    assert inst.gt_boxes.tensor.tolist() == [[200.0, 80.0, 202.0, 82.0]]
    assert inst.gt_energy.shape == (1, 180, 360) and float(inst.gt_energy[0, 80, 200]) == 1.0
    assert float(out["fullmap"].max()) == 1.0 and float(out["fullmap"][81, 200]) == 0.5


def test_labelled_seam_event_becomes_two_instances(records):
    out = SeldDatasetMapper(True, augmentations=[])(records[2])
    inst = out["instances"]
    assert len(inst) == 2 and inst.gt_classes.tolist() == [8, 8]
    boxes = sorted(inst.gt_boxes.tensor.tolist())
    assert boxes == [[0.0, 60.0, 2.0, 62.0], [358.0, 60.0, 360.0, 62.0]]
    total = render_energy(records[2]["annotations"][0]["segmentation"]).sum()
    assert float(inst.gt_energy.sum()) == pytest.approx(total)


def test_rolled_instance_crossing_the_seam_splits_and_keeps_its_energy(records):
    mapper = SeldDatasetMapper(True, augmentations=[])
    base = mapper(records[1])["instances"].gt_energy.sum()
    # Roll x=200..201 by 159 -> 359..360: the event now straddles the seam.
    mapper.augmentations = A.T.AugmentationList([_Fixed(A.AzimuthRollTransform(159, 360))])
    inst = mapper(records[1])["instances"]
    assert len(inst) == 2
    assert float(inst.gt_energy.sum()) == pytest.approx(float(base))
    assert sorted(inst.gt_boxes.tensor[:, 0].tolist()) == [0.0, 359.0]


def test_split_and_box_helpers():
    m = np.zeros((4, 10), np.float32)
    m[1, [0, 1, 8, 9]] = [1, 2, 3, 4]
    left, right = split_at_seam(m)
    assert left.sum() == 3 and right.sum() == 7
    assert support_box(left) == [0.0, 1.0, 2.0, 2.0] and support_box(right) == [8.0, 1.0, 10.0, 2.0]
    full = np.ones((4, 10), np.float32)
    assert len(split_at_seam(full)) == 1 and support_box(np.zeros((2, 2))) is None


def test_missing_features_name_the_file(records):
    rec = dict(records[0], feature_file="/nowhere/clip.npz")
    with pytest.raises(FileNotFoundError, match="/nowhere/clip.npz: acoustic features not found"):
        SeldDatasetMapper(True, augmentations=[])(rec)


def test_features_of_another_kind_are_refused(records, tmp_path):
    latent = np.zeros((5, 16, 484), np.float16)
    srp_file = tmp_path / "srp.npz"
    write_cache(srp_file, latent, {"num_frames": 5, "kind": "srp"})
    rec = dict(records[0], feature_file=str(srp_file))
    with pytest.raises(ValueError, match="holds srp features, but SELD.AUDIO.FEATURE_KIND is uplam"):
        SeldDatasetMapper(True, augmentations=[], feature_kind="uplam")(rec)
    assert SeldDatasetMapper(True, augmentations=[], feature_kind="srp")(rec)["image"].shape[0] == 19
    # The fixture's cache has no kind: a version-1 file, i.e. UpLAM.
    with pytest.raises(ValueError, match="holds uplam features"):
        SeldDatasetMapper(True, augmentations=[], feature_kind="srp")(records[0])


def test_test_mode_has_no_targets(records):
    out = SeldDatasetMapper(False, augmentations=[])(records[1])
    assert "instances" not in out and "annotations" not in out and out["image"].shape == (19, 180, 360)


def test_test_mode_image_equals_the_training_path_without_augmentation(records):
    """Test time writes the 19 planes in place; the training path builds HWC, then transposes."""
    for rec in records:
        fast = SeldDatasetMapper(False, augmentations=[])(rec)["image"]
        plain = SeldDatasetMapper(True, augmentations=[])(rec)["image"]
        assert fast.dtype == plain.dtype == torch.float32 and fast.is_contiguous()
        np.testing.assert_array_equal(fast.numpy(), plain.numpy())


class _Fixed(A.T.Augmentation):
    def __init__(self, tfm):
        super().__init__()
        self.tfm = tfm

    def get_transform(self, image):
        return self.tfm
