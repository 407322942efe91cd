"""Audiovisual augmentations as Detectron2 ``Augmentation``/``Transform`` classes (SPEC §7).

Images here are float32 (H, W, C) arrays with C = 3 RGB channels (0-255) followed by the
acoustic planes; energy maps are (H, W) arrays and go through ``apply_segmentation``. The
canvas is equirectangular, so azimuth rotation is a circular roll and the azimuth mirror keeps
column 0 (az 180) and column W/2 (az 0) in place: column i -> (W - i) mod W.
"""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
NUM_RGB = 3


class AzimuthRollTransform(Transform):
    """Rotate the scene in azimuth by ``shift`` pixels: a circular roll along x."""

    def __init__(self, shift: int, width: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.roll(img, self.shift, axis=1)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return np.roll(segmentation, self.shift, axis=-1)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] = np.mod(coords[:, 0] + self.shift, self.width)
        return coords

    def inverse(self) -> Transform:
        return AzimuthRollTransform(-self.shift, self.width)


class AzimuthFlipTransform(Transform):
    """Mirror the azimuth (az -> -az): column i -> (W - i) mod W, on images and maps."""

    def __init__(self, width: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.roll(np.flip(img, axis=1), 1, axis=1)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return np.roll(np.flip(segmentation, axis=-1), 1, axis=-1)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] = np.mod(self.width - coords[:, 0], self.width)
        return coords

    def inverse(self) -> Transform:
        return self


class _RGBOnlyTransform(Transform):
    """Base for photometric transforms that touch the RGB channels only."""

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = np.array(img, dtype=np.float32, copy=True)
        out[..., :NUM_RGB] = self.apply_rgb(out[..., :NUM_RGB])
        return out

    def apply_rgb(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class RGBJitterTransform(_RGBOnlyTransform):
    """Brightness, contrast and saturation factors (1 = unchanged) on the 0-255 RGB channels."""

    def __init__(self, brightness: float, contrast: float, saturation: float):
        super().__init__()
        self._set_attributes(locals())

    def apply_rgb(self, rgb: np.ndarray) -> np.ndarray:
        rgb = rgb * self.brightness
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        rgb = (rgb - grey.mean()) * self.contrast + grey.mean()
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        rgb = (rgb - grey[..., None]) * self.saturation + grey[..., None]
        return np.clip(rgb, 0.0, 255.0)


class RGBDropoutTransform(_RGBOnlyTransform):
    """Modality dropout: the RGB channels become the ImageNet mean colour."""

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN_RGB):
        super().__init__()
        self._set_attributes(locals())

    def apply_rgb(self, rgb: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.mean, np.float32), rgb.shape).copy()


class BandMaskTransform(Transform):
    """Zero the given acoustic bands (indices into the acoustic planes, not the RGB channels)."""

    def __init__(self, bands: tuple[int, ...]):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = np.array(img, dtype=np.float32, copy=True)
        out[..., [NUM_RGB + b for b in self.bands]] = 0.0
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


class RandomAzimuthRotation(T.Augmentation):
    """Uniformly random azimuth rotation (circular roll by 0..W-1 pixels)."""

    def get_transform(self, image: np.ndarray) -> Transform:
        width = image.shape[1]
        return AzimuthRollTransform(int(np.random.randint(width)), width)


class RandomAzimuthFlip(T.Augmentation):
    """Azimuth mirror with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        super().__init__()
        self.prob = prob

    def get_transform(self, image: np.ndarray) -> Transform:
        return AzimuthFlipTransform(image.shape[1]) if np.random.rand() < self.prob else NoOpTransform()


class RandomRGBJitter(T.Augmentation):
    """With probability ``prob``, brightness/contrast/saturation factors in ``1 +- strength``."""

    def __init__(self, prob: float = 0.8, strength: float = 0.4):
        super().__init__()
        self.prob, self.strength = prob, strength

    def get_transform(self, image: np.ndarray) -> Transform:
        if np.random.rand() >= self.prob:
            return NoOpTransform()
        b, c, s = np.random.uniform(1 - self.strength, 1 + self.strength, size=3)
        return RGBJitterTransform(float(b), float(c), float(s))


class RandomRGBDropout(T.Augmentation):
    """RGB replaced by the ImageNet mean with probability ``prob``."""

    def __init__(self, prob: float = 0.15):
        super().__init__()
        self.prob = prob

    def get_transform(self, image: np.ndarray) -> Transform:
        return RGBDropoutTransform() if np.random.rand() < self.prob else NoOpTransform()


class RandomBandMask(T.Augmentation):
    """Zero between 0 and ``max_bands`` randomly chosen acoustic bands."""

    def __init__(self, max_bands: int = 4):
        super().__init__()
        self.max_bands = max_bands

    def get_transform(self, image: np.ndarray) -> Transform:
        num_acoustic = image.shape[2] - NUM_RGB
        k = int(np.random.randint(0, min(self.max_bands, num_acoustic) + 1))
        if k == 0:
            return NoOpTransform()
        return BandMaskTransform(
            tuple(int(b) for b in np.sort(np.random.choice(num_acoustic, k, replace=False)))
        )


def build_seld_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """The report's training augmentations from ``cfg.SELD.AUG`` (none at test time)."""
    if not is_train:
        return []
    a = cfg.SELD.AUG
    augs: list[T.Augmentation] = []
    if a.AZIMUTH_ROTATION:
        augs.append(RandomAzimuthRotation())
    if a.FLIP_PROB > 0:
        augs.append(RandomAzimuthFlip(a.FLIP_PROB))
    if a.RGB_JITTER_PROB > 0:
        augs.append(RandomRGBJitter(a.RGB_JITTER_PROB, a.RGB_JITTER_STRENGTH))
    if a.RGB_DROPOUT_PROB > 0:
        augs.append(RandomRGBDropout(a.RGB_DROPOUT_PROB))
    if a.MAX_MASKED_BANDS > 0:
        augs.append(RandomBandMask(a.MAX_MASKED_BANDS))
    return augs
