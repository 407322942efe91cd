#!/usr/bin/env python
"""Benchmarks of seld_d2's pipelines. Each prints readable lines and, as its last line, one JSON
object with the numbers.

  features   4-ch audio -> visibilities -> UpLAM latent or SRP maps (``--kind srp``), frames/s
  train      one training step of the 19-channel detector (img/s), and the data path (frames/s)
  ddp        training steps in N CPU processes over gloo (img/s of the global batch), the cost of
             rebuilding the DDP wrapper (unfreezing) vs find_unused_parameters per step
  uplam-train  UpLAM self-supervised training steps (UpLAMTrainer.run_step, data path included),
             frames/s
  synth      one synthetic scene (render, labels, video, files): seconds per clip and per event,
             real-time factor; ``--clips K --workers N`` also times a K-clip split in N processes
  video-leak how well an object's colour names its class in the synthetic video (nearest class-mean
             colour, plain vs varied look): what the RGB stream alone gives away
  infer      the detector's forward pass (img/s) and wav + frames -> submission JSON (frames/s)
  metric     the official metric: fast implementation vs the plain reference (tools/bench_metric.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling tools

import bench_metric  # noqa: E402

from seld_d2.acoustics.audio import SAMPLE_RATE  # noqa: E402
from seld_d2.acoustics.features import FeatureExtractor  # noqa: E402
from seld_d2.acoustics.geometry import TETRA_CHANNELS, em32_positions  # noqa: E402
from seld_d2.acoustics.render import render_plane_wave  # noqa: E402
from seld_d2.acoustics.visibility import FRAME_RATE, visibilities  # noqa: E402
from seld_d2.data.synth.render import BACKENDS  # noqa: E402


def _test_audio(frames: int, seed: int = 0) -> np.ndarray:
    """A white-noise plane wave plus sensor noise at the tetrahedral capsules, (samples, 4)."""
    rng = np.random.default_rng(seed)
    n = frames * SAMPLE_RATE // FRAME_RATE
    mics = em32_positions()[list(TETRA_CHANNELS)]
    audio = render_plane_wave(rng.standard_normal(n), 40.0, 15.0, mics, SAMPLE_RATE)
    return (audio + 0.05 * rng.standard_normal(audio.shape)).astype(np.float32)


def _profile(fn, steps: int, cuda: bool) -> None:
    """Print where the time of ``steps`` calls of ``fn`` goes (torch.profiler, top operators)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    if cuda:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))


class _ModuleTimer:
    """Wall time spent in chosen submodules' forward passes (synchronising CUDA around each)."""

    def __init__(self, model: torch.nn.Module, names: list[str], cuda: bool):
        self.totals: dict[str, float] = {}
        self.cuda = cuda
        self.handles = []
        modules = dict(model.named_modules())
        for name in names:
            if name in modules:
                self.handles.append(modules[name].register_forward_pre_hook(self._start(name)))
                self.handles.append(modules[name].register_forward_hook(self._stop(name)))
        self.started: dict[str, float] = {}

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, name):
        def hook(*_):
            self._sync()
            self.started[name] = time.perf_counter()

        return hook

    def _stop(self, name):
        def hook(*_):
            self._sync()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - self.started.pop(name)

        return hook

    def report(self, steps: int, images: int) -> dict:
        for h in self.handles:
            h.remove()
        out = {k: round(1000 * v / steps, 2) for k, v in self.totals.items()}
        print(f"forward time per step (ms, {images} images/step): {json.dumps(out)}")
        return out


MODULES = [
    "backbone",
    "proposal_generator",
    "roi_heads",
    "roi_heads.box_pooler",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads.energy_pooler",
    "roi_heads.energy_head",
    "roi_heads.distance_head",
    "fullmap_head",
]


