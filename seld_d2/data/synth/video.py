"""Equirectangular video of a synthetic scene: the room seen from the array, with a class-coloured
object at each active event's direction.

The background is ray-cast from the array position into the scene's shoebox room (the same room
the reflections use): a planked or tiled floor, walls with a skirting board, a door, a window and
a few pictures, a ceiling with a lamp and Lambertian-like shading (no pixel noise: it would triple the PNG
encoding time).
Each event is a flat object facing the array with a class-dependent real size and shape (a
person-sized ellipse for speech, a door-sized rectangle for doors, a small disc for a bell, ...),
so its angular size shrinks with distance exactly as perspective dictates; it is drawn in its
class colour (``classes.CLASS_COLORS``) with radial shading and a dark rim, only in the frames the
event is active, nearer objects over farther ones. The RGB stream therefore carries class,
direction and distance information, as the audiovisual track's real video does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ...acoustics.geometry import azel_to_unit, canvas_directions
from ..classes import CLASS_COLORS
from .scene import Event, Room, Scene

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


class VideoRenderer:
    """Renders RGB frames (height, width, 3) uint8 of scenes."""

    def __init__(self, width: int = 360, height: int = 180):
        if width < 8 or height < 4:
            raise ValueError(f"video size {width}x{height} is too small")
        self.width, self.height = int(width), int(height)
        self.dirs = canvas_directions(self.width, self.height)  # (H, W, 3)

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

    def sprite(self, event: Event) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of an event's object: flat canvas indices (P,) and their RGB uint8 (P, 3)."""
        u0 = azel_to_unit(event.azimuth, event.elevation)
        az, el = math.radians(event.azimuth), math.radians(event.elevation)
        left = np.array([-math.sin(az), math.cos(az), 0.0])
        up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
        d = self.dirs.reshape(-1, 3)
        front = d @ u0
        ok = np.flatnonzero(front > 0.2)
        gx = (d[ok] @ left) / front[ok]
        gy = (d[ok] @ up) / front[ok]
        hw, hh, p = CLASS_SHAPES[event.category_id]
        px_per_rad = self.width / (2.0 * math.pi)
        hw = max(hw / event.distance, MIN_HALF_SIZE_PX / px_per_rad)
        hh = max(hh / event.distance, MIN_HALF_SIZE_PX / px_per_rad)
        rho = (np.abs(gx / hw) ** p + np.abs(gy / hh) ** p) ** (1.0 / p)
        inside = rho <= 1.0
        idx, rho = ok[inside], rho[inside]
        colour = np.asarray(CLASS_COLORS[event.category_id], np.float64)
        light = (
            0.55
            + 0.45 * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
            + 0.25 * np.exp(-((gx[inside] / hw + 0.3) ** 2 + (gy[inside] / hh - 0.3) ** 2) / 0.05)
        )
        light = np.where(rho > 0.85, 0.45, light)  # dark rim
        rgb = np.clip(colour[None, :] * light[:, None], 0, 255).astype(np.uint8)
        return idx, rgb

    def frames(self, scene: Scene, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Every 100 ms frame of the scene, uint8 (H, W, 3); the same array object is reused, copy
        it to keep it."""
        bg = self.background(scene.room, rng).reshape(-1, 3)
        order = sorted(range(len(scene.events)), key=lambda i: -scene.events[i].distance)
        sprites = {i: self.sprite(scene.events[i]) for i in order}
        frame = np.empty_like(bg)
        for k in range(scene.num_frames):
            frame[:] = bg
            for i in order:
                ev = scene.events[i]
                if ev.onset_frame <= k < ev.offset_frame:
                    idx, rgb = sprites[i]
                    frame[idx] = rgb
            yield frame.reshape(self.height, self.width, 3)
