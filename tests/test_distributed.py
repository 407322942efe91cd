"""The multi-process parts of training and evaluation, in two CPU processes over gloo.

Detectron2's ``launch`` needs CUDA GPUs, so multi-GPU training itself is not run here; these
tests run the collective steps it relies on: the validation loss averaged over every process's
batches, and the evaluator gathering every process's frames on the main process.
"""

import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import seld_d2  # noqa: F401
from seld_d2.engine.hooks import validation_losses
from seld_d2.evaluation.evaluator import Stairs26Evaluator
from seld_d2.inference.submission import ClipExporter

from detectron2.structures import Boxes, Instances

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
        evaluator = Stairs26Evaluator("unused", ClipExporter())
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
