"""Scene sampling: which events happen when and where (SPEC §5, the report's settings).

A scene is a room (a shoebox, or with ``l_room_probability`` an L-shaped room: a full-height block
cut from one corner) with the em32 at a random point inside it, and static events, each with
a class, a 100 ms-aligned onset and duration, a direction and distance from the array, and a
level. Defaults are the report's: 5-20 events per 60 s (scaled with the duration for shorter
clips), at most 4 active at once, 0.5-3 m from the array and within +-0.3 m of its height,
reference level -50 dB, background noise with probability 0.5.

Levels: ``ref_db`` is the background-noise level in dB re full scale (RMS per channel, when noise
is drawn). An event's ``level_db = ref_db + snr`` (snr uniform in ``snr_range``) is the active RMS
(see ``sources.active_rms``) its direct sound would have at the array centre *from 1 m away*; the
renderer's 1/r spreading then makes nearer events louder and farther ones quieter, so level carries
distance information as in a real room. (At synthesis, an event whose direct sound would peak
above -6 dBFS at a capsule is turned down, and its ``level_db``/``snr_db`` with it.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...acoustics.geometry import angular_distance_deg, azel_to_unit
from ..classes import NUM_CLASSES
from .sources import CLASS_DURATIONS

FRAME_SECONDS = 0.1
NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class SceneConfig:
    """Scene sampling settings (defaults: the report's).

    Event counts are per 60 s and scale with ``duration`` (at least one event per clip).
    ``min_separation_deg`` keeps temporally overlapping events at least that far apart
    (0 = unconstrained, the report's setting).
    """

    duration: float = 60.0
    min_events: int = 5
    max_events: int = 20
    max_overlap: int = 4
    min_distance: float = 0.5
    max_distance: float = 3.0
    max_height: float = 0.3
    ref_db: float = -50.0
    snr_range: tuple[float, float] = (5.0, 30.0)
    noise_probability: float = 0.5
    classes: tuple[int, ...] = tuple(range(NUM_CLASSES))
    min_separation_deg: float = 0.0
    room_size: tuple[tuple[float, float], ...] = ((4.0, 10.0), (4.0, 10.0), (2.5, 4.0))
    absorption_range: tuple[float, float] = (0.2, 0.7)
    wall_margin: float = 0.2
    # Share of L-shaped rooms (0: shoeboxes only, as the free-field image sources assume); the cut
    # block spans these fractions of the room's length and width.
    l_room_probability: float = 0.0
    notch_fraction: tuple[float, float] = (0.25, 0.45)

    def __post_init__(self) -> None:
        problems = []
        if not self.duration >= FRAME_SECONDS:
            problems.append(f"duration must be at least {FRAME_SECONDS} s, got {self.duration}")
        if not 1 <= self.min_events <= self.max_events:
            problems.append(f"need 1 <= min_events <= max_events, got {self.min_events}, {self.max_events}")
        if self.max_overlap < 1:
            problems.append(f"max_overlap must be >= 1, got {self.max_overlap}")
        if not 0 < self.min_distance <= self.max_distance:
            problems.append(
                f"need 0 < min_distance <= max_distance, got {self.min_distance}, {self.max_distance}"
            )
        if self.max_height < 0:
            problems.append(f"max_height must be >= 0, got {self.max_height}")
        if self.snr_range[0] > self.snr_range[1]:
            problems.append(f"snr_range must be (low, high), got {self.snr_range}")
        if not 0.0 <= self.noise_probability <= 1.0:
            problems.append(f"noise_probability must be in [0, 1], got {self.noise_probability}")
        if not self.classes or any(not 0 <= c < NUM_CLASSES for c in self.classes):
            problems.append(f"classes must be a non-empty subset of 0-{NUM_CLASSES - 1}, got {self.classes}")
        if not 0.0 <= self.l_room_probability <= 1.0:
            problems.append(f"l_room_probability must be in [0, 1], got {self.l_room_probability}")
        if not 0.0 < self.notch_fraction[0] <= self.notch_fraction[1] <= 0.45:
            problems.append(f"notch_fraction must satisfy 0 < low <= high <= 0.45, got {self.notch_fraction}")
        if not 0.0 <= self.min_separation_deg < 90.0:
            problems.append(f"min_separation_deg must be in [0, 90), got {self.min_separation_deg}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def num_frames(self) -> int:
        return int(round(self.duration / FRAME_SECONDS))

    def event_count_range(self) -> tuple[int, int]:
        """(min, max) events for this duration: the per-60 s counts scaled, at least 1."""
        scale = self.duration / 60.0
        lo = max(1, int(round(self.min_events * scale)))
        hi = max(lo, int(round(self.max_events * scale)))
        return lo, hi


@dataclass(frozen=True)
class Event:
    """One static sound event. Direction in the array frame (SPEC §1 convention), distance in
    metres from the array centre, onset/offset in seconds (multiples of 0.1 s)."""

    instance_id: int
    category_id: int
    onset: float
    offset: float
    azimuth: float
    elevation: float
    distance: float
    snr_db: float
    level_db: float

    @property
    def onset_frame(self) -> int:
        return int(round(self.onset / FRAME_SECONDS))

    @property
    def offset_frame(self) -> int:
        """First frame after the event (exclusive)."""
        return int(round(self.offset / FRAME_SECONDS))

    @property
    def direction(self) -> np.ndarray:
        return azel_to_unit(self.azimuth, self.elevation)

    @property
    def position(self) -> np.ndarray:
        """Source position in metres relative to the array centre, (3,)."""
        return self.direction * self.distance


@dataclass(frozen=True)
class Room:
    """A shoebox ``[0, size]`` with the array centre at ``mic``; ``absorption`` is the energy
    absorption coefficient of every wall (used by the reflections, the ray tracer's material and
    the video). With ``notch = (nx, ny)`` the full-height block ``[sx - nx, sx] x [sy - ny, sy]`` is
    not part of the room (an L-shaped floor plan)."""

    size: tuple[float, float, float]
    mic: tuple[float, float, float]
    absorption: float
    notch: tuple[float, float] | None = None

    @property
    def shape(self) -> str:
        return "shoebox" if self.notch is None else "L"

    def floor_plan(self) -> np.ndarray:
        """Corners of the floor polygon, counter-clockwise from the origin, (K, 2); every point of
        the room is visible from the first corner (the fan of triangles from it covers it)."""
        sx, sy = self.size[0], self.size[1]
        if self.notch is None:
            return np.array([[0.0, 0.0], [sx, 0.0], [sx, sy], [0.0, sy]])
        x0, y0 = sx - self.notch[0], sy - self.notch[1]
        return np.array([[0.0, 0.0], [sx, 0.0], [sx, y0], [x0, y0], [x0, sy], [0.0, sy]])

    def contains(self, point: np.ndarray, margin: float = 0.0) -> bool:
        """An absolute point (3,) lies inside the room, at least ``margin`` from every wall."""
        p, size = np.asarray(point, np.float64), np.asarray(self.size, np.float64)
        if not (np.all(p >= margin) and np.all(p <= size - margin)):
            return False
        if self.notch is None:
            return True
        return bool(p[0] <= size[0] - self.notch[0] - margin or p[1] <= size[1] - self.notch[1] - margin)

    def visible(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The segment between absolute points a and b does not cross the cut block."""
        if self.notch is None:
            return True
        lo = np.array([self.size[0] - self.notch[0], self.size[1] - self.notch[1]])
        hi = np.array([self.size[0], self.size[1]])
        a2, d = np.asarray(a, np.float64)[:2], np.asarray(b, np.float64)[:2] - np.asarray(a, np.float64)[:2]
        t0, t1 = 0.0, 1.0
        for k in range(2):  # slab test of the segment against the block's floor rectangle
            if abs(d[k]) < 1e-12:
                if not lo[k] < a2[k] < hi[k]:
                    return True
                continue
            ta, tb = sorted(((lo[k] - a2[k]) / d[k], (hi[k] - a2[k]) / d[k]))
            t0, t1 = max(t0, ta), min(t1, tb)
            if t0 >= t1:
                return True
        return False


@dataclass(frozen=True)
class Noise:
    """Diffuse background noise: spectral colour and level (dB re full scale, RMS per channel)."""

    colour: str
    level_db: float


@dataclass(frozen=True)
class Scene:
    duration: float
    room: Room
    events: tuple[Event, ...]
    noise: Noise | None = None
    config: SceneConfig = field(default_factory=SceneConfig, compare=False, repr=False)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration / FRAME_SECONDS))

    def activity(self) -> np.ndarray:
        """Boolean (num_events, num_frames): event e is active in frame k."""
        act = np.zeros((len(self.events), self.num_frames), dtype=bool)
        for i, ev in enumerate(self.events):
            act[i, ev.onset_frame : ev.offset_frame] = True
        return act


