"""Multi-process (torchrun) helpers shared by extraction and indexing.

Under `torchrun` the environment names each process's RANK and WORLD_SIZE; `session()` joins the
process group (gloo on CPU, NCCL on GPUs) and leaves it again on exit. Outside torchrun every
helper degrades to the single-process case at no cost, so callers need no special path.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from sae_core.errors import ConfigError

TIMEOUT_ENV = "SAESCOPE_DIST_TIMEOUT_S"
"""Collective timeout in seconds (default 4 hours: rank 0 may prepare a dataset or lay out maps while the others wait)."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """This process's place in the initialised process group (rank 0 of 1 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


@contextlib.contextmanager
def session():
    """Join the torchrun process group if WORLD_SIZE > 1 (and none is joined yet); leave it on exit."""
    import torch.distributed as dist

    owned = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 4 * 3600)))
        dist.init_process_group(backend=backend, timeout=timeout)
        owned = True
    try:
        yield current()
    finally:
        if owned:
            dist.destroy_process_group()


def pick_device(name: str) -> str:
    """`auto` -> cuda or cpu; under torchrun a bare `cuda` becomes this process's `cuda:LOCAL_RANK`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"device={name!r}; use cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is available; use --device cpu")
    if name == "cuda":  # an explicit index: torch.cuda.set_device refuses a bare "cuda"
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if current().enabled else f"cuda:{torch.cuda.current_device()}"
    return name


def barrier() -> None:
    if current().enabled:
        import torch.distributed as dist

        dist.barrier()


def split_range(n: int, align: int, d: Dist | None = None) -> tuple[int, int]:
    """This rank's contiguous slice [start, stop) of n items, cut only at multiples of `align`."""
    d = d or current()
    if not d.enabled:
        return 0, n
    blocks = -(-n // align)
    lo, hi = blocks * d.rank // d.world, blocks * (d.rank + 1) // d.world
    return min(lo * align, n), min(hi * align, n)


def _comm_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_arrays(arr: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Every rank's array, in rank order. First dimensions may differ; trailing shape and dtype may not."""
    arr = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
    if not current().enabled:
        return [arr]
    import torch.distributed as dist

    dev = _comm_device()
    world = dist.get_world_size()
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(dev)
    t = t.reshape(t.shape[0], int(np.prod(arr.shape[1:], dtype=np.int64))) if t.ndim else t.reshape(1, 1)
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    pad = torch.zeros((max(sizes_i), t.shape[1]), dtype=t.dtype, device=dev)
    pad[: t.shape[0]] = t
    out = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(out, pad)
    tail = arr.shape[1:] if arr.ndim else ()
    return [o[:s].cpu().numpy().reshape((s, *tail) if arr.ndim else ()) for o, s in zip(out, sizes_i)]


def fold_in_rank_order(state, items: list, fold):
    """Fold every rank's `items` onto `state`, rank 0's first: the same float operations in the
    same order as one process folding all items, so sums stay bit-identical. Each rank keeps only
    its own items; the running state passes from rank to rank."""
    d = current()
    for r in range(d.world if d.enabled else 1):
        if not d.enabled or d.rank == r:
            for item in items:
                state = fold(state, item)
        state = broadcast_object(state, src=r)
    return state


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank (picklable objects)."""
    if not current().enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]
