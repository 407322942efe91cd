"""``SeldDatasetMapper``: a frame record -> the 19-channel model input and its targets.

Input image: RGB frame (0-255) followed by the acoustic planes of that frame (the cached UpLAM
latent gathered onto the 360x180 canvas), as a float32 tensor (3 + B, H, W). Targets, in
training: ``Instances`` with ``gt_boxes``, ``gt_classes``, ``gt_energy`` (N, H, W) energy maps,
``gt_distance`` (cm) and ``gt_instance_ids``; and ``fullmap`` (H, W), the per-pixel maximum of
the instance maps. Instances that cross the azimuth seam (after augmentation, or as labelled)
are split into one instance per side, so every box is a plain box on the canvas.
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from torch.utils.data import DataLoader, Dataset

from ..acoustics.features import cache_kind, latent_to_canvas, load_cache
from ..acoustics.geometry import CANVAS_HEIGHT, CANVAS_WIDTH, canvas_nearest_index, fibonacci_grid
from .augment import build_seld_augmentations
from .datasets import DatasetError, load_frame

logger = logging.getLogger(__name__)


def render_energy(
    polygons: list[np.ndarray], height: int = CANVAS_HEIGHT, width: int = CANVAS_WIDTH
) -> np.ndarray:
    """An annotation's [x, y, v] triplets as an (H, W) float32 map (v at each listed pixel; x = W
    wraps to column 0, y = H is clamped to the last row)."""
    out = np.zeros((height, width), np.float32)
    pts = np.concatenate(polygons)
    xs = np.mod(np.round(pts[:, 0]).astype(np.int64), width)
    ys = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, height - 1)
    np.maximum.at(out, (ys, xs), pts[:, 2].astype(np.float32))
    return out


def split_at_seam(energy: np.ndarray) -> list[np.ndarray]:
    """Split a map whose support crosses the azimuth seam into its two sides; others unchanged.

    The support crosses the seam when it touches both the first and the last column without
    covering every column; the part connected (along x) to column 0 becomes one map and the
    rest the other, so the two maps sum to the original.
    """
    cols = energy.any(axis=0)
    if not (cols[0] and cols[-1]) or cols.all():
        return [energy]
    first_gap = int(np.argmin(cols))  # first empty column after the run touching column 0
    left = np.zeros_like(energy)
    left[:, :first_gap] = energy[:, :first_gap]
    return [left, energy - left]


def support_box(energy: np.ndarray) -> list[float] | None:
    """Tight XYXY box of a map's non-zero pixels (pixel-inclusive), or None if empty."""
    rows, cols = np.flatnonzero(energy.any(axis=1)), np.flatnonzero(energy.any(axis=0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


class SeldDatasetMapper:
    """Frame record (see ``seld_d2.data.datasets``) -> model input dict.

    Args:
        is_train: build targets (and keep annotations) when True.
        augmentations: Detectron2 augmentations applied to the 19-channel image and the maps.
        num_bands: acoustic planes expected in the feature cache.
        feature_cache_size: clips whose latent is kept in memory (per worker).
        feature_kind: the feature kind the cache must hold (``uplam``, ``srp``; its metadata
            says), so that a model is never fed the other kind; None accepts any.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[T.Augmentation],
        num_bands: int = 16,
        feature_cache_size: int = 64,
        feature_kind: str | None = None,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.num_bands = num_bands
        self.feature_cache_size = feature_cache_size
        self.feature_kind = feature_kind
        self._latents: OrderedDict[str, np.ndarray] = OrderedDict()
        self._canvas_index = canvas_nearest_index(fibonacci_grid(), CANVAS_WIDTH, CANVAS_HEIGHT)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": build_seld_augmentations(cfg, is_train),
            "num_bands": cfg.MODEL.SELD.NUM_ACOUSTIC,
            "feature_cache_size": cfg.SELD.DATA.FEATURE_CACHE_CLIPS,
            "feature_kind": cfg.SELD.AUDIO.FEATURE_KIND,
        }

    def _latent(self, feature_file: str | None) -> np.ndarray:
        """The clip's cached latent (T, B, 484), from memory when recently used."""
        if feature_file is None:
            raise FileNotFoundError("record has no feature_file; register the dataset with a feature cache")
        if feature_file in self._latents:
            self._latents.move_to_end(feature_file)
            return self._latents[feature_file]
        try:
            latent, meta = load_cache(feature_file)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{feature_file}: acoustic features not found (run tools/extract_features.py on this split)"
            ) from None
        kind = cache_kind(meta)
        if self.feature_kind is not None and kind != self.feature_kind:
            raise ValueError(
                f"{feature_file}: holds {kind} features, but SELD.AUDIO.FEATURE_KIND is {self.feature_kind} "
                f"(run tools/extract_features.py --kind {self.feature_kind} on this split)"
            )
        if latent.ndim != 3 or latent.shape[1] != self.num_bands:
            raise ValueError(
                f"{feature_file}: features have shape {latent.shape}, expected (T, {self.num_bands}, N)"
            )
        self._latents[feature_file] = latent
        if len(self._latents) > self.feature_cache_size:
            self._latents.popitem(last=False)
        return latent

    def frame_latent(self, record: dict) -> np.ndarray:
        """The frame's latent (B, 484) from the clip's cache."""
        latent = self._latent(record.get("feature_file"))
        return latent[min(record["frame_index"], latent.shape[0] - 1)]  # video may run a frame past audio

    def acoustic_planes(self, record: dict) -> np.ndarray:
        """The frame's acoustic planes on the canvas, float32 (H, W, B)."""
        planes = latent_to_canvas(self.frame_latent(record), self._canvas_index)
        return np.ascontiguousarray(np.moveaxis(planes, 0, -1))

    def chw_image(self, record: dict) -> np.ndarray:
        """The frame's un-augmented (3 + B, H, W) float32 input, written in place: RGB, then the
        acoustic planes gathered straight into their channels (no HWC intermediate)."""
        rgb = load_frame(record["file_name"])
        latent = self.frame_latent(record).astype(np.float32)
        image = np.empty((3 + len(latent), *rgb.shape[:2]), np.float32)
        image[:3] = rgb.transpose(2, 0, 1)
        np.take(latent, self._canvas_index, axis=1, out=image[3:], mode="clip")
        return image

    def __call__(self, record: dict) -> dict:
        record = copy.copy(record)
        if not self.is_train and not self.augmentations.augs:
            record.pop("annotations", None)
            record["image"] = torch.from_numpy(self.chw_image(record))
            return record
        rgb = load_frame(record["file_name"]).astype(np.float32)
        image = np.concatenate([rgb, self.acoustic_planes(record)], axis=-1)
        annos = record.pop("annotations", [])
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        height, width = image.shape[:2]
        record["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            return record

        maps, classes, distances, ids = [], [], [], []
        for a in annos:
            if a.get("iscrowd", 0):  # no map, or a repeated copy: nothing (more) to train
                continue
            energy = transforms.apply_segmentation(render_energy(a["segmentation"], height, width))
            for part in split_at_seam(energy):
                if part.any():
                    maps.append(part)
                    classes.append(a["category_id"])
                    distances.append(a["distance"])
                    ids.append(a.get("instance_id", -1))
        inst = Instances((height, width))
        energy = np.stack(maps) if maps else np.zeros((0, height, width), np.float32)
        inst.gt_boxes = Boxes(
            torch.tensor([support_box(m) for m in maps], dtype=torch.float32).reshape(-1, 4)
        )
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        inst.gt_energy = torch.from_numpy(energy)
        inst.gt_distance = torch.tensor(distances, dtype=torch.float32)
        inst.gt_instance_ids = torch.tensor(ids, dtype=torch.int64)
        record["instances"] = inst
        record["fullmap"] = torch.from_numpy(
            energy.max(axis=0) if maps else np.zeros((height, width), np.float32)
        )
        return record


# Input problems a record can have (unreadable frame, missing or malformed feature cache).
CARRIED_ERRORS = (DatasetError, OSError, ValueError)


@dataclass
class LoadFailure:
    """A record the mapper could not map, returned by the dataset instead of raising: a
    DataLoader re-raises a worker's exception as ``ExceptionClass(traceback text)``, which
    fails for exceptions with several arguments (then a RuntimeError) and is never one line.
    ``error`` is the original exception, pickled across the worker boundary."""

    file_name: str | None
    error: Exception


def map_or_failure(mapper, record: dict):
    """``mapper(record)``, or a :class:`LoadFailure` for the input problems of CARRIED_ERRORS."""
    try:
        return mapper(record)
    except CARRIED_ERRORS as err:
        try:
            pickle.loads(pickle.dumps(err))
        except Exception:  # a library exception that cannot cross the process boundary as is
            err = RuntimeError(f"{type(err).__name__}: {err}")
        return LoadFailure(record.get("file_name"), err)


class MappedRecords(Dataset):
    """Frame records mapped on access by ``mapper`` (e.g. a ``SeldDatasetMapper``); a record
    that cannot be read is a :class:`LoadFailure`."""

    def __init__(self, records: list[dict], mapper):
        self.records, self.mapper = records, mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        return map_or_failure(self.mapper, self.records[i])


def list_collate(batch: list[dict]) -> list[dict]:
    """Detectron2 models take a batch as the list of its input dicts."""
    return batch


class RaisingLoader:
    """The batches of ``loader``; the first :class:`LoadFailure` in them is raised here, in the
    calling process, as its original exception (one line naming the file)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self.loader:
            for x in batch:
                if isinstance(x, LoadFailure):
                    raise x.error
            yield batch


def frame_loader(
    records: list[dict], mapper, batch_size: int, num_workers: int = 0, pin_memory: bool = False
) -> RaisingLoader:
    """The records, mapped, in order, in batches (lists of input dicts): test-time loading. A
    record that cannot be read raises its own error (e.g. ``FrameError``) in the caller."""
    return RaisingLoader(
        DataLoader(
            MappedRecords(records, mapper),
            batch_size=max(1, batch_size),
            shuffle=False,
            num_workers=num_workers,
            collate_fn=list_collate,
            pin_memory=pin_memory,
        )
    )
