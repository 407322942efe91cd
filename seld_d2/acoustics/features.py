"""Acoustic features for the detector: 4-ch wav -> UpLAM latent (T, B, 484), a per-clip cache,
and the gather of the latent onto the 360x180 canvas (SPEC §3 "Equirectangular features").

The cache holds the latent as float16 with the metadata that produced it (band layout, steering,
UpLAM checkpoint hash, sample rate, frame and sample counts, cache version); a cached file is used
only when every field matches what recomputing would use, so changing the layout or checkpoint
silently never mixes features.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_open
from .audio import SAMPLE_RATE, AudioError, WavInfo, check_wav, read_wav
from .geometry import CANVAS_HEIGHT, CANVAS_WIDTH, canvas_nearest_index, fibonacci_grid
from .uplam import UpLAM, checkpoint_hash
from .visibility import BandSpec, band_name, visibilities

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_SUFFIX = ".npz"


def latent_to_canvas(latent: np.ndarray | torch.Tensor, index: np.ndarray | torch.Tensor):
    """Expand grid maps (..., N) to the canvas by nearest-direction gather -> (..., H, W).

    ``index`` is :func:`~seld_d2.acoustics.geometry.canvas_nearest_index` (H, W); numpy and
    torch inputs both work (torch stays on its device).
    """
    if isinstance(latent, torch.Tensor):
        index = torch.as_tensor(index, device=latent.device)
        return latent[..., index]
    return np.asarray(latent)[..., np.asarray(index)]


class FeatureExtractor:
    """UpLAM features of 4-channel tetrahedral audio, batched, on CPU or GPU, with a file cache.

    Args:
        checkpoint: UpLAM checkpoint written by ``tools/train_uplam.py``, or the official
            baseline's ``UpLAM.pth`` (recognised by its keys); its band layout and steering are
            used. Without one the model is randomly initialised (seeded), which is
            only useful for plumbing tests; a loud warning says so.
        bands, steering: layout and steering of a randomly initialised model (checked for
            consistency when a checkpoint is given; ``bands`` names the layout of a baseline-format
            checkpoint, which records none: default the baseline's linear one for its band count).
        device: torch device for the model.
        batch_size: frames per model call.
        dtype: model precision (float32 is the fast path; see ``tools/uplam_precision.py``).
        seed: seed of the random initialisation.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        bands: BandSpec | None = None,
        steering: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise FileNotFoundError(f"{checkpoint}: UpLAM checkpoint not found")
            self.model = UpLAM.from_checkpoint(checkpoint, map_location=self.device, dtype=dtype, bands=bands)
            self.checkpoint_id = checkpoint_hash(checkpoint)
            if bands is not None and band_name(bands) != self.model.band_name:
                raise ValueError(
                    f"{checkpoint}: trained for bands {self.model.band_name}, "
                    f"but {band_name(bands)} was asked for"
                )
            if steering is not None and steering != self.model.steering:
                raise ValueError(
                    f"{checkpoint}: trained with {self.model.steering} steering, but {steering} was asked for"
                )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = UpLAM(bands or "mel16", steering or "fixed", dtype=dtype)
            self.model.to(self.device).eval()
            self.checkpoint_id = f"random-init-seed{seed}"
            logger.warning(
                "\n" + "!" * 78 + "\n!! No UpLAM checkpoint given: features come from a RANDOMLY "
                "INITIALISED UpLAM\n!! (seed %d). They carry little spatial information; train one "
                "with tools/train_uplam.py.\n" + "!" * 78,
                seed,
            )
        self.bands = self.model.band_centres
        self.num_bands = self.model.num_bands
        self._canvas_index: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg, device: str | torch.device | None = None) -> FeatureExtractor:
        """Build from a config prepared by ``seld_d2.config.add_seld_config``."""
        a = cfg.SELD.AUDIO
        return cls(
            checkpoint=a.UPLAM_CHECKPOINT or None,
            bands=None if a.UPLAM_CHECKPOINT else a.BANDS,
            steering=None if a.UPLAM_CHECKPOINT else a.STEERING,
            device=device or cfg.MODEL.DEVICE,
            batch_size=a.FEATURE_BATCH_SIZE,
            dtype=torch.float64 if a.FEATURE_DTYPE == "float64" else torch.float32,
            seed=a.RANDOM_INIT_SEED,
        )

    # ---------------------------------------------------------------------------------------
    # computation
    # ---------------------------------------------------------------------------------------

    def latent_from_audio(self, audio: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
        """float (num_samples, 4) audio -> float32 latent (T, B, 484), T complete 100 ms frames."""
        if audio.ndim != 2 or audio.shape[1] != 4:
            raise ValueError(f"expected 4-channel audio (num_samples, 4), got shape {audio.shape}")
        S = visibilities(audio, fs, self.bands, dtype=np.complex64)
        return self.latent_from_visibilities(S)

    @torch.inference_mode()
    def latent_from_visibilities(self, S: np.ndarray) -> np.ndarray:
        """complex (T, B, 4, 4) visibilities -> float32 latent (T, B, 484), in batches."""
        out = np.empty((S.shape[0], self.num_bands, self.model.lam.tau.shape[-1]), dtype=np.float32)
        for start in range(0, S.shape[0], self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(S[start : start + self.batch_size]))
            x = self.model.latent(chunk.to(self.device))
            out[start : start + len(chunk)] = x.float().cpu().numpy()
        return out

    def extract_file(self, wav_path: str | os.PathLike) -> np.ndarray:
        """Read, check and featurise one 4-ch wav -> latent (T, B, 484); raises AudioError."""
        audio, info = read_wav(wav_path, channels=4, sample_rate=SAMPLE_RATE)
        return self.latent_from_audio(audio, info.sample_rate)

    # ---------------------------------------------------------------------------------------
    # cache
    # ---------------------------------------------------------------------------------------

    def cache_metadata(self, info: WavInfo) -> dict[str, Any]:
        """Everything that determines a clip's features; a cache entry is valid iff it matches."""
        return {
            "version": CACHE_VERSION,
            "bands": self.model.band_name,
            "band_centres": [round(f, 3) for f in self.bands],
            "steering": self.model.steering,
            "checkpoint": self.checkpoint_id,
            "sample_rate": info.sample_rate,
            "num_samples": info.num_samples,
            "num_frames": info.num_frames,
            "grid_size": int(self.model.lam.tau.shape[-1]),
        }

    def is_cached(self, wav_path: str | os.PathLike, cache_path: str | os.PathLike) -> bool:
        """Whether ``cache_path`` holds current features of ``wav_path`` (header checked only)."""
        info = check_wav(wav_path, channels=4)
        return read_cache_metadata(cache_path) == self.cache_metadata(info)

    def cached(self, wav_path: str | os.PathLike, cache_path: str | os.PathLike) -> np.ndarray:
        """Latent of a clip from its cache if current, else computed and cached (float16).

        Returns float32 (T, B, 484) equal to what the cache holds, so cached and fresh runs
        give the same numbers.
        """
        info = check_wav(wav_path, channels=4)
        meta = self.cache_metadata(info)
        if read_cache_metadata(cache_path) == meta:
            return load_cached_latent(cache_path)
        latent = self.extract_file(wav_path).astype(np.float16)
        write_cache(cache_path, latent, meta)
        return latent.astype(np.float32)

    # ---------------------------------------------------------------------------------------
    # canvas
    # ---------------------------------------------------------------------------------------

    @property
    def canvas_index(self) -> np.ndarray:
        """Nearest grid direction of every 360x180 canvas pixel, (180, 360)."""
        if self._canvas_index is None:
            self._canvas_index = canvas_nearest_index(fibonacci_grid(), CANVAS_WIDTH, CANVAS_HEIGHT)
        return self._canvas_index

    def to_canvas(self, latent: np.ndarray | torch.Tensor):
        """(..., B, 484) latent -> (..., B, 180, 360) acoustic planes of the detector input."""
        return latent_to_canvas(latent, self.canvas_index)


def write_cache(path: str | os.PathLike, latent: np.ndarray, meta: dict[str, Any]) -> None:
    """Atomically write a float16 latent (T, B, N) and its metadata to an ``.npz`` file."""
    if latent.shape[0] != meta["num_frames"]:
        raise ValueError(f"{path}: latent has {latent.shape[0]} frames, metadata says {meta['num_frames']}")
    with atomic_open(path, "wb") as f:
        np.savez(f, latent=latent.astype(np.float16), meta=np.array(json.dumps(meta, sort_keys=True)))


def read_cache_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """Metadata of a cache file, or None if it is missing or unreadable (then it is recomputed)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except Exception:  # a damaged cache file is simply stale
        return None


def load_cached_latent(path: str | os.PathLike) -> np.ndarray:
    """The cached latent as float32 (T, B, N)."""
    with np.load(path, allow_pickle=False) as z:
        return z["latent"].astype(np.float32)


def cache_path_for(cache_dir: str | os.PathLike, wav_path: str | os.PathLike) -> Path:
    """``<cache_dir>/<seq>.npz`` for ``.../<seq>.wav``."""
    return Path(cache_dir) / (Path(wav_path).stem + CACHE_SUFFIX)


__all__ = [
    "AudioError",
    "FeatureExtractor",
    "cache_path_for",
    "latent_to_canvas",
    "load_cached_latent",
    "read_cache_metadata",
    "write_cache",
]