def polyphony(events: tuple[Event, ...] | list[Event], num_frames: int) -> np.ndarray:
    """Number of active events per 100 ms frame, (num_frames,)."""
    count = np.zeros(num_frames, dtype=np.int64)
    for ev in events:
        count[ev.onset_frame : ev.offset_frame] += 1
    return count


def _sample_room(cfg: SceneConfig, rng: np.random.Generator) -> Room:
    size = tuple(float(rng.uniform(lo, hi)) for lo, hi in cfg.room_size)
    margin = 0.5
    mic = (
        float(rng.uniform(margin, size[0] - margin)),
        float(rng.uniform(margin, size[1] - margin)),
        float(rng.uniform(1.0, max(1.0, min(2.0, size[2] - margin)))),
    )
    room = Room(size, mic, float(rng.uniform(*cfg.absorption_range)))  # type: ignore[arg-type]
    # Drawn after the shoebox so that l_room_probability = 0 leaves every scene as it was.
    if cfg.l_room_probability > 0 and rng.random() < cfg.l_room_probability:
        notch = (
            float(size[0] * rng.uniform(*cfg.notch_fraction)),
            float(size[1] * rng.uniform(*cfg.notch_fraction)),
        )
        room = Room(size, mic, room.absorption, notch)  # type: ignore[arg-type]
        while not room.contains(np.asarray(room.mic), margin):
            mic = (
                float(rng.uniform(margin, size[0] - margin)),
                float(rng.uniform(margin, size[1] - margin)),
                mic[2],
            )
            room = Room(size, mic, room.absorption, notch)  # type: ignore[arg-type]
    return room


