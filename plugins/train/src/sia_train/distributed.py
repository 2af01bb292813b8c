"""Data-parallel training: the worker as ``nproc`` processes under torchrun.

With ``--train-opt nproc=N`` (N > 1) the local executor starts ``python -m torch.distributed.run
--nproc_per_node N -m sia_train.worker JOB.json``. Every rank loads the policy; rank 0 alone
runs the rollouts (the scaffold, the sandbox, the policy serving its calls), writes the log,
the checkpoints and the result, and prints progress. Each step rank 0 broadcasts the step's
rollouts and advantages (or the error that ends the job) and every rank takes the update over
the process group (:func:`sia_train.update.policy_update` with ``group``): rank r computes
micro-batches r, r + N, ...; the gradients are summed before the step, so the adapter is the
one a single process trains.

torch is imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Ranks", "start"]


class Ranks:
    """This process's place in the job: ``rank``, ``world``, the process ``group`` (or None)."""

    def __init__(self, rank: int = 0, world: int = 1, group: Any = None) -> None:
        self.rank, self.world, self.group = rank, world, group

    @property
    def leader(self) -> bool:
        """Rank 0: the one that rolls out, writes and reports."""
        return self.rank == 0

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (``value`` is ignored elsewhere)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def device(self, device: str) -> str:
        """One CUDA device per rank (``cuda:LOCAL_RANK``); the CPU is shared."""
        if self.world > 1 and device == "cuda":
            return f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
        return device

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def start() -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), dist.group.WORLD)


def rank_of_environment() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))
