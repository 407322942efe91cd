"""UpLAM's self-supervised training data (SPEC §3): every 100 ms frame of a 32-channel em32
recording ``<root>/eigen_dev/<split>/*.wav`` is one example, its input the visibilities of the 4
tetrahedral channels (normalised on their own, exactly as at inference), its target the
visibilities of all 32.

The training stream is a function of (seed, epoch) and the clip list only, so the batches after
iteration k are the same whether or not training was interrupted at k (exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..acoustics.audio import SAMPLE_RATE, AudioError, read_wav
from ..acoustics.geometry import TETRA_CHANNELS
from ..acoustics.visibility import BandSpec, frame_count, visibilities

NUM_CHANNELS = 32


@dataclass(frozen=True)
class Clip:
    """A usable recording: its path, complete 100 ms frames, and its true-event table
    (``events_dev/<split>/<seq>.csv``) when there is one."""

    path: Path
    frames: int
    events: Path | None = None


def read_clip(path: str | Path) -> np.ndarray:
    """Load and check one 32-ch recording, float32 (num_samples, 32); raises AudioError."""
    return read_wav(path, channels=NUM_CHANNELS, sample_rate=SAMPLE_RATE)[0]


def scan_splits(
    root: str | Path, splits: Sequence[str], max_clips: int = 0, report: Callable[[str], None] = print
) -> tuple[list[Clip], int]:
    """Check every wav of the splits (at most ``max_clips`` per split, by name; 0 = all) and
    ``report`` each unusable one in one line. Returns (usable clips, number of unusable ones)."""
    root = Path(root)
    clips, bad = [], 0
    for split in splits:
        paths = sorted((root / "eigen_dev" / split).glob("*.wav"))[: max_clips or None]
        for path in tqdm(paths, desc=f"checking {split}", unit="clip", leave=False):
            try:
                audio = read_clip(path)
            except AudioError as e:
                report(f"skipping {e}")
                bad += 1
                continue
            events = root / "events_dev" / split / f"{path.stem}.csv"
            clips.append(
                Clip(path, frame_count(len(audio), SAMPLE_RATE), events if events.is_file() else None)
            )
    return clips, bad


def clip_visibilities(audio: np.ndarray, bands: BandSpec) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) visibilities of a recording: complex64 (T, B, 4, 4) of the tetrahedral
    channels and (T, B, 32, 32) of all 32, each normalised on its own (computed in complex128,
    stored in complex64 to halve the memory of the 32x32 targets)."""
    S4 = visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, bands)
    S32 = visibilities(audio, SAMPLE_RATE, bands)
    return S4.astype(np.complex64), S32.astype(np.complex64)


class FrameBatches:
    """Endless training batches ``(S4 complex64 (b, B, 4, 4), S32 complex64 (b, B, 32, 32))``.

    Epoch e draws from ``np.random.default_rng([seed, e])``: the clips in random order, ``group``
    clips at a time whose frames are shuffled together; the batches are consecutive
    ``batch_size`` frames of that stream (a batch may span two groups, and the last one of an
    epoch may be smaller), so an epoch is always :attr:`iters_per_epoch` batches. Iteration starts
    at batch ``start_iter``; the groups before it are skipped without being read.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        bands: BandSpec,
        batch_size: int,
        group: int,
        seed: int,
        start_iter: int = 0,
    ):
        if not clips:
            raise ValueError("no training clips")
        self.clips, self.bands = list(clips), bands
        self.batch_size, self.group, self.seed, self.start_iter = batch_size, group, seed, start_iter
        self.num_frames = sum(c.frames for c in self.clips)

    @property
    def iters_per_epoch(self) -> int:
        return math.ceil(self.num_frames / self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        it = self.start_iter
        while True:
            epoch, done = divmod(it, self.iters_per_epoch)
            yield from self._epoch(epoch, skip=done * self.batch_size)
            it = (epoch + 1) * self.iters_per_epoch

    def _epoch(self, epoch: int, skip: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.clips))
        carry: tuple[np.ndarray, np.ndarray] | None = None
        position = 0  # frames of this epoch's stream before the current group
        for start in range(0, len(order), self.group):
            group = [self.clips[i] for i in order[start : start + self.group]]
            n = sum(c.frames for c in group)
            perm = rng.permutation(n)  # drawn for skipped groups too: the stream stays the same
            if position + n <= skip:
                position += n
                continue
            pairs = [clip_visibilities(read_clip(c.path), self.bands) for c in group]
            S4 = np.concatenate([p[0] for p in pairs])
            S32 = np.concatenate([p[1] for p in pairs])
            del pairs
            if len(S4) != n:
                raise RuntimeError(f"{len(S4)} visibility frames where the clips have {n}")
            keep = perm[max(0, skip - position) :]
            position += n
            S4, S32 = S4[keep], S32[keep]
            if carry is not None:
                S4, S32 = np.concatenate([carry[0], S4]), np.concatenate([carry[1], S32])
            full = len(S4) - len(S4) % self.batch_size
            for b in range(0, full, self.batch_size):
                yield S4[b : b + self.batch_size], S32[b : b + self.batch_size]
            carry = (S4[full:], S32[full:]) if full < len(S4) else None
        if carry is not None:
            yield carry
