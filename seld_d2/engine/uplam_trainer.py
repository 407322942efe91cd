"""``UpLAMTrainer``: self-supervised UpLAM training on Detectron2's ``SimpleTrainer`` (SPEC §3).

Settings are ``cfg.SELD.UPLAM`` (``seld_d2/config.py``); data are :mod:`.uplam_data`'s frames.
Each step computes the upsampled visibilities once and feeds them to LAM: the loss is the MSE-TV
loss, plus ``UPSAMPLE_LOSS_WEIGHT`` times the MSE of the upsampled visibilities against the
32-channel target (during the first ``WARMUP_EPOCHS`` epochs that MSE alone). Adam with three
parameter groups: the CDBPN at ``LR``, LAM's D and denoisers at ``LAM_LR``, its tau at ``TAU_LR``.

Hooks, in order: iteration timer, RNG state, epoch validation (MSE-TV loss; PSNR and mean
absolute difference of the max-normalised latent against the APGD map of the target; where
event tables exist, the peak error of the >= 1 kHz median map on single-source frames; one
printed line per epoch), writers (console, ``metrics.json``, TensorBoard; every ``LOG_PERIOD``
iterations and at every checkpoint), checkpoints (``last.pth`` every epoch and every
``CHECKPOINT_PERIOD`` iterations, ``best.pth`` on a better ``BEST_METRIC``). Checkpoints are
written atomically and hold ``model`` and ``config`` (``UpLAM.from_checkpoint`` reads them) plus
the trainer state (iteration, optimizer, hooks' states), so ``resume_or_load`` continues exactly.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from detectron2.engine import HookBase, SimpleTrainer, hooks
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from torch import Tensor
from tqdm import tqdm

from ..acoustics.audio import SAMPLE_RATE
from ..acoustics.geometry import TETRA_CHANNELS
from ..acoustics.quality import USABLE_MIN_HZ, band_median, peak_errors
from ..acoustics.solvers import GramOperator, apgd
from ..acoustics.uplam import (
    UpLAM,
    load_checkpoint,
    map_differences,
    max_normalise,
    mse_tv_loss,
    psnr_db,
    steering_operator,
)
from ..acoustics.visibility import BandSpec, band_centres, visibilities
from ..data.synth.generate import read_event_table
from ..utils.io import prepare_output_dir
from .hooks import EpochClock, RNGState
from .trainer import AtomicCheckpointer, drop_metrics_from
from .uplam_data import Clip, FrameBatches, read_clip, scan_splits

logger = logging.getLogger(__name__)

BEST_METRICS = ("peak_error", "loss")


def parse_bands(value: str | Sequence[float]) -> BandSpec:
    """``SELD.UPLAM.BANDS`` as a band spec: a layout name, or comma-separated centre frequencies
    in Hz -> list of floats. Raises ValueError for an unknown or unparsable layout."""
    if not isinstance(value, str):
        bands: BandSpec = [float(f) for f in value]
    elif "," in value or value.replace(".", "").isdigit():
        try:
            bands = [float(f) for f in value.split(",") if f.strip()]
        except ValueError:
            raise ValueError(f"cannot parse {value!r} as a list of frequencies") from None
    else:
        bands = value
    band_centres(bands)
    return bands


def build_uplam(cfg) -> UpLAM:
    """The model of ``cfg.SELD.UPLAM``, initialised from ``SEED``, on ``DEVICE``."""
    u = cfg.SELD.UPLAM
    torch.manual_seed(u.SEED)
    dtype = {"float32": torch.float32, "float64": torch.float64}[u.DTYPE]
    model = UpLAM(
        parse_bands(u.BANDS),
        u.STEERING,
        dtype=dtype,
        prior=u.PRIOR,
        calibrate=u.CALIBRATE,
        input_scaling=u.INPUT_SCALING,
    )
    return model.to(torch.device(u.DEVICE))


def build_uplam_optimizer(cfg, model: UpLAM) -> torch.optim.Adam:
    """Adam with the groups ``cdbpn`` (``LR``), ``lam`` (LAM's D and denoisers, ``LAM_LR``) and
    ``tau`` (``TAU_LR``)."""
    u = cfg.SELD.UPLAM
    lam = [p for name, p in model.lam.named_parameters() if name != "tau"]
    groups = [
        {"params": list(model.cdbpn.parameters()), "lr": u.LR, "name": "cdbpn"},
        {"params": lam, "lr": u.LAM_LR, "name": "lam"},
        {"params": [model.lam.tau], "lr": u.TAU_LR, "name": "tau"},
    ]
    if sum(len(g["params"]) for g in groups) != len(list(model.parameters())):
        raise RuntimeError("UpLAM has parameters outside its CDBPN and LAM")
    return torch.optim.Adam(groups)


def upsampling_mse(S_up: Tensor, S: Tensor) -> Tensor:
    """Mean of ``|S_up - S|^2`` over all entries (complex (batch, B, M, M) each)."""
    diff = S_up - S.to(S_up.dtype)
    return (diff.real.square() + diff.imag.square()).mean()


def uplam_losses(
    model: UpLAM,
    S4: Tensor,
    S32: Tensor,
    tv_weight: float,
    upsample_weight: float = 0.0,
    upsample_only: bool = False,
) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
    """One forward pass: the CDBPN (with its prior) once, its output through LAM.

    Args:
        S4: complex (batch, B, 4, 4) input, S32: complex (batch, B, 32, 32) target.
        upsample_only: warm-up: the loss is the upsampling MSE alone and LAM is not run.

    Returns:
        (losses to add up: ``loss_mse_tv``, ``loss_upsample`` (when weighted or warming up),
        unweighted terms to log: ``mse``, ``tv``, ``l1``, ``upsample_mse`` (detached), the latent
        (batch, B, 484) or None in warm-up).
    """
    S_up = model.upsample(S4)
    up = upsampling_mse(S_up, S32)
    if upsample_only:
        return {"loss_upsample": up}, {"upsample_mse": up.detach()}, None
    S_hat, x = model.lam(S_up)
    loss, terms = mse_tv_loss(S_hat, S32, x, model.neighbours, tv_weight, return_terms=True)
    losses = {"loss_mse_tv": loss}
    if upsample_weight > 0:
        losses["loss_upsample"] = upsample_weight * up
    return losses, {**terms, "upsample_mse": up.detach()}, x


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class UpLAMValidator:
    """Validation over a clip list: MSE-TV loss and upsampling MSE; per band the PSNR and mean
    absolute difference of the max-normalised latent against the max-normalised APGD map of the
    32x32 target (same steering as the model), averaged over bands; and, over the clips with an
    event table, the peak error of the >= 1 kHz median latent on single-source frames (median,
    shares within 10 and 20 degrees). APGD maps are solved once per clip and kept (float32)."""

    def __init__(
        self, clips: Sequence[Clip], bands: BandSpec, steering: str, tv_weight: float, batch: int = 64
    ):
        self.clips, self.bands, self.tv_weight, self.batch = list(clips), bands, tv_weight, batch
        self.centres = band_centres(bands)
        self.gram = GramOperator(steering_operator(bands, steering))
        self.references: dict[Path, np.ndarray] = {}
        usable = bool((self.centres >= USABLE_MIN_HZ).any())
        self.events = {c.path: read_event_table(c.events) for c in self.clips if c.events and usable}

    @property
    def has_events(self) -> bool:
        return bool(self.events)

    @torch.no_grad()
    def __call__(self, model: UpLAM) -> dict[str, float | np.ndarray]:
        was_training = model.training
        model.eval()
        sums = {"loss": 0.0, "upsample_mse": 0.0}
        frames = 0
        mse, mad, errors = [], [], []
        device, cdtype = model.lam.tau.device, model.complex_dtype
        for clip in tqdm(self.clips, desc="validating", unit="clip", leave=False):
            audio = read_clip(clip.path)
            S4_np = visibilities(audio[:, list(TETRA_CHANNELS)], SAMPLE_RATE, self.bands)
            S32_np = visibilities(audio, SAMPLE_RATE, self.bands)
            if clip.path not in self.references:
                self.references[clip.path] = max_normalise(apgd(S32_np, self.gram)).astype(np.float32)
            latents = []
            for start in range(0, len(S4_np), self.batch):
                S4 = torch.from_numpy(S4_np[start : start + self.batch]).to(device, cdtype)
                S32 = torch.from_numpy(S32_np[start : start + self.batch]).to(device, cdtype)
                losses, terms, x = uplam_losses(model, S4, S32, self.tv_weight)
                sums["loss"] += float(losses["loss_mse_tv"]) * len(S4)
                sums["upsample_mse"] += float(terms["upsample_mse"]) * len(S4)
                frames += len(S4)
                latents.append(x.double().cpu().numpy())
            latent = np.concatenate(latents)  # (T, B, N)
            d = map_differences(latent, self.references[clip.path])  # (T, B) each
            mse.append(d["mse"])
            mad.append(d["mad"])
            if clip.path in self.events:
                errors.append(peak_errors(band_median(latent, self.centres), self.events[clip.path]))
        model.train(was_training)
        psnr_band = psnr_db(np.mean(np.concatenate(mse), axis=0))
        mad_band = np.mean(np.concatenate(mad), axis=0)
        out: dict[str, float | np.ndarray] = {
            "loss": sums["loss"] / frames,
            "upsample_mse": sums["upsample_mse"] / frames,
            "psnr": float(np.mean(psnr_band)),
            "mad": float(np.mean(mad_band)),
            "psnr_per_band": psnr_band,
            "mad_per_band": mad_band,
        }
        if errors:
            err = np.concatenate(errors)
            err = err[np.isfinite(err)]
            out["single_frames"] = float(len(err))
            if len(err):
                out["peak_error"] = float(np.median(err))
                out["within_10"] = float(np.mean(err <= 10.0))
                out["within_20"] = float(np.mean(err <= 20.0))
        return out


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


def selection_key(scalars: dict[str, float], metric: str) -> tuple[float, float]:
    """What ``best.pth`` minimises: (``metric``, -PSNR). The median peak error takes the grid's
    few values (4.1 deg is one step), so equal errors are common; the higher PSNR against APGD
    breaks the tie. A missing or NaN value ranks last."""

    def finite(x: float | None) -> float:
        return math.inf if x is None or not math.isfinite(x) else x

    return finite(scalars.get(metric)), finite(-scalars["psnr"] if "psnr" in scalars else None)


class EpochValidation(HookBase):
    """At every epoch end: validate, put the values into the EventStorage (``val/...``,
    ``val_psnr_band/...``, ``val_mad_band/...``, ``epoch/train_loss``), decide whether the epoch
    is the best so far (lower ``metric``; ties, frequent for the grid-quantised median peak
    error, go to the higher PSNR), and print one line. Keeps the epoch's running train loss, the
    best value and the last validation in its state (so a resumed epoch reports the same)."""

    def __init__(self, clock: EpochClock, validator: UpLAMValidator, metric: str, epochs: int):
        self.clock, self.validator, self.metric, self.epochs = clock, validator, metric, epochs
        self.best: tuple[float, float] = (math.inf, math.inf)
        self.improved = False
        self.last: dict[str, float] = {}
        self._train_sum, self._train_steps = 0.0, 0
        self._t0 = time.perf_counter()

    def before_step(self) -> None:
        self.improved = False
        if self.clock.is_start(self.trainer.iter):
            self._t0 = time.perf_counter()

    def after_step(self) -> None:
        storage = self.trainer.storage
        self._train_sum += storage.history("total_loss").latest()
        self._train_steps += 1
        if not self.clock.is_end(self.trainer.iter):
            return
        epoch = self.clock.epoch(self.trainer.iter)
        m = self.validator(self.trainer.model)
        train_loss = self._train_sum / max(self._train_steps, 1)
        self._train_sum, self._train_steps = 0.0, 0
        storage.put_scalar("epoch/train_loss", train_loss, smoothing_hint=False)
        scalars = {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}
        for key, value in scalars.items():
            storage.put_scalar(f"val/{key}", value, smoothing_hint=False)
        for b, hz in enumerate(self.validator.centres):
            storage.put_scalar(
                f"val_psnr_band/{b:02d}_{hz:.0f}Hz", m["psnr_per_band"][b], smoothing_hint=False
            )
            storage.put_scalar(f"val_mad_band/{b:02d}_{hz:.0f}Hz", m["mad_per_band"][b], smoothing_hint=False)
        value = selection_key(scalars, self.metric)
        self.improved = value < self.best
        self.best = min(self.best, value)
        self.last = {k: float(v) for k, v in scalars.items()}
        line = (
            f"epoch {epoch}/{self.epochs}: train loss {train_loss:.4g}, val loss {m['loss']:.4g}, "
            f"PSNR {m['psnr']:.2f} dB, abs diff {m['mad']:.4g}"
        )
        if "peak_error" in m:
            line += f", peak error {m['peak_error']:.1f}° ({100 * m['within_10']:.0f} % within 10°)"
        print(
            f"{line}{' (best)' if self.improved else ''} [{time.perf_counter() - self._t0:.0f} s]", flush=True
        )

    def state_dict(self) -> dict:
        return {
            "best": list(self.best),
            "last": dict(self.last),
            "train_sum": self._train_sum,
            "train_steps": self._train_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.last = tuple(state["best"]), dict(state["last"])
        self._train_sum, self._train_steps = state["train_sum"], state["train_steps"]


class CheckpointWriter(hooks.PeriodicWriter):
    """Detectron2's PeriodicWriter, also writing at every iteration ``also(iter)`` says (epoch
    ends, checkpoints: what a checkpoint covers is then on disk too); its writers are built in
    ``before_train``, once the start iteration is known (TensorBoard purges what follows it)."""

    def __init__(self, build: Callable[[], list], period: int, also: Callable[[int], bool]):
        self._build, self._also = build, also
        super().__init__([], period)

    def before_train(self) -> None:
        self._writers = self._build()

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1 or self._also(it):
            for writer in self._writers:
                writer.write()


class UpLAMCheckpointer(AtomicCheckpointer):
    """``last.pth`` is what ``--resume`` continues from; ``best.pth`` leaves that tag alone."""

    untagged = ("best",)


class EpochCheckpoints(HookBase):
    """``last.pth`` at every epoch end and every ``period`` iterations (0 = epoch ends only),
    ``best.pth`` when the epoch's validation improved; with ``config`` (the model's), ``epoch``
    (completed), ``global_step`` (iterations done), ``val`` (the last validation) and
    ``best_metric`` / ``best_value``."""

    def __init__(
        self, clock: EpochClock, checkpointer: UpLAMCheckpointer, validation: EpochValidation, period: int
    ):
        self.clock, self.checkpointer, self.validation, self.period = clock, checkpointer, validation, period

    def due(self, iteration: int) -> bool:
        return self.clock.is_end(iteration) or (self.period > 0 and (iteration + 1) % self.period == 0)

    def after_step(self) -> None:
        it = self.trainer.iter
        if not self.due(it):
            return
        extra = {
            "config": self.trainer.model.config,
            "epoch": (it + 1) // self.clock.iters_per_epoch,
            "global_step": it + 1,
            "val": dict(self.validation.last),
            "best_metric": self.validation.metric,
            "best_value": self.validation.best[0],
        }
        self.checkpointer.save("last", **extra)
        if self.clock.is_end(it) and self.validation.improved:
            self.checkpointer.save("best", **extra)


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class UpLAMTrainer(SimpleTrainer):
    """SimpleTrainer over :class:`~.uplam_data.FrameBatches` with the hooks of the module
    docstring. ``train_clips`` / ``val_clips`` default to scanning ``SELD.UPLAM.TRAIN_SPLITS`` /
    ``VAL_SPLITS`` under ``SELD.DATA.ROOT`` (unusable wavs logged and skipped)."""

    def __init__(
        self, cfg, train_clips: Sequence[Clip] | None = None, val_clips: Sequence[Clip] | None = None
    ):
        u = cfg.SELD.UPLAM
        if u.BEST_METRIC not in BEST_METRICS:
            raise ValueError(f"SELD.UPLAM.BEST_METRIC {u.BEST_METRIC!r}: use one of {BEST_METRICS}")
        for name, splits in (("train", u.TRAIN_SPLITS), ("val", u.VAL_SPLITS)):
            clips = train_clips if name == "train" else val_clips
            if clips is None:
                clips, _ = scan_splits(cfg.SELD.DATA.ROOT, splits, u.MAX_CLIPS, logger.warning)
            if not clips:
                raise ValueError(f"no usable {name} clips in {cfg.SELD.DATA.ROOT}/eigen_dev/{list(splits)}")
            if name == "train":
                train_clips = clips
            else:
                val_clips = clips
        prepare_output_dir(cfg.OUTPUT_DIR)  # WriteError before any work
        model = build_uplam(cfg)
        bands = parse_bands(u.BANDS)
        data = FrameBatches(train_clips, bands, u.BATCH_SIZE, u.SHUFFLE_CLIPS, u.SEED)
        super().__init__(model, data, build_uplam_optimizer(cfg, model))
        self.cfg = cfg
        self.train_clips, self.val_clips = list(train_clips), list(val_clips)
        self.clock = EpochClock(data.iters_per_epoch)
        self.start_iter, self.max_iter = 0, u.EPOCHS * data.iters_per_epoch
        self.checkpointer = UpLAMCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.validator = UpLAMValidator(val_clips, bands, u.STEERING, u.TV_WEIGHT, u.EVAL_BATCH_SIZE)
        metric = u.BEST_METRIC
        if metric == "peak_error" and not self.validator.has_events:
            logger.info("no validation clip has an event table (or no band >= 1 kHz): best.pth by the loss")
            metric = "loss"
        self.best_metric = metric
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> list[HookBase]:
        u = self.cfg.SELD.UPLAM
        validation = EpochValidation(self.clock, self.validator, self.best_metric, u.EPOCHS)
        checkpoints = EpochCheckpoints(self.clock, self.checkpointer, validation, u.CHECKPOINT_PERIOD)
        return [
            hooks.IterationTimer(),
            RNGState(),
            validation,
            CheckpointWriter(self.build_writers, u.LOG_PERIOD, checkpoints.due),
            checkpoints,
        ]

    def build_writers(self) -> list:
        out = self.cfg.OUTPUT_DIR
        purge = {"purge_step": self.start_iter} if self.start_iter > 0 else {}
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(out, "metrics.json")),
            TensorboardXWriter(out, **purge),
        ]

    def run_step(self) -> None:
        u = self.cfg.SELD.UPLAM
        start = time.perf_counter()
        S4_np, S32_np = next(self._data_loader_iter)
        device, cdtype = self.model.lam.tau.device, self.model.complex_dtype
        S4 = torch.from_numpy(S4_np).to(device, cdtype)
        S32 = torch.from_numpy(S32_np).to(device, cdtype)
        data_time = time.perf_counter() - start
        warmup = self.clock.epoch(self.iter) <= u.WARMUP_EPOCHS
        losses, terms, _ = uplam_losses(self.model, S4, S32, u.TV_WEIGHT, u.UPSAMPLE_LOSS_WEIGHT, warmup)
        self.optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self._write_metrics(losses, data_time)  # raises FloatingPointError on a non-finite loss
        self.storage.put_scalars(**{k: float(v) for k, v in terms.items()})
        groups = self.optimizer.param_groups
        self.storage.put_scalars(
            lr=groups[0]["lr"], **{f"lr/{g['name']}": g["lr"] for g in groups}, smoothing_hint=False
        )
        self.optimizer.step()

    def checkpoint_config(self) -> dict | None:
        """The model config of the checkpoint ``resume_or_load`` would continue from, or None."""
        if not self.checkpointer.has_checkpoint():
            return None
        return load_checkpoint(self.checkpointer.get_checkpoint_file()).get("config")

    def resume_or_load(self, resume: bool = True) -> None:
        """Continue from ``OUTPUT_DIR/last.pth`` (model, optimizer, iteration, hooks' and RNG
        states, and the data stream at that point) when ``resume`` and it exists, else start
        afresh; ``metrics.json`` is cut back to the iterations before the start. Raises
        ValueError when that checkpoint's model config differs from this one's."""
        if resume and self.checkpointer.has_checkpoint():
            saved, mine = self.checkpoint_config(), self.model.config
            if saved is None or any(saved.get(k) != v for k, v in mine.items() if k != "band_name"):
                raise ValueError(
                    f"{self.checkpointer.get_checkpoint_file()} was trained with {saved}, not {mine}"
                )
            self.checkpointer.resume_or_load("", resume=True)
            self.start_iter = self.iter + 1
        else:
            self.start_iter = 0
        drop_metrics_from(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
        self.data_loader = FrameBatches(
            self.train_clips,
            parse_bands(self.cfg.SELD.UPLAM.BANDS),
            self.cfg.SELD.UPLAM.BATCH_SIZE,
            self.cfg.SELD.UPLAM.SHUFFLE_CLIPS,
            self.cfg.SELD.UPLAM.SEED,
            start_iter=self.start_iter,
        )
        self._data_loader_iter = iter(self.data_loader)

    def train(self) -> None:
        super().train(self.start_iter, self.max_iter)
