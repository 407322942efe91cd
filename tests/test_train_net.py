"""tools/train_net.py end to end on a tiny generated dataset (CPU): training with the epoch hooks,
checkpoints, TensorBoard events, --eval-only, and exact resume."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from test_datasets import SPLIT, make_clip

from seld_d2.acoustics.features import write_cache

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import train_net  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A small network so CPU tests stay quick; the code paths are those of the full model.
SMALL = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
    "MODEL.ENERGY_HEAD.CONV_DIM", "32", "MODEL.FULLMAP_HEAD.CONVS_DIM", "32",
    "MODEL.DISTANCE_HEAD.HIDDEN_DIM", "32", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.DEVICE", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stairs")
    for i in range(2):
        make_clip(root, f"clip{i}", frames=6)
        latent = np.random.default_rng(i).random((6, 16, 484)).astype(np.float16)
        write_cache(root / "features_dev" / SPLIT / f"clip{i}.npz", latent, {"num_frames": 6})
    return root


def args_for(root, out, *extra, resume=False, eval_only=False):
    opts = [
        "SELD.DATA.ROOT", str(root),
        "SELD.DATA.TRAIN_SPLITS", f"['{SPLIT}']", "SELD.DATA.VAL_SPLITS", f"['{SPLIT}']",
        "SELD.DATA.FRAMES_PER_EPOCH", "4", "SELD.DATA.VAL_FRAMES", "2", "SOLVER.IMS_PER_BATCH", "2",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out), "SELD.TRAIN.LOG_PERIOD", "1", "SEED", "7",
        "DATASETS.TRAIN", f"('train_{out.name}',)", "DATASETS.TEST", f"('val_{out.name}',)", *SMALL, *extra,
    ]  # fmt: skip
    argv = ["--config-file", str(REPO / "configs/SELD/run3_mel16.yaml")]
    argv += ["--resume"] if resume else []
    argv += ["--eval-only"] if eval_only else []
    return train_net.default_argument_parser().parse_args([*argv, *opts])


class LossRecorder(HookBase):
    def __init__(self, losses, stop_at=None):
        self.losses, self.stop_at = losses, stop_at

    def before_step(self):
        if self.stop_at is not None and self.trainer.iter == self.stop_at:
            raise KeyboardInterrupt  # a kill between two iterations

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()


def train(args, losses, stop_at=None):
    cfg = train_net.setup(args)
    trainer = train_net.SeldTrainer(cfg)
    trainer.register_hooks([LossRecorder(losses, stop_at)])
    trainer.resume_or_load(resume=args.resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        DatasetCatalog.remove(name)
    return trainer


def test_train_writes_checkpoints_logs_and_events(root, tmp_path):
    out = tmp_path / "run"
    losses = {}
    trainer = train(args_for(root, out, "SELD.TRAIN.MAX_EPOCHS", "3"), losses)
    assert trainer.max_iter == 6 and sorted(losses) == list(range(6))
    assert all(np.isfinite(v) for v in losses.values())
    names = {p.name for p in out.iterdir()}
    assert {"model_best.pth", "model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("validation_loss" in m for m in metrics) and any("lr/audio_stem" in m for m in metrics)
    # Epochs 1-2 train stems + layer1; epoch 3 adds layer4; layer2/3 stay frozen.
    model = trainer.model
    assert model.backbone.bottom_up.res5[0].conv1.weight.requires_grad
    assert not model.backbone.bottom_up.res3[0].conv1.weight.requires_grad
    assert not model.backbone.bottom_up.res4[0].conv1.weight.requires_grad

    weights = str(out / "model_best.pth")
    results = train_net.main(args_for(root, out, "MODEL.WEIGHTS", weights, eval_only=True))
    assert np.isfinite(sum(results["validation_losses"].values()))
    assert "mAP_macro" in results["seld"]
    for name in ("train_run", "val_run"):
        DatasetCatalog.remove(name)


def test_resume_continues_exactly(root, tmp_path):
    # 3 iterations per epoch, checkpoints after iterations 1, 3, 5, 7. Killed before iteration 5,
    # the run resumes from the iteration-3 checkpoint at iteration 4: mid-epoch 2, no unfreezing
    # transition (that would clear the optimizer state in both runs), so the AdamW moments, step
    # counts and LRs must come from the checkpoint. Iteration 6 starts epoch 3 (layer4 unfrozen).
    extra = ("SELD.DATA.FRAMES_PER_EPOCH", "6", "SELD.TRAIN.MAX_EPOCHS", "3", "SOLVER.CHECKPOINT_PERIOD", "2")
    full = {}
    train(args_for(root, tmp_path / "a", *extra), full)
    first = {}
    train(args_for(root, tmp_path / "b", *extra), first, stop_at=5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    assert (tmp_path / "b" / "last_checkpoint").read_text() == "model_0000003.pth"
    saved = torch.load(tmp_path / "b" / "model_0000003.pth", weights_only=True)
    assert saved["trainer"]["_trainer"]["optimizer"]["state"], "no AdamW moments in the checkpoint"
    resumed = {}
    train(args_for(root, tmp_path / "b", *extra, resume=True), resumed)
    assert sorted(resumed) == [4, 5, 6, 7, 8]
    assert [resumed[it] for it in range(4, 9)] == [full[it] for it in range(4, 9)]  # raw, not approx
    a = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:3]}"
    for name in ("exp_avg", "exp_avg_sq"):
        sa, sb = (x["trainer"]["_trainer"]["optimizer"]["state"] for x in (a, b))
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][name], sb[i][name]) for i in sa)
    # metrics.json holds each iteration once, as the uninterrupted run's does.
    lines = (tmp_path / "b" / "metrics.json").read_text().splitlines()
    iters = [json.loads(line)["iteration"] for line in lines]
    assert iters == sorted(set(iters)) == list(range(9))


def test_drop_metrics_from_cuts_at_the_resume_point(tmp_path):
    from seld_d2.engine.trainer import drop_metrics_from

    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 1.0}) for i in range(5)]
    path.write_text("\n".join(lines) + '\n{"iteration": 5, "tot')  # a line torn by a kill
    assert drop_metrics_from(str(path), 3) == 3
    assert path.read_text() == "\n".join(lines[:3]) + "\n"
    assert drop_metrics_from(str(path), 3) == 0


def test_one_step_changes_exactly_the_trainable_groups(root, tmp_path):
    from detectron2.utils.events import EventStorage

    from seld_d2.engine.hooks import ProgressiveUnfreezing
    from seld_d2.engine.param_groups import named_groups

    cfg = train_net.setup(args_for(root, tmp_path / "g", "SELD.TRAIN.MAX_EPOCHS", "1"))
    trainer = train_net.SeldTrainer(cfg)
    model = trainer.model
    assert (
        len(cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS) == 0 and len(trainer.cfg.MODEL.ROI_HEADS.CLASS_WEIGHTS) == 13
    )
    assert [g["name"] for g in trainer.optimizer.param_groups] == list(named_groups(model))
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert (
        lrs["audio_stem"] == max(lrs.values()) == 2e-4 and lrs["box_predictor"] == min(lrs.values()) == 2e-5
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unfreezing = next(h for h in trainer._hooks if isinstance(h, ProgressiveUnfreezing))
    trainer.iter = 0
    unfreezing.before_step()  # epoch 1: stems + layer1 (+ FPN, RPN, heads)
    with EventStorage(0):
        trainer._trainer.run_step()
    changed_groups = set()
    for group, params in named_groups(model).items():
        for name, p in params:
            if not torch.equal(before[name], p.detach()):
                changed_groups.add(group)
                assert p.requires_grad, name
    assert changed_groups == set(named_groups(model)) - {"layer2", "layer3", "layer4"}
    for name in ("train_g", "val_g"):
        DatasetCatalog.remove(name)


def test_tool_runs_as_a_script():
    # As a script, the tool imports Detectron2 before anything of seld_d2 (isort order).
    import subprocess

    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "--config-file" in res.stdout


def test_undecodable_frames_are_skipped_counted_and_logged_once(tmp_path, caplog):
    root = tmp_path / "stairs"
    for i in range(2):
        make_clip(root, f"clip{i}", frames=6)
        latent = np.random.default_rng(i).random((6, 16, 484)).astype(np.float16)
        write_cache(root / "features_dev" / SPLIT / f"clip{i}.npz", latent, {"num_frames": 6})
    bad = [root / "frames_dev" / SPLIT / "clip1" / f"clip1_{k:04d}.png" for k in range(1, 6)]
    for path in bad:
        path.write_bytes(path.read_bytes()[:60])
    losses = {}
    extra = ("SELD.TRAIN.MAX_EPOCHS", "2", "DATALOADER.NUM_WORKERS", "1", "SELD.DATA.VAL_FRAMES", "0")
    with caplog.at_level("WARNING", logger="seld_d2.engine.trainer"):
        trainer = train(args_for(root, tmp_path / "run_bad_frames", *extra), losses)
    assert sorted(losses) == [0, 1, 2, 3] and all(np.isfinite(v) for v in losses.values())
    skipped = trainer._trainer.data_loader.skipped
    assert skipped > 0
    messages = [r.getMessage() for r in caplog.records]
    train_lines = [m for m in messages if "skipping an undecodable frame (" in m]
    named = [next(str(p) for p in bad if f"{p}: not a readable image" in m) for m in train_lines]
    assert len(named) == len(set(named)) >= 1  # each bad file once, however often it is drawn
    assert any("validation: skipping an undecodable frame" in m for m in messages)


def test_output_dir_checked_first_and_stale_checkpoint_temps_removed(root, tmp_path):
    import os
    import time

    with pytest.raises(SystemExit, match="^error: /proc/nonexistent/run_proc: cannot create"):
        train_net.setup(args_for(root, Path("/proc/nonexistent/run_proc"), "SELD.TRAIN.MAX_EPOCHS", "1"))
    for name in ("train_run_proc", "val_run_proc"):
        DatasetCatalog.remove(name)
    out = tmp_path / "run2"
    out.mkdir()
    stale = out / ".model_0000011.pth.k2j3h4g5.tmp"  # a checkpoint save killed with -9
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    train_net.setup(args_for(root, out, "SELD.TRAIN.MAX_EPOCHS", "1"))
    assert not stale.exists()
    for name in ("train_run2", "val_run2"):
        DatasetCatalog.remove(name)


def test_a_failed_process_is_reported_by_its_exception_line():
    # mp.spawn's message for a worker's exception: a header, the traceback, a multi-line message.
    message = (
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
        '  File "trainer.py", line 7, in run_step\n    loss.backward()\n    ^^^^^^^^^^^^^^^\n'
        "RuntimeError: Expected to have finished reduction\n In addition, set TORCH_DISTRIBUTED_DEBUG\n"
    )
    assert train_net._exception_line(message) == "RuntimeError: Expected to have finished reduction"
