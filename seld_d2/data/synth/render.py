"""Spatial rendering of a scene at the Eigenmike em32: the free-field backend (default) and the
optional AudibleLight ray-tracing backend, plus spatially diffuse background noise.

**freefield**: each event's multichannel impulse response is built from the direct path and,
optionally, shoebox image sources up to ``reflection_order`` (each path: delay r/c and 1/r
spreading at every capsule, ``sqrt(1 - absorption)`` per wall bounce), realised with 32-tap
Kaiser-windowed-sinc fractional delays (flat to ~11 kHz at 24 kHz). The dry signal is convolved
with it (overlap-add) over the event's span only, and added into the mix. Capsules are treated as
omnidirectional points (no rigid-sphere scattering), as in ``acoustics.render``.

**audiblelight** (optional extra ``pip install -e '.[synth]'``): the scene's room as a trimesh
mesh (shoebox or L-shaped, ``.glb``) of the AudibleLight material nearest its absorption, an
Eigenmike32 at the array position and one emitter per event, ray-traced by AudibleLight's RLR
backend; the responses are calibrated to the free-field direct-path gain and convolved here with
their whole tails (see :class:`AudibleLightRenderer`). Its capsule order is matched to ours from
the capsule coordinates.

**Diffuse noise**: a spherically isotropic field, synthesised in the frequency domain with the
coherence ``sinc(2 f d_mn / c)`` between capsules m, n (d_mn their distance), coloured white,
pink (-3 dB/oct) or brown (-6 dB/oct).
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from ...acoustics.audio import SAMPLE_RATE
from ...acoustics.geometry import SPEED_OF_SOUND, em32_positions
from .scene import Event, Room, Scene

FD_HALF_WIDTH = 16  # taps either side of a fractional delay
FD_KAISER_BETA = 8.0
BACKENDS = ("freefield", "audiblelight")
# AudibleLight materials never drawn for a room (they can still be asked for by name).
NOT_ROOM_MATERIALS = frozenset({"Grass", "Gravel", "Snow", "Soil", "Water", "Foliage", "Sound Proof"})


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

    def info(self, scene: Scene) -> dict:
        """What the clip's scene record adds for this backend (nothing)."""
        return {}

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
    """Ray-traced rendering with AudibleLight 0.1.2's RLR world state (optional extra).

    Per clip: the scene's room as a ``.glb`` mesh (:mod:`.rooms`) of the AudibleLight material
    whose absorption is nearest the room's, an Eigenmike32 at the room's array position, one emitter
    per event at its exact position; one ray-tracing run gives every capsule's impulse response,
    at ``ir_rate`` (48 kHz by default: the ray tracer's direct path is a single-sample tap, so
    delays between capsules are quantised to 1/ir_rate) and resampled to ``fs``.

    AudibleLight's own event stage (``synthesize.render_event_audio``) is not used: it normalises
    every event (peak to the SNR, then its mean level to ``ref_db + snr``, discarding our level and
    the distance), cuts each event to its dry length (no reverberation tail) and draws unset event
    parameters from unseeded generators. Instead each response is scaled so that its direct path
    has the free-field gain ``1 / distance`` at every capsule (the ray tracer's direct tap is
    ``~0.3 / distance``), and the scaled dry signal is convolved with the whole response, tail
    included. So an event's table ``level_db`` is the level of its direct sound at 1 m, exactly as
    for the free-field renderer; the room adds its reverberation on top. Python's, numpy's and
    torch's global generators are seeded from the scene (and restored) around AudibleLight's code;
    the ray tracer itself is deterministic (same scene, same responses).

    Raises:
        BackendUnavailable: audiblelight or trimesh is not installed.
    """

    name = "audiblelight"

    def __init__(
        self,
        fs: int = SAMPLE_RATE,
        reflection_order: int = 0,
        ir_rate: int = 48000,
        material: str | None = None,
    ):
        try:
            import audiblelight  # noqa: F401
            import trimesh  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(
                f"the audiblelight backend needs the optional extra ({err.name} is not installed): "
                "pip install -e '.[synth]'"
            ) from None
        if ir_rate % fs:
            raise ValueError(f"ir_rate must be a multiple of fs ({fs}), got {ir_rate}")
        self.fs, self.ir_rate = int(fs), int(ir_rate)
        materials = dict(_materials())
        if material is not None and material not in materials:
            raise ValueError(
                f"unknown AudibleLight material {material!r}; use one of {', '.join(sorted(materials))}"
            )
        self.material = material
        self.timings: dict[str, float] = {}

    def material_of(self, room: Room) -> tuple[str, float]:
        """(name, mean absorption) of the material the room is rendered with: the fixed one, or
        the indoor material nearest the room's absorption."""
        if self.material is not None:
            return self.material, dict(_materials())[self.material]
        return nearest_material(room.absorption)

    def info(self, scene: Scene) -> dict:
        """What the clip's scene record adds for this backend."""
        name, absorption = self.material_of(scene.room)
        return {"room_shape": scene.room.shape, "material": name, "material_absorption": round(absorption, 4)}

    def render(self, scene: Scene, signals: list[np.ndarray]) -> tuple[np.ndarray, tuple[Event, ...]]:
        """Float32 (32, num_samples) mix (channels first) and the events (unchanged: they are
        placed exactly where the scene put them). Errors inside AudibleLight are one RuntimeError."""
        try:
            irs = self.impulse_responses(scene)
        except (BackendUnavailable, ValueError):
            raise
        except Exception as err:
            raise RuntimeError(f"audiblelight backend failed: {type(err).__name__}: {err}") from err
        n = int(round(scene.duration * self.fs))
        mix = np.zeros((len(irs[0]) if irs else 32, n), np.float32)
        for ev, sig, h in zip(scene.events, signals, irs, strict=True):
            add_convolved(mix, sig, h.T, int(round(ev.onset * self.fs)))
        return mix, tuple(scene.events)

    def impulse_responses(self, scene: Scene) -> list[np.ndarray]:
        """Each event's calibrated response at the em32 in our capsule order, at ``fs``:
        float64 (32, L) per event (direct path ``1 / d`` at a capsule d metres away)."""
        import time

        from scipy.signal import resample_poly

        from .rooms import write_room_mesh

        if not scene.events:
            return []
        t0 = time.perf_counter()
        room = scene.room
        centre = np.asarray(room.mic, np.float64)
        material, _ = self.material_of(room)
        with tempfile.TemporaryDirectory(prefix="seld_d2_al_") as tmp, _seeded(_scene_seed(scene)), _quiet():
            from audiblelight.worldstate import WorldStateRLR

            mesh = write_room_mesh(room, Path(tmp) / f"room_{room.shape}.glb")
            state = WorldStateRLR(
                mesh=str(mesh),
                sample_rate=self.ir_rate,
                add_to_context=False,
                material=material,
                # The scene already keeps events inside the room and 0.5 m from the array; two
                # events at different times may share a place.
                empty_space_around_emitter=1e-3,
                empty_space_around_surface=0.05,
                empty_space_around_mic=0.05,
                rlr_kwargs=dict(thread_count=1),
            )
            state.add_microphone(microphone_type="eigenmike32", position=centre.tolist(), alias="em32")
            for ev in scene.events:
                state.add_emitter(
                    position=(centre + ev.position).tolist(),
                    alias=f"event{ev.instance_id:03d}",
                    keep_existing=True,
                )
            t1 = time.perf_counter()
            state.simulate()
            raw = np.asarray(state.get_irs()["em32"], np.float64)  # (32, E, L) at ir_rate
            mic = state.get_microphone("em32")
            caps = np.asarray(mic.coordinates_absolute, np.float64) - centre
        t2 = time.perf_counter()
        ours = em32_positions()
        raw = raw[_match_capsules(caps, ours)]
        out = []
        for j, ev in enumerate(scene.events):
            h = raw[:, j, :]
            d = np.linalg.norm(ev.position[None, :] - ours, axis=1)
            # The direct tap: the largest one up to 2 ms after the free-field arrival time.
            last = min(h.shape[1], int(np.ceil((d.max() / SPEED_OF_SOUND + 0.002) * self.ir_rate)))
            tap = np.max(np.abs(h[:, :last]), axis=1)
            if not np.all(tap > 0):
                raise RuntimeError(f"audiblelight backend: event {ev.instance_id} has no direct path")
            h = h * (np.sum(1.0 / d) / np.sum(tap))
            nz = np.flatnonzero(np.any(h != 0.0, axis=0))
            h = h[:, : nz[-1] + 1]
            if self.ir_rate != self.fs:
                # resample_poly's filter has unit DC gain at the output rate: the tap's amplitude
                # becomes the band-limited impulse's area, as for the free-field fractional delays.
                h = resample_poly(h, 1, self.ir_rate // self.fs, axis=1) * (self.ir_rate // self.fs)
            out.append(h)
        self.timings = {"setup": t1 - t0, "ray_tracing": t2 - t1, "events": len(scene.events)}
        return out


def nearest_material(absorption: float) -> tuple[str, float]:
    """AudibleLight's material (name, mean absorption over its 500-4000 Hz bands) whose mean
    absorption is nearest ``absorption``, among those of indoor surfaces."""
    indoor = [m for m in _materials() if m[0] not in NOT_ROOM_MATERIALS]
    return min(indoor, key=lambda m: (abs(m[1] - absorption), m[0]))


@lru_cache(maxsize=1)
def _materials() -> tuple[tuple[str, float], ...]:
    """Every material of AudibleLight's database: (name, mean absorption over 500-4000 Hz)."""
    import json

    from audiblelight.worldstate import MATERIALS_JSON

    out = []
    with open(MATERIALS_JSON) as f:
        for mat in json.load(f)["materials"]:
            curve = np.asarray(mat["absorption"], np.float64).reshape(-1, 2)  # (freq, value) pairs
            band = curve[(curve[:, 0] >= 500) & (curve[:, 0] <= 4000), 1]
            out.append((str(mat["name"]), float(band.mean() if band.size else curve[:, 1].mean())))
    return tuple(out)


def _scene_seed(scene: Scene) -> int:
    """A 32-bit seed from the scene's content (the scene is itself drawn from the clip's seed)."""
    import zlib

    return zlib.crc32(repr((scene.room, scene.events)).encode())


@contextmanager
def _seeded(seed: int):
    """Seed Python's, numpy's global (which scipy.stats uses by default) and torch's generators,
    restoring their states afterwards."""
    import random

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        import torch
    except ImportError:
        torch = None
    torch_state = torch.random.get_rng_state() if torch is not None else None
    random.seed(seed)
    np.random.seed(seed)
    if torch is not None:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if torch is not None:
            torch.random.set_rng_state(torch_state)


@contextmanager
def _quiet():
    """AudibleLight logs every step at INFO level through loguru: silence it while rendering."""
    try:
        from loguru import logger
    except ImportError:
        yield
        return
    logger.disable("audiblelight")
    try:
        yield
    finally:
        logger.enable("audiblelight")


def make_renderer(
    backend: str = "freefield", fs: int = SAMPLE_RATE, reflection_order: int = 0, material: str | None = None
):
    """The renderer of a backend name (``material``: audiblelight only, a fixed material instead of
    the one nearest each room's absorption); raises BackendUnavailable / ValueError."""
    if backend == "freefield":
        if material is not None:
            raise ValueError("a material is an audiblelight setting (freefield uses the absorption)")
        return FreeFieldRenderer(fs, reflection_order)
    if backend == "audiblelight":
        return AudibleLightRenderer(fs, reflection_order, material=material)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
