"""Multi-process training and evaluation in two CPU processes over gloo.

Training goes through ``seld_d2.engine.distributed.launch`` (Detectron2's ``launch`` with a gloo
path when there is no CUDA) on the tiny generated dataset of ``test_train_net``: across
unfreezing transitions and batches without instances on one process, against a one-process run
of the same global batches; a killed process; an interrupted and resumed run. The collective
steps of validation and evaluation are also tested alone.
"""

import hashlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from test_datasets import SPLIT, make_clip
from test_train_net import REPO, args_for, train_net
from torch import nn

from seld_d2.acoustics.features import write_cache
from seld_d2.config import add_seld_config
from seld_d2.data.datasets import load_stairs26
from seld_d2.data.sampler import ClassBalancedFrameSampler
from seld_d2.engine.distributed import launch
from seld_d2.engine.hooks import ProgressiveUnfreezing, unwrap_model, validation_losses
from seld_d2.evaluation.evaluator import Stairs26Evaluator
from seld_d2.inference.submission import ClipExporter

WORLD = 2


class _Losses(nn.Module):
    """A 'model' whose losses are the batch means of two input fields."""

    def forward(self, batch):
        a = torch.tensor([x["a"] for x in batch], dtype=torch.float64)
        return {"loss_a": a.mean(), "loss_b": (2 * a).mean()}


def _shard(rank: int) -> list[list[dict]]:
    """Rank r's validation batches: r + 1 batches of r + 1 frames (uneven on purpose)."""
    values = iter(range(100 * rank, 100 * rank + (rank + 1) ** 2))
    return [[{"a": float(next(values))} for _ in range(rank + 1)] for _ in range(rank + 1)]


