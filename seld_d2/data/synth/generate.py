"""Synthesise clips into the SPEC §1 layout: scene -> dry sources -> spatial render -> noise ->
labels -> video -> files.

Per clip ``<seq>`` of split ``<split>`` under ``root``::

    eigen_dev/<split>/<seq>.wav                    32-ch em32, float32, 24 kHz
    mic_dev/<split>/<seq>.wav                      the 4 tetrahedral capsules of the same render
    frames_dev/<split>/<seq>/<seq>_<k:04d>.png     RGB video frames, 10 fps
    labels_dev/<split>/<seq>_std.json              STAIRS26-style labels
    events_dev/<split>/<seq>.csv                   the true events (class, direction, distance, times)
    events_dev/<split>/<seq>_scene.json            room, noise, backend and seed of the clip

Determinism: clip i of a split draws everything from ``SeedSequence(seed, spawn_key=(crc32(split),
i))``, so the same seed gives byte-identical files, and a clip does not depend on how many
others are generated, nor on how many processes generate them (``workers``). Wavs are written by
a minimal float32 WAV writer (libsndfile stamps the current time into float files' PEAK chunk),
PNGs by a minimal encoder (no ancillary chunks), JSON/CSV with fixed key order and rounding.
Every file is written atomically.

Levels: each dry sound is scaled to its event's level (see ``scene.py``); one whose direct sound
would peak above -6 dBFS at a capsule is turned down and the table records the level used; if
overlapping events still exceed full scale the whole mix is scaled (``mix_gain`` in the scene info).

Labels are made for the frames in which an event is active *and* audible: its own dry signal in
that frame is within ``activity_floor_db`` (30 dB) of its loudest frame (a footstep train's gaps
carry no label). The video shows objects over the whole [onset, offset) span.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ...acoustics.audio import SAMPLE_RATE
from ...acoustics.geometry import EM32_RADIUS, TETRA_CHANNELS, em32_positions
from ...utils.io import WriteError, atomic_open
from ...utils.threads import blas_threads
from ..classes import CLASS_NAMES
from .al_video import make_video_renderer
from .labels import Annotation, LabelMaker, annotations_to_json
from .render import BackendUnavailable, diffuse_noise, make_renderer
from .scene import FRAME_SECONDS, Event, Scene, SceneConfig, sample_scene
from .sources import DrySourceLibrary, dry_source
from .video import VideoConfig, VisualObject

EVENT_TABLE_HEADER = (
    "instance_id,category_id,class_name,onset_s,offset_s,azimuth_deg,elevation_deg,distance_m,snr_db,level_db"
)
PNG_COMPRESS_LEVEL = 1  # zlib level: fast; PNG is lossless at any level
EVENT_PEAK_LIMIT = 0.5  # -6 dBFS: the most an event's direct sound may peak at a capsule
FULL_SCALE_LIMIT = 0.99  # the whole mix is scaled down (rarely) if overlaps still exceed this


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic split besides its seed."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    backend: str = "freefield"
    reflection_order: int = 0
    material: str | None = None  # audiblelight: one material for every room (default: by absorption)
    video_size: tuple[int, int] | None = (360, 180)  # None: no frames
    video: VideoConfig = field(default_factory=VideoConfig)  # look, invisible share, distractors
    # "project" (video.py, default) or "audiblelight" (its pyvista/VTK renderer, al_video.py; the
    # synth-video extra); the last two are audiblelight-renderer settings: its render size WxH
    # (None: video_size) and a folder of per-class event images (None: the objects' looks).
    video_renderer: str = "project"
    video_render_size: tuple[int, int] | None = None
    video_images: str | None = None
    labels: bool = True
    dry_sources: str | None = None
    sensor_noise_db: float | None = None  # uncorrelated self-noise of every capsule, dBFS RMS (off)
    activity_floor_db: float = 30.0
    label_bands: str = "linear9"
    fs: int = SAMPLE_RATE


@dataclass
class Clip:
    """A synthesised clip in memory. Audio is float32 channels-first (M, num_samples)."""

    name: str
    scene: Scene
    em32: np.ndarray
    annotations: list[Annotation]
    label_activity: np.ndarray  # bool (num_events, num_frames)
    gain: float  # applied to the whole mix to stay below full scale (1.0 almost always)
    video_seed: np.random.SeedSequence
    timings: dict[str, float]

    @property
    def mic(self) -> np.ndarray:
        """The 4 tetrahedral capsules in STARSS23 MIC order, (4, num_samples)."""
        return self.em32[list(TETRA_CHANNELS)]


def clip_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of clip ``index`` of ``split``."""
    return np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(split.encode()), int(index)))