def _inside(room: Room, pos: np.ndarray, margin: float) -> bool:
    """A position relative to the array lies in the room (``margin`` from the walls) and in sight
    of the array."""
    p = np.asarray(room.mic) + pos
    return room.contains(p, margin) and room.visible(np.asarray(room.mic), p)


def sample_position(
    cfg: SceneConfig, rng: np.random.Generator, room: Room, avoid: list[np.ndarray]
) -> tuple[float, float, float]:
    """(azimuth, elevation, distance) inside the room, within the distance/height limits and at
    least ``min_separation_deg`` from the directions in ``avoid``; rejection sampling with a
    bounded number of tries (the last resort relaxes the separation, never the limits)."""
    for attempt in range(400):
        r = float(rng.uniform(cfg.min_distance, cfg.max_distance))
        h = min(cfg.max_height, r)
        z = float(rng.uniform(-h, h))
        az = float(rng.uniform(-180.0, 180.0))
        el = math.degrees(math.asin(z / r))
        u = azel_to_unit(az, el)
        if not _inside(room, u * r, cfg.wall_margin):
            continue
        if cfg.min_separation_deg > 0 and attempt < 300 and avoid:
            if np.min(angular_distance_deg(np.stack(avoid), u[None, :])) < cfg.min_separation_deg:
                continue
        return az, el, r
    # The room always fits the minimum distance towards its larger horizontal extent.
    r = cfg.min_distance
    centre = np.asarray(room.size) / 2.0 - np.asarray(room.mic)
    az = math.degrees(math.atan2(centre[1], centre[0]))
    return az, 0.0, r


def sample_scene(cfg: SceneConfig, rng: np.random.Generator) -> Scene:
    """Draw one scene: room, events (class, timing, position, level) and optional noise.

    Guarantees: the event count lies in :meth:`SceneConfig.event_count_range`; no frame has more
    than ``max_overlap`` active events; every event lies within the distance and height limits
    and inside the room. Onsets and durations are multiples of 100 ms.
    """
    room = _sample_room(cfg, rng)
    num_frames = cfg.num_frames
    lo, hi = cfg.event_count_range()
    n_events = int(rng.integers(lo, hi + 1))
    count = np.zeros(num_frames, dtype=np.int64)
    events: list[Event] = []
    for i in range(n_events):
        cid = int(cfg.classes[int(rng.integers(len(cfg.classes)))])
        dmin, dmax = CLASS_DURATIONS[cid]
        frames = int(round(rng.uniform(dmin, dmax) / FRAME_SECONDS))
        frames = int(np.clip(frames, 1, num_frames))
        onset = None
        while onset is None:
            # Try random onsets; halve the duration when the timeline is too crowded.
            for _ in range(50):
                k0 = int(rng.integers(0, num_frames - frames + 1))
                if count[k0 : k0 + frames].max(initial=0) < cfg.max_overlap:
                    onset = k0
                    break
            else:
                if frames == 1:
                    free = np.flatnonzero(count < cfg.max_overlap)
                    if len(free) == 0:
                        break
                    onset = int(free[int(rng.integers(len(free)))])
                else:
                    frames = max(1, frames // 2)
        if onset is None:
            break  # the timeline is full (only possible with extreme settings)
        count[onset : onset + frames] += 1
        overlapping = [
            ev.direction for ev in events if ev.onset_frame < onset + frames and onset < ev.offset_frame
        ]
        az, el, r = sample_position(cfg, rng, room, overlapping)
        snr = float(rng.uniform(*cfg.snr_range))
        events.append(
            Event(
                instance_id=i,
                category_id=cid,
                onset=round(onset * FRAME_SECONDS, 1),
                offset=round((onset + frames) * FRAME_SECONDS, 1),
                azimuth=round(az, 3),
                # Truncation towards zero keeps the rounded position within the limits.
                elevation=math.trunc(el * 1000.0) / 1000.0,
                distance=math.floor(r * 10000.0) / 10000.0,
                snr_db=round(snr, 2),
                level_db=round(cfg.ref_db + snr, 2),
            )
        )
    noise = None
    if rng.random() < cfg.noise_probability:
        noise = Noise(NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))], float(cfg.ref_db))
    # Instance ids in onset order, as an annotator would number them.
    events.sort(key=lambda e: (e.onset, e.instance_id))
    events = [_renumber(ev, k) for k, ev in enumerate(events)]
    return Scene(
        duration=cfg.num_frames * FRAME_SECONDS, room=room, events=tuple(events), noise=noise, config=cfg
    )


def _renumber(ev: Event, k: int) -> Event:
    return Event(
        k, ev.category_id, ev.onset, ev.offset, ev.azimuth, ev.elevation, ev.distance, ev.snr_db, ev.level_db
    )
