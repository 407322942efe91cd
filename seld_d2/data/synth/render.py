"""Spatial rendering of a scene at the Eigenmike em32: the free-field backend (default) and the
optional AudibleLight ray-tracing backend, plus spatially diffuse background noise.

**freefield**: each event's multichannel impulse response is built from the direct path and,
optionally, shoebox image sources up to ``reflection_order`` (each path: delay r/c and 1/r
spreading at every capsule, ``sqrt(1 - absorption)`` per wall bounce), realised with 32-tap
Kaiser-windowed-sinc fractional delays (flat to ~11 kHz at 24 kHz). The dry signal is convolved
with it (overlap-add) over the event's span only, and added into the mix. Capsules are treated as
omnidirectional points (no rigid-sphere scattering), as in ``acoustics.render``.

**audiblelight** (optional extra ``pip install -e '.[synth]'``): a shoebox mesh made with
trimesh, an Eigenmike32 at the room's array position and static events at the scene's positions,
rendered with AudibleLight's ray tracer. Its capsule order is matched to ours from the capsule
coordinates, and event directions are re-read from the emitters it actually placed.

**Diffuse noise**: a spherically isotropic field, synthesised in the frequency domain with the
coherence ``sinc(2 f d_mn / c)`` between capsules m, n (d_mn their distance), coloured white,
pink (-3 dB/oct) or brown (-6 dB/oct).
"""

from __future__ import annotations

import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from ...acoustics.audio import SAMPLE_RATE
from ...acoustics.geometry import SPEED_OF_SOUND, em32_positions, unit_to_azel
from .scene import Event, Room, Scene

FD_HALF_WIDTH = 16  # taps either side of a fractional delay
FD_KAISER_BETA = 8.0
BACKENDS = ("freefield", "audiblelight")


class BackendUnavailable(RuntimeError):
    """A rendering backend whose optional dependencies are not installed."""


# ----------------------------------------------------------------------------------------------
# free field
# ----------------------------------------------------------------------------------------------


def fractional_delay_filters(
    delays: np.ndarray, gains: np.ndarray, half_width: int = FD_HALF_WIDTH
) -> tuple[np.ndarray, int]:
    """Sum of windowed-sinc fractional delays per channel.

    Args:
        delays: (P, M) delays in samples of P paths at M channels.
        gains: (P, M) amplitudes.

    Returns:
        (h, offset): h (L, M) with ``h[k - offset]`` the response at sample k, offset the integer
        sample of its first tap (so the filter is compact even for long delays).
    """
    delays = np.atleast_2d(np.asarray(delays, np.float64))
    gains = np.broadcast_to(np.asarray(gains, np.float64), delays.shape)
    base = np.floor(delays).astype(np.int64)
    offset = int(base.min()) - half_width + 1
    length = int(base.max()) - offset + half_width + 1
    k = np.arange(-half_width + 1, half_width + 1)  # taps relative to floor(delay)
    x = (base[..., None] + k) - delays[..., None]  # (P, M, 2W), distance from the exact delay
    win = np.i0(FD_KAISER_BETA * np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, None))) / np.i0(
        FD_KAISER_BETA
    )
    taps = gains[..., None] * np.sinc(x) * win
    h = np.zeros((length, delays.shape[1]))
    rows = (base[..., None] + k) - offset  # (P, M, 2W)
    cols = np.broadcast_to(np.arange(delays.shape[1])[None, :, None], rows.shape)
    np.add.at(h, (rows.ravel(), cols.ravel()), taps.ravel())
    return h, offset