def sequence_name(split: str, index: int, prefix: str | None = None) -> str:
    """STARSS23-like clip name ``fold9_room<R>_mix<NNN>`` (R from the split name so that splits
    do not collide; ``prefix`` replaces ``fold9_room<R>``)."""
    if prefix is None:
        prefix = f"fold9_room{100 + zlib.crc32(split.encode()) % 900}"
    return f"{prefix}_mix{index:03d}"


def write_wav(path: str | Path, audio: np.ndarray, fs: int) -> None:
    """Write channels-first audio (channels, num_samples) as a 32-bit IEEE-float WAV, atomically.

    The header is fixed (no PEAK chunk, no timestamps): the same samples give the same bytes.
    """
    audio = np.asarray(audio, dtype="<f4")
    channels, n = audio.shape
    data_bytes = n * channels * 4
    header = b"".join(
        [
            b"RIFF",
            struct.pack("<I", 4 + (8 + 16) + (8 + 4) + (8 + data_bytes)),
            b"WAVE",
            b"fmt ",
            struct.pack("<IHHIIHH", 16, 3, channels, fs, fs * channels * 4, channels * 4, 32),
            b"fact",
            struct.pack("<II", 4, n),
            b"data",
            struct.pack("<I", data_bytes),
        ]
    )
    with atomic_open(path, "wb") as f:
        f.write(header)
        step = max(1, (1 << 22) // max(channels, 1))  # interleave in chunks: bounded extra memory
        for s in range(0, n, step):
            f.write(np.ascontiguousarray(audio[:, s : s + step].T).tobytes())


def png_bytes(frame: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode an RGB uint8 image (H, W, 3) as a PNG: 8-bit truecolour, no filtering, zlib level
    ``level``, no ancillary chunks (so no timestamps). ~3x faster than Pillow's encoder on these
    frames, and readable by any PNG reader."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    h, w, _ = frame.shape
    rows = np.empty((h, 1 + 3 * w), np.uint8)
    rows[:, 0] = 0  # filter type "None" on every row
    rows[:, 1:] = frame.reshape(h, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + chunk(b"IEND", b"")
    )


def write_png(path: str | Path, frame: np.ndarray) -> None:
    """Write an RGB uint8 frame (H, W, 3) as a PNG, atomically."""
    data = png_bytes(frame)
    with atomic_open(path, "wb") as f:
        f.write(data)


def event_table(events: tuple[Event, ...] | list[Event]) -> str:
    """CSV text of the true events (header + one row per event)."""
    rows = [EVENT_TABLE_HEADER]
    for ev in events:
        rows.append(
            f"{ev.instance_id},{ev.category_id},{CLASS_NAMES[ev.category_id]},{ev.onset:.1f},{ev.offset:.1f},"
            f"{ev.azimuth:.3f},{ev.elevation:.3f},{ev.distance:.4f},{ev.snr_db:.2f},{ev.level_db:.2f}"
        )
    return "\n".join(rows) + "\n"


def read_event_table(path: str | Path) -> list[Event]:
    """Events back from :func:`event_table`'s CSV."""
    lines = Path(path).read_text().strip().splitlines()
    if not lines or lines[0] != EVENT_TABLE_HEADER:
        raise ValueError(f"{path}: not an event table (header {lines[0] if lines else ''!r})")
    out = []
    for line in lines[1:]:
        f = line.split(",")
        out.append(
            Event(
                int(f[0]),
                int(f[1]),
                float(f[3]),
                float(f[4]),
                float(f[5]),
                float(f[6]),
                float(f[7]),
                float(f[8]),
                float(f[9]),
            )
        )
    return out


class ClipSynthesizer:
    """Builds the renderer, label maker, video renderer and source library once; synthesises and
    writes clips.

    Args:
        config: the split's settings.
        label_solver: optional APGD replacement for the labels (see ``LabelMaker``).

    Raises:
        BackendUnavailable: the backend's optional dependencies are missing.
        FileNotFoundError / ValueError: a bad dry-source folder.
    """

    def __init__(self, config: SynthConfig, label_solver: Callable | None = None):
        self.config = config
        self.renderer = make_renderer(config.backend, config.fs, config.reflection_order, config.material)
        self.library = DrySourceLibrary(config.dry_sources) if config.dry_sources else None
        self.labeller = (
            LabelMaker(config.fs, config.label_bands, solver=label_solver) if config.labels else None
        )
        self.video = (
            make_video_renderer(
                config.video_renderer,
                *config.video_size,
                config.video,
                config.video_render_size,
                config.video_images,
            )
            if config.video_size
            else None
        )

    def synthesize(self, seed: np.random.SeedSequence, name: str = "clip") -> Clip:
        """One clip in memory: scene, dry sources, render, noise, labels (see :class:`Clip`)."""
        cfg = self.config
        fs = cfg.fs
        scene_ss, source_ss, noise_ss, video_ss = seed.spawn(4)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        scene = sample_scene(cfg.scene, np.random.default_rng(scene_ss))
        t1 = time.perf_counter()
        timings["scene"] = t1 - t0

        # Dry sources, each from its own stream (adding an event never changes the others).
        signals, label_act = [], np.zeros((len(scene.events), scene.num_frames), dtype=bool)
        events = list(scene.events)
        hop = int(round(FRAME_SECONDS * fs))
        for i, (ev, ss) in enumerate(zip(scene.events, source_ss.spawn(len(scene.events)), strict=True)):
            n = (ev.offset_frame - ev.onset_frame) * hop
            x = dry_source(ev.category_id, n, np.random.default_rng(ss), self.library, fs)
            x = x * 10.0 ** (ev.level_db / 20.0)
            # A loud, impulsive, near event is turned down (and its table level with it) so that
            # its direct sound peaks below EVENT_PEAK_LIMIT at the nearest capsule.
            peak = float(np.max(np.abs(x))) / max(ev.distance - EM32_RADIUS, 0.1) if n else 0.0
            if peak > EVENT_PEAK_LIMIT:
                cut = 20.0 * math.log10(EVENT_PEAK_LIMIT / peak)
                x = x * (EVENT_PEAK_LIMIT / peak)
                events[i] = replace(
                    ev, level_db=round(ev.level_db + cut, 2), snr_db=round(ev.snr_db + cut, 2)
                )
            signals.append(x)
            e = np.mean(x[: n // hop * hop].reshape(-1, hop) ** 2, axis=1)
            if e.size and e.max() > 0:
                audible = e >= e.max() * 10.0 ** (-cfg.activity_floor_db / 10.0)
                label_act[i, ev.onset_frame : ev.onset_frame + len(e)] = audible
        scene = replace(scene, events=tuple(events))
        t2 = time.perf_counter()
        timings["sources"] = t2 - t1

        mix, events = self.renderer.render(scene, signals)
        scene = replace(scene, events=tuple(events))
        t3 = time.perf_counter()
        timings["render"] = t3 - t2

        rng = np.random.default_rng(noise_ss)
        if scene.noise is not None:
            level = 10.0 ** (scene.noise.level_db / 20.0)
            diffuse_noise(mix.shape[1], rng, em32_positions(), fs, scene.noise.colour, out=mix, gain=level)
        if cfg.sensor_noise_db is not None:
            sensor = rng.standard_normal(mix.shape, dtype=np.float32)
            mix += sensor * np.float32(10.0 ** (cfg.sensor_noise_db / 20.0))
        peak = max(float(mix.max()), -float(mix.min())) if mix.size else 0.0
        gain = 1.0 if peak <= FULL_SCALE_LIMIT else FULL_SCALE_LIMIT / peak
        if gain != 1.0:
            mix *= np.float32(gain)
        t4 = time.perf_counter()
        timings["noise"] = t4 - t3

        annotations: list[Annotation] = []
        if self.labeller is not None:
            annotations = self.labeller.annotations(mix, scene.events, label_act)
        timings["labels"] = time.perf_counter() - t4
        return Clip(name, scene, mix, annotations, label_act, gain, video_ss, timings)

    def write(self, clip: Clip, root: str | Path, split: str) -> None:
        """Write a clip's files under ``root`` (see the module docstring)."""
        root = Path(root)
        seq, fs = clip.name, self.config.fs
        t0 = time.perf_counter()
        objects = self.video.objects(clip.scene, clip.video_seed) if self.video is not None else None
        write_wav(root / "eigen_dev" / split / f"{seq}.wav", clip.em32, fs)
        write_wav(root / "mic_dev" / split / f"{seq}.wav", clip.mic, fs)
        t1 = time.perf_counter()
        clip.timings["write_audio"] = t1 - t0
        if self.labeller is not None:
            with atomic_open(root / "labels_dev" / split / f"{seq}_std.json", "w") as f:
                f.write(annotations_to_json(clip.annotations))
        events_dir = root / "events_dev" / split
        with atomic_open(events_dir / f"{seq}.csv", "w") as f:
            f.write(event_table(clip.scene.events))
        with atomic_open(events_dir / f"{seq}_scene.json", "w") as f:
            f.write(json.dumps(self.scene_info(clip, objects), indent=1) + "\n")
        t2 = time.perf_counter()
        clip.timings["write_labels"] = t2 - t1
        if self.video is not None:
            frame_dir = root / "frames_dev" / split / seq
            frame_dir.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(clip.video_seed)
            for k, frame in enumerate(self.video.frames(clip.scene, rng, objects)):
                write_png(frame_dir / f"{seq}_{k:04d}.png", frame)
        clip.timings["video"] = time.perf_counter() - t2

    def scene_info(self, clip: Clip, objects: list[VisualObject] | None = None) -> dict:
        """The clip's settings as JSON-ready data; with the video's ``objects``, which events it
        shows and its distractors (class, direction, distance, frames)."""
        cfg, room = self.config, clip.scene.room
        video = None
        if objects is not None:
            shown = {o.instance_id for o in objects if o.sounding}
            video = {
                "renderer": cfg.video_renderer,
                "style": cfg.video.style,
                "invisible_share": cfg.video.invisible_share,
                "invisible_instances": [
                    e.instance_id for e in clip.scene.events if e.instance_id not in shown
                ],
                "distractors": [
                    {
                        "category_id": o.category_id,
                        "onset_frame": o.onset_frame,
                        "offset_frame": o.offset_frame,
                        "azimuth_deg": round(o.azimuth, 3),
                        "elevation_deg": round(o.elevation, 3),
                        "distance_m": round(o.distance, 4),
                    }
                    for o in objects
                    if not o.sounding
                ],
            }
        return {
            "sequence": clip.name,
            "duration_s": clip.scene.duration,
            "sample_rate": cfg.fs,
            "backend": cfg.backend,
            "reflection_order": cfg.reflection_order,
            "room_size_m": [round(v, 4) for v in clip.scene.room.size],
            "mic_position_m": [round(v, 4) for v in clip.scene.room.mic],
            "absorption": round(clip.scene.room.absorption, 4),
            "room_notch_m": None if room.notch is None else [round(v, 4) for v in room.notch],
            "noise": None if clip.scene.noise is None else asdict(clip.scene.noise),
            "sensor_noise_db": cfg.sensor_noise_db,
            "mix_gain": round(clip.gain, 6),
            "num_events": len(clip.scene.events),
            "num_annotations": len(clip.annotations),
            "video": video,
            **self.renderer.info(clip.scene),
        }


class SynthesisError(RuntimeError):
    """Some clips of a split failed; the others were written. ``failed`` maps a clip name to its
    one-line error, ``written`` lists the clips written."""

    def __init__(self, failed: dict[str, str], written: list[str]):
        super().__init__(failed, written)  # the arguments, so that it survives pickling
        self.failed, self.written = failed, written

    def __str__(self) -> str:
        names = ", ".join(sorted(self.failed))
        return f"{len(self.failed)} of {len(self.failed) + len(self.written)} clips failed: {names}"


# Errors that would fail every clip the same way: they stop the split instead of being reported.
_FATAL = (WriteError, BackendUnavailable)


def _run_clip(
    synth: ClipSynthesizer, root: str | Path, split: str, seed: int, index: int, name: str
) -> str | None:
    """Synthesise and write one clip; returns None, or a bad clip's one-line error."""
    try:
        synth.write(synth.synthesize(clip_seed(seed, split, index), name), root, split)
    except _FATAL:
        raise
    except Exception as err:  # a bad clip (an unreadable dry source, a failed ray tracer, ...)
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def _worker(
    config: SynthConfig,
    label_solver: Callable | None,
    root: str,
    split: str,
    seed: int,
    tasks,
    results,
) -> None:
    """A synthesis process: builds its synthesizer, then runs (index, name) tasks until None,
    putting (index, name, None | error line | fatal exception) on ``results``."""
    with blas_threads(1):
        try:
            synth = ClipSynthesizer(config, label_solver)
        except Exception as err:
            results.put((None, None, err))
            return
        while (task := tasks.get()) is not None:
            index, name = task
            try:
                results.put((index, name, _run_clip(synth, root, split, seed, index, name)))
            except Exception as err:
                results.put((index, name, err))


def _run_parallel(
    config: SynthConfig,
    label_solver: Callable | None,
    root: str | Path,
    split: str,
    seed: int,
    jobs: list[tuple[int, str]],
    workers: int,
    bar,
) -> dict[str, str]:
    """Run ``jobs`` [(index, name)] in ``workers`` spawned processes; returns the bad clips."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")  # no inherited threads or locks (fork after OpenMP can hang)
    tasks, results = ctx.Queue(), ctx.Queue()
    for job in jobs:
        tasks.put(job)
    procs = [
        ctx.Process(
            target=_worker, args=(config, label_solver, str(root), split, seed, tasks, results), daemon=True
        )
        for _ in range(workers)
    ]
    for proc in procs:
        tasks.put(None)
        proc.start()
    failed: dict[str, str] = {}
    pending = {name for _, name in jobs}
    try:
        while pending:
            try:
                index, name, outcome = results.get(timeout=1.0)
            except queue.Empty:
                if not any(proc.is_alive() for proc in procs):
                    for name in sorted(pending):
                        failed[name] = "the synthesis process ended without finishing this clip"
                    break
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            pending.discard(name)
            if outcome is not None:
                failed[name] = outcome
            bar.update(1)
    finally:
        for proc in procs:
            if proc.is_alive() and pending:
                proc.terminate()
            proc.join(timeout=30)
    return failed


def synthesize_split(
    root: str | Path,
    split: str,
    num_clips: int,
    seed: int,
    config: SynthConfig | None = None,
    first_index: int = 1,
    prefix: str | None = None,
    progress: bool = True,
    label_solver: Callable | None = None,
    workers: int = 1,
) -> list[str]:
    """Generate ``num_clips`` clips of a split (names ``sequence_name(split, first_index + i)``);
    returns the clip names.

    ``workers`` > 1 runs clips in that many spawned processes (``label_solver`` must then be
    picklable); the files do not depend on it. A bad clip does not stop the others: when any
    failed, :class:`SynthesisError` is raised after the rest are written. A write error or a
    missing backend stops the split (they would fail every clip).

    Runs with one OpenBLAS thread: multi-threaded OpenBLAS rounds some of the rendering's products
    differently (a 20 s clip's audio changed in the last bits with 2 threads), so the same seed
    gives the same files whatever the machine's core count; one thread is also no slower here
    (see :mod:`seld_d2.utils.threads`)."""
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = config or SynthConfig()
    jobs = [(first_index + i, sequence_name(split, first_index + i, prefix)) for i in range(num_clips)]
    failed: dict[str, str] = {}
    # The synthesizer is built under the limit too: the clips of a one-process run use its
    # precomputed operators (the spawned workers build theirs under it, in _worker).
    with blas_threads(1):
        synth = ClipSynthesizer(config, label_solver)  # here too: a missing extra or bad folder fails at once
        with tqdm(total=len(jobs), desc=f"synthesising {split}", unit="clip", disable=not progress) as bar:
            if workers == 1 or len(jobs) == 1:
                for index, name in jobs:
                    error = _run_clip(synth, root, split, seed, index, name)
                    if error is not None:
                        failed[name] = error
                    bar.update(1)
            else:
                failed = _run_parallel(
                    config, label_solver, root, split, seed, jobs, min(workers, len(jobs)), bar
                )
    names = [name for _, name in jobs if name not in failed]
    if failed:
        raise SynthesisError({name: failed[name] for _, name in jobs if name in failed}, names)
    return names
