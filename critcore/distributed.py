"""The process group that `accelerate launch` starts, as every stage sees it: this process's rank,
how many there are, which one is the main one, a share of a list of items, the per-item results
of every share back in item order, and a barrier.

With one process (plain `python`, a notebook) nothing here starts accelerate or talks to another
process: every function answers at once. Under a launcher (accelerate launch, torchrun, mpirun),
the group is accelerate's `PartialState`, the same one `Accelerator` joins in critcore.train."""
from __future__ import annotations

import atexit
import functools
import os
from datetime import timedelta
from typing import Any, Sequence

# How long a collective waits for the slowest process: the others wait at one while the main
# process alone critiques through a server (critcore.llm.complete), which can take hours.
TIMEOUT = timedelta(hours=12)
_LAUNCHER_SIZES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # accelerate's own list


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return any(int(os.environ.get(name) or 1) > 1 for name in _LAUNCHER_SIZES)


def state():
    """accelerate's PartialState, joined on first use. Without a GPU (or with ACCELERATE_USE_CPU,
    which `accelerate launch --cpu` sets) the processes join over gloo on the CPU: a PartialState
    made otherwise finds no GPU and runs each launched process alone, as if it were the only one."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available()
    joined = PartialState(cpu=cpu, timeout=TIMEOUT)
    _leave_at_exit()
    return joined


@functools.cache
def _leave_at_exit() -> None:
    """Leave the process group while the interpreter is still whole. A process that exits in it
    can abort ("terminate called without an active exception"): gloo's worker threads still hold
    Python objects when the interpreter is torn down (pytorch/pytorch#190489)."""
    import torch.distributed as dist

    atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def world() -> int:
    """How many processes share the work."""
    return state().num_processes if launched() else 1


def rank() -> int:
    """This process's index, 0 for the main one."""
    return state().process_index if launched() else 0


def is_main() -> bool:
    """The process that writes what is written once: reports, run.json, the model."""
    return rank() == 0


def device():
    """The device this process computes on: its own GPU under a launcher, else the GPU if there is
    one, else the CPU."""
    return state().device


def barrier() -> None:
    """Wait until every process is here."""
    if world() > 1:
        state().wait_for_everyone()


def all_gather(obj: Any) -> list:
    """`obj` of every process, in rank order, on every process."""
    if world() == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any) -> Any:
    """The main process's `obj`, on every process."""
    if world() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def split(items: Sequence) -> list:
    """This process's share of `items`: every world()-th item from its rank, so that the long and
    the short items of a length-sorted list spread evenly."""
    return list(items[rank()::world()])


def share(batch_size: int) -> int:
    """This process's part of a batch of `batch_size` items that the processes split (`split` of a
    length-sorted list): batch_size is the batch over all processes, as in training, so each
    process's k-th batch is its share of the k-th batch one process would run, with the same
    lengths and the same padding, and the processes finish together."""
    return max(1, -(-int(batch_size) // world()))


def gather(mine: list) -> list:
    """The results of every process's `split(items)` (one per item of its share), in the order of
    `items`, on every process."""
    n = world()
    if n == 1:
        return list(mine)
    parts = all_gather(list(mine))
    out: list = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r::n] = part
    return out


def total(values: Sequence[float]) -> list[float]:
    """Each of `values` summed over the processes (counts, sums of losses), on every process."""
    parts = all_gather(list(values))
    return [sum(column) for column in zip(*parts)]
