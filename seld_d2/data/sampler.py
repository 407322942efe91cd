"""Class-balanced frame sampling (SPEC §7): frames are drawn with replacement, each with the
largest inverse-frequency weight of the classes it contains (capped), so rare classes are seen
far more often; an "epoch" is a fixed number of drawn frames."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from .classes import NUM_CLASSES


def class_frequencies(records: Sequence[dict], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Number of training annotations (not ``iscrowd``) of each class over the records, (num_classes,)."""
    counts = np.zeros(num_classes, np.int64)
    for r in records:
        for a in r.get("annotations", ()):
            if not a.get("iscrowd", 0):  # annotations that train no instance are not counted
                counts[a["category_id"]] += 1
    return counts


def class_weights(counts: np.ndarray, cap: float = 30.0) -> np.ndarray:
    """Inverse-frequency weights relative to the most frequent class, capped: ``min(max(n) / n_c,
    cap)``; classes never seen get the cap."""
    counts = np.asarray(counts, np.float64)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, top / np.maximum(counts, 1), np.inf)
    return np.minimum(w, cap)


def frame_weights(records: Sequence[dict], weights: np.ndarray) -> np.ndarray:
    """Per-frame sampling weight: the largest weight among the frame's classes (1 for frames
    without events), (len(records),)."""
    out = np.ones(len(records), np.float64)
    for i, r in enumerate(records):
        cats = [a["category_id"] for a in r.get("annotations", ()) if not a.get("iscrowd", 0)]
        if cats:
            out[i] = weights[cats].max()
    return out


class ClassBalancedFrameSampler(Sampler[int]):
    """Infinite stream of record indices drawn with replacement in proportion to
    :func:`frame_weights` (Detectron2's trainers expect infinite samplers). Each process of a
    distributed run draws its own share of the same seeded stream."""

    def __init__(
        self,
        records: Sequence[dict],
        *,
        cap: float = 30.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        chunk: int = 4096,
    ):
        self.weights = frame_weights(records, class_weights(class_frequencies(records), cap))
        self.probs = torch.as_tensor(self.weights / self.weights.sum(), dtype=torch.float64)
        self.seed, self.rank, self.world_size, self.chunk = seed, rank, world_size, chunk

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        stream = itertools.chain.from_iterable(
            torch.multinomial(self.probs, self.chunk, replacement=True, generator=g).tolist()
            for _ in itertools.count()
        )
        return itertools.islice(stream, self.rank, None, self.world_size)


class SequentialFrameSampler(Sampler[int]):
    """Infinite stream cycling over every record in a seeded shuffled order per pass (the
    ``FRAMES_PER_EPOCH = "all"`` setting without class balancing)."""

    def __init__(self, size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        stream = itertools.chain.from_iterable(
            torch.randperm(self.size, generator=g).tolist() for _ in itertools.count()
        )
        return itertools.islice(stream, self.rank, None, self.world_size)
