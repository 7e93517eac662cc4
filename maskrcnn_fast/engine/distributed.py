"""Distributed set-up: torchrun's process group, DistributedDataParallel, and the few
collectives the loop needs (loss means, epoch lengths, RNG states).

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), :func:`init_distributed` joins the
process group (nccl on CUDA, gloo on the CPU); only rank 0 prints and writes checkpoints.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "all_gather_objects", "all_max", "init_distributed", "reduce_mean", "wrap_model"]

# test hook: when set, every rank saves its final parameters to <dir>/rank<r>.pt
RANK_DUMP_ENV = "MASKRCNN_FAST_RANK_DUMP"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when torchrun set RANK/WORLD_SIZE; else a one-process DistInfo.

    device: "cpu" or "cuda" (the local rank picks the GPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world <= 1:
        return DistInfo(rank, world, local, False)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, True)


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel when the process group is on, else itself."""
    if not info.enabled:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def reduce_mean(values: Dict[str, torch.Tensor], info: DistInfo) -> Dict[str, float]:
    """Mean over ranks of detached scalars, as floats (one all_reduce, one host sync)."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if info.enabled:
        dist.all_reduce(stacked)
        stacked /= info.world_size
    return dict(zip(names, stacked.tolist()))


def all_max(n: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``n`` of all ranks."""
    if not info.enabled:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """Every rank's ``obj``, in rank order."""
    if not info.enabled:
        return [obj]
    objs = [None] * info.world_size
    dist.all_gather_object(objs, obj)
    return objs


def dump_rank_state(module: nn.Module, info: DistInfo) -> None:
    """The test hook of :data:`RANK_DUMP_ENV`: this rank's final parameters, to compare ranks."""
    dump = os.environ.get(RANK_DUMP_ENV)
    if dump:
        os.makedirs(dump, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()},
                   os.path.join(dump, f"rank{info.rank}.pt"))
