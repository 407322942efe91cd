import numpy as np
import pytest
from detectron2.data import transforms as T

from seld_d2.data import augment as A

RNG = np.random.default_rng(0)


def image(channels: int = 19) -> np.ndarray:
    return RNG.uniform(0, 255, size=(180, 360, channels)).astype(np.float32)


def test_roll_by_full_width_is_identity_and_inverse_undoes():
    img, m = image(), RNG.random((180, 360)).astype(np.float32)
    full = A.AzimuthRollTransform(360, 360)
    np.testing.assert_array_equal(full.apply_image(img), img)
    np.testing.assert_array_equal(full.apply_segmentation(m), m)
    t = A.AzimuthRollTransform(97, 360)
    np.testing.assert_array_equal(t.inverse().apply_image(t.apply_image(img)), img)
    np.testing.assert_allclose(t.apply_coords(np.array([[300.0, 5.0]])), [[37.0, 5.0]])


def test_flip_mirrors_azimuth_and_twice_is_identity():
    img = image()
    f = A.AzimuthFlipTransform(360)
    np.testing.assert_array_equal(f.apply_image(f.apply_image(img)), img)
    out = f.apply_image(img)
    # az -> -az: column i -> (360 - i) mod 360; az 0 (x = 180) and az 180 (x = 0) stay.
    np.testing.assert_array_equal(out[:, 180], img[:, 180])
    np.testing.assert_array_equal(out[:, 0], img[:, 0])
    np.testing.assert_array_equal(out[:, 90], img[:, 270])
    np.testing.assert_allclose(
        f.apply_coords(np.array([[90.0, 3.0], [0.0, 1.0]])), [[270.0, 3.0], [0.0, 1.0]]
    )


def test_band_masking_touches_only_acoustic_planes():
    aug = A.RandomBandMask(4)
    img = image() + 1.0  # no zeros to begin with
    counts = set()
    for _ in range(300):
        out = aug.get_transform(img).apply_image(img)
        np.testing.assert_array_equal(out[..., :3], img[..., :3])
        zeroed = [b for b in range(16) if not out[..., 3 + b].any()]
        changed = [b for b in range(16) if not np.array_equal(out[..., 3 + b], img[..., 3 + b])]
        assert zeroed == changed and 0 <= len(zeroed) <= 4
        counts.add(len(zeroed))
    assert counts == {0, 1, 2, 3, 4}


def test_rgb_dropout_and_jitter_leave_acoustic_planes():
    img = image()
    out = A.RGBDropoutTransform().apply_image(img)
    np.testing.assert_allclose(out[0, 0, :3], A.IMAGENET_MEAN_RGB, rtol=1e-6)
    np.testing.assert_array_equal(out[..., 3:], img[..., 3:])
    out = A.RGBJitterTransform(1.2, 0.8, 1.3).apply_image(img)
    np.testing.assert_array_equal(out[..., 3:], img[..., 3:])
    assert not np.array_equal(out[..., :3], img[..., :3])
    assert out[..., :3].min() >= 0 and out[..., :3].max() <= 255


@pytest.mark.parametrize("prob,expected", [(0.0, 0.0), (1.0, 1.0)])
def test_probabilities_are_respected(prob, expected):
    img = image()
    for aug in (A.RandomAzimuthFlip(prob), A.RandomRGBDropout(prob), A.RandomRGBJitter(prob)):
        hits = [not isinstance(aug.get_transform(img), T.NoOpTransform) for _ in range(50)]
        assert np.mean(hits) == expected


def test_augmentations_compose_with_detectron2s():
    img = image()
    augs = T.AugmentationList([A.RandomAzimuthRotation(), T.RandomBrightness(0.9, 1.1), A.RandomBandMask(2)])
    aug_input = T.AugInput(img)
    tfm = augs(aug_input)
    assert aug_input.image.shape == img.shape
    assert isinstance(tfm, T.TransformList)
