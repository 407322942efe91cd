"""Reading and checking the challenge's wav files. Every problem raises :class:`AudioError` whose
message is one line naming the file and what is wrong with it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..utils.errors import DatasetError
from .visibility import FRAME_RATE

SAMPLE_RATE = 24000


class AudioError(DatasetError):
    """A wav file that cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""


@dataclass(frozen=True)
class WavInfo:
    """Header facts of a checked wav file."""

    path: str
    sample_rate: int
    channels: int
    num_samples: int

    @property
    def num_frames(self) -> int:
        """Complete 100 ms frames in the file."""
        return self.num_samples // (self.sample_rate // FRAME_RATE)


def wav_data_shortfall(path: str | os.PathLike) -> tuple[int, int] | None:
    """(bytes present, bytes declared) of a RIFF/RIFX WAVE file's data chunk when the file ends
    before the chunk does (a truncated copy or download), else None. libsndfile reads such a
    file without complaint, as the shorter clip it now is. Chunk sizes 0 and 0xFFFFFFFF (written
    by streaming writers that never came back to fix them) are not checked."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:] != b"WAVE":
            return None
        layout = "<4sI" if head[:4] == b"RIFF" else ">4sI"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack(layout, f.read(8))
            if chunk == b"data":
                present = size - pos - 8
                if length in (0, 0xFFFFFFFF) or present >= length:
                    return None
                return present, length
            pos += 8 + length + (length & 1)  # chunks are padded to even sizes
    return None


def check_wav(
    path: str | os.PathLike, channels: int | tuple[int, ...] = 4, sample_rate: int = SAMPLE_RATE
) -> WavInfo:
    """Check a wav file: readable, not empty or truncated (its data chunk as long as its header
    says), the expected sample rate and channel count, at least one 100 ms frame long. Returns
    its :class:`WavInfo`; raises :class:`AudioError`."""
    if not os.path.isfile(path):
        raise AudioError(path, "file not found")
    try:
        shortfall = wav_data_shortfall(path)
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except OSError as err:
        raise AudioError(path, f"cannot be read ({err.strerror or err})") from None
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    if shortfall is not None:
        present, declared = shortfall
        raise AudioError(
            path,
            f"truncated: its data chunk holds {present} of the {declared} bytes its header declares "
            f"({100 * present / declared:.1f}%)",
        )
    try:
        info = sf.info(os.fspath(path))
    except Exception as err:  # soundfile raises several types for unreadable files
        raise AudioError(path, f"not a readable audio file ({err})") from None
    allowed = (channels,) if isinstance(channels, int) else tuple(channels)
    if info.samplerate != sample_rate:
        raise AudioError(path, f"sample rate is {info.samplerate} Hz, expected {sample_rate} Hz")
    if info.channels not in allowed:
        want = " or ".join(str(c) for c in allowed)
        raise AudioError(path, f"has {info.channels} channels, expected {want}")
    min_len = sample_rate // FRAME_RATE
    if info.frames < min_len:
        raise AudioError(
            path, f"too short: {info.frames} samples, need at least {min_len} (one 100 ms frame)"
        )
    return WavInfo(os.fspath(path), info.samplerate, info.channels, info.frames)


def read_wav(
    path: str | os.PathLike, channels: int | tuple[int, ...] = 4, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, WavInfo]:
    """Read and check a wav file -> (float32 audio (num_samples, channels), :class:`WavInfo`).

    Non-finite samples (NaN/inf, possible in float wavs) are an error, never silently zeroed.
    """
    info = check_wav(path, channels, sample_rate)
    try:
        audio, _ = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"could not decode audio ({err})") from None
    bad = ~np.isfinite(audio)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise AudioError(path, f"contains {int(bad.sum())} NaN/inf samples (first at sample {first})")
    return audio, info
