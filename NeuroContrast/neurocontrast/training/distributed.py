"""Data-parallel training under torchrun: DistributedDataParallel, sharded sampling, rank-0 checkpoints.

``neurocontrast train stnet|tmaxnet ... --nproc N [--nnodes M --rdzv HOST:PORT]`` re-runs the same command
under ``torchrun`` (``python -m torch.distributed.run``) with N processes per node (:func:`launch`); a
command started by torchrun directly (``torchrun --nproc-per-node N -m neurocontrast train ...``) works the
same. Inside each process:

- the process group is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``PORT``) with ``gloo`` for a model on the CPU and ``nccl`` for one on CUDA
  (:func:`wrap`); the model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, which
  broadcasts rank 0's weights at the start and averages the gradients of every step;
- sampling is sharded: on-the-fly synthetic batches come from a per-rank stream (:func:`epoch_rng`: rank 0
  draws exactly what a single-process run draws, rank r > 0 ``np.random.default_rng([seed, 0, epoch, r])``);
  finite case lists (user data) are split with :class:`torch.utils.data.DistributedSampler` (:func:`shard`);
  ``--batch-size`` is per process, so the global batch is N × batch size;
- rank 0 alone writes checkpoints, history and the exported model; every rank loads ``last`` on ``--resume``
  (the run folder must be on a file system all nodes see); the ranks agree on every stop decision (non-finite
  loss, time limit, early stopping on rank 0's validation loss) so none waits for a collective that never comes.

Without torchrun (no ``WORLD_SIZE`` in the environment) every function here is a no-op and training runs
exactly as a plain single process: the same seed gives the same weights, bit for bit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from typing import Callable, List, Sequence, Tuple

LAUNCH_DESTS = ("nproc", "nnodes", "rdzv", "rdzv_id")


@dataclasses.dataclass(frozen=True)
class Rank:
    """This process's place in the job, from torchrun's environment (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def under_torchrun(self) -> bool:
        return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def current() -> Rank:
    """The :class:`Rank` of this process (reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    env = os.environ
    return Rank(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    """True on rank 0 (and without torchrun): the process that writes files and prints."""
    return current().is_main


def active() -> bool:
    """True once :func:`wrap` has initialised a process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


class _DDP:
    """Namespace for the wrapper class (built lazily so that importing this module does not import torch)."""

    cls = None


def _ddp_class():
    if _DDP.cls is None:
        from torch.nn.parallel import DistributedDataParallel

        class DataParallelModel(DistributedDataParallel):
            """DistributedDataParallel that also exposes the wrapped network's attributes (``target_scale``,
            ``config()``), so the recipes' loss and validation functions take either."""

            def __getattr__(self, name):
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    return getattr(self.module, name)

        _DDP.cls = DataParallelModel
    return _DDP.cls


def wrap(model):
    """``model`` itself without torchrun; else initialise the process group (gloo for CPU parameters, nccl
    for CUDA ones) and return the model wrapped in DistributedDataParallel. Raises RuntimeError when the
    rendezvous fails (torch's message)."""
    import torch
    import torch.distributed as dist

    here = current()
    if not here.under_torchrun:
        return model
    on_cuda = next(model.parameters()).is_cuda
    if not dist.is_initialized():
        if on_cuda:
            torch.cuda.set_device(here.local_rank)
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return _ddp_class()(model, device_ids=[here.local_rank] if on_cuda else None)


def rank_rng(key: Sequence[int]):
    """``np.random.default_rng(key)`` on rank 0 (as a single process), ``default_rng([*key, rank])`` on rank > 0."""
    import numpy as np

    rank = current().rank
    return np.random.default_rng(list(key) if rank == 0 else [*key, rank])


def epoch_rng(seed: int, epoch: int):
    """The data stream of an epoch on this rank: ``default_rng([seed, 0, epoch])`` on rank 0 (as a single
    process), ``default_rng([seed, 0, epoch, rank])`` on the others (disjoint synthetic samples)."""
    return rank_rng([seed, 0, epoch])


def device(name: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:<LOCAL_RANK>`` under torchrun (one GPU per process)."""
    return f"cuda:{current().local_rank}" if name == "cuda" and current().under_torchrun else name


def torch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch on this rank (``seed + epoch`` on rank 0, as a single process)."""
    return seed + epoch + 1_000_003 * current().rank


def shard(items: Sequence) -> List:
    """This rank's share of ``items`` by :class:`torch.utils.data.DistributedSampler` (no shuffling: every
    rank keeps a fixed, disjoint subset; the shorter shards are padded with repeats so all are equal).
    All of ``items`` without torchrun."""
    here = current()
    if here.world_size <= 1:
        return list(items)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(items)), num_replicas=here.world_size, rank=here.rank, shuffle=False)
    return [items[i] for i in sampler]


