"""Equirectangular video of a synthetic scene: the room seen from the array, with an object at the
direction of each visible event and a few silent distractor objects.

The background is ray-cast from the array position into the scene's shoebox room (the same room
the reflections use): a planked or tiled floor, walls with a skirting board, a door, a window and
a few pictures, a ceiling with a lamp and Lambertian-like shading (no pixel noise: it would triple the PNG
encoding time).
Each object is flat, faces the array and has a class-dependent real size and shape (a
person-sized ellipse for speech, a door-sized rectangle for doors, a small disc for a bell, ...),
so its angular size shrinks with distance exactly as perspective dictates; it is drawn only in
the frames its event is active, nearer objects over farther ones.

Two looks (:class:`VideoConfig`): ``plain`` draws every event in its class colour
(``classes.CLASS_COLORS``) with radial shading and a dark rim, so the RGB stream alone names the
class and direction of every source (the look of the first versions; frames are unchanged).
``varied`` (the default) gives each object its own appearance within its class's family, drawn
from a per-event seed: size, aspect, superellipse exponent, tilt, an optional second part, a
colour drawn around the class hue, a second colour and a texture (stripes, checks, dots, a
gradient or none). It also leaves a share of the sounding events invisible (0.3) and adds silent
distractors (3 per clip) drawn like sounding objects: a class, a span and a position within the
scene's limits. Distractors are never labelled and invisible events keep their labels: the labels
describe the audio, and no video choice changes audio, labels or event table (the video has its
own seed).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...acoustics.geometry import azel_to_unit, canvas_directions
from ..classes import CLASS_COLORS
from .scene import FRAME_SECONDS, Event, Room, Scene, sample_position
from .sources import CLASS_DURATIONS

# Object half-width, half-height (metres) and superellipse exponent (2 ellipse ... 8 rectangle).
CLASS_SHAPES: tuple[tuple[float, float, float], ...] = (
    (0.22, 0.35, 2.0),  # Female speech: a person
    (0.25, 0.38, 2.0),  # Male speech
    (0.18, 0.18, 2.0),  # Clapping: hands
    (0.10, 0.07, 4.0),  # Telephone
    (0.24, 0.36, 2.0),  # Laughter
    (0.22, 0.15, 5.0),  # Domestic sounds: kitchenware, appliances
    (0.18, 0.40, 2.5),  # Walk/footsteps: legs
    (0.45, 0.95, 10.0),  # Door open/close
    (0.16, 0.26, 6.0),  # Music: a loudspeaker
    (0.20, 0.32, 3.0),  # Musical instrument
    (0.14, 0.10, 4.0),  # Water tap: a sink
    (0.09, 0.09, 2.0),  # Bell
    (0.16, 0.16, 3.0),  # Knock: a fist on a surface
)
MIN_HALF_SIZE_PX = 2.0
VIDEO_STYLES = ("plain", "varied")
PATTERNS = ("flat", "stripes", "checks", "dots", "gradient")
HUE_SPREAD = 0.15  # standard deviation of a varied object's hue around its class hue (turns)


@dataclass(frozen=True)
class VideoConfig:
    """What the video shows. ``style``: ``plain`` (flat class colours) or ``varied``;
    ``invisible_share``: probability that a sounding event has no object; ``distractors``: silent
    objects per clip. :meth:`plain` is the old look: every event, flat colours, no distractors."""

    style: str = "varied"
    invisible_share: float = 0.3
    distractors: int = 3

    def __post_init__(self) -> None:
        if self.style not in VIDEO_STYLES:
            raise ValueError(f"video style must be one of {', '.join(VIDEO_STYLES)}, got {self.style!r}")
        if not 0.0 <= self.invisible_share <= 1.0:
            raise ValueError(f"invisible share must be in [0, 1], got {self.invisible_share}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}")

    @classmethod
    def plain(cls) -> VideoConfig:
        return cls("plain", 0.0, 0)


@dataclass(frozen=True)
class Appearance:
    """A varied object's look. ``scale`` multiplies the class's half-width and half-height;
    ``rotation`` (radians) tilts it in its plane; ``part`` is an extra disc (centre offset in
    half-heights, radius in half-heights) or None; colours are RGB 0-255."""

    scale: tuple[float, float]
    exponent: float
    rotation: float
    part: tuple[float, float] | None
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    pattern: str
    frequency: float
    angle: float
    phase: float
    rim: bool


@dataclass(frozen=True)
class VisualObject:
    """Something drawn in the video: a sounding event (``instance_id`` set) or a distractor
    (``instance_id`` None), visible in frames ``[onset_frame, offset_frame)``. ``appearance``
    None draws the plain look."""

    category_id: int
    onset_frame: int
    offset_frame: int
    azimuth: float
    elevation: float
    distance: float
    instance_id: int | None = None
    appearance: Appearance | None = None

    @property
    def sounding(self) -> bool:
        return self.instance_id is not None


def _child(seed: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A child seed named by ``key`` (unlike ``spawn``, it does not depend on earlier calls)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, *key), pool_size=seed.pool_size)


def random_appearance(category_id: int, rng: np.random.Generator) -> Appearance:
    """An appearance within a class's family: its shape varied, its colour around the class hue."""
    _, _, p = CLASS_SHAPES[category_id]
    size = math.exp(rng.uniform(-0.25, 0.25))
    aspect = math.exp(rng.uniform(-0.2, 0.2))
    exponent = float(np.clip(p * math.exp(rng.uniform(-0.6, 0.6)), 1.3, 12.0))
    rotation = float(rng.uniform(-0.4, 0.4))
    part = None
    if rng.random() < 0.4:
        part = (float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.2)), float(rng.uniform(0.3, 0.6)))
    h, _, _ = colorsys.rgb_to_hsv(*(c / 255.0 for c in CLASS_COLORS[category_id]))
    hue = (h + rng.normal(0.0, HUE_SPREAD)) % 1.0
    colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.25, 0.95), rng.uniform(0.35, 1.0))
    hue2 = (hue + rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.5)) % 1.0
    colour2 = colorsys.hsv_to_rgb(hue2, rng.uniform(0.0, 0.8), rng.uniform(0.2, 1.0))
    return Appearance(
        scale=(size * aspect, size / aspect),
        exponent=exponent,
        rotation=rotation,
        part=part,
        colour=tuple(255.0 * c for c in colour),  # type: ignore[arg-type]
        colour2=tuple(255.0 * c for c in colour2),  # type: ignore[arg-type]
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        frequency=float(rng.uniform(1.5, 5.0)),
        angle=float(rng.uniform(0.0, math.pi)),
        phase=float(rng.uniform(0.0, 2.0 * math.pi)),
        rim=bool(rng.random() < 0.5),
    )


