"""Synthetic scenes: sampling limits, sources, rendering, labels, video, files, determinism, CLI."""

from __future__ import annotations

import filecmp
import io
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from seld_d2.acoustics.geometry import (
    TETRA_CHANNELS,
    angular_distance_deg,
    azel_to_unit,
    canvas_directions,
    em32_positions,
    fibonacci_grid,
    pixel_to_azel,
)
from seld_d2.acoustics.render import render_point_source
from seld_d2.data.classes import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES, class_index
from seld_d2.data.synth import (
    BackendUnavailable,
    ClipSynthesizer,
    DrySourceLibrary,
    LabelMaker,
    SceneConfig,
    SynthConfig,
    VideoConfig,
    VideoRenderer,
    annotations_to_json,
    clip_seed,
    dry_source,
    make_renderer,
    polyphony,
    procedural_source,
    sample_scene,
    synthesize_split,
)
from seld_d2.data.synth.generate import png_bytes, read_event_table, write_wav
from seld_d2.data.synth.labels import (
    canvas_interpolation,
)
from seld_d2.data.synth.render import diffuse_noise, event_impulse_response, fft_convolve, image_sources
from seld_d2.data.synth.scene import Event, Room, Scene
from seld_d2.data.synth.sources import active_rms
from seld_d2.utils.threads import blas_threads

FS = 24000
SEED = 7
SPLIT = "dev-test-synth"
# Short clips with several events each (counts are per 60 s and scale with the duration).
# Simultaneous events are kept 60 deg apart: closer ones legitimately merge in the 32-ch map (and a
# tonal event missing the 50 Hz bands can pick up a neighbour's flank), so a label's peak could
# sit between them; unconstrained default scenes have ~2 % of label peaks beyond 12 deg.
TEST_SCENE = SceneConfig(duration=4.0, min_events=45, max_events=60, min_separation_deg=60.0)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    with blas_threads(1):
        yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize_split(root, SPLIT, 2, SEED, SynthConfig(scene=TEST_SCENE), progress=False)
    return root


# ----------------------------------------------------------------------------------------------
# classes, scenes, sources
# ----------------------------------------------------------------------------------------------


def test_classes():
    assert NUM_CLASSES == 13 and len(CLASS_COLORS) == 13
    assert len(set(CLASS_COLORS)) == 13 and all(all(0 <= c <= 255 for c in rgb) for rgb in CLASS_COLORS)
    assert class_index("Water tap") == class_index("water_tap") == class_index("10") == 10
    assert class_index("door") == 7 and class_index(CLASS_NAMES[6]) == 6
    with pytest.raises(ValueError):
        class_index("vacuum cleaner")


def test_scene_sampling_limits():
    cfg = SceneConfig()
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(50):
        scene = sample_scene(cfg, rng)
        n = len(scene.events)
        counts.append(n)
        assert 5 <= n <= 20
        assert polyphony(scene.events, scene.num_frames).max() <= 4
        assert [e.instance_id for e in scene.events] == list(range(n))
        size, mic = np.asarray(scene.room.size), np.asarray(scene.room.mic)
        for ev in scene.events:
            assert 0.5 <= ev.distance <= 3.0
            assert abs(ev.position[2]) <= 0.3 + 1e-9
            assert math.isclose(ev.onset * 10, round(ev.onset * 10)) and math.isclose(
                ev.offset * 10, round(ev.offset * 10)
            )
            assert 0 <= ev.onset < ev.offset <= 60.0
            p = mic + ev.position
            assert np.all(p > 0) and np.all(p < size)
            assert ev.level_db == pytest.approx(-50.0 + ev.snr_db) and 5 <= ev.snr_db <= 30
    assert min(counts) < max(counts)  # the count is drawn, not fixed
    noisy = [sample_scene(cfg, rng).noise is not None for _ in range(40)]
    assert 5 < sum(noisy) < 35
    # Shorter clips scale the counts; separation holds between simultaneous events.
    short = SceneConfig(duration=6.0, min_events=40, max_events=60, min_separation_deg=40.0)
    assert short.event_count_range() == (4, 6)
    for _ in range(10):
        scene = sample_scene(short, rng)
        for a in scene.events:
            for b in scene.events:
                if a is not b and a.onset < b.offset and b.onset < a.offset:
                    assert angular_distance_deg(a.direction, b.direction) >= 40.0 - 1e-6
    with pytest.raises(ValueError, match="max_overlap"):
        SceneConfig(max_overlap=0)