def any_rank(flag: bool) -> bool:
    """True if ``flag`` is true on any rank (one all-reduce; ``flag`` itself without a process group)."""
    if not active():
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_main(value):
    """Rank 0's ``value`` on every rank (a broadcast of a picklable object between our own processes)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def main_only(fn: Callable[[str], None]) -> Callable[[str], None]:
    """``fn`` on rank 0, a function that does nothing on the other ranks (log lines printed once)."""
    return fn if is_main() else (lambda *_args, **_kwargs: None)


def world_info(model) -> dict:
    """``{"world_size", "backend", "max_weight_difference_between_ranks"}`` of the running job, written
    into the run's meta each epoch when distributed. The difference is the largest absolute difference
    between any parameter and rank 0's copy over all ranks (0.0 when DistributedDataParallel kept the
    replicas identical, as it must); one broadcast of the weights and one all-reduce."""
    import torch
    import torch.distributed as dist

    diff = torch.zeros(())
    with torch.no_grad():
        for p in model.parameters():
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            diff = torch.maximum(diff, (p.detach() - ref).abs().max().cpu())
    diff = diff.reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return {"world_size": current().world_size, "backend": dist.get_backend(),
            "max_weight_difference_between_ranks": float(diff.item())}


# ----------------------------------------------------------------------------------------------------------
# the launcher behind --nproc

def add_options(p: argparse.ArgumentParser) -> None:
    """``--nproc``, ``--nnodes``, ``--rdzv``, ``--rdzv-id`` of a training command."""
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run under torchrun with N data-parallel processes per node (DistributedDataParallel; "
                        "gloo on CPU, nccl on GPU); --batch-size is per process")
    p.add_argument("--nnodes", type=int, default=1, metavar="M", help="nodes of a multi-node run (default 1)")
    p.add_argument("--rdzv", default=None, metavar="HOST:PORT",
                   help="rendezvous endpoint of a multi-node run (torchrun --rdzv-endpoint, c10d backend)")
    p.add_argument("--rdzv-id", default="neurocontrast", help="rendezvous id shared by the nodes of one run")


def launcher(func: Callable, command: Tuple[str, ...], parser: argparse.ArgumentParser) -> Callable:
    """A command function that runs ``func(args)`` in this process, or, with ``--nproc``/``--nnodes > 1``
    and not already under torchrun, the same command line under torchrun (:func:`launch`)."""
    def run(args) -> int:
        if (args.nproc is not None or args.nnodes > 1) and not current().under_torchrun:
            return launch(args, command, parser)
        return func(args)
    return run


def torchrun_argv(args, command: Tuple[str, ...], parser: argparse.ArgumentParser) -> List[str]:
    """``python -m torch.distributed.run ... -m neurocontrast <command> <the options given>``.

    Single node without ``--rdzv``: ``--standalone`` (a local rendezvous on a free port). Raises
    NeuroContrastError on --nproc < 1, --nnodes < 1 or a multi-node run without --rdzv."""
    from neurocontrast.errors import NeuroContrastError

    nproc = 1 if args.nproc is None else args.nproc
    if nproc < 1 or args.nnodes < 1:
        raise NeuroContrastError(f"--nproc and --nnodes must be >= 1, got {args.nproc} and {args.nnodes}")
    if args.nnodes > 1 and not args.rdzv:
        raise NeuroContrastError("a multi-node run (--nnodes > 1) needs --rdzv HOST:PORT (the rendezvous endpoint)")
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={args.nnodes}"]
    if args.rdzv:
        argv += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv}", f"--rdzv-id={args.rdzv_id}"]
    else:
        argv.append("--standalone")
    from neurocontrast.cli import options_as_argv

    argv += ["-m", "neurocontrast", *command]
    argv += options_as_argv(args, [a for a in parser._actions if a.dest not in LAUNCH_DESTS])
    return argv


def launch(args, command: Tuple[str, ...], parser: argparse.ArgumentParser) -> int:
    """Run the command under torchrun and return its exit code (torchrun prints the failing rank's error)."""
    argv = torchrun_argv(args, command, parser)
    print("launching: " + " ".join(argv[1:]), flush=True)
    return subprocess.call(argv)
