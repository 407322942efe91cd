"""Acoustic features for the detector: 4-ch wav -> per-band maps over the grid (T, B, 484), a
per-clip cache, and the gather of the maps onto the 360x180 canvas (SPEC §3 "Equirectangular
features").

Two kinds of maps (``FeatureExtractor(kind=...)``): ``uplam``, the latent of a (trained) UpLAM,
and ``srp``, classical steered response power of the 4x4 visibilities (``seld_d2.acoustics.srp``:
Bartlett, MVDR or MUSIC, one steering operator per band), the untrained baseline.

The cache holds the maps as float16 with the metadata that produced them (feature kind and SRP
method, band layout, steering, UpLAM checkpoint hash, sample rate, frame and sample counts, cache
version); a cached file is used only when every field matches what recomputing would use, so
changing the kind, layout or checkpoint silently never mixes features.
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
from .srp import SRP_METHODS, SteeredResponsePower
from .uplam import UpLAM, checkpoint_hash
from .visibility import BandSpec, band_centres, band_name, visibilities

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the metadata names the feature kind (version-1 files are UpLAM latents)
CACHE_SUFFIX = ".npz"
FEATURE_KINDS = ("uplam", "srp")


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
    """Acoustic maps of 4-channel tetrahedral audio, batched, on CPU or GPU, with a file cache.

    Args:
        kind: ``uplam`` (the latent of UpLAM) or ``srp`` (classical steered response power of the
            4x4 visibilities, no training; ``method`` picks ``bartlett``, ``mvdr`` or ``music``).
        checkpoint: UpLAM checkpoint written by ``tools/train_uplam.py``, or the official
            baseline's ``UpLAM.pth`` (recognised by its keys); its band layout and steering are
            used. Without one the model is randomly initialised (seeded), which is only useful
            for plumbing tests; a loud warning says so. Not for ``srp``.
        bands, steering: layout and steering of a randomly initialised model (checked for
            consistency when a checkpoint is given; ``bands`` names the layout of a baseline-format
            checkpoint, which records none: default the baseline's linear one for its band count);
            ``srp`` takes ``bands`` and is always steered per band.
        method: SRP method (``srp`` only).
        device: torch device for the model.
        batch_size: frames per model (or SRP) call.
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
        kind: str = "uplam",
        method: str = "bartlett",
    ):
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; use one of {FEATURE_KINDS}")
        self.kind = kind
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model: UpLAM | None = None
        self.srp: SteeredResponsePower | None = None
        self.method: str | None = None
        self._canvas_index: np.ndarray | None = None
        if kind == "srp":
            if checkpoint is not None:
                raise ValueError("a UpLAM checkpoint was given for srp features (they need none)")
            if steering not in (None, "per_band"):
                raise ValueError(f"srp features are steered per band, not {steering!r}")
            if method not in SRP_METHODS:
                raise ValueError(f"unknown SRP method {method!r}; use one of {SRP_METHODS}")
            layout = bands or "mel16"
            self.srp = SteeredResponsePower(layout, method)
            self.method, self.band_name, self.steering = method, band_name(layout), "per_band"
            self.checkpoint_id = None
            self.bands = band_centres(layout)
            self.num_bands, self.num_directions = len(self.bands), self.srp.num_directions
        else:
            self._init_uplam(checkpoint, bands, steering, dtype, seed)

    def _init_uplam(
        self, checkpoint: str | os.PathLike | None, bands: BandSpec | None, steering: str | None, dtype, seed
    ) -> None:
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
                "with tools/train_uplam.py,\n!! or use the classical maps (kind srp).\n" + "!" * 78,
                seed,
            )
        self.bands = self.model.band_centres
        self.band_name, self.steering = self.model.band_name, self.model.steering
        self.num_bands, self.num_directions = self.model.num_bands, int(self.model.lam.tau.shape[-1])

    @classmethod
    def from_config(cls, cfg, device: str | torch.device | None = None) -> dict:
        """The keyword arguments of ``FeatureExtractor(...)`` from a config prepared by
        ``seld_d2.config.add_seld_config`` (Detectron2's ``from_config`` contract; this package
        imports no Detectron2, so :func:`build_feature_extractor` does the building)."""
        a = cfg.SELD.AUDIO
        if a.FEATURE_KIND == "srp":  # UPLAM_CHECKPOINT and STEERING do not apply
            return dict(
                kind="srp",
                method=a.SRP_METHOD,
                bands=a.BANDS,
                device=device or cfg.MODEL.DEVICE,
                batch_size=a.FEATURE_BATCH_SIZE,
            )
        return dict(
            kind=a.FEATURE_KIND,
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
        """complex (T, B, 4, 4) visibilities -> float32 maps (T, B, 484), in batches."""
        out = np.empty((S.shape[0], self.num_bands, self.num_directions), dtype=np.float32)
        if self.srp is not None:
            for start in range(0, S.shape[0], self.batch_size):
                out[start : start + self.batch_size] = self.srp(S[start : start + self.batch_size])
            return out
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
            "kind": self.kind,
            "method": self.method,
            "bands": self.band_name,
            "band_centres": [round(float(f), 3) for f in self.bands],
            "steering": self.steering,
            "checkpoint": self.checkpoint_id,
            "sample_rate": info.sample_rate,
            "num_samples": info.num_samples,
            "num_frames": info.num_frames,
            "grid_size": self.num_directions,
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


def build_feature_extractor(cfg, device: str | torch.device | None = None) -> FeatureExtractor:
    """The ``SELD.AUDIO`` feature extractor of a config, on ``device`` (default ``MODEL.DEVICE``)."""
    return FeatureExtractor(**FeatureExtractor.from_config(cfg, device=device))


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


def cache_kind(meta: dict[str, Any] | None) -> str | None:
    """The feature kind a cache file's metadata names (version-1 files, which predate the field,
    hold UpLAM latents); None for a missing or unreadable file."""
    if meta is None:
        return None
    return str(meta.get("kind", "uplam"))


def load_cached_latent(path: str | os.PathLike) -> np.ndarray:
    """The cached latent as float32 (T, B, N)."""
    with np.load(path, allow_pickle=False) as z:
        return z["latent"].astype(np.float32)


def load_cache(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The cached maps as float32 (T, B, N) and their metadata, from one read of the file."""
    with np.load(path, allow_pickle=False) as z:
        return z["latent"].astype(np.float32), json.loads(str(z["meta"]))


def cache_path_for(cache_dir: str | os.PathLike, wav_path: str | os.PathLike) -> Path:
    """``<cache_dir>/<seq>.npz`` for ``.../<seq>.wav``."""
    return Path(cache_dir) / (Path(wav_path).stem + CACHE_SUFFIX)


__all__ = [
    "FEATURE_KINDS",
    "AudioError",
    "FeatureExtractor",
    "build_feature_extractor",
    "cache_kind",
    "cache_path_for",
    "latent_to_canvas",
    "load_cache",
    "load_cached_latent",
    "read_cache_metadata",
    "write_cache",
]