def _pattern(a: Appearance, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of the second colour at object-plane coordinates (u, v) in half-sizes, in [0, 1]."""
    s = u * math.cos(a.angle) + v * math.sin(a.angle)
    if a.pattern == "stripes":
        return (np.sin(2.0 * math.pi * a.frequency * s + a.phase) > 0).astype(np.float64)
    if a.pattern == "checks":
        return ((np.floor(a.frequency * u + a.phase) + np.floor(a.frequency * v)) % 2).astype(np.float64)
    if a.pattern == "dots":
        fu, fv = (a.frequency * u + a.phase) % 1.0 - 0.5, (a.frequency * v) % 1.0 - 0.5
        return (fu**2 + fv**2 < 0.09).astype(np.float64)
    if a.pattern == "gradient":
        return np.clip(0.5 + 0.5 * s, 0.0, 1.0)
    return np.zeros_like(u)


class VideoRenderer:
    """Renders RGB frames (height, width, 3) uint8 of scenes, with the look of ``config``
    (default :class:`VideoConfig`: varied objects, 30 % invisible, 3 distractors)."""

    def __init__(self, width: int = 360, height: int = 180, config: VideoConfig | None = None):
        if width < 8 or height < 4:
            raise ValueError(f"video size {width}x{height} is too small")
        self.width, self.height = int(width), int(height)
        self.config = config or VideoConfig()
        self.dirs = canvas_directions(self.width, self.height)  # (H, W, 3)

    def objects(self, scene: Scene, seed: np.random.SeedSequence) -> list[VisualObject]:
        """What the video shows: the visible events, then the distractors. Event ``instance_id``'s
        visibility and look come from its own child of ``seed``, distractor j's from another, so
        neither depends on the other events or on the number of distractors."""
        cfg, varied = self.config, self.config.style == "varied"
        out = []
        for ev in scene.events:
            rng = np.random.default_rng(_child(seed, 1, ev.instance_id))
            hidden = rng.random() < cfg.invisible_share  # drawn first: the share never changes looks
            if hidden:
                continue
            out.append(
                VisualObject(
                    ev.category_id,
                    ev.onset_frame,
                    ev.offset_frame,
                    ev.azimuth,
                    ev.elevation,
                    ev.distance,
                    ev.instance_id,
                    random_appearance(ev.category_id, rng) if varied else None,
                )
            )
        classes, n = scene.config.classes, scene.num_frames
        for j in range(cfg.distractors):
            rng = np.random.default_rng(_child(seed, 2, j))
            cid = int(classes[int(rng.integers(len(classes)))])
            dmin, dmax = CLASS_DURATIONS[cid]
            frames = int(np.clip(round(rng.uniform(dmin, dmax) / FRAME_SECONDS), 1, n))
            k0 = int(rng.integers(0, n - frames + 1))
            az, el, r = sample_position(scene.config, rng, scene.room, [])
            look = random_appearance(cid, rng) if varied else None
            out.append(VisualObject(cid, k0, k0 + frames, az, el, r, None, look))
        return out

    def background(self, room: Room, rng: np.random.Generator) -> np.ndarray:
        """The room around the array, uint8 (H, W, 3)."""
        d = self.dirs
        size, mic = np.asarray(room.size), np.asarray(room.mic)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_axis = np.where(d > 0, (size - mic) / d, np.where(d < 0, -mic / d, np.inf))
        axis = np.argmin(t_axis, axis=-1)
        t = np.take_along_axis(t_axis, axis[..., None], axis=-1)[..., 0]
        hit = mic + t[..., None] * d
        positive = np.take_along_axis(d, axis[..., None], axis=-1)[..., 0] > 0
        img = np.zeros(d.shape, np.float64)

        wall = rng.uniform(0.55, 0.9, 3) * rng.uniform(0.85, 1.0)
        floor_col = (
            np.array([0.55, 0.38, 0.22]) * rng.uniform(0.7, 1.2)
            if rng.random() < 0.6
            else rng.uniform(0.3, 0.6, 3)
        )
        ceiling = np.full(3, rng.uniform(0.85, 0.97))

        # Floor (z = 0): planks along x or tiles.
        fl = (axis == 2) & ~positive
        fx, fy = hit[..., 0], hit[..., 1]
        if rng.random() < 0.5:
            plank_w = rng.uniform(0.12, 0.25)
            idx = np.floor(fy / plank_w).astype(np.int64)
            shade = (
                0.85
                + 0.15 * np.sin(idx * 12.9898 + 3.0 * np.sin(idx * 78.233))
                + 0.04 * np.sin(fx * 35.0 + idx)
            )
            seam = (np.abs(fy / plank_w - np.round(fy / plank_w)) < 0.04).astype(np.float64)
        else:
            tile = rng.uniform(0.3, 0.6)
            u, v = fx / tile, fy / tile
            shade = 0.9 + 0.1 * ((np.floor(u) + np.floor(v)) % 2)
            seam = ((np.abs(u - np.round(u)) < 0.03) | (np.abs(v - np.round(v)) < 0.03)).astype(np.float64)
        img[fl] = (floor_col * (shade * (1.0 - 0.35 * seam))[..., None])[fl]

        # Ceiling (z = height) with a lamp.
        ce = (axis == 2) & positive
        lamp = (np.abs(hit[..., 0] - size[0] / 2) < 0.4) & (np.abs(hit[..., 1] - size[1] / 2) < 0.4)
        img[ce] = ceiling
        img[ce & lamp] = 1.0

        # Walls: horizontal coordinate along the wall and height.
        wl = axis < 2
        along = np.where(axis == 0, hit[..., 1], hit[..., 0])
        z = hit[..., 2]
        img[wl] = wall
        wall_id = np.where(axis == 0, np.where(positive, 0, 1), np.where(positive, 2, 3))
        img[wl & (z < 0.1)] = wall * 0.5  # skirting board
        door_wall, window_wall = rng.choice(4, 2, replace=False)
        span = np.where(axis == 0, size[1], size[0])
        door_at = rng.uniform(0.2, 0.8)
        door = wl & (wall_id == door_wall) & (np.abs(along - door_at * span) < 0.45) & (z < 2.05)
        img[door] = np.array([0.45, 0.3, 0.18]) * rng.uniform(0.7, 1.3)
        win_at = rng.uniform(0.25, 0.75)
        window = (
            wl & (wall_id == window_wall) & (np.abs(along - win_at * span) < 0.6) & (np.abs(z - 1.5) < 0.5)
        )
        sky = np.array([0.65, 0.8, 0.97])
        img[window] = sky * (0.9 + 0.1 * (z[window] - 1.0))[..., None]
        frame_bar = window & ((np.abs(along - win_at * span) < 0.03) | (np.abs(z - 1.5) < 0.03))
        img[frame_bar] = 0.95
        for _ in range(int(rng.integers(1, 4))):  # pictures
            w_id = int(rng.integers(4))
            at, hgt = rng.uniform(0.15, 0.85), rng.uniform(1.3, 1.8)
            pic = wl & (wall_id == w_id) & (np.abs(along - at * span) < 0.3) & (np.abs(z - hgt) < 0.22)
            pic &= ~door & ~window
            img[pic] = rng.uniform(0.1, 0.9, 3)

        # Shading: incidence angle and distance.
        cosi = np.abs(np.take_along_axis(d, axis[..., None], axis=-1)[..., 0])
        img *= (0.55 + 0.45 * cosi)[..., None] / (1.0 + 0.04 * t)[..., None]
        return np.clip(img * 255.0, 0, 255).astype(np.uint8)

    def _plane(self, obj: Event | VisualObject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels in front of an object, flat indices (P,), and their gnomonic coordinates in its
        plane (P,) x 2 (horizontal to the left, vertical up; tangent of the angle off its centre)."""
        u0 = azel_to_unit(obj.azimuth, obj.elevation)
        az, el = math.radians(obj.azimuth), math.radians(obj.elevation)
        left = np.array([-math.sin(az), math.cos(az), 0.0])
        up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
        d = self.dirs.reshape(-1, 3)
        front = d @ u0
        ok = np.flatnonzero(front > 0.2)
        gx = (d[ok] @ left) / front[ok]
        gy = (d[ok] @ up) / front[ok]
        return ok, gx, gy

    def sprite(self, obj: Event | VisualObject) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of an object: flat canvas indices (P,) and their RGB uint8 (P, 3); an event or
        an object without appearance is drawn plain."""
        look = getattr(obj, "appearance", None)
        if look is not None:
            return self._varied_sprite(obj, look)
        ok, gx, gy = self._plane(obj)
        hw, hh, p = CLASS_SHAPES[obj.category_id]
        px_per_rad = self.width / (2.0 * math.pi)
        hw = max(hw / obj.distance, MIN_HALF_SIZE_PX / px_per_rad)
        hh = max(hh / obj.distance, MIN_HALF_SIZE_PX / px_per_rad)
        rho = (np.abs(gx / hw) ** p + np.abs(gy / hh) ** p) ** (1.0 / p)
        inside = rho <= 1.0
        idx, rho = ok[inside], rho[inside]
        colour = np.asarray(CLASS_COLORS[obj.category_id], np.float64)
        light = (
            0.55
            + 0.45 * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
            + 0.25 * np.exp(-((gx[inside] / hw + 0.3) ** 2 + (gy[inside] / hh - 0.3) ** 2) / 0.05)
        )
        light = np.where(rho > 0.85, 0.45, light)  # dark rim
        rgb = np.clip(colour[None, :] * light[:, None], 0, 255).astype(np.uint8)
        return idx, rgb

    def _varied_sprite(self, obj: VisualObject, look: Appearance) -> tuple[np.ndarray, np.ndarray]:
        ok, gx, gy = self._plane(obj)
        hw, hh, _ = CLASS_SHAPES[obj.category_id]
        min_half = MIN_HALF_SIZE_PX / (self.width / (2.0 * math.pi))
        hw = max(hw * look.scale[0] / obj.distance, min_half)
        hh = max(hh * look.scale[1] / obj.distance, min_half)
        c, s = math.cos(look.rotation), math.sin(look.rotation)
        u, v = (c * gx + s * gy) / hw, (c * gy - s * gx) / hh
        p = look.exponent
        rho = (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)
        if look.part is not None:
            offset, radius = look.part
            rho = np.minimum(rho, np.hypot(u * hw / hh, v - offset) / radius)
        inside = rho <= 1.0
        idx, rho, u, v = ok[inside], rho[inside], u[inside], v[inside]
        t = _pattern(look, u, v)[:, None]
        colour = (1.0 - t) * np.asarray(look.colour) + t * np.asarray(look.colour2)
        light = (
            0.55
            + 0.45 * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
            + 0.25 * np.exp(-((u + 0.3) ** 2 + (v - 0.3) ** 2) / 0.05)
        )
        if look.rim:
            light = np.where(rho > 0.85, 0.45, light)
        rgb = np.clip(colour * light[:, None], 0, 255).astype(np.uint8)
        return idx, rgb

    def frames(
        self, scene: Scene, rng: np.random.Generator, objects: list[VisualObject] | None = None
    ) -> Iterator[np.ndarray]:
        """Every 100 ms frame of the scene, uint8 (H, W, 3); the same array object is reused, copy
        it to keep it. The background is drawn from ``rng``; ``objects`` defaults to
        :meth:`objects` of the scene with ``rng``'s seed sequence."""
        if objects is None:
            objects = self.objects(scene, rng.bit_generator.seed_seq)
        bg = self.background(scene.room, rng).reshape(-1, 3)
        order = sorted(objects, key=lambda o: -o.distance)
        sprites = [self.sprite(o) for o in order]
        frame = np.empty_like(bg)
        for k in range(scene.num_frames):
            frame[:] = bg
            for obj, (idx, rgb) in zip(order, sprites, strict=True):
                if obj.onset_frame <= k < obj.offset_frame:
                    frame[idx] = rgb
            yield frame.reshape(self.height, self.width, 3)
