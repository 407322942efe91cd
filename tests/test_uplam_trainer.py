"""Tests for seld_d2.engine.uplam_trainer and uplam_data (CPU, small generated em32 clips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import plane_wave_em32
from detectron2.config import get_cfg
from detectron2.engine import HookBase

from seld_d2 import add_seld_config
from seld_d2.acoustics.features import FeatureExtractor
from seld_d2.acoustics.uplam import UpLAM, load_checkpoint
from seld_d2.data.synth.generate import event_table
from seld_d2.data.synth.scene import Event
from seld_d2.engine.uplam_data import FrameBatches, scan_splits
from seld_d2.engine.uplam_trainer import UpLAMTrainer, UpLAMValidator, selection_key, uplam_losses

FS = 24000


def make_split(
    root: Path, split: str, clips: int, seconds: float, events: bool = False, seed: int = 0
) -> None:
    """Plane waves from one direction per clip; with ``events``, a matching event table."""
    rng = np.random.default_rng(seed)
    (root / "eigen_dev" / split).mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        az, el = float(rng.uniform(-150, 150)), float(rng.uniform(-40, 40))
        audio = plane_wave_em32(az, el, seconds, seed=seed + i)
        audio = 0.1 * audio / np.abs(audio).max()
        sf.write(root / "eigen_dev" / split / f"clip{i}.wav", audio, FS, subtype="FLOAT")
        if events:
            folder = root / "events_dev" / split
            folder.mkdir(parents=True, exist_ok=True)
            ev = Event(0, 1, 0.0, seconds, az, el, 2.0, 20.0, -20.0)
            (folder / f"clip{i}.csv").write_text(event_table([ev]))


def config(root: Path, out: Path, *opts):
    cfg = get_cfg()
    add_seld_config(cfg)
    cfg.SELD.DATA.ROOT = str(root)
    cfg.OUTPUT_DIR = str(out)
    cfg.merge_from_list(
        ["SELD.UPLAM.TRAIN_SPLITS", ["train"], "SELD.UPLAM.VAL_SPLITS", ["val"],
         "SELD.UPLAM.BANDS", "linear9", "SELD.UPLAM.BATCH_SIZE", 2, "SELD.UPLAM.SHUFFLE_CLIPS", 1,
         "SELD.UPLAM.LR", 1e-3, "SELD.UPLAM.LAM_LR", 1e-5, "SELD.UPLAM.TAU_LR", 1e-5,
         "SELD.UPLAM.LOG_PERIOD", 3, *opts]
    )  # fmt: skip
    cfg.freeze()
    return cfg


class Record(HookBase):
    """Raw total loss of every iteration."""

    def __init__(self):
        self.losses: dict[int, float] = {}

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()


class Stop(HookBase):
    def __init__(self, at: int):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("interrupted")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uplam_data")
    make_split(root, "train", 2, 0.5)  # 5 frames each: 5 steps of 2 per epoch, one spans two clips
    make_split(root, "val", 1, 0.3, events=True, seed=7)
    return root


def test_frame_batches_are_a_function_of_the_start(data):
    clips, bad = scan_splits(data, ["train"])
    assert bad == 0 and [c.frames for c in clips] == [5, 5]
    full = FrameBatches(clips, "linear9", 2, 1, seed=3)
    assert full.iters_per_epoch == 5
    it = iter(full)
    stream = [next(it) for _ in range(12)]
    assert [len(b[0]) for b in stream] == [2, 2, 2, 2, 2] * 2 + [2, 2]
    later = iter(FrameBatches(clips, "linear9", 2, 1, seed=3, start_iter=7))
    for k in range(7, 12):
        S4, S32 = next(later)
        assert np.array_equal(S4, stream[k][0]) and np.array_equal(S32, stream[k][1])
    # each epoch holds every frame once, in an order of its own
    first = np.concatenate([b[0] for b in stream[:5]])
    second = np.concatenate([b[0] for b in stream[5:10]])
    assert not np.array_equal(first, second)
    key = lambda S: sorted(map(bytes, S.reshape(len(S), -1)))  # noqa: E731
    assert key(first) == key(second)


def test_upsample_term_and_warmup(data):
    torch.manual_seed(0)
    model = UpLAM("linear9", "per_band", prior="interpolation", calibrate=True)
    S4, S32 = (
        torch.from_numpy(a)
        for a in next(iter(FrameBatches(scan_splits(data, ["train"])[0], "linear9", 4, 1, 0)))
    )
    losses, terms, x = uplam_losses(model, S4, S32, 1e-5, upsample_weight=0.5)
    assert set(losses) == {"loss_mse_tv", "loss_upsample"} and x.shape == (4, 9, 484)
    assert torch.allclose(losses["loss_upsample"], 0.5 * terms["upsample_mse"])
    with torch.no_grad():
        S_hat, latent = model(S4)
    torch.testing.assert_close(x.detach(), latent)  # the same arithmetic as UpLAM.forward
    warm, _, none = uplam_losses(model, S4, S32, 1e-5, upsample_only=True)
    assert set(warm) == {"loss_upsample"} and none is None
    warm["loss_upsample"].backward()
    assert model.lam.tau.grad is None and model.cdbpn.real_path.head[0].weight.grad is not None


def test_training_lowers_the_loss_and_resumes_exactly_mid_epoch(data, tmp_path, capsys):
    opts = ["SELD.UPLAM.EPOCHS", 2, "SELD.UPLAM.CHECKPOINT_PERIOD", 2]

    # Uninterrupted: 10 steps.
    ref = UpLAMTrainer(config(data, tmp_path / "a", *opts))
    train_loss = UpLAMValidator(ref.train_clips, "linear9", "per_band", 1e-5)
    before = train_loss(ref.model)["loss"]
    ref.resume_or_load(resume=False)
    rec_a = Record()
    ref.register_hooks([rec_a])
    ref.train()
    after = train_loss(ref.model)["loss"]
    assert np.isfinite(after) and after < before
    assert sorted(rec_a.losses) == list(range(10))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and "peak error" in lines[0] and "within 10°" in lines[0]

    # Interrupted after step 6 (mid epoch 2; last checkpoint after step 5), then resumed.
    b = UpLAMTrainer(config(data, tmp_path / "b", *opts))
    b.resume_or_load(resume=False)
    b.register_hooks([Stop(6)])
    with pytest.raises(RuntimeError, match="interrupted"):
        b.train()
    c = UpLAMTrainer(config(data, tmp_path / "b", *opts))
    c.resume_or_load(resume=True)
    assert c.start_iter == 6
    rec_c = Record()
    c.register_hooks([rec_c])
    c.train()
    assert sorted(rec_c.losses) == [6, 7, 8, 9]
    for k in rec_c.losses:
        assert rec_c.losses[k] == rec_a.losses[k]
    for (name, p), q in zip(ref.model.state_dict().items(), c.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name

    # metrics.json: every iteration once, in order; the epoch-end validation the same.
    def records(path):
        return [json.loads(line) for line in (path / "metrics.json").read_text().splitlines()]

    a_rec, c_rec = records(tmp_path / "a"), records(tmp_path / "b")
    iters = [r["iteration"] for r in c_rec]
    assert iters == sorted(set(iters)) and iters == [r["iteration"] for r in a_rec]
    assert [r.get("val/peak_error") for r in c_rec] == [r.get("val/peak_error") for r in a_rec]
    assert c_rec[-1]["val/loss"] == a_rec[-1]["val/loss"]

    # Checkpoints load as models and as feature extractors; best by the peak error.
    ckpt = load_checkpoint(tmp_path / "b" / "last.pth")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 10 and ckpt["best_metric"] == "peak_error"
    assert ckpt["config"] == c.model.config and np.isfinite(ckpt["val"]["psnr"])
    assert (tmp_path / "b" / "last_checkpoint").read_text() == "last.pth"
    assert UpLAM.from_checkpoint(tmp_path / "b" / "best.pth").prior == "interpolation"
    fe = FeatureExtractor(checkpoint=tmp_path / "b" / "last.pth")
    assert fe.steering == "per_band"


def test_resume_refuses_another_model(data, tmp_path):
    a = UpLAMTrainer(config(data, tmp_path, "SELD.UPLAM.EPOCHS", 1))
    a.resume_or_load(resume=False)
    a.train()
    b = UpLAMTrainer(config(data, tmp_path, "SELD.UPLAM.EPOCHS", 2, "SELD.UPLAM.STEERING", "fixed"))
    with pytest.raises(ValueError, match="was trained with"):
        b.resume_or_load(resume=True)


def test_tau_has_its_own_learning_rate(data, tmp_path):
    """TAU_LR 0 (the default) leaves LAM's offset where it starts while D and the CDBPN learn."""
    cfg = config(data, tmp_path / "run", "SELD.UPLAM.EPOCHS", 1, "SELD.UPLAM.TAU_LR", 0.0)
    trainer = UpLAMTrainer(cfg)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["tau"]["params"] == [trainer.model.lam.tau] and groups["tau"]["lr"] == 0.0
    assert all(p is not trainer.model.lam.tau for p in groups["lam"]["params"])
    tau0, D0 = trainer.model.lam.tau.detach().clone(), trainer.model.lam.D_real.detach().clone()
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert torch.equal(trainer.model.lam.tau, tau0)
    assert not torch.equal(trainer.model.lam.D_real, D0)


def test_best_epoch_ties_go_to_the_higher_psnr():
    a = selection_key({"peak_error": 4.1, "psnr": 12.0}, "peak_error")
    b = selection_key({"peak_error": 4.1, "psnr": 14.0}, "peak_error")
    c = selection_key({"peak_error": 3.0, "psnr": 5.0}, "peak_error")
    nan = selection_key({"peak_error": float("nan"), "psnr": 30.0}, "peak_error")
    assert c < b < a < nan
    assert selection_key({"loss": 1.0}, "loss") < selection_key({"loss": 2.0}, "loss")