def bench_features(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    fe = FeatureExtractor(
        kind=args.kind,
        method=args.method,
        bands=args.bands,
        device=args.device,
        batch_size=args.batch_size,
        dtype=dtype,
    )
    maps = "UpLAM" if args.kind == "uplam" else f"SRP {args.method}"
    audio = _test_audio(args.frames)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    fe.latent_from_audio(
        audio[: SAMPLE_RATE // FRAME_RATE * min(args.frames, args.batch_size)], SAMPLE_RATE
    )  # warm-up
    sync()
    best_total, best_vis = float("inf"), float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        S = visibilities(audio, SAMPLE_RATE, fe.bands, dtype=np.complex64)
        t1 = time.perf_counter()
        latent = fe.latent_from_visibilities(S)
        sync()
        t2 = time.perf_counter()
        best_total, best_vis = min(best_total, t2 - t0), min(best_vis, t1 - t0)
    result = {
        "benchmark": "features",
        "frames": int(latent.shape[0]),
        "frames_per_s": round(latent.shape[0] / best_total, 1),
        "visibility_frames_per_s": round(latent.shape[0] / best_vis, 1),
        f"{args.kind}_frames_per_s": round(latent.shape[0] / (best_total - best_vis), 1),
        "kind": args.kind if args.kind == "uplam" else f"srp {args.method}",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "bands": fe.num_bands,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
    }
    if args.reference_frames and args.kind == "uplam":
        # The naive path for comparison: float64 model, one frame per call.
        ref = FeatureExtractor(bands=args.bands, device=args.device, batch_size=1, dtype=torch.float64)
        part = audio[: args.reference_frames * SAMPLE_RATE // FRAME_RATE].astype(np.float64)
        t0 = time.perf_counter()
        ref.latent_from_audio(part, SAMPLE_RATE)
        sync()
        result["reference_float64_per_frame_frames_per_s"] = round(
            args.reference_frames / (time.perf_counter() - t0), 1
        )
    print(
        f"features: {result['frames']} frames, {result['frames_per_s']} frames/s end to end "
        f"(visibilities {result['visibility_frames_per_s']}/s, "
        f"{maps} {result[f'{args.kind}_frames_per_s']}/s) "
        f"on {result['device']}, {result['threads']} threads, {result['bands']} bands, {args.dtype}"
    )
    return result


def bench_synth(args: argparse.Namespace) -> dict:
    import os
    import tempfile

    from seld_d2.data.synth import ClipSynthesizer, SceneConfig, SynthConfig, clip_seed, synthesize_split
    from seld_d2.utils.threads import blas_threads

    w, h = (int(v) for v in args.video_size.lower().split("x"))
    config = SynthConfig(
        scene=SceneConfig(duration=args.duration, noise_probability=args.noise_prob),
        backend=args.backend,
        reflection_order=args.reflection_order,
        video_size=None if args.no_video else (w, h),
    )
    with blas_threads(args.blas_threads), tempfile.TemporaryDirectory(prefix="seld_d2_bench_") as root:
        t0 = time.perf_counter()
        synth = ClipSynthesizer(config)
        init_s = time.perf_counter() - t0
        best, best_clip = float("inf"), None
        for r in range(args.repeats):
            t0 = time.perf_counter()
            clip = synth.synthesize(clip_seed(args.seed, "bench", r), f"bench{r:03d}")
            synth.write(clip, root, "bench")
            elapsed = time.perf_counter() - t0
            if elapsed < best:
                best, best_clip = elapsed, clip
        split = None
        if args.clips > 0:
            t0 = time.perf_counter()
            synthesize_split(
                Path(root) / "split",
                "bench",
                args.clips,
                args.seed,
                config,
                progress=False,
                workers=args.workers,
            )
            wall = time.perf_counter() - t0
            split = {
                "clips": args.clips,
                "workers": args.workers,
                "wall_s": round(wall, 2),
                "s_per_clip": round(wall / args.clips, 2),
                "set_122_clips_h": round(122 * wall / args.clips / 3600.0, 2),
            }
    events = len(best_clip.scene.events)
    result = {
        "benchmark": "synth",
        "duration_s": args.duration,
        "seconds": round(best, 2),
        "s_per_clip": round(best, 2),
        "s_per_event": round(best / max(events, 1), 2),
        "render_s_per_event": round(best_clip.timings["render"] / max(events, 1), 2),
        "realtime_factor": round(args.duration / best, 2),
        "init_s": round(init_s, 2),
        "events": events,
        "annotations": len(best_clip.annotations),
        "noise": best_clip.scene.noise is not None,
        "stages_s": {k: round(v, 2) for k, v in best_clip.timings.items()},
        "backend": config.backend,
        "reflection_order": args.reflection_order,
        "video": None if args.no_video else f"{w}x{h}",
        "blas_threads": args.blas_threads,
        "split": split,
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"synth ({config.backend}): {args.duration:g} s scene ({events} events, "
        f"{result['annotations']} labels, video {result['video']}) in {best:.1f} s per clip = "
        f"{result['s_per_event']} s per event "
        f"(rendering {result['render_s_per_event']} s per event) = {result['realtime_factor']}x real time "
        f"(best of {args.repeats}; set-up {init_s:.1f} s; load average {result['load_avg_1min']} "
        f"on {result['cpus']} CPUs)"
    )
    if split is not None:
        print(
            f"synth split: {args.clips} clips in {split['wall_s']} s with {args.workers} workers = "
            f"{split['s_per_clip']} s per clip; 122 such clips: {split['set_122_clips_h']} h"
        )
    return result


def bench_video_leak(args: argparse.Namespace) -> dict:
    """Nearest class-mean colour classification of the sounding objects of generated scenes: the
    mean RGB of an object's pixels (and each pixel's RGB) against the class means of the objects
    of the even scenes, scored on the odd ones."""
    from seld_d2.data.classes import NUM_CLASSES
    from seld_d2.data.synth import SceneConfig, VideoConfig, VideoRenderer, sample_scene

    cfg = SceneConfig(duration=args.duration)
    scenes = [sample_scene(cfg, np.random.default_rng([args.seed, k])) for k in range(args.scenes)]
    result: dict = {"benchmark": "video-leak", "scenes": args.scenes, "duration_s": args.duration}
    for style in ("plain", "varied"):
        vr = VideoRenderer(config=VideoConfig(style, 0.0, 0))
        feats: dict[int, list] = {0: [], 1: []}  # (mean colour, pixels, class) by scene parity
        for k, scene in enumerate(scenes):
            for obj in vr.objects(scene, np.random.SeedSequence([args.seed, k])):
                _, rgb = vr.sprite(obj)
                feats[k % 2].append((rgb.mean(0), rgb[:: max(1, len(rgb) // 50)], obj.category_id))
        means = np.full((NUM_CLASSES, 3), np.inf)
        for c in range(NUM_CLASSES):
            own = [f for f, _, cid in feats[0] if cid == c]
            if own:
                means[c] = np.mean(own, axis=0)

        def nearest(x: np.ndarray, means: np.ndarray = means) -> np.ndarray:
            return np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)

        test = feats[1]
        mean_colours = np.stack([f for f, _, _ in test])
        labels = np.array([c for _, _, c in test])
        pixels = np.concatenate([p for _, p, _ in test]).astype(np.float64)
        pixel_labels = np.concatenate([np.full(len(p), c) for _, p, c in test])
        result[style] = {
            "objects": len(test),
            "object_accuracy": round(float(np.mean(nearest(mean_colours) == labels)), 3),
            "pixel_accuracy": round(float(np.mean(nearest(pixels) == pixel_labels)), 3),
        }
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    result["majority_class_share"] = round(float(counts.max() / counts.sum()), 3)
    print(
        f"video-leak: nearest class-mean colour names the class of {result['plain']['object_accuracy']:.1%} "
        f"of the objects ({result['plain']['pixel_accuracy']:.1%} of the pixels) in the plain look, "
        f"{result['varied']['object_accuracy']:.1%} ({result['varied']['pixel_accuracy']:.1%}) in the varied "
        f"look; the most frequent class is {result['majority_class_share']:.1%} "
        f"({result['varied']['objects']} test objects of {args.scenes // 2} scenes)"
    )
    return result


def _tiny_stairs(root: Path, clips: int = 2, frames: int = 16, seed: int = 0) -> list[dict]:
    """A small STAIRS26-layout dataset (frames, silent wavs, one energy blob per frame, random
    features) for timing; returns its frame records."""
    import soundfile as sf
    from PIL import Image

    from seld_d2.acoustics.features import write_cache
    from seld_d2.data.datasets import clip_frames_dir, clip_wav, frame_file, load_stairs26
    from seld_d2.data.labels import Annotation, write_labels

    rng = np.random.default_rng(seed)
    split = "bench"
    yy, xx = np.mgrid[-6:7, -6:7]
    blob = np.exp(-(xx**2 + yy**2) / 18.0)
    for c in range(clips):
        seq = f"fold0_bench_{c:03d}"
        wav = clip_wav(root, split, seq)
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), np.zeros((frames * SAMPLE_RATE // FRAME_RATE, 4), np.float32), SAMPLE_RATE)
        fdir = clip_frames_dir(root, split, seq)
        fdir.mkdir(parents=True, exist_ok=True)
        anns = []
        for k in range(frames):
            Image.fromarray(rng.integers(0, 255, (180, 360, 3), dtype=np.uint8)).save(
                frame_file(fdir, seq, k)
            )
            x, y = int(rng.integers(10, 350)), int(rng.integers(10, 170))
            pts = np.stack([xx.ravel() + x, yy.ravel() + y, blob.ravel()], axis=1).astype(np.float32)
            anns.append(Annotation(k, 0, int(rng.integers(0, 13)), 150.0, [pts]))
        write_labels(root / "labels_dev" / split / f"{seq}_std.json", anns)
        latent = rng.random((frames, 16, 484)).astype(np.float16)
        write_cache(root / "features_dev" / split / f"{seq}.npz", latent, {"num_frames": frames})
    return load_stairs26(root, split)


def bench_train(args: argparse.Namespace) -> dict:
    import tempfile

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from seld_d2 import add_seld_config
    from seld_d2.data.mapper import SeldDatasetMapper
    from seld_d2.engine.hooks import set_trainable_stages, trainable_stages
    from seld_d2.engine.param_groups import build_optimizer
    from seld_d2.engine.trainer import unfreeze_schedule

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "configs/SELD/run3_mel16.yaml"))
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = [1.0] * 13
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK and not args.no_cudnn_benchmark
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    stages = None
    if args.epoch > 0:  # the backbone stages the unfreezing schedule trains at that epoch
        stages = trainable_stages(args.epoch, unfreeze_schedule(cfg))
        set_trainable_stages(model, stages)
    optimizer = build_optimizer(model, cfg)
    amp = cuda and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    with tempfile.TemporaryDirectory() as tmp:
        records = _tiny_stairs(Path(tmp), frames=max(8, args.batch))
        mapper = SeldDatasetMapper(cfg, is_train=True)
        t0 = time.perf_counter()
        mapped = [mapper(records[i % len(records)]) for i in range(4 * args.batch)]
        loader_fps = len(mapped) / (time.perf_counter() - t0)
    batches = [mapped[i : i + args.batch] for i in range(0, len(mapped), args.batch)]

    def step(batch):
        with torch.autocast("cuda", enabled=amp):
            losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with EventStorage(0):
        for i in range(args.warmup):
            step(batches[i % len(batches)])
        sync()
        t0 = time.perf_counter()
        for i in range(args.iters):
            step(batches[i % len(batches)])
        sync()
        elapsed = time.perf_counter() - t0
        if args.profile:
            _profile(lambda: step(batches[0]), args.profile, cuda)
        breakdown = None
        if args.breakdown:
            timer = _ModuleTimer(model, MODULES, cuda)
            for _ in range(args.breakdown):
                step(batches[0])
            breakdown = timer.report(args.breakdown, args.batch)
    result = {
        "benchmark": "train",
        "img_per_s": round(args.iters * args.batch / elapsed, 3),
        "loader_frames_per_s": round(loader_fps, 1),
        "batch": args.batch,
        "iters": args.iters,
        "amp": amp,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "epoch": args.epoch,
        "trainable_stages": sorted(stages) if stages is not None else "all",
        "forward_ms": breakdown,
        "model": "R50-FPN SeldRCNN, 19 channels, 180x360",
    }
    print(
        f"train: {result['img_per_s']} img/s at batch {args.batch} ({'AMP' if amp else 'fp32'}) on "
        f"{result['device']}, backbone stages trained: {result['trainable_stages']}; data path (mapper, "
        f"one process) {result['loader_frames_per_s']} frames/s"
    )
    return result


def bench_ddp(args: argparse.Namespace) -> dict:
    import json as json_
    import os
    import tempfile

    from seld_d2.engine.distributed import launch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the CPU launcher's threads per process
        try:
            launch(_ddp_worker, args.processes, dist_url="auto", args=(args, str(tmp), str(out)))
        finally:
            if before is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = before
        result = json_.loads(out.read_text())
    print(
        f"ddp: {result['img_per_s']} img/s at global batch {args.batch} in {args.processes} process(es) x "
        f"{args.threads} thread(s) (step {result['step_s']} s); with find_unused_parameters "
        f"{result['find_unused_step_s']} s; rebuilding the wrapper {result['rebuild_s']} s"
    )
    return result


def _ddp_worker(args: argparse.Namespace, tmp: str, out: str) -> None:
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils import comm
    from detectron2.utils.events import EventStorage

    from seld_d2 import add_seld_config
    from seld_d2.data.mapper import SeldDatasetMapper
    from seld_d2.engine.distributed import data_parallel
    from seld_d2.engine.hooks import set_trainable_stages, trainable_stages
    from seld_d2.engine.param_groups import build_optimizer
    from seld_d2.engine.trainer import unfreeze_schedule

    torch.set_num_threads(args.threads)
    world, rank = comm.get_world_size(), comm.get_rank()
    if args.batch % world:
        raise SystemExit(f"error: --batch {args.batch} is not a multiple of --processes {world}")
    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "configs/SELD/run3_mel16.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS = [1.0] * 13
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(model, cfg)
    root = Path(tmp) / f"stairs{rank}"
    records = _tiny_stairs(root, frames=max(8, args.batch))
    mapper = SeldDatasetMapper(cfg, is_train=True)
    batches = [
        [mapper(records[(i * args.batch + j) % len(records)]) for j in range(args.batch)] for i in range(4)
    ]
    shares = [b[rank::world] for b in batches]  # this process's share of each global batch

    def timed_steps(ddp: torch.nn.Module) -> float:
        def step(batch):
            loss = sum(ddp(batch).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for i in range(args.warmup):
            step(shares[i % len(shares)])
        comm.synchronize()
        t0 = time.perf_counter()
        for i in range(args.iters):
            step(shares[i % len(shares)])
        comm.synchronize()
        return (time.perf_counter() - t0) / args.iters

    stages = trainable_stages(args.epoch, unfreeze_schedule(cfg)) if args.epoch > 0 else None
    with EventStorage(0):
        # The alternative: one wrapper, built with every parameter trainable, and
        # find_unused_parameters (frozen stages and empty heads are "unused").
        find_unused_s = None
        if world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, broadcast_buffers=False, find_unused_parameters=True
            )
            if stages is not None:
                set_trainable_stages(model, stages)
            find_unused_s = timed_steps(ddp)
            del ddp
        for p in model.parameters():
            p.requires_grad_(True)
        if stages is not None:
            set_trainable_stages(model, stages)
        comm.synchronize()
        t0 = time.perf_counter()
        ddp = data_parallel(model)  # what ProgressiveUnfreezing does at a transition
        rebuild_s = time.perf_counter() - t0
        step_s = timed_steps(ddp)
    result = {
        "benchmark": "ddp",
        "img_per_s": round(args.batch / step_s, 3),
        "step_s": round(step_s, 3),
        "find_unused_step_s": round(find_unused_s, 3) if find_unused_s is not None else None,
        "rebuild_s": round(rebuild_s, 3) if world > 1 else None,
        "processes": world,
        "threads_per_process": torch.get_num_threads(),
        "batch": args.batch,
        "iters": args.iters,
        "epoch": args.epoch,
        "trainable_stages": sorted(stages) if stages is not None else "all",
        "model": "R50-FPN SeldRCNN, 19 channels, 180x360, fp32",
    }
    if rank == 0:
        Path(out).write_text(json.dumps(result))


def _infer_config(args: argparse.Namespace):
    from detectron2.config import get_cfg

    from seld_d2 import add_seld_config

    cfg = add_seld_config(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.WEIGHTS = ""
    cfg.SOLVER.AMP.ENABLED = args.device.startswith("cuda") and not args.no_amp
    cfg.SELD.INFER.BATCH_SIZE = args.batch
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.TEST.DETECTIONS_PER_IMAGE = args.detections_per_img
    return cfg


def bench_infer(args: argparse.Namespace) -> dict:
    """Model-only throughput on pre-mapped batches, then one clip end to end: feature extraction
    from the wav, frame loading, the model, post-processing, tracker, export and the JSON file."""
    import logging
    import tempfile

    import soundfile as sf
    from PIL import Image

    from seld_d2.data.datasets import frame_file, frame_record
    from seld_d2.data.labels import write_labels
    from seld_d2.inference.predictor import SeldPredictor
    from seld_d2.inference.submission import ClipExporter

    logging.getLogger("seld_d2.inference.predictor").setLevel(logging.ERROR)  # random init is intended
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    cfg = _infer_config(args)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK and not args.no_cudnn_benchmark
    torch.manual_seed(0)
    predictor = SeldPredictor(cfg)
    exporter = ClipExporter(cfg)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seq, frames = "fold0_bench_001", args.clip_frames
        wav = tmp / f"{seq}.wav"
        sf.write(str(wav), _test_audio(frames), SAMPLE_RATE, subtype="FLOAT")
        fdir = tmp / "frames" / seq
        fdir.mkdir(parents=True)
        for k in range(frames):
            Image.fromarray(rng.integers(0, 255, (180, 360, 3), dtype=np.uint8)).save(
                frame_file(fdir, seq, k)
            )
        feature_file = tmp / "features" / f"{seq}.npz"
        records = [frame_record(fdir, None, seq, k, feature_file) for k in range(frames)]

        # Model only: the same mapped batch again and again, inputs already in memory.
        from seld_d2.acoustics.features import build_feature_extractor

        build_feature_extractor(cfg, device=args.device).cached(wav, feature_file)
        batch = [predictor.mapper(records[i % frames]) for i in range(args.batch)]
        if cuda:  # as the predictor's loader delivers them (pin_memory)
            batch = [{**x, "image": x["image"].pin_memory()} for x in batch]
        for _ in range(args.warmup):
            predictor.run_batch(batch)
        sync()
        t0 = time.perf_counter()
        detections = 0
        for _ in range(args.iters):
            outs = predictor.run_batch(batch)
            detections += sum(len(o["instances"]) for o in outs)
        sync()
        model_s = time.perf_counter() - t0
        if args.profile:
            _profile(lambda: predictor.run_batch(batch), args.profile, cuda)
        breakdown = None
        if args.breakdown:
            timer = _ModuleTimer(predictor.model, MODULES, cuda)
            for _ in range(args.breakdown):
                predictor.run_batch(batch)
            breakdown = timer.report(args.breakdown, args.batch)

        # End to end, as tools/infer.py does it per clip (features recomputed from the wav).
        feature_file.unlink()
        t0 = time.perf_counter()
        build_feature_extractor(cfg, device=args.device).cached(wav, feature_file)
        t_feat = time.perf_counter() - t0
        pairs = ((m["frame_index"], d) for m, d in predictor.predict_records(records))
        annotations, summary = exporter(pairs, name=seq)
        write_labels(tmp / "out" / f"{seq}.json", annotations)
        sync()
        e2e_s = time.perf_counter() - t0
    result = {
        "benchmark": "infer",
        "img_per_s": round(args.iters * args.batch / model_s, 2),
        "e2e_frames_per_s": round(frames / e2e_s, 2),
        "e2e_feature_s": round(t_feat, 2),
        "e2e_clip_frames": frames,
        "detections_per_img": round(detections / (args.iters * args.batch), 1),
        "max_detections_per_img": args.detections_per_img,
        "exported_annotations": summary.exported,
        "batch": args.batch,
        "amp": bool(cfg.SOLVER.AMP.ENABLED),
        "workers": args.workers,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "forward_ms": breakdown,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "model": f"SeldRCNN from {Path(args.config_file).name}, random init, 180x360",
    }
    print(
        f"infer: model {result['img_per_s']} img/s at batch {args.batch} "
        f"({'AMP' if result['amp'] else 'fp32'}, {result['detections_per_img']} raw detections/img); "
        f"end to end {result['e2e_frames_per_s']} frames/s on a {frames}-frame clip "
        f"(features {t_feat:.2f} s) on {result['device']}"
    )
    return result


def bench_uplam_train(args: argparse.Namespace) -> dict:
    """UpLAMTrainer steps on generated 32-ch clips (plane waves): frames/s including the
    visibilities of the data stream, and the time per step; no validation."""
    import tempfile

    import soundfile as sf
    from detectron2.config import get_cfg
    from detectron2.utils.events import EventStorage

    from seld_d2 import add_seld_config
    from seld_d2.acoustics.render import render_plane_wave
    from seld_d2.engine.uplam_data import scan_splits
    from seld_d2.engine.uplam_trainer import UpLAMTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "eigen_dev" / "bench"
        folder.mkdir(parents=True)
        for i in range(args.clips):
            n = int(args.seconds * SAMPLE_RATE)
            audio = render_plane_wave(rng.standard_normal(n), 40.0 * i, 10.0, em32_positions(), SAMPLE_RATE)
            sf.write(folder / f"clip{i}.wav", 0.1 * audio / np.abs(audio).max(), SAMPLE_RATE, subtype="FLOAT")
        clips, _ = scan_splits(tmp, ["bench"])
        cfg = get_cfg()
        add_seld_config(cfg)
        cfg.OUTPUT_DIR = str(Path(tmp) / "out")
        u = cfg.SELD.UPLAM
        u.BANDS, u.BATCH_SIZE, u.DTYPE, u.DEVICE = args.bands, args.batch_size, args.dtype, args.device
        u.UPSAMPLE_LOSS_WEIGHT = args.upsample_loss_weight
        trainer = UpLAMTrainer(cfg, clips, clips[:1])
        trainer.resume_or_load(resume=False)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        with EventStorage(0) as trainer.storage:
            for trainer.iter in range(args.warmup):
                trainer.run_step()
            sync()
            t0 = time.perf_counter()
            for trainer.iter in range(args.warmup, args.warmup + args.iters):
                trainer.run_step()
            sync()
            elapsed = time.perf_counter() - t0
    frames = args.iters * args.batch_size
    result = {
        "benchmark": "uplam-train",
        "frames_per_s": round(frames / elapsed, 1),
        "step_ms": round(1000 * elapsed / args.iters, 1),
        "batch_size": args.batch_size,
        "bands": args.bands,
        "dtype": args.dtype,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "steps_per_epoch": trainer.clock.iters_per_epoch,
    }
    print(
        f"uplam-train: {result['frames_per_s']} frames/s ({result['step_ms']} ms per step of "
        f"{args.batch_size} frames, {args.bands}, {args.dtype}, data path included) on {args.device}, "
        f"{result['threads']} threads"
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    f = sub.add_parser("features", help="acoustic feature extraction speed (frames/s)")
    f.add_argument("--kind", default="uplam", choices=["uplam", "srp"], help="feature kind (default uplam)")
    f.add_argument("--method", default="bartlett", choices=["bartlett", "mvdr", "music"], help="SRP method")
    f.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    f.add_argument("--frames", type=int, default=1200, help="100 ms frames to process (default 1200)")
    f.add_argument("--bands", default="mel16", help="band layout (default mel16)")
    f.add_argument("--batch-size", type=int, default=256, help="frames per UpLAM call (default 256)")
    f.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    f.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    f.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    f.add_argument(
        "--reference-frames",
        type=int,
        default=0,
        help="also time the naive float64 one-frame-per-call path on this many frames",
    )
    s = sub.add_parser("synth", help="synthetic scene generation speed (real-time factor)")
    s.add_argument("--duration", type=float, default=60.0, help="scene length in seconds (default 60)")
    s.add_argument("--video-size", default="360x180", help="frame size WxH (default 360x180)")
    s.add_argument("--no-video", action="store_true", help="skip the frames")
    s.add_argument("--reflection-order", type=int, default=0, help="early reflections (default 0)")
    s.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    s.add_argument(
        "--noise-prob",
        type=float,
        default=1.0,
        help="background-noise probability (default 1: the slower path)",
    )
    s.add_argument(
        "--repeats", type=int, default=1, help="scenes timed (different seeds); the best is reported"
    )
    s.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (default 1)")
    s.add_argument(
        "--backend",
        default="freefield",
        choices=BACKENDS,
        help="renderer (default freefield)",
    )
    s.add_argument(
        "--clips", type=int, default=0, help="also time a split of this many clips (default 0: no)"
    )
    s.add_argument("--workers", type=int, default=1, help="processes of that split (default 1)")
    v = sub.add_parser("video-leak", help="how well colour names the class in the synthetic video")
    v.add_argument(
        "--scenes", type=int, default=200, help="scenes, half to fit and half to score (default 200)"
    )
    v.add_argument("--duration", type=float, default=60.0, help="scene length in seconds (default 60)")
    v.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    t = sub.add_parser("train", help="detector training speed (img/s) and data-path speed (frames/s)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    t.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    t.add_argument("--iters", type=int, default=5, help="timed iterations (default 5)")
    t.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    t.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of mixed precision")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    t.add_argument(
        "--epoch",
        type=int,
        default=7,
        help="train the backbone stages the unfreezing schedule trains at this epoch (default 7: from "
        "then on every stage but layer2, which the recipe never trains); 0 = every stage",
    )
    t.add_argument("--profile", type=int, default=0, help="also profile this many steps (top operators)")
    t.add_argument(
        "--breakdown", type=int, default=0, help="also time the model's parts' forward passes over N steps"
    )
    t.add_argument(
        "--no-cudnn-benchmark", action="store_true", help="switch off cuDNN autotuning (CUDNN_BENCHMARK)"
    )
    d = sub.add_parser("ddp", help="training steps in N CPU processes over gloo (img/s), DDP costs")
    d.add_argument("--processes", type=int, default=2, help="training processes (default 2)")
    d.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    d.add_argument("--batch", type=int, default=2, help="global batch, split over the processes (default 2)")
    d.add_argument("--iters", type=int, default=5, help="timed iterations of each variant (default 5)")
    d.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    d.add_argument(
        "--epoch", type=int, default=7, help="train the stages the schedule trains at this epoch (default 7)"
    )
    ut = sub.add_parser("uplam-train", help="UpLAM training speed (frames/s)")
    ut.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ut.add_argument("--bands", default="mel16", help="band layout (default mel16)")
    ut.add_argument("--batch-size", type=int, default=8, help="frames per step (default 8)")
    ut.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ut.add_argument("--iters", type=int, default=20, help="timed steps (default 20)")
    ut.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ut.add_argument("--clips", type=int, default=2, help="generated 32-ch clips (default 2)")
    ut.add_argument("--seconds", type=float, default=4.0, help="length of each clip (default 4 s)")
    ut.add_argument(
        "--upsample-loss-weight", type=float, default=0.0, help="SELD.UPLAM.UPSAMPLE_LOSS_WEIGHT (default 0)"
    )
    ut.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    i = sub.add_parser("infer", help="detector inference (img/s) and wav+frames -> JSON (frames/s)")
    i.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    i.add_argument("--batch", type=int, default=2, help="frames per model call (default 2)")
    i.add_argument("--iters", type=int, default=5, help="timed model calls (default 5)")
    i.add_argument("--warmup", type=int, default=2, help="untimed model calls first (default 2)")
    i.add_argument("--clip-frames", type=int, default=40, help="frames of the end-to-end clip (default 40)")
    i.add_argument("--workers", type=int, default=0, help="frame loader processes (default 0)")
    i.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of mixed precision")
    i.add_argument(
        "--detections-per-img",
        type=int,
        default=100,
        help="TEST.DETECTIONS_PER_IMAGE (default 100, Detectron2's; a random-init model fills it)",
    )
    i.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    i.add_argument("--profile", type=int, default=0, help="also profile this many steps (top operators)")
    i.add_argument(
        "--breakdown", type=int, default=0, help="also time the model's parts' forward passes over N steps"
    )
    i.add_argument(
        "--no-cudnn-benchmark", action="store_true", help="switch off cuDNN autotuning (CUDNN_BENCHMARK)"
    )
    i.add_argument(
        "--config-file",
        default=str(Path(__file__).resolve().parents[1] / "configs/SELD/run3_mel16.yaml"),
        help="model config (default configs/SELD/run3_mel16.yaml)",
    )
    bench_metric.add_arguments(sub.add_parser("metric", help="official metric: fast vs reference (s)"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = {
        "features": bench_features,
        "synth": bench_synth,
        "video-leak": bench_video_leak,
        "train": bench_train,
        "ddp": bench_ddp,
        "uplam-train": bench_uplam_train,
        "infer": bench_infer,
        "metric": bench_metric.bench_metric,
    }[args.which](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
