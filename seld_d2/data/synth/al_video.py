"""AudibleLight's 360° video renderer as the video of a synthetic scene (``video_renderer =
"audiblelight"``; optional extra ``pip install -e '.[synth,synth-video]'``).

AudibleLight 0.1.2 renders video with pyvista/VTK off-screen: the room mesh and one textured plane
per active event, seen from the array through ``vtkPanoramicProjectionPass`` (equirectangular,
``synthesize.create_video_frame``). Its driver ``generate_scene_video_from_events`` needs its own
``Scene`` and has two faults for ground truth, fixed here by driving the same frame pass with our
own plotter:

- the camera looks from the array towards world ``(0, 0, z_mic)``, so its azimuth is turned by
  :func:`audiblelight_azimuth_offset` ``= atan2(-y_mic, -x_mic)`` from the audio's; here the camera
  looks along world +x from the array, so the video's azimuth is the audio's (SPEC §1: positive
  to the left, canvas x = (180 - az) mod 360, y = 90 - el);
- VTK's frustum culler, which judges visibility by the forward camera's frustum, drops overlays
  more than ~45-80° off the camera direction: the renderer's cullers are removed.

Also: pyvista 0.49 refuses ``transform`` without ``inplace`` (AudibleLight's
``create_event_plane`` raises), so overlays are built here; each overlay has the object's real size
and shape (its outline cut as a polygon, so it keeps the look's silhouette) and the texture of
its look from :mod:`.video` (or an image of a user folder ``<dir>/<class name>/*.png|jpg``); the
room is the textured mesh of :func:`.rooms.textured_room_arrays`. Everything is drawn unlit, so
a texture's colours are the frame's. Which events are shown and the distractors are
:meth:`VideoRenderer.objects`' (the same as the project's renderer for the same seed).

Frames are rendered at ``render_size`` and resized to the output size (area averaging); only a
frame whose set of visible objects changed is rendered again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...acoustics.geometry import azel_to_unit
from ..classes import CLASS_NAMES
from .render import BackendUnavailable
from .rooms import textured_room_arrays
from .scene import Scene
from .video import CLASS_SHAPES, Appearance, VideoConfig, VideoRenderer, VisualObject, _pattern

VIDEO_RENDERERS = ("project", "audiblelight")
SPRITE_TEXELS = 64  # texture size of an object's look
OUTLINE_POINTS = 48
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def audiblelight_azimuth_offset(mic: np.ndarray) -> float:
    """Degrees by which AudibleLight's own video turns the azimuth: its camera at the array looks
    at world (0, 0, z_mic), i.e. along azimuth ``atan2(-y_mic, -x_mic)`` (mic in room coordinates),
    and that direction lands at the canvas centre, where the project puts azimuth 0."""
    return math.degrees(math.atan2(-float(mic[1]), -float(mic[0])))


def camera_pose(mic: np.ndarray, yaw_deg: float = 0.0) -> list[tuple[float, float, float]]:
    """pyvista ``camera_position`` (position, focal point, view up) at the array looking along
    azimuth ``yaw_deg`` horizontally; yaw 0 puts azimuth 0 at the canvas centre (the project's
    convention)."""
    mic = np.asarray(mic, np.float64)
    yaw = math.radians(yaw_deg)
    focal = mic + np.array([math.cos(yaw), math.sin(yaw), 0.0])
    return [tuple(mic.tolist()), tuple(focal.tolist()), (0.0, 0.0, 1.0)]


def _imports():
    try:
        import pyvista
        import vtk
        from audiblelight.synthesize import create_video_frame
    except ImportError as err:
        raise BackendUnavailable(
            f"the audiblelight video renderer needs the optional extras ({err.name} is not installed): "
            "pip install -e '.[synth,synth-video]'"
        ) from None
    return pyvista, vtk, create_video_frame


def _half_sizes(category_id: int, look: Appearance | None) -> tuple[float, float]:
    hw, hh, _ = CLASS_SHAPES[category_id]
    return (hw, hh) if look is None else (hw * look.scale[0], hh * look.scale[1])


def object_outline(category_id: int, look: Appearance | None, n: int = OUTLINE_POINTS) -> list[np.ndarray]:
    """Outline polygons of an object in its plane, metres (right, up as seen from the array), each
    (n, 2): the superellipse of its class and look, and the look's extra disc."""
    hw, hh = _half_sizes(category_id, look)
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    ct, st = np.cos(t), np.sin(t)
    if look is None:
        p, c, s = CLASS_SHAPES[category_id][2], 1.0, 0.0
    else:
        p, c, s = look.exponent, math.cos(look.rotation), math.sin(look.rotation)
    # Outlines in the look's rotated frame (x along its width), then turned into the plane.
    frames = [(hw * np.sign(ct) * np.abs(ct) ** (2.0 / p), hh * np.sign(st) * np.abs(st) ** (2.0 / p))]
    if look is not None and look.part is not None:
        offset, radius = look.part
        frames.append((radius * hh * ct, (offset + radius * st) * hh))
    return [np.column_stack([c * x - s * y, s * x + c * y]) for x, y in frames]


