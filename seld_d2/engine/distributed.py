"""Multi-process training: Detectron2's ``launch`` with a CPU path, and the model's
DistributedDataParallel wrapper.

Detectron2 0.6's ``launch`` asserts CUDA and hard-codes NCCL. :func:`launch` hands over to it
unchanged when CUDA is available; without CUDA it runs the same process layout over gloo: one
process per "GPU" (``--num-gpus``) on each machine, global rank ``machine_rank * N + local_rank``,
Detectron2's per-machine process group (``comm.get_local_rank``), ``--dist-url auto`` for a free
local port, and the same timeout. Each CPU process runs ``OMP_NUM_THREADS`` torch threads, 1 when
that is unset (torchrun's default).

DDP registers the parameters that require gradients when it is built, so a wrapper built before
progressive unfreezing changes ``requires_grad`` would wait for gradients that never come (frozen
stages) or never average those of stages unfrozen later. :func:`rewrap` builds a new wrapper for
the new set; ``ProgressiveUnfreezing`` calls it at each transition, on every process at the same
iteration.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import create_ddp_model
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _find_free_port
from detectron2.utils import comm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)


def cpu_threads() -> int:
    """Torch threads per CPU training process: ``OMP_NUM_THREADS``, or 1."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """``main_func(*args)`` in ``num_gpus_per_machine`` processes on this machine (Detectron2's
    ``launch`` and arguments); over gloo on the CPU when torch sees no CUDA device."""
    world_size = num_machines * num_gpus_per_machine
    if torch.cuda.is_available() or world_size <= 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout)
    # The checks of Detectron2's launch, then its process layout with gloo.
    if dist_url == "auto":
        assert num_machines == 1, "dist_url=auto not supported in multi-machine jobs."
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            dist_url,
            args,
            timeout,
            cpu_threads(),
        ),
        daemon=False,
    )
    return None


def _cpu_worker(
    local_rank: int,
    main_func,
    world_size: int,
    num_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
    threads: int,
) -> None:
    torch.set_num_threads(threads)
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    # The per-machine group, which Detectron2 0.6's launch keeps in comm._LOCAL_PROCESS_GROUP
    # (comm.get_local_rank / get_local_size read it); every rank creates every group.
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    main_func(*args)
    dist.destroy_process_group()


def data_parallel(model: nn.Module) -> nn.Module:
    """The model in DistributedDataParallel over the parameters that require gradients now
    (Detectron2's ``create_ddp_model``: ``broadcast_buffers=False``, the local rank's GPU; no
    device ids for a CPU model), or the model itself in a single process."""
    if comm.get_world_size() == 1:
        return model
    on_cpu = next(model.parameters()).device.type == "cpu"
    return create_ddp_model(model, broadcast_buffers=False, **({"device_ids": None} if on_cpu else {}))


def rewrap(model: nn.Module) -> nn.Module:
    """A new DDP wrapper for a DDP model's module (after ``requires_grad`` changed), which also
    broadcasts the main process's parameters and buffers; any other model as it is. A
    collective: every process calls it at the same point."""
    if isinstance(model, DistributedDataParallel):
        return data_parallel(model.module)
    return model


@torch.no_grad()
def average_batchnorm_statistics(model: nn.Module) -> None:
    """The running mean and variance of every batch-norm layer in training mode set to their
    mean over the processes (in place; a collective). DDP with Detectron2's
    ``broadcast_buffers=False`` leaves each replica the statistics of its own batches; as the
    running mean is an exponential average, the mean of the replicas' is that of the processes'
    batch means. No-op in a single process."""
    if comm.get_world_size() == 1:
        return
    buffers = [
        b
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        for b in (m.running_mean, m.running_var)
    ]
    if not buffers:
        return
    flat = torch.cat([b.flatten() for b in buffers])
    dist.all_reduce(flat)
    flat /= comm.get_world_size()
    for b, v in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
        b.copy_(v.view_as(b))
