"""Self-supervised UpLAM training on 32-channel em32 recordings (SPEC §3).

Every 100 ms frame of every ``<root>/eigen_dev/<split>/*.wav`` (24 kHz, 32 channels) gives one
example: the input is the visibilities of the 4 tetrahedral channels (normalised on their own,
exactly as at inference), the target the visibilities of all 32 channels. Loss: complex MSE +
lambda (graph TV + L1 of the latent); Adam.

Validation, every epoch: the MSE-TV loss, and per band the peak SNR and mean absolute difference
between the max-normalised latent and the max-normalised APGD map of the 32x32 target (same
steering operator), averaged over bands. PSNR = 10 log10(1 / MSE) of those peak-1 maps.

Writes ``last.pth`` every epoch and ``best.pth`` (lowest validation loss), atomically, and
TensorBoard scalars, into ``--out``. Unusable wavs are reported on stderr, one line each, and
skipped; the exit status is then 1 once training has finished.

Example:
    python tools/train_uplam.py --root datasets/STAIRS26 --train-split dev-train \\
        --val-split dev-test --out output/uplam_mel16
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seld_d2.acoustics.audio import SAMPLE_RATE, AudioError, read_wav
from seld_d2.acoustics.geometry import TETRA_CHANNELS
from seld_d2.acoustics.solvers import apgd
from seld_d2.acoustics.uplam import (
    STEERING_MODES,
    UpLAM,
    load_checkpoint,
    max_normalise,
    mse_tv_loss,
    save_checkpoint,
    steering_operator,
)
from seld_d2.acoustics.visibility import band_centres, visibilities
from seld_d2.utils.io import WriteError, prepare_output_dir

PROG = "train_uplam"
NUM_CHANNELS = 32
FRAME_SAMPLES = SAMPLE_RATE // 10
EVAL_BATCH = 64


@dataclass
class Clip:
    path: Path
    frames: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Self-supervised UpLAM training: tetrahedral 4x4 visibilities -> em32 32x32 "
            "visibilities, on <root>/eigen_dev/<split>/*.wav (24 kHz, 32 channels). Validation "
            "reports the MSE-TV loss and, per band then averaged, the peak SNR "
            "(PSNR = 10 log10(1 / MSE), in dB) and mean absolute difference between the "
            "max-normalised latent and the max-normalised APGD map of the 32-channel target."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--root", required=True, type=Path, help="dataset root (holds eigen_dev/)")
    p.add_argument("--train-split", required=True, help="training split under eigen_dev/")
    p.add_argument("--val-split", required=True, help="validation split under eigen_dev/")
    p.add_argument("--out", required=True, type=Path, help="output directory (checkpoints, logs)")
    p.add_argument(
        "--bands",
        default="mel16",
        help="band layout: linear9, mel16, or comma-separated centre frequencies in Hz",
    )
    p.add_argument("--steering", default="fixed", choices=STEERING_MODES, help="steering mode")
    p.add_argument("--epochs", type=int, default=50, help="total number of epochs")
    p.add_argument("--batch-size", type=int, default=8, help="frames per training step")
    p.add_argument("--lr", type=float, default=1e-6, help="Adam learning rate")
    p.add_argument("--tv-weight", type=float, default=1e-5, help="lambda of the TV + L1 term")
    p.add_argument(
        "--resume", action="store_true", help="continue from <out>/last.pth (model, optimiser, RNG)"
    )
    p.add_argument("--max-clips", type=int, default=None, help="use at most N clips per split")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="model precision")
    p.add_argument(
        "--shuffle-clips",
        type=int,
        default=4,
        help="clips whose frames are pooled and shuffled together (memory: ~80 MB per "
        "minute of audio per clip for mel16)",
    )
    args = p.parse_args(argv)
    if "," in args.bands or args.bands.replace(".", "").isdigit():
        try:
            args.bands = [float(f) for f in args.bands.split(",") if f.strip()]
        except ValueError:
            p.error(f"--bands: cannot parse {args.bands!r} as a list of frequencies")
    try:
        band_centres(args.bands)
    except ValueError as e:
        p.error(f"--bands: {e}")
    for name in ("epochs", "batch_size", "shuffle_clips"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_clips is not None and args.max_clips < 1:
        p.error("--max-clips must be at least 1")
    return args


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def read_clip(path: Path) -> np.ndarray:
    """Load and check one 32-ch recording, (num_samples, 32) float32; raises AudioError."""
    return read_wav(path, channels=NUM_CHANNELS, sample_rate=SAMPLE_RATE)[0]


def scan_split(root: Path, split: str, max_clips: int | None) -> tuple[list[Clip], int]:
    """Check every wav of a split; report bad ones on stderr. Returns (usable clips, bad count)."""
    folder = root / "eigen_dev" / split
    paths = sorted(folder.glob("*.wav"))[:max_clips]
    clips, bad = [], 0
    for path in tqdm(paths, desc=f"checking {split}", unit="clip", leave=False):
        try:
            audio = read_clip(path)
        except AudioError as e:
            tqdm.write(f"{PROG}: skipping {e}", file=sys.stderr)
            bad += 1
            continue
        clips.append(Clip(path, audio.shape[0] // FRAME_SAMPLES))
    return clips, bad


def clip_visibilities(audio: np.ndarray, bands) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) visibilities of a recording: complex64 (T, B, 4, 4) of the tetrahedral
    channels and (T, B, 32, 32) of all 32, each normalised on its own (computed in complex128,
    stored in complex64 to halve the memory of the 32x32 targets)."""
    S4 = visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, bands)
    S32 = visibilities(audio, SAMPLE_RATE, bands)
    return S4.astype(np.complex64), S32.astype(np.complex64)