def _frame(seq: str, k: int) -> tuple[dict, dict]:
    inst = Instances((180, 360))
    inst.pred_boxes = Boxes(torch.tensor([[10.0 + k, 20.0, 40.0 + k, 60.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([k % 13])
    inst.pred_energy = torch.rand(1, 28, 28)
    inst.pred_distance = torch.tensor([150.0])
    return {"sequence": seq, "frame_index": k}, {"instances": inst}


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        means = validation_losses(_Losses(), _shard(rank))
        evaluator = Stairs26Evaluator("unused", ClipExporter(add_seld_config(get_cfg())))
        evaluator.reset()
        for k in range(3):  # each rank its own clip, as the sharded test loader gives them
            x, out = _frame(f"seq{rank}", k)
            evaluator.process([x], [out])
        gathered = evaluator._gathered()
        frames = {seq: sorted(f) for seq, f in gathered.items()} if rank == 0 else None
        results.put((rank, means, frames))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_validation_loss_and_evaluator_frames_over_two_processes():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    got = {}
    for _ in range(WORLD):
        rank, means, frames = results.get(timeout=120)
        got[rank] = (means, frames)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    values = np.array([x["a"] for r in range(WORLD) for batch in _shard(r) for x in batch])
    for rank in range(WORLD):
        means = got[rank][0]
        np.testing.assert_allclose(means["loss_a"], values.mean())
        np.testing.assert_allclose(means["loss_b"], 2 * values.mean())
    assert got[0][1] == {"seq0": [0, 1, 2], "seq1": [0, 1, 2]}


# Training in two processes ------------------------------------------------------------------


TIMEOUT = timedelta(minutes=5)  # of each collective: a hung test fails instead of waiting 30 min


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """test_train_net's dataset: 2 clips of 6 frames, instances in frames 1 and 2 only."""
    root = tmp_path_factory.mktemp("stairs")
    for i in range(2):
        make_clip(root, f"clip{i}", frames=6)
        latent = np.random.default_rng(i).random((6, 16, 484)).astype(np.float16)
        write_cache(root / "features_dev" / SPLIT / f"clip{i}.npz", latent, {"num_frames": 6})
    return root


class _Recorder(HookBase):
    """The losses Detectron2 logs (averaged over the processes, main process only) after each
    step; raises KeyboardInterrupt (on every process) before iteration ``stop_at``."""

    def __init__(self, losses: dict, stop_at: int | None = None):
        self.losses, self.stop_at = losses, stop_at

    def before_step(self):
        if self.trainer.iter == self.stop_at:
            raise KeyboardInterrupt

    def after_step(self):
        if comm.is_main_process():
            h = self.trainer.storage.histories()
            self.losses[self.trainer.iter] = {
                k: h[k].latest() for k in h if k.startswith("loss_") or k == "total_loss"
            }


class _ShardMean(nn.Module):
    """What DDP over ``shards`` processes computes, in one process: the mean of the losses of
    the shares of the global batch that the processes' samplers give them (items r, r + shards,
    ...), so the gradient is the mean of the shares' gradients, as DDP's all-reduce makes it."""

    def __init__(self, module: nn.Module, shards: int):
        super().__init__()
        self.module, self.shards = module, shards

    def forward(self, batch):
        parts = [self.module(batch[r :: self.shards]) for r in range(self.shards)]
        return {k: sum(p[k] for p in parts) / self.shards for k in parts[0]}


def _digests(model: nn.Module) -> dict[str, str]:
    return {
        name: hashlib.sha1(t.detach().contiguous().numpy().tobytes()).hexdigest()
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }


def _train(out: Path, args, stop_at: int | None = None, shards: int = 1) -> None:
    """tools/train_net.py's training with a loss recorder; each process saves its losses,
    parameter digests, trainable stages (and the main process its weights) to out/rank<r>.pt."""
    cfg = train_net.setup(args)
    trainer = train_net.SeldTrainer(cfg)
    if shards > 1:
        trainer.model = _ShardMean(trainer.model, shards)
    losses = {}
    trainer.register_hooks([_Recorder(losses, stop_at)])
    trainer.resume_or_load(resume=args.resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    model = unwrap_model(unwrap_model(trainer.model))
    unfreezing = next(h for h in trainer._hooks if isinstance(h, ProgressiveUnfreezing))
    result = {
        "losses": losses,
        "digests": _digests(model),
        "stages": sorted(unfreezing.current),
        "parameters": [name for name, _ in model.named_parameters()],
    }
    if comm.is_main_process():
        result["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(result, out / f"rank{comm.get_rank()}.pt")
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        DatasetCatalog.remove(name)


def _train_in_two(out: Path, args, stop_at: int | None = None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    launch(_train, WORLD, dist_url="auto", args=(out, args, stop_at), timeout=TIMEOUT)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _instances_per_draw(root: Path, seed: int, draws: int) -> list[int]:
    """Training instances of the first frames the class-balanced sampler draws."""
    records = load_stairs26(root, SPLIT)
    stream = itertools.islice(iter(ClassBalancedFrameSampler(records, seed=seed)), draws)
    return [sum(1 for a in records[i].get("annotations", ()) if not a.get("iscrowd", 0)) for i in stream]


# One iteration per epoch; layer2 unfreezes at epoch 2, layer4 at epoch 3: transitions (DDP
# rebuilt, AdamW reset) before iterations 1 and 2.
SCHEDULE = (
    "SELD.DATA.FRAMES_PER_EPOCH", "2", "SELD.TRAIN.MAX_EPOCHS", "3", "SELD.TRAIN.UNFREEZE_LAYER2_EPOCH", "2",
)  # fmt: skip
# No random draws in a step: every anchor and proposal is a training sample, no dropout.
DETERMINISTIC = (
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000000",
    "MODEL.ROI_BOX_HEAD.DROPOUT", "0.0",
)  # fmt: skip


def test_two_processes_train_as_one_over_the_same_global_batches(root, tmp_path):
    # Losses are normalised per process (the RPN's per image, the box head's over the process's
    # proposals, the energy and distance heads' over its foreground proposals), so DDP's step is
    # the mean of the processes' loss gradients, not that of one loss over the global batch: a
    # process with an empty frame halves the energy loss of the other's. The one-process run
    # computes that mean (_ShardMean) over the same global batches (the sampler gives process r
    # draws r, r + 2, ...; augmentation is seeded by the global draw). Without random draws in
    # the step, the two differ only by float rounding (summation order of gradients, losses and
    # the all-reduce): equal within float32 tolerance, not bit for bit. Iteration 1 follows the
    # layer2 transition, iteration 2 starts with the layer4 one; per_rank shows the empty frames.
    seed = 2
    per_draw = _instances_per_draw(root, seed, 8)
    per_rank = [per_draw[r::WORLD] for r in range(WORLD)]  # iteration i: per_rank[r][i]
    assert any((a == 0) != (b == 0) for a, b in zip(*per_rank, strict=True)), per_rank
    extra = (*SCHEDULE, *DETERMINISTIC, "SEED", str(seed))
    two = _train_in_two(tmp_path / "two", args_for(root, tmp_path / "two", *extra))
    assert two[0]["stages"] == two[1]["stages"] == ["layer1", "layer2", "layer4", "stems"]
    differ = [k for k in two[0]["digests"] if two[0]["digests"][k] != two[1]["digests"][k]]
    assert not differ, f"replicas differ in {len(differ)} tensors, e.g. {differ[:3]}"

    one_dir = tmp_path / "one"
    one_dir.mkdir()
    _train(one_dir, args_for(root, one_dir, *extra, "SOLVER.IMS_PER_BATCH", "2"), shards=WORLD)
    one = torch.load(one_dir / "rank0.pt", weights_only=True)
    assert sorted(two[0]["losses"]) == sorted(one["losses"]) == [0, 1, 2]
    for it, ref in one["losses"].items():
        got = two[0]["losses"][it]
        assert got.keys() == ref.keys()
        np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), rtol=2e-5, atol=1e-7)
    # AdamW's first step after each reset moves every trainable parameter by about lr * sign(g):
    # a gradient that is zero up to rounding moves by +-lr either way. So most parameters agree
    # to float rounding and the others within two steps of the largest group LR.
    diff = np.concatenate(
        [(two[0]["state"][k] - one["state"][k]).abs().flatten().numpy() for k in one["parameters"]]
    )
    assert (diff > 1e-6).mean() < 0.01
    assert diff.max() <= 2 * 2e-4 * (1 + 1e-3)


def test_resumed_two_process_run_continues_exactly(root, tmp_path):
    # 3 iterations per epoch, checkpoints after iterations 1, 3 and 5. Stopped before iteration 5,
    # the run resumes from the iteration-3 checkpoint at iteration 4: mid-epoch 2, after the
    # layer2 transition (so the DDP wrapper is rebuilt for the restored stages). Proposal
    # sampling and dropout draw from each process's own RNG, which the checkpoint must hold.
    extra = (
        "SELD.DATA.FRAMES_PER_EPOCH", "6", "SELD.TRAIN.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
        "SELD.TRAIN.UNFREEZE_LAYER2_EPOCH", "2",
    )  # fmt: skip
    full = _train_in_two(tmp_path / "a", args_for(root, tmp_path / "a", *extra))
    _train_in_two(tmp_path / "b", args_for(root, tmp_path / "b", *extra), stop_at=5)
    assert (tmp_path / "b" / "last_checkpoint").read_text() == "model_0000003.pth"
    saved = torch.load(tmp_path / "b" / "model_0000003.pth", weights_only=True)
    assert len(saved["trainer"]["hooks"]["RNGState"]["ranks"]) == WORLD
    resumed = _train_in_two(tmp_path / "b", args_for(root, tmp_path / "b", *extra, resume=True))
    assert sorted(resumed[0]["losses"]) == [4, 5]
    assert [resumed[0]["losses"][it] for it in (4, 5)] == [full[0]["losses"][it] for it in (4, 5)]
    assert resumed[0]["digests"] == resumed[1]["digests"] == full[0]["digests"]
    # Only the main process writes: one metrics.json, each iteration once.
    assert sorted(p.name for p in (tmp_path / "b").glob("metrics*")) == ["metrics.json"]


def _children(pid: int) -> list[int]:
    """The training processes mp.spawn started under ``pid`` (not its resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmd:
            out.append(int(d.name))
    return sorted(out)


def test_a_killed_process_stops_the_run_with_one_error(root, tmp_path):
    out = tmp_path / "killed"
    args = args_for(root, out, "SELD.TRAIN.MAX_EPOCHS", "200")
    argv = ["--config-file", args.config_file, "--num-gpus", "2", "--dist-url", "auto", *args.opts]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "train_net.py"), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ((out / "metrics.json").exists() and (out / "metrics.json").stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(1)
        workers = _children(proc.pid)
        assert len(workers) == WORLD
        os.kill(workers[-1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # the survivor must not wait for the dead one
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # One error line (the resource tracker may still warn about the killed process's semaphores).
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: training process 1 terminated with signal SIGKILL")
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
