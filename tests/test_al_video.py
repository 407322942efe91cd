"""AudibleLight's 360° video renderer as wrapped by seld_d2 (al_video.py): overlays land at their
directions on the 360x180 canvas, the camera-azimuth correction, determinism, the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seld_d2.acoustics.geometry import angular_distance_deg, azel_to_unit, canvas_directions, unit_to_azel
from seld_d2.data.synth.rooms import textured_room_arrays
from seld_d2.data.synth.scene import Room, Scene
from seld_d2.data.synth.video import VideoConfig, VisualObject

try:
    import audiblelight  # noqa: F401
    import cv2  # noqa: F401
    import pyvista  # noqa: F401
    import vtk  # noqa: F401

    HAVE_VIDEO = True
except ImportError:
    HAVE_VIDEO = False
needs_video = pytest.mark.skipif(
    not HAVE_VIDEO, reason="the audiblelight video renderer needs the synth and synth-video extras"
)

ROOM = Room((6.0, 5.0, 3.0), (4.5, 1.2, 1.6), 0.4)  # the array far off the room's origin
DIRECTIONS = [
    (0.0, 0.0),
    (90.0, 0.0),
    (180.0, 0.0),
    (-120.0, 60.0),
    (45.0, -50.0),
    (170.0, 75.0),
    (-30.0, 20.0),
]


def overlay_directions(frames: list[np.ndarray], background: np.ndarray) -> list[tuple[float, float]]:
    """(azimuth, elevation) of each frame's changed pixels: their solid-angle-weighted mean."""
    dirs = canvas_directions(background.shape[1], background.shape[0])
    out = []
    for f in frames:
        changed = np.abs(f.astype(int) - background.astype(int)).sum(-1) > 30
        weight = np.cos(np.radians(unit_to_azel(dirs)[1]))[changed]
        v = (dirs[changed] * weight[:, None]).sum(0)
        az, el = unit_to_azel(v)
        out.append((float(az), float(el)))
    return out


def angle(az, el, faz, fel) -> float:
    return float(angular_distance_deg(azel_to_unit(az, el), azel_to_unit(faz, fel)))


def render(objects: list[VisualObject], seconds: float, **kwargs) -> list[np.ndarray]:
    from seld_d2.data.synth.al_video import AudibleLightVideoRenderer

    renderer = AudibleLightVideoRenderer(360, 180, VideoConfig.plain(), **kwargs)
    return list(renderer.frames(Scene(seconds, ROOM, ()), np.random.default_rng(0), objects))


def one_at_a_time(directions, distance=1.5) -> list[VisualObject]:
    """Object i (a person-sized ellipse) alone in frame 2i + 1; even frames show none."""
    return [
        VisualObject(0, 2 * i + 1, 2 * i + 2, az, el, distance, i) for i, (az, el) in enumerate(directions)
    ]


def test_textured_room_has_uv_in_range():
    for room in (ROOM, Room((7.0, 6.0, 3.0), (2.0, 2.0, 1.5), 0.3, notch=(3.0, 2.0))):
        v, f, uv, atlas = textured_room_arrays(room, np.random.default_rng(1), tile=32)
        k = len(room.floor_plan())
        assert uv.shape == (len(v), 2) and np.all((uv >= 0) & (uv <= 1))
        assert atlas.shape == (32, 32 * (k + 2), 3) and atlas.dtype == np.uint8
        assert len(f) == 2 * (k - 2) + 2 * k and f.max() < len(v)


@needs_video
def test_overlays_land_at_their_directions():
    frames = render(one_at_a_time(DIRECTIONS, 1.2), 0.2 * len(DIRECTIONS))  # all inside the room
    assert frames[0].shape == (180, 360, 3) and frames[0].dtype == np.uint8
    found = overlay_directions(frames[1::2], frames[0])
    for (az, el), (faz, fel) in zip(DIRECTIONS, found, strict=True):
        err = angle(az, el, faz, fel)
        assert err < 5.0, f"overlay at ({az}, {el}) found at ({faz:.1f}, {fel:.1f}): {err:.1f} deg off"


@needs_video
def test_audiblelight_camera_turns_the_azimuth_by_its_offset():
    from seld_d2.data.synth.al_video import audiblelight_azimuth_offset, camera_pose

    offset = audiblelight_azimuth_offset(ROOM.mic)
    assert offset == pytest.approx(math.degrees(math.atan2(-1.2, -4.5)))  # ~ -165: far from 0
    # AudibleLight's camera looks at world (0, 0, z_mic): camera_pose at that yaw is the same camera.
    pos, focal, _ = camera_pose(ROOM.mic, offset)
    theirs = np.array([0.0, 0.0, ROOM.mic[2]]) - np.asarray(ROOM.mic)
    ours = np.asarray(focal) - np.asarray(pos)
    assert np.allclose(ours, theirs / np.linalg.norm(theirs))
    # Rendered with AudibleLight's camera, an event appears `offset` degrees away from its azimuth.
    directions = [(30.0, 0.0), (-60.0, 10.0)]  # inside the room at 1.5 m
    frames = render(one_at_a_time(directions), 0.4, yaw_deg=offset)
    for (az, el), (faz, fel) in zip(directions, overlay_directions(frames[1::2], frames[0]), strict=True):
        assert angle(az - offset, el, faz, fel) < 10.0
        assert angle(az, el, faz, fel) > 90.0


@needs_video
def test_same_seed_same_frames_and_the_pipeline(tmp_path):
    from seld_d2.data.synth import SceneConfig, SynthConfig, synthesize_split

    config = SynthConfig(
        scene=SceneConfig(duration=1.0, min_events=2, max_events=2),
        labels=False,
        video_renderer="audiblelight",
        video_render_size=(720, 360),
    )
    for run in ("a", "b"):
        synthesize_split(tmp_path / run, "t", 1, 5, config, progress=False)
    pngs = sorted((tmp_path / "a" / "frames_dev" / "t").rglob("*.png"))
    assert len(pngs) == 10
    for p in pngs:
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