def look_texture(
    category_id: int, look: Appearance | None, half: float, texels: int = SPRITE_TEXELS
) -> np.ndarray:
    """The texture of an object's look over the square of half-side ``half`` metres around its
    centre, RGB uint8 (texels, texels, 3) (row 0 at the top): colours, pattern and shading as
    :class:`VideoRenderer` draws them (``look`` None: the plain class colour)."""
    from ..classes import CLASS_COLORS

    g = ((np.arange(texels) + 0.5) / texels * 2.0 - 1.0) * half
    gx, gy = np.meshgrid(g, -g)
    hw, hh = _half_sizes(category_id, look)
    if look is None:
        u, v, p, rim = gx / hw, gy / hh, CLASS_SHAPES[category_id][2], True
        colour = np.broadcast_to(np.asarray(CLASS_COLORS[category_id], np.float64), (*u.shape, 3))
    else:
        c, s = math.cos(look.rotation), math.sin(look.rotation)
        u, v, p, rim = (c * gx + s * gy) / hw, (c * gy - s * gx) / hh, look.exponent, look.rim
        t = _pattern(look, u, v)[..., None]
        colour = (1.0 - t) * np.asarray(look.colour) + t * np.asarray(look.colour2)
    rho = (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)
    if look is not None and look.part is not None:
        offset, radius = look.part
        rho = np.minimum(rho, np.hypot(u * hw / hh, v - offset) / radius)
    light = (
        0.55
        + 0.45 * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
        + 0.25 * np.exp(-((u + 0.3) ** 2 + (v - 0.3) ** 2) / 0.05)
    )
    if rim:
        light = np.where(rho > 0.85, 0.45, light)
    return np.clip(colour * light[..., None], 0, 255).astype(np.uint8)