def training_batches(
    clips: list[Clip], bands, batch_size: int, group: int, rng: np.random.Generator
) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """Shuffled training batches: clips in random order, ``group`` clips at a time, frames of a
    group shuffled together. Returns (number of batches, iterator of (S4, S32) batches)."""
    order = rng.permutation(len(clips))
    groups = [order[i : i + group] for i in range(0, len(order), group)]
    total = sum(math.ceil(sum(clips[i].frames for i in g) / batch_size) for g in groups)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for g in groups:
            pairs = [clip_visibilities(read_clip(clips[i].path), bands) for i in g]
            S4 = np.concatenate([p[0] for p in pairs])
            S32 = np.concatenate([p[1] for p in pairs])
            del pairs
            perm = rng.permutation(len(S4))
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                yield S4[idx], S32[idx]

    return total, gen()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class Validator:
    """Validation loss and latent-vs-APGD agreement over a split; the APGD maps of each clip are
    solved once and kept (float32) for later epochs."""

    def __init__(self, clips: list[Clip], bands, steering: str, tv_weight: float):
        self.clips = clips
        self.bands = bands
        self.A = steering_operator(bands, steering)  # (M, N) or (B, M, N), as the model
        self.tv_weight = tv_weight
        self.references: dict[Path, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, model: UpLAM) -> dict[str, float | np.ndarray]:
        model.eval()
        B = model.num_bands
        loss_sum, frames = 0.0, 0
        sq, ab, count = np.zeros(B), np.zeros(B), 0
        device, cdtype = model.lam.tau.device, model.complex_dtype
        for clip in tqdm(self.clips, desc="validating", unit="clip", leave=False):
            audio = read_clip(clip.path)
            S4_np = visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, self.bands)
            S32_np = visibilities(audio, SAMPLE_RATE, self.bands)
            if clip.path not in self.references:
                ref = apgd(S32_np, self.A)  # (T, B, N) float64
                self.references[clip.path] = max_normalise(ref).astype(np.float32)
            latents = []
            for start in range(0, len(S4_np), EVAL_BATCH):
                S4 = torch.from_numpy(S4_np[start : start + EVAL_BATCH]).to(device, cdtype)
                S32 = torch.from_numpy(S32_np[start : start + EVAL_BATCH]).to(device, cdtype)
                S_hat, x = model(S4)
                loss = mse_tv_loss(S_hat, S32, x, model.neighbours, self.tv_weight)
                loss_sum += float(loss) * len(S4)
                frames += len(S4)
                latents.append(x.double().cpu().numpy())
            diff = max_normalise(np.concatenate(latents)) - self.references[clip.path]
            sq += np.sum(diff**2, axis=(0, 2))
            ab += np.sum(np.abs(diff), axis=(0, 2))
            count += diff.shape[0] * diff.shape[2]
        mse = sq / count
        psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))
        mad = ab / count
        model.train()
        return {
            "loss": loss_sum / frames,
            "psnr": float(np.mean(psnr)),
            "mad": float(np.mean(mad)),
            "psnr_per_band": psnr,
            "mad_per_band": mad,
        }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _error(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from torch.utils.tensorboard import SummaryWriter  # slow import; after --help

    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        return _error(f"device {args.device!r} is not usable ({e})")

    train_clips, bad_train = scan_split(args.root, args.train_split, args.max_clips)
    val_clips, bad_val = scan_split(args.root, args.val_split, args.max_clips)
    for split, clips in ((args.train_split, train_clips), (args.val_split, val_clips)):
        if not clips:
            return _error(f"no usable clips in {args.root / 'eigen_dev' / split}")
    bad = bad_train + bad_val

    try:
        prepare_output_dir(args.out)
    except WriteError as err:
        return _error(str(err))
    last_path, best_path = args.out / "last.pth", args.out / "best.pth"
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = UpLAM(bands=args.bands, steering=args.steering, dtype=dtype).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, global_step, best_loss = 0, 0, math.inf
    if args.resume:
        if not last_path.exists():
            return _error(f"--resume given but {last_path} does not exist")
        ckpt = load_checkpoint(last_path, map_location=device)
        if ckpt["config"]["steering"] != model.steering or not np.allclose(
            ckpt["config"]["bands"], model.band_centres
        ):
            return _error(
                f"{last_path} was trained with bands {ckpt['config']['band_name']} / steering "
                f"{ckpt['config']['steering']}, not {model.band_name} / {model.steering}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, global_step = ckpt["epoch"], ckpt["global_step"]
        best_loss = ckpt["best_val_loss"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        print(f"{PROG}: resuming from {last_path} after epoch {start_epoch}")

    writer = SummaryWriter(log_dir=str(args.out), purge_step=global_step if args.resume else None)
    validator = Validator(val_clips, model.band_centres, args.steering, args.tv_weight)
    print(
        f"{PROG}: {len(train_clips)} train clips ({sum(c.frames for c in train_clips)} frames), "
        f"{len(val_clips)} val clips; bands {model.band_name}, steering {args.steering}, "
        f"{args.dtype} on {device}"
    )
    model.train()
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        total, batches = training_batches(
            train_clips, model.band_centres, args.batch_size, args.shuffle_clips, rng
        )
        running, steps = 0.0, 0
        bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for S4_np, S32_np in bar:
            S4 = torch.from_numpy(S4_np).to(device, model.complex_dtype)
            S32 = torch.from_numpy(S32_np).to(device, model.complex_dtype)
            S_hat, x = model(S4)
            loss, terms = mse_tv_loss(S_hat, S32, x, model.neighbours, args.tv_weight, return_terms=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                writer.close()
                return _error(f"non-finite training loss at epoch {epoch + 1}, step {global_step}")
            running += value
            steps += 1
            global_step += 1
            if global_step % 10 == 0:
                writer.add_scalar("train/loss", value, global_step)
                writer.add_scalar("train/mse", float(terms["mse"]), global_step)
            bar.set_postfix(loss=f"{running / steps:.4g}")
        bar.close()

        metrics = validator(model)
        train_loss = running / max(steps, 1)
        writer.add_scalar("epoch/train_loss", train_loss, epoch + 1)
        for key in ("loss", "psnr", "mad"):
            writer.add_scalar(f"val/{key}", metrics[key], epoch + 1)
        for b, hz in enumerate(model.band_centres):
            writer.add_scalar(f"val_psnr_band/{b:02d}_{hz:.0f}Hz", metrics["psnr_per_band"][b], epoch + 1)
            writer.add_scalar(f"val_mad_band/{b:02d}_{hz:.0f}Hz", metrics["mad_per_band"][b], epoch + 1)
        writer.flush()
        improved = metrics["loss"] < best_loss
        best_loss = min(best_loss, metrics["loss"])
        extra = {
            "epoch": epoch + 1,
            "global_step": global_step,
            "best_val_loss": best_loss,
            "val": {k: float(metrics[k]) for k in ("loss", "psnr", "mad")},
            "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        save_checkpoint(last_path, model, optimizer, **extra)
        if improved:
            save_checkpoint(best_path, model, optimizer, **extra)
        print(
            f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4g}, val loss "
            f"{metrics['loss']:.4g}, PSNR {metrics['psnr']:.2f} dB, abs diff {metrics['mad']:.4g}"
            f"{' (best)' if improved else ''} [{time.time() - t0:.0f} s]"
        )
    writer.close()
    if bad:
        return _error(f"{bad} unusable wav(s) were skipped (listed above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
