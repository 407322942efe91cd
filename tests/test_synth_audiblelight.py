"""The AudibleLight backend end to end: real ray-traced renders of short two-event scenes (files,
layout, label peaks, determinism, levels, reverberation tails), and the procedural room meshes."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seld_d2.acoustics.geometry import (
    TETRA_CHANNELS,
    angular_distance_deg,
    azel_to_unit,
    em32_positions,
    pixel_to_azel,
)
from seld_d2.data.synth import SceneConfig, SynthConfig, synthesize_split
from seld_d2.data.synth.generate import read_event_table
from seld_d2.data.synth.rooms import room_mesh_arrays
from seld_d2.data.synth.scene import Room
from seld_d2.data.synth.sources import active_rms
from seld_d2.utils.threads import blas_threads

try:
    import audiblelight  # noqa: F401
    import trimesh  # noqa: F401

    MISSING = None
except ImportError as err:
    MISSING = err.name

needs_audiblelight = pytest.mark.skipif(
    MISSING is not None, reason=f"{MISSING} is not installed (the optional extra: pip install -e '.[synth]')"
)
FS = 24000
SPLIT = "dev-test-al"
SEED = 3
# 8 s, two events (15 per 60 s), 60 degrees apart when they overlap, in an L-shaped room.
SCENE = SceneConfig(
    duration=8.0, min_events=15, max_events=15, min_separation_deg=60.0, l_room_probability=1.0
)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    with blas_threads(1):
        yield


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("al")
    synthesize_split(root, SPLIT, 1, SEED, SynthConfig(scene=SCENE, backend="audiblelight"), progress=False)
    return root


def test_room_meshes_are_closed_and_face_inwards():
    for room in (
        Room((5.0, 4.0, 3.0), (2.0, 2.0, 1.5), 0.3),
        Room((6.0, 5.0, 3.0), (2.0, 2.0, 1.5), 0.3, (2.0, 1.5)),
    ):
        v, f = room_mesh_arrays(room)
        # Signed volume by the divergence theorem: inward normals make it minus the room's volume.
        vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
        area = 5.0 * 4.0 if room.notch is None else 6.0 * 5.0 - 2.0 * 1.5
        assert vol == pytest.approx(-area * 3.0)
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert np.all(counts == 2)  # closed: every edge shared by two triangles


def test_l_rooms_keep_events_in_sight():
    from seld_d2.data.synth import sample_scene

    for k in range(20):
        scene = sample_scene(SCENE, np.random.default_rng(k))
        room = scene.room
        assert room.shape == "L" and room.contains(np.asarray(room.mic), 0.5)
        for ev in scene.events:
            p = np.asarray(room.mic) + ev.position
            assert room.contains(p, SCENE.wall_margin) and room.visible(np.asarray(room.mic), p)


@needs_audiblelight
def test_rendered_scene_files_layout_and_labels(rendered):
    (seq,) = [p.stem for p in (rendered / "eigen_dev" / SPLIT).glob("*.wav")]
    em32, fs = sf.read(rendered / "eigen_dev" / SPLIT / f"{seq}.wav", dtype="float32", always_2d=True)
    mic, _ = sf.read(rendered / "mic_dev" / SPLIT / f"{seq}.wav", dtype="float32", always_2d=True)
    assert fs == FS and em32.shape == (8 * FS, 32) and np.array_equal(mic, em32[:, list(TETRA_CHANNELS)])
    assert len(list((rendered / "frames_dev" / SPLIT / seq).glob("*.png"))) == 80
    info = json.loads((rendered / "events_dev" / SPLIT / f"{seq}_scene.json").read_text())
    assert info["backend"] == "audiblelight" and info["room_shape"] == "L" and info["material"]
    events = {e.instance_id: e for e in read_event_table(rendered / "events_dev" / SPLIT / f"{seq}.csv")}
    assert len(events) == 2
    anns = json.loads((rendered / "labels_dev" / SPLIT / f"{seq}_std.json").read_text())["annotations"]
    assert {a["instance_id"] for a in anns} == set(events)
    for ann in anns:
        pts = np.array([p for poly in ann["segmentation"] for p in poly], dtype=np.float64)
        az, el = pixel_to_azel(*pts[np.argmax(pts[:, 2]), :2])
        assert angular_distance_deg(azel_to_unit(az, el), events[ann["instance_id"]].direction) < 12.0


@needs_audiblelight
def test_rendered_scene_same_seed_same_bytes(rendered, tmp_path):
    synthesize_split(
        tmp_path, SPLIT, 1, SEED, SynthConfig(scene=SCENE, backend="audiblelight"), progress=False
    )
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 + 80 + 1 + 2
    for rel in files:
        assert filecmp.cmp(tmp_path / rel, rendered / rel, shallow=False), rel


@needs_audiblelight
def test_rendered_scene_keeps_reverberation_tails(rendered):
    (wav,) = (rendered / "eigen_dev" / SPLIT).glob("*.wav")
    em32, _ = sf.read(wav, dtype="float64", always_2d=True)
    events = read_event_table(wav.parents[2] / "events_dev" / SPLIT / f"{wav.stem}.csv")
    last = max(events, key=lambda e: e.offset)
    if last.offset > 7.8:
        pytest.skip("the last event ends with the clip")
    start = int(last.offset * FS)
    before = np.sqrt(np.mean(em32[start - 2400 : start] ** 2))
    after = np.sqrt(np.mean(em32[start + 240 : start + 2640] ** 2))  # 10-110 ms after the offset
    assert 1e-3 * before < after < before  # the room rings on (AudibleLight's own stage cuts it)


@needs_audiblelight
def test_levels_match_the_event_table(tmp_path):
    # In an anechoic room ("Sound Proof" walls) the mix is the direct sound alone: each event's
    # capsule levels are its table level at 1 m minus the 1/r spreading.
    scene = SceneConfig(duration=4.0, min_events=30, max_events=30, max_overlap=1, noise_probability=0.0)
    config = SynthConfig(
        scene=scene, backend="audiblelight", material="Sound Proof", video_size=None, labels=False
    )
    (seq,) = synthesize_split(tmp_path, SPLIT, 1, 5, config, progress=False)
    em32, _ = sf.read(tmp_path / "eigen_dev" / SPLIT / f"{seq}.wav", dtype="float64", always_2d=True)
    events = read_event_table(tmp_path / "events_dev" / SPLIT / f"{seq}.csv")
    assert len(events) == 2
    for ev in events:
        seg = em32[int(ev.onset * FS) : int(ev.offset * FS)]
        d = np.linalg.norm(ev.position[None, :] - em32_positions(), axis=1)
        got = np.mean([20 * np.log10(active_rms(seg[:, m], FS) * d[m]) for m in range(32)])
        assert got == pytest.approx(ev.level_db, abs=1.0), ev
