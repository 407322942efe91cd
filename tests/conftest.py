"""Shared fixtures: small generated signals and wav files (never downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from seld_d2.acoustics.geometry import em32_positions
from seld_d2.acoustics.render import render_plane_wave

FS = 24000


def plane_wave_em32(az: float, el: float, seconds: float = 0.3, seed: int = 0) -> np.ndarray:
    """White noise arriving from (az, el) at the 32 em32 capsules, (num_samples, 32)."""
    rng = np.random.default_rng(seed)
    return render_plane_wave(rng.standard_normal(int(seconds * FS)), az, el, em32_positions(), FS)


def write_wav(path, audio: np.ndarray, fs: int = FS, subtype: str = "FLOAT") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, fs, subtype=subtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