def image_sources(room: Room, source: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Shoebox image sources up to ``order`` reflections (order 0: the source itself).

    Args:
        room: the room (array centre at ``room.mic``).
        source: (3,) source position relative to the array centre.

    Returns:
        positions (K, 3) relative to the array centre, and amplitude factors (K,)
        ``sqrt(1 - absorption) ** bounces``.
    """
    size = np.asarray(room.size, np.float64)
    mic = np.asarray(room.mic, np.float64)
    s = mic + np.asarray(source, np.float64)
    r = np.arange(-order, order + 1)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    n = n[np.abs(n).sum(axis=1) <= order]
    odd = (n % 2).astype(bool)
    pos = n * size + np.where(odd, size - s, s)
    bounces = np.abs(n).sum(axis=1)
    refl = math.sqrt(max(1.0 - room.absorption, 0.0))
    return pos - mic, refl**bounces


def event_impulse_response(
    source: np.ndarray,
    mic_positions: np.ndarray,
    fs: int = SAMPLE_RATE,
    room: Room | None = None,
    reflection_order: int = 0,
    c: float = SPEED_OF_SOUND,
) -> tuple[np.ndarray, int]:
    """Multichannel impulse response of a static source (direct path + image sources).

    Returns (h (L, M), offset) as :func:`fractional_delay_filters`; at 1 m the direct path has
    unit gain (1/r spreading with r in metres).
    """
    if reflection_order > 0 and room is not None:
        paths, amp = image_sources(room, source, reflection_order)
    else:
        paths, amp = np.asarray(source, np.float64)[None, :], np.ones(1)
    dist = np.linalg.norm(paths[:, None, :] - mic_positions[None, :, :], axis=-1)  # (P, M)
    return fractional_delay_filters(dist / c * fs, amp[:, None] / dist)


class FreeFieldRenderer:
    """Fast numpy renderer: per-capsule delays and 1/r spreading, optional early reflections.

    Args:
        fs: sample rate.
        reflection_order: shoebox image-source order (0 = free field; 1-3 add early reflections
            of the scene's room).
        mic_positions: (M, 3) capsule positions (default: the em32).
    """

    name = "freefield"

    def __init__(
        self, fs: int = SAMPLE_RATE, reflection_order: int = 0, mic_positions: np.ndarray | None = None
    ):
        if not 0 <= reflection_order <= 6:
            raise ValueError(f"reflection_order must be in 0-6, got {reflection_order}")
        self.fs = int(fs)
        self.reflection_order = int(reflection_order)
        self.mics = em32_positions() if mic_positions is None else np.asarray(mic_positions, np.float64)

    def render(self, scene: Scene, signals: list[np.ndarray]) -> tuple[np.ndarray, tuple[Event, ...]]:
        """Mix of all events, float32 (M, num_samples) (channels first), and the events as rendered
        (unchanged here). ``signals[i]`` is event i's scaled dry signal, starting at its onset."""
        n = int(round(scene.duration * self.fs))
        mix = np.zeros((len(self.mics), n), np.float32)
        for ev, sig in zip(scene.events, signals, strict=True):
            h, offset = event_impulse_response(
                ev.position, self.mics, self.fs, scene.room, self.reflection_order
            )
            add_convolved(mix, sig, h, int(round(ev.onset * self.fs)) + offset)
        return mix, tuple(scene.events)


def add_convolved(out: np.ndarray, signal: np.ndarray, h: np.ndarray, start: int) -> None:
    """``out[:, start + k] += (signal * h)[k, :]`` for the part that falls inside ``out``.

    Args:
        out: (M, T) float32 mix, channels first.
        signal: (N,) mono signal.
        h: (L, M) multichannel filter.
        start: sample of ``out`` where the convolution's first sample lands (may be negative).

    One FFT of the signal is shared by all channels; products and inverse FFTs run a few channels
    at a time so no clip-sized temporary is made, in float32 (single precision is far below the
    noise floor of any scene and halves the time).
    """
    T = out.shape[1]
    n_full = len(signal) + len(h) - 1
    a, b = max(start, 0), min(start + n_full, T)
    if b <= a:
        return
    n_used = b - start  # samples of the full convolution needed, from its start
    signal = signal[: max(0, min(len(signal), n_used))]
    nf = sfft.next_fast_len(len(signal) + len(h) - 1, real=True)
    S = sfft.rfft(np.asarray(signal, np.float32), nf)
    H = sfft.rfft(np.asarray(h.T, np.float32), nf, axis=-1)
    group = max(1, (1 << 21) // nf)
    for g in range(0, out.shape[0], group):
        wet = sfft.irfft(H[g : g + group] * S, nf, axis=-1)
        out[g : g + group, a:b] += wet[:, a - start : b - start]


def fft_convolve(signal: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full convolution of a mono signal (N,) with a multichannel filter (L, M), float32
    (M, N + L - 1) (see :func:`add_convolved`)."""
    out = np.zeros((h.shape[1], len(signal) + len(h) - 1), np.float32)
    add_convolved(out, signal, h, 0)
    return out


# ----------------------------------------------------------------------------------------------
# diffuse noise
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _diffuse_mixing(mic_key: bytes, num_mics: int, fs: int, nfft: int, c: float) -> np.ndarray:
    """Per-bin factors L(f) with ``L L^T = Gamma(f)``, the diffuse-field coherence, (F, M, M)."""
    mics = np.frombuffer(mic_key, dtype=np.float64).reshape(num_mics, 3)
    f = np.fft.rfftfreq(nfft, 1.0 / fs)
    d = np.linalg.norm(mics[:, None, :] - mics[None, :, :], axis=-1)
    gamma = np.sinc(2.0 * f[:, None, None] * d[None, :, :] / c)
    w, V = np.linalg.eigh(gamma)
    return (V * np.sqrt(np.clip(w, 0.0, None))[:, None, :]).astype(np.float32)


def _colour_gain(f: np.ndarray, colour: str) -> np.ndarray:
    ref = 1000.0
    fc = np.maximum(f, 1.0)
    g = {"white": np.ones_like(fc), "pink": (fc / ref) ** -0.5, "brown": (fc / ref) ** -1.0}.get(colour)
    if g is None:
        raise ValueError(f"unknown noise colour {colour!r}; use white, pink or brown")
    return np.where(f < 40.0, 0.0, g)  # no DC/infrasound


def diffuse_noise(
    num_samples: int,
    rng: np.random.Generator,
    mic_positions: np.ndarray | None = None,
    fs: int = SAMPLE_RATE,
    colour: str = "pink",
    resolution: int = 512,
    c: float = SPEED_OF_SOUND,
    out: np.ndarray | None = None,
    gain: float = 1.0,
) -> np.ndarray:
    """Spherically isotropic noise at the capsules, float32 (M, num_samples) (channels first), of
    expected RMS ``gain`` per channel; with ``out`` (M, num_samples) float32 the noise is added
    into it (no clip-sized temporary) and ``out`` is returned.

    Built in the frequency domain of one clip-long FFT: every bin gets an independent random-sign
    complex value per capsule (``+-1 +- i``: a random-phase spectrum, Gaussian in time by the
    central limit theorem and ~10x cheaper to draw than normal deviates), mixed by a factor of the
    coherence matrix ``sinc(2 f d / c)`` (evaluated per ~47 Hz band, ``resolution`` points) and
    the colour's gain; then one inverse FFT per channel, a few channels at a time.
    """
    mics = em32_positions() if mic_positions is None else np.asarray(mic_positions, np.float64)
    M = len(mics)
    L = _diffuse_mixing(np.ascontiguousarray(mics, np.float64).tobytes(), M, fs, resolution, c)
    LT = np.ascontiguousarray(np.swapaxes(L, -1, -2))  # (F, M, M)
    nf = sfft.next_fast_len(int(num_samples), real=True)
    freqs = np.fft.rfftfreq(nf, 1.0 / fs)
    band = np.minimum(np.rint(freqs * resolution / fs).astype(np.int64), LT.shape[0] - 1)
    edges = np.searchsorted(band, np.arange(LT.shape[0] + 1))
    shape = _colour_gain(freqs, colour)
    # irfft's Parseval: mean square = (2 sum_k |X_k|^2 over interior bins) / nf^2, E|X_k|^2 = 2 shape^2.
    mean_square = 4.0 * float(np.sum(shape[1:-1] ** 2)) / nf**2
    scale = (shape * (gain / math.sqrt(mean_square))).astype(np.float32) if mean_square > 0 else shape * 0
    bits = np.frombuffer(rng.bytes(len(freqs) * 2 * M // 8 + 8), np.uint8)
    sign = np.array([-1.0, 1.0], np.float32)
    X = np.empty((M, len(freqs)), np.complex64)
    for b in range(LT.shape[0]):
        lo, hi = edges[b], edges[b + 1]
        if hi > lo:
            z = sign[np.unpackbits(bits[lo * 2 * M // 8 : hi * 2 * M // 8])].reshape(hi - lo, 2, M)
            # L is real: real and imaginary parts are mixed separately (real matmuls use BLAS).
            X.real[:, lo:hi] = (z[:, 0] @ LT[b]).T
            X.imag[:, lo:hi] = (z[:, 1] @ LT[b]).T
    X *= scale
    if out is None:
        out = np.zeros((M, num_samples), np.float32)
    group = max(1, (1 << 22) // nf)  # channels per inverse FFT: temporaries stay small
    for g in range(0, M, group):
        out[g : g + group] += sfft.irfft(X[g : g + group], nf, axis=-1)[:, :num_samples]
    return out


# ----------------------------------------------------------------------------------------------
# AudibleLight
# ----------------------------------------------------------------------------------------------


def _match_capsules(theirs: np.ndarray, ours: np.ndarray, tol: float = 0.005) -> np.ndarray:
    """Permutation p with ``theirs[p[i]] ~= ours[i]`` (within tol metres), or ValueError."""
    d = np.linalg.norm(ours[:, None, :] - theirs[None, :, :], axis=-1)
    p = np.argmin(d, axis=1)
    if len(set(p.tolist())) != len(ours) or np.max(d[np.arange(len(ours)), p]) > tol:
        raise ValueError(
            "AudibleLight's Eigenmike32 capsule layout does not match seld_d2's em32 "
            f"(largest mismatch {np.max(d.min(axis=1)) * 100:.1f} cm); cannot map its channels"
        )
    return p


class AudibleLightRenderer:
    """Ray-traced rendering with AudibleLight (optional extra). Written against audiblelight 0.1.x;
    any failure inside the library is reported as one ``RuntimeError`` line.

    Raises:
        BackendUnavailable: audiblelight or trimesh is not installed.
    """

    name = "audiblelight"

    def __init__(self, fs: int = SAMPLE_RATE, reflection_order: int = 0):
        try:
            import audiblelight  # noqa: F401
            import trimesh  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(
                f"the audiblelight backend needs the optional extra ({err.name} is not installed): "
                "pip install -e '.[synth]'"
            ) from None
        self.fs = int(fs)

    def render(self, scene: Scene, signals: list[np.ndarray]) -> tuple[np.ndarray, tuple[Event, ...]]:
        try:
            return self._render(scene, signals)
        except (BackendUnavailable, ValueError):
            raise
        except Exception as err:
            raise RuntimeError(f"audiblelight backend failed: {type(err).__name__}: {err}") from err

    def _render(self, scene: Scene, signals: list[np.ndarray]) -> tuple[np.ndarray, tuple[Event, ...]]:
        import soundfile as sf
        import trimesh
        from audiblelight.core import Scene as ALScene
        from audiblelight.synthesize import (
            generate_scene_audio_from_events,
            render_audio_for_all_scene_events,
        )

        room = scene.room
        centre = np.asarray(room.mic, np.float64)
        with tempfile.TemporaryDirectory(prefix="seld_d2_al_") as tmp:
            box = trimesh.creation.box(extents=room.size)
            box.apply_translation(np.asarray(room.size) / 2.0)
            box.invert()  # normals facing into the room
            mesh_path = Path(tmp) / "room.obj"
            box.export(mesh_path)
            al = ALScene(
                duration=scene.duration,
                backend="rlr",
                sample_rate=self.fs,
                backend_kwargs=dict(mesh=str(mesh_path), add_to_context=False),
                max_overlap=max(scene.config.max_overlap, 1) + 1,
                ref_db=scene.config.ref_db,
                allow_duplicate_audios=True,
            )
            al.add_microphone(microphone_type="eigenmike32", alias="em32", position=centre.tolist())
            for ev, sig in zip(scene.events, signals, strict=True):
                wav = os.path.join(tmp, f"event{ev.instance_id:03d}.wav")
                sf.write(wav, sig.astype(np.float32), self.fs, subtype="FLOAT")
                al.add_event(
                    event_type="static",
                    filepath=wav,
                    alias=f"event{ev.instance_id:03d}",
                    position=(centre + ev.position).tolist(),
                    polar=False,
                    ensure_direct_path=False,
                    scene_start=ev.onset,
                    event_start=0.0,
                    duration=ev.offset - ev.onset,
                    snr=ev.snr_db,
                    class_id=ev.category_id,
                )
            render_audio_for_all_scene_events(al)
            generate_scene_audio_from_events(al)
            mic = al.get_microphone("em32")
            caps = np.asarray(mic.coordinates_absolute, np.float64) - np.asarray(
                mic.coordinates_center, np.float64
            )
            perm = _match_capsules(caps, em32_positions())
            audio = np.asarray(al.audio["em32"], np.float64).T[:, perm]
            events = []
            for ev in scene.events:
                emitter = al.get_event(f"event{ev.instance_id:03d}").emitters[0]
                rel = np.asarray(emitter.coordinates_absolute, np.float64) - np.asarray(
                    mic.coordinates_center
                )
                az, el = unit_to_azel(rel)
                events.append(
                    Event(
                        ev.instance_id, ev.category_id, ev.onset, ev.offset,
                        round(float(az), 3), round(float(el), 3), round(float(np.linalg.norm(rel)), 4),
                        ev.snr_db, ev.level_db,
                    )
                )  # fmt: skip
        n = int(round(scene.duration * self.fs))
        out = np.zeros((n, audio.shape[1]))
        out[: min(n, len(audio))] = audio[:n]
        return out, tuple(events)


def make_renderer(backend: str = "freefield", fs: int = SAMPLE_RATE, reflection_order: int = 0):
    """The renderer of a backend name; raises BackendUnavailable / ValueError."""
    if backend == "freefield":
        return FreeFieldRenderer(fs, reflection_order)
    if backend == "audiblelight":
        return AudibleLightRenderer(fs, reflection_order)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