class AudibleLightVideoRenderer(VideoRenderer):
    """Frames (height, width, 3) uint8 rendered by AudibleLight's panoramic pass (see the module
    docstring), at ``render_size`` (default: the output size) resized to (width, height).
    ``image_dir``: a folder of per-class images (``<dir>/<class name>/*``) used instead of the
    looks; a class without images keeps its look. ``yaw_deg``: the azimuth at the canvas centre
    (0, the project's convention; ``audiblelight_azimuth_offset(mic)`` is AudibleLight's own
    camera, for comparison)."""

    def __init__(
        self,
        width: int = 360,
        height: int = 180,
        config: VideoConfig | None = None,
        render_size: tuple[int, int] | None = None,
        image_dir: str | Path | None = None,
        yaw_deg: float = 0.0,
    ):
        super().__init__(width, height, config)
        self.yaw_deg = float(yaw_deg)
        self._pv, self._vtk, self._frame = _imports()
        self.render_size = tuple(render_size) if render_size else (self.width, self.height)
        if self.render_size[0] != 2 * self.render_size[1]:
            raise ValueError(f"render size must be 2:1 (equirectangular), got {self.render_size}")
        self.images = _class_images(Path(image_dir)) if image_dir else {}
        self.frames_rendered = 0

    def _overlay(self, obj: VisualObject, mic: np.ndarray, rng: np.random.Generator):
        """The object as a pyvista mesh facing the array, with UV, and its texture (RGB uint8)."""
        pv = self._pv
        files = self.images.get(obj.category_id)
        if files:
            from PIL import Image

            texture = np.asarray(Image.open(files[int(rng.integers(len(files)))]).convert("RGB"))
            hw, hh, _ = CLASS_SHAPES[obj.category_id]
            half = max(hw, hh)
            polys = [half * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])]
        else:
            polys = object_outline(obj.category_id, obj.appearance)
            half = max(float(np.abs(q).max()) for q in polys)
            texture = look_texture(obj.category_id, obj.appearance, half)
        d = azel_to_unit(obj.azimuth, obj.elevation)
        az, el = math.radians(obj.azimuth), math.radians(obj.elevation)
        right = np.array([math.sin(az), -math.cos(az), 0.0])  # seen from the array
        up = np.array([-math.sin(el) * math.cos(az), -math.sin(el) * math.sin(az), math.cos(el)])
        centre = np.asarray(mic) + obj.distance * d
        points, faces, uv = [], [], []
        for q in polys:
            base = sum(len(p) for p in points)
            points.append(centre + q[:, :1] * right + q[:, 1:] * up)
            uv.append(np.clip(0.5 + 0.5 * q / half, 0.0, 1.0))
            faces.append(np.concatenate([[len(q)], base + np.arange(len(q))]))
        mesh = pv.PolyData(np.concatenate(points), np.concatenate(faces))
        mesh.active_texture_coordinates = np.concatenate(uv)
        return mesh, texture

    def frames(
        self, scene: Scene, rng: np.random.Generator, objects: list[VisualObject] | None = None
    ) -> Iterator[np.ndarray]:
        """Every 100 ms frame of the scene, uint8 (H, W, 3) (a new array each frame). The room's
        texture is drawn from ``rng``; ``objects`` as :meth:`VideoRenderer.frames`."""
        import cv2

        pv = self._pv
        if objects is None:
            objects = self.objects(scene, rng.bit_generator.seed_seq)
        room, mic = scene.room, np.asarray(scene.room.mic, np.float64)
        vertices, faces, uv, atlas = textured_room_arrays(room, rng)
        plotter = pv.Plotter(off_screen=True, window_size=list(self.render_size), lighting="none")
        try:
            plotter.disable_anti_aliasing()
            mesh = pv.PolyData(vertices, np.column_stack([np.full(len(faces), 3), faces]).ravel())
            mesh.active_texture_coordinates = uv
            plotter.add_mesh(mesh, texture=pv.Texture(atlas), lighting=False)
            actors = []
            for i, obj in enumerate(objects):
                overlay, texture = self._overlay(obj, mic, rng)
                actor = plotter.add_mesh(overlay, texture=pv.Texture(texture), lighting=False, name=f"obj{i}")
                actor.SetVisibility(False)
                actors.append(actor)
            plotter.camera_position = camera_pose(mic, self.yaw_deg)
            plotter.renderer.GetCullers().RemoveAllItems()  # the frustum culler drops off-axis overlays
            shown, frame = None, None
            for k in range(scene.num_frames):
                now = tuple(o.onset_frame <= k < o.offset_frame for o in objects)
                if now != shown:
                    for actor, on in zip(actors, now, strict=True):
                        actor.SetVisibility(on)
                    img = np.asarray(self._frame(plotter, self.render_size))[..., :3]
                    self.frames_rendered += 1
                    if img.shape[:2] != (self.height, self.width):
                        img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
                    frame, shown = np.ascontiguousarray(img, np.uint8), now
                yield frame.copy()
        finally:
            plotter.close()


def _class_images(root: Path) -> dict[int, list[Path]]:
    """Images per class id of a folder ``<root>/<class name>/*`` (sorted), or ValueError."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of per-class images")
    out = {}
    for cid, name in enumerate(CLASS_NAMES):
        folder = root / name
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                out[cid] = files
    if not out:
        examples = ", ".join(CLASS_NAMES[:2])
        raise ValueError(f"{root}: no images in any <class name>/ subfolder ({examples}, ...)")
    return out


def make_video_renderer(
    kind: str,
    width: int,
    height: int,
    config: VideoConfig | None = None,
    render_size: tuple[int, int] | None = None,
    image_dir: str | Path | None = None,
) -> VideoRenderer:
    """The video renderer of a name: ``project`` (:class:`VideoRenderer`) or ``audiblelight``."""
    if kind == "project":
        if render_size is not None or image_dir is not None:
            raise ValueError("render size and event images are settings of the audiblelight video renderer")
        return VideoRenderer(width, height, config)
    if kind == "audiblelight":
        return AudibleLightVideoRenderer(width, height, config, render_size, image_dir)
    raise ValueError(f"unknown video renderer {kind!r}; use one of {', '.join(VIDEO_RENDERERS)}")