def test_procedural_sources():
    band = []
    for cid in range(NUM_CLASSES):
        x = procedural_source(cid, FS, np.random.default_rng(cid))
        assert x.shape == (FS,) and np.all(np.isfinite(x))
        assert active_rms(x) == pytest.approx(1.0)
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(FS, 1 / FS)
        band.append(spec[(f > 1500) & (f < 4500)].sum() / spec.sum())
        np.testing.assert_array_equal(x, procedural_source(cid, FS, np.random.default_rng(cid)))
    assert min(band) > 0.01  # every class reaches the mapping bands


def test_dry_source_library(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "03").mkdir()
    sf.write(tmp_path / "03" / "ring.wav", rng.standard_normal((8000, 2)) * 0.1, 16000)  # 0.5 s stereo
    (tmp_path / "Water_tap").mkdir()
    sf.write(tmp_path / "Water_tap" / "tap.flac", rng.standard_normal(48000) * 0.1, 48000)
    lib = DrySourceLibrary(tmp_path)
    assert lib.classes == [3, 10]
    x = lib.draw(3, FS, np.random.default_rng(1))  # tiled from 0.5 s, resampled to 24 kHz
    assert x.shape == (FS,) and active_rms(x) == pytest.approx(1.0)
    assert lib.draw(0, FS, np.random.default_rng(1)) is None
    y = dry_source(0, FS, np.random.default_rng(1), lib)  # procedural fallback
    np.testing.assert_array_equal(y, procedural_source(0, FS, np.random.default_rng(1)))
    (tmp_path / "vacuum").mkdir()
    with pytest.raises(ValueError, match="not a class"):
        DrySourceLibrary(tmp_path)
    with pytest.raises(FileNotFoundError):
        DrySourceLibrary(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------


def test_fractional_delay_render_matches_exact():
    rng = np.random.default_rng(0)
    mics = em32_positions()
    src = np.array([1.3, -0.6, 0.25])
    x = rng.standard_normal(FS // 2)
    X = np.fft.rfft(x)
    X[np.fft.rfftfreq(len(x), 1 / FS) > 10000] = 0  # the windowed sinc is flat to ~11 kHz
    x = np.fft.irfft(X, len(x))
    exact = render_point_source(np.concatenate([x, np.zeros(1000)]), src, mics, FS).T
    h, offset = event_impulse_response(src, mics, FS)
    wet = fft_convolve(x, h)
    ours = np.zeros_like(exact)
    ours[:, offset : offset + wet.shape[1]] = wet[:, : exact.shape[1] - offset]
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 2e-3


def test_image_sources():
    room = Room((6.0, 5.0, 3.0), (2.0, 1.5, 1.2), 0.36)
    src = np.array([1.0, 0.5, 0.2])
    pos, amp = image_sources(room, src, 1)
    assert len(pos) == 7 and np.isclose(amp.max(), 1.0) and np.allclose(np.sort(amp)[:6], 0.8)
    absolute = pos + np.asarray(room.mic)
    s = np.asarray(room.mic) + src
    assert any(np.allclose(p, [-s[0], s[1], s[2]]) for p in absolute)  # mirrored in the x = 0 wall
    assert any(np.allclose(p, [s[0], s[1], 2 * 3.0 - s[2]]) for p in absolute)  # in the ceiling
    h0, _ = event_impulse_response(src, em32_positions(), FS)
    h1, _ = event_impulse_response(src, em32_positions(), FS, room, 1)
    assert len(h1) > len(h0)


def test_diffuse_noise_is_diffuse():
    from scipy.signal import csd, welch

    mics = em32_positions()
    n = diffuse_noise(4 * FS, np.random.default_rng(0), mics, FS, "white")
    assert n.shape == (32, 4 * FS) and n.dtype == np.float32
    assert np.sqrt(np.mean(n.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=0.02)
    d = np.linalg.norm(mics[0] - mics[2])
    f, pxy = csd(n[0], n[2], FS, nperseg=512)
    _, pxx = welch(n[0], FS, nperseg=512)
    _, pyy = welch(n[2], FS, nperseg=512)
    coh = np.real(pxy) / np.sqrt(pxx * pyy)
    for freq in (1000, 3000, 6000):
        i = np.argmin(np.abs(f - freq))
        assert coh[i] == pytest.approx(np.sinc(2 * freq * d / 340.5), abs=0.08)


def test_audiblelight_backend_unavailable_is_clear(monkeypatch):
    # Where the extra is installed, hide it: a None entry in sys.modules makes the import fail.
    for module in ("audiblelight", "trimesh"):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(BackendUnavailable, match=r"is not installed\): pip install -e '\.\[synth\]'$"):
            make_renderer("audiblelight")
        monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown backend"):
        make_renderer("raytracer")


# ----------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------


def test_canvas_interpolation():
    interp = canvas_interpolation()
    assert interp.index.shape == (180, 360, 3)
    assert np.all(interp.weights >= 0) and np.allclose(interp.weights.sum(-1), 1.0)
    grid = fibonacci_grid()
    v = np.array([0.3, -0.5, 0.8])
    canvas = interp(grid @ v)
    assert np.abs(canvas - canvas_directions() @ v).max() < 0.02  # linear fields stay ~linear


def _render(events, seconds=1.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    mix = np.zeros((32, n))
    for ev in events:
        h, off = event_impulse_response(ev.position, em32_positions(), FS)
        wet = fft_convolve(rng.standard_normal(n), h)
        mix[:, off:] += wet[:, : n - off]
    return mix + noise * rng.standard_normal(mix.shape)


def test_seam_event_gives_two_polygons_inside_canvas():
    ev = Event(0, 3, 0.0, 0.5, azimuth=179.0, elevation=5.0, distance=1.5, snr_db=20.0, level_db=-30.0)
    anns = LabelMaker().annotations(_render([ev], 0.5, noise=0.02), [ev], np.ones((1, 5), bool))
    assert len(anns) == 5
    for a in anns:
        assert len(a.polygons) == 2
        for poly in a.polygons:
            assert np.all((poly[:, 0] >= 0) & (poly[:, 0] <= 359) & (poly[:, 1] >= 0) & (poly[:, 1] <= 179))
            assert np.all(poly[:, 0] == np.round(poly[:, 0])) and len(poly) >= 3
        xs = np.concatenate([p[:, 0] for p in a.polygons])
        assert xs.min() == 0 and xs.max() == 359  # the region continues across the seam
        assert a.distance_cm == 150.0


def test_labels_follow_the_sources():
    evs = [
        Event(0, 0, 0.0, 1.0, azimuth=40.0, elevation=20.0, distance=1.0, snr_db=20.0, level_db=-30.0),
        Event(1, 8, 0.0, 1.0, azimuth=-120.0, elevation=-15.0, distance=1.2, snr_db=20.0, level_db=-30.0),
    ]
    active = np.zeros((2, 10), bool)
    active[0, :6] = True
    active[1, 4:] = True
    anns = LabelMaker().annotations(_render(evs, noise=0.02), evs, active)
    assert [(a.frame, a.instance_id) for a in anns] == sorted(
        [(k, 0) for k in range(6)] + [(k, 1) for k in range(4, 10)]
    )
    for a in anns:
        pts = np.concatenate(a.polygons)
        peak = pts[np.argmax(pts[:, 2])]
        az, el = pixel_to_azel(peak[0], peak[1])
        assert angular_distance_deg(azel_to_unit(az, el), evs[a.instance_id].direction) < 6.0
        assert np.all((pts[:, 2] > 0) & (pts[:, 2] <= 1))
    text = annotations_to_json(anns)
    assert json.loads(text) == json.loads(json.dumps({"annotations": [a.to_dict() for a in anns]}))


# ----------------------------------------------------------------------------------------------
# video and files
# ----------------------------------------------------------------------------------------------


def test_video_objects():
    near = Event(0, 2, 0.0, 0.5, azimuth=30.0, elevation=0.0, distance=0.6, snr_db=20.0, level_db=-30.0)
    far = Event(1, 11, 0.2, 0.5, azimuth=-90.0, elevation=10.0, distance=2.9, snr_db=20.0, level_db=-30.0)
    vr = VideoRenderer(config=VideoConfig.plain())
    assert len(vr.sprite(near)[0]) > 4 * len(vr.sprite(far)[0]) > 0
    scene = Scene(0.5, Room((6.0, 5.0, 3.0), (3.0, 2.5, 1.5), 0.4), (near, far))
    frames = [f.copy() for f in vr.frames(scene, np.random.default_rng(0))]
    assert len(frames) == 5 and frames[0].shape == (180, 360, 3) and frames[0].dtype == np.uint8
    x_far, y_far = 270, 80  # (180 - az, 90 - el)
    col = np.asarray(CLASS_COLORS[11], float)
    assert np.linalg.norm(frames[0][y_far, x_far] - col) > 60  # not yet active
    assert np.linalg.norm(frames[3][y_far, x_far] * 1.0 - col) < 60
    assert np.linalg.norm(frames[0][90, 150] - np.asarray(CLASS_COLORS[2], float)) < 60


def _video_scene() -> Scene:
    near = Event(0, 2, 0.0, 0.5, azimuth=30.0, elevation=0.0, distance=0.6, snr_db=20.0, level_db=-30.0)
    far = Event(1, 11, 0.2, 0.5, azimuth=-90.0, elevation=10.0, distance=2.9, snr_db=20.0, level_db=-30.0)
    seam = Event(2, 7, 0.1, 0.4, azimuth=179.0, elevation=-5.0, distance=1.2, snr_db=20.0, level_db=-30.0)
    return Scene(0.5, Room((6.0, 5.0, 3.0), (3.0, 2.5, 1.5), 0.4), (near, far, seam))


def _frames_sha256(frames) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    return h.hexdigest()


def test_plain_video_reproduces_the_old_frames():
    # Hashes of the frames of the renderer before the varied look existed (same scene, same seed;
    # measured with that code): the plain look is byte-identical.
    vr = VideoRenderer(config=VideoConfig.plain())
    old = "c1ed0f20798aded4961e6f978016a3d602986d84f7f5b7f740bb3b087f0346ad"
    assert _frames_sha256(vr.frames(_video_scene(), np.random.default_rng(0))) == old
    config = SynthConfig(
        scene=SceneConfig(duration=3.0, min_events=40, max_events=40), labels=False, video=VideoConfig.plain()
    )
    synth = ClipSynthesizer(config)
    clip = synth.synthesize(clip_seed(5, "s", 1))
    old = "15a1491624a2ef8f751ddc72ac682f213950ca0079f40cc30682756d94c4f1a0"
    assert _frames_sha256(synth.video.frames(clip.scene, np.random.default_rng(clip.video_seed))) == old


def test_invisible_sources_leave_no_overlay():
    scene = _video_scene()
    empty = replace(scene, events=())
    ss = np.random.SeedSequence(4)
    background = next(VideoRenderer(config=VideoConfig.plain()).frames(empty, np.random.default_rng(ss)))
    background = background.copy()
    hidden = VideoRenderer(config=VideoConfig("varied", invisible_share=1.0, distractors=0))
    assert hidden.objects(scene, ss) == []
    assert all(np.array_equal(f, background) for f in hidden.frames(scene, np.random.default_rng(ss)))
    # With a share in between, the hidden events' directions show the room, the others an object.
    vr = VideoRenderer(config=VideoConfig("varied", invisible_share=0.5, distractors=0))
    seen = {o.instance_id for o in vr.objects(scene, np.random.SeedSequence(4))}
    frame = [f.copy() for f in vr.frames(scene, np.random.default_rng(np.random.SeedSequence(4)))][3]
    outcomes = set()
    for ev in scene.events:
        x, y = int((180 - ev.azimuth) % 360), int(90 - ev.elevation)
        drawn = not np.array_equal(frame[y, x], background[y, x])
        assert drawn == (ev.instance_id in seen), ev
        outcomes.add(drawn)
    # Visibility is drawn per event from the share: raising it only ever hides more.
    for share in (0.0, 0.2, 0.5, 0.8):
        more = VideoRenderer(config=VideoConfig("varied", share, 0)).objects(scene, np.random.SeedSequence(4))
        less = VideoRenderer(config=VideoConfig("varied", share + 0.2, 0)).objects(
            scene, np.random.SeedSequence(4)
        )
        assert {o.instance_id for o in less} <= {o.instance_id for o in more}


def test_objects_of_one_class_look_different():
    a = Event(0, 1, 0.0, 1.0, azimuth=40.0, elevation=0.0, distance=1.5, snr_db=20.0, level_db=-30.0)
    b = replace(a, instance_id=1, azimuth=-60.0)
    scene = Scene(1.0, Room((6.0, 5.0, 3.0), (3.0, 2.5, 1.5), 0.4), (a, b))
    vr = VideoRenderer(config=VideoConfig("varied", 0.0, 0))
    objs = vr.objects(scene, np.random.SeedSequence(0))
    assert [o.instance_id for o in objs] == [0, 1]
    (idx_a, rgb_a), (idx_b, rgb_b) = vr.sprite(objs[0]), vr.sprite(objs[1])
    assert np.linalg.norm(rgb_a.mean(0) - rgb_b.mean(0)) > 20  # colour
    assert abs(len(idx_a) - len(idx_b)) > 0.05 * max(len(idx_a), len(idx_b))  # size / shape
    look_a, look_b = objs[0].appearance, objs[1].appearance
    assert look_a.exponent != look_b.exponent and look_a.scale != look_b.scale
    # Across many seeds one class takes many looks; a plain object is always its class colour.
    looks = [vr.objects(scene, np.random.SeedSequence(k))[0].appearance for k in range(40)]
    assert len({lk.pattern for lk in looks}) >= 4 and len({round(lk.colour[0]) for lk in looks}) > 30
    plain = VideoRenderer(config=VideoConfig.plain())
    idx, rgb = plain.sprite(plain.objects(scene, np.random.SeedSequence(0))[0])
    assert np.array_equal(plain.sprite(a)[1], rgb)


def test_distractors_are_drawn_and_never_labelled(tmp_path):
    scene_cfg = SceneConfig(
        duration=2.0, min_events=60, max_events=60, max_overlap=2, min_separation_deg=60.0
    )
    runs = {}
    for name, video in (("varied", VideoConfig(distractors=4)), ("plain", VideoConfig.plain())):
        synthesize_split(
            tmp_path / name, SPLIT, 1, SEED, SynthConfig(scene=scene_cfg, video=video), progress=False
        )
        runs[name] = tmp_path / name
    # Video choices change the frames (and the scene file's video entry), nothing else.
    files = sorted(p.relative_to(runs["plain"]) for p in runs["plain"].rglob("*") if p.is_file())
    for rel in files:
        same = filecmp.cmp(runs["plain"] / rel, runs["varied"] / rel, shallow=False)
        assert same == (rel.parts[0] != "frames_dev" and not rel.name.endswith("_scene.json")), rel
    seq = next(p.stem for p in files if p.suffix == ".wav")
    info = json.loads((runs["varied"] / "events_dev" / SPLIT / f"{seq}_scene.json").read_text())
    distractors = info["video"]["distractors"]
    assert len(distractors) == 4 and info["video"]["style"] == "varied"
    assert json.loads((runs["plain"] / "events_dev" / SPLIT / f"{seq}_scene.json").read_text())["video"] == {
        "renderer": "project",
        "style": "plain",
        "invisible_share": 0.0,
        "invisible_instances": [],
        "distractors": [],
    }
    events = read_event_table(runs["varied"] / "events_dev" / SPLIT / f"{seq}.csv")
    anns = json.loads((runs["varied"] / "labels_dev" / SPLIT / f"{seq}_std.json").read_text())["annotations"]
    assert {a["instance_id"] for a in anns} <= {e.instance_id for e in events}
    # Each distractor shows in the frames where it is active, and no label is near it then
    # (it has no sound) unless an event happens to be there.
    frame_dir = runs["varied"] / "frames_dev" / SPLIT / seq
    background_dir = runs["plain"] / "frames_dev" / SPLIT / seq
    shown = 0
    for d in distractors:
        k = d["onset_frame"]
        x, y = int((180 - d["azimuth_deg"]) % 360), min(int(90 - d["elevation_deg"]), 179)
        with (
            Image.open(frame_dir / f"{seq}_{k:04d}.png") as im,
            Image.open(background_dir / f"{seq}_{k:04d}.png") as bg,
        ):
            shown += not np.array_equal(np.asarray(im)[y, x], np.asarray(bg)[y, x])
        near = [
            e
            for e in events
            if e.onset_frame <= k < e.offset_frame
            and angular_distance_deg(e.direction, azel_to_unit(d["azimuth_deg"], d["elevation_deg"])) < 30
        ]
        if not near:
            frame_anns = [a for a in anns if a["metadata_frame_index"] == k]
            for a in frame_anns:
                pts = np.array([p for poly in a["segmentation"] for p in poly], dtype=np.float64)
                peak = pts[np.argmax(pts[:, 2])]
                az, el = pixel_to_azel(peak[0], peak[1])
                dist = angular_distance_deg(
                    azel_to_unit(az, el), azel_to_unit(d["azimuth_deg"], d["elevation_deg"])
                )
                assert dist > 12.0
    assert shown >= 3  # a distractor can hide behind a nearer object


def test_wav_and_png_writers(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((4, 3000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio, FS)
    back, fs = sf.read(tmp_path / "a.wav", dtype="float32", always_2d=True)
    assert fs == FS and np.array_equal(back.T, audio)
    img = rng.integers(0, 256, (18, 36, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(img)))), img)


def test_generated_dataset_layout_and_labels(dataset):
    seqs = sorted(p.stem for p in (dataset / "eigen_dev" / SPLIT).glob("*.wav"))
    assert len(seqs) == 2 and all(s.startswith("fold9_room") and "_mix00" in s for s in seqs)
    checked = 0
    for seq in seqs:
        em32, fs = sf.read(dataset / "eigen_dev" / SPLIT / f"{seq}.wav", dtype="float32", always_2d=True)
        mic, fs4 = sf.read(dataset / "mic_dev" / SPLIT / f"{seq}.wav", dtype="float32", always_2d=True)
        assert fs == fs4 == FS and em32.shape == (4 * FS, 32) and mic.shape == (4 * FS, 4)
        assert np.array_equal(mic, em32[:, list(TETRA_CHANNELS)])
        frames = sorted((dataset / "frames_dev" / SPLIT / seq).glob("*.png"))
        assert [f.name for f in frames] == [f"{seq}_{k:04d}.png" for k in range(40)]
        with Image.open(frames[0]) as im:
            assert im.size == (360, 180) and im.mode == "RGB"
        events = {e.instance_id: e for e in read_event_table(dataset / "events_dev" / SPLIT / f"{seq}.csv")}
        assert len(events) >= 2
        text = (dataset / "labels_dev" / SPLIT / f"{seq}_std.json").read_text()
        anns = json.loads(text)["annotations"]
        assert anns
        for ann in anns:
            assert list(ann) == [
                "metadata_frame_index",
                "instance_id",
                "category_id",
                "distance",
                "segmentation",
            ]
            ev = events[ann["instance_id"]]
            assert ann["category_id"] == ev.category_id
            assert ev.onset_frame <= ann["metadata_frame_index"] < ev.offset_frame
            assert ann["distance"] == pytest.approx(ev.distance * 100, abs=1e-9)
            pts = np.array([p for poly in ann["segmentation"] for p in poly], dtype=np.float64)
            assert all(isinstance(v, int) for poly in ann["segmentation"] for p in poly for v in p[:2])
            assert np.all((pts[:, 0] >= 0) & (pts[:, 0] <= 359) & (pts[:, 1] >= 0) & (pts[:, 1] <= 180))
            assert np.all((pts[:, 2] > 0) & (pts[:, 2] <= 1))
            peak = pts[np.argmax(pts[:, 2])]
            az, el = pixel_to_azel(peak[0], peak[1])
            assert angular_distance_deg(azel_to_unit(az, el), ev.direction) < 12.0
            checked += 1
    assert checked > 20
    # The dataset module's validator accepts the clips with either audio format.
    from seld_d2.data.datasets import index_split

    for audio in ("mic", "eigen"):
        assert len(index_split(dataset, SPLIT, audio=audio, on_error="raise", use_cache=False)) == 2
    # ... and registers it in Detectron2: one record per frame, with the labelled events.
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from seld_d2.data.datasets import register_stairs26

    register_stairs26("synth_registered", dataset, SPLIT)
    records = DatasetCatalog.get("synth_registered")
    assert len(records) == 80 and sum(len(r["annotations"]) for r in records) == checked
    assert MetadataCatalog.get("synth_registered").thing_classes[0] == "Female speech"
    DatasetCatalog.remove("synth_registered")
    MetadataCatalog.remove("synth_registered")


def test_same_seed_gives_identical_files(dataset, tmp_path):
    # Clip 2 alone, from the same seed: its files must equal those of the 2-clip run byte for byte.
    synthesize_split(tmp_path, SPLIT, 1, SEED, SynthConfig(scene=TEST_SCENE), first_index=2, progress=False)
    ours = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(ours) == 2 + 40 + 1 + 2  # wavs, frames, labels, event table + scene info
    for rel in ours:
        assert filecmp.cmp(tmp_path / rel, dataset / rel, shallow=False), rel
    clip1 = sorted((dataset / "eigen_dev" / SPLIT).glob("*.wav"))[0]
    assert not filecmp.cmp(
        clip1, tmp_path / "eigen_dev" / SPLIT / clip1.name.replace("mix001", "mix002"), shallow=False
    )


def test_files_do_not_depend_on_the_callers_blas_threads(tmp_path):
    # A 20 s clip whose audio came out different in the last bits with two OpenBLAS threads
    # before synthesize_split pinned one (measured; shorter clips did not show it).
    config = SynthConfig(
        scene=SceneConfig(duration=20.0, min_events=3, max_events=5, max_overlap=2, classes=(2, 6, 8, 11)),
        video_size=None,
        labels=False,
    )
    for threads in (1, 2):
        with blas_threads(threads):
            synthesize_split(tmp_path / str(threads), "dev-train-demo", 1, 0, config, progress=False)
    wavs = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.wav"))
    assert len(wavs) == 2
    for rel in wavs:
        assert filecmp.cmp(tmp_path / "1" / rel, tmp_path / "2" / rel, shallow=False), rel


def test_other_seed_differs():
    synth = ClipSynthesizer(SynthConfig(scene=SceneConfig(duration=1.0), video_size=None, labels=False))
    a = synth.synthesize(clip_seed(1, SPLIT, 1))
    b = synth.synthesize(clip_seed(2, SPLIT, 1))
    assert a.scene.events != b.scene.events


# ----------------------------------------------------------------------------------------------
# tools
# ----------------------------------------------------------------------------------------------


def _tool(name):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_synthesize_cli_errors(tmp_path, capsys, monkeypatch):
    tool = _tool("synthesize")
    base = ["--out", str(tmp_path), "--split", "x", "--num-clips", "1", "--duration", "0.5"]
    with pytest.raises(SystemExit) as err:
        tool.main(base + ["--video-size", "360by180"])
    assert err.value.code == 2 and "WIDTHxHEIGHT" in capsys.readouterr().err
    assert tool.main(base + ["--dry-sources", str(tmp_path / "none")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error:") and "not found" in line and "\n" not in line
    assert tool.main(base + ["--max-overlap", "0"]) == 2
    assert "max_overlap" in capsys.readouterr().err
    assert tool.main(base + ["--invisible-share", "1.5"]) == 2
    assert "invisible share" in capsys.readouterr().err
    assert tool.main(base + ["--distractors", "-1"]) == 2
    assert "distractors" in capsys.readouterr().err
    with monkeypatch.context() as m:  # the extra missing (hidden where it is installed)
        m.setitem(sys.modules, "audiblelight", None)
        assert tool.main(base + ["--backend", "audiblelight"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "pip install" in err and "\n" not in err


def test_synthesize_cli_runs(tmp_path, capsys):
    tool = _tool("synthesize")
    argv = ["--out", str(tmp_path), "--split", "s", "--num-clips", "1", "--duration", "0.5", "--seed", "3"]
    assert tool.main(argv + ["--video-size", "64x32", "--reflection-order", "1"]) == 0
    assert "1 clips" in capsys.readouterr().out
    png = next((tmp_path / "frames_dev" / "s").rglob("*.png"))
    with Image.open(png) as im:
        assert im.size == (64, 32)
    info = json.loads(next((tmp_path / "events_dev" / "s").glob("*_scene.json")).read_text())["video"]
    assert info["style"] == "varied" and info["invisible_share"] == 0.3 and len(info["distractors"]) == 3
    assert tool.main(argv + ["--video-style", "plain", "--distractors", "2", "--no-labels"]) == 0
    info = json.loads(next((tmp_path / "events_dev" / "s").glob("*_scene.json")).read_text())["video"]
    assert info["style"] == "plain" and info["invisible_share"] == 0.0 and len(info["distractors"]) == 2


def test_workers_give_the_same_files_and_a_bad_clip_does_not_stop_the_others(tmp_path, capsys):
    # Bell events draw from a folder holding a readable and an unreadable clip: with seed 0 the
    # third clip draws the unreadable one (found by trying seeds), the others do not.
    lib = tmp_path / "lib" / "Bell"
    lib.mkdir(parents=True)
    sf.write(lib / "good.wav", 0.3 * np.sin(np.arange(12000) * 0.2), FS)
    (lib / "bad.wav").write_bytes(b"RIFF not really a wave file")
    tool = _tool("synthesize")
    argv = ["--split", "s", "--num-clips", "4", "--duration", "1", "--seed", "0", "--video-size", "64x32"]
    argv += ["--min-events", "60", "--max-events", "60", "--classes", "Clapping,Bell"]
    argv += ["--dry-sources", str(tmp_path / "lib")]
    for workers in (1, 2):
        assert tool.main([*argv, "--out", str(tmp_path / f"w{workers}"), "--workers", str(workers)]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "synthesising s" not in ln]
        assert len(err) == 2 and err[0].startswith("error: clip fold9_room839_mix003 failed: ValueError: ")
        assert "bad.wav" in err[0] and err[1].endswith(
            "3 clips written -> " + str(tmp_path / f"w{workers}") + " [s]; 1 failed"
        )
    files = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*") if p.is_file())
    assert len(files) == 3 * (2 + 10 + 1 + 2) and not any("mix003" in str(rel) for rel in files)
    assert files == sorted(
        p.relative_to(tmp_path / "w2") for p in (tmp_path / "w2").rglob("*") if p.is_file()
    )
    for rel in files:
        assert filecmp.cmp(tmp_path / "w1" / rel, tmp_path / "w2" / rel, shallow=False), rel
    with pytest.raises(ValueError, match="workers"):
        synthesize_split(tmp_path / "w0", "s", 1, 0, SynthConfig(), progress=False, workers=0)


def test_benchmark_synth_reports_realtime_factor(capsys):
    bench = _tool("benchmark")
    assert bench.main(["synth", "--duration", "0.5", "--no-video"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "synth" and result["realtime_factor"] > 0


def test_benchmark_video_leak(capsys):
    bench = _tool("benchmark")
    assert bench.main(["video-leak", "--scenes", "6", "--duration", "30"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["plain"]["object_accuracy"] == 1.0  # flat class colours name every class
    assert 0 <= result["varied"]["object_accuracy"] < 1.0 and result["varied"]["objects"] > 0


# ----------------------------------------------------------------------------------------------
# tools/synthesize.py
# ----------------------------------------------------------------------------------------------


def _synthesize_tool():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "synthesize.py"
    spec = importlib.util.spec_from_file_location("synthesize_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_a_split_with_a_streaming_label_solver(tmp_path, capsys):
    tool = _synthesize_tool()
    argv = ["--out", str(tmp_path), "--split", "s1", "--num-clips", "1", "--duration", "2", "--seed", "3"]
    assert tool.main([*argv, "--no-video", "--label-solver", "streaming"]) == 0
    labels = list((tmp_path / "labels_dev" / "s1").glob("*_std.json"))
    assert len(labels) == 1 and json.loads(labels[0].read_text())["annotations"] is not None
    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line usage error
        tool.main([*argv, "--video-size", "360by180"])
    assert exit_info.value.code == 2 and "expected WIDTHxHEIGHT" in capsys.readouterr().err
