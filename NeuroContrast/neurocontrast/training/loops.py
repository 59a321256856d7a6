"""Training loops for ST-Net and the Tmax net: fixed seeds, per-epoch validation, early stopping,
resumable safetensors checkpoints (no pickle).

Checkpoint files in the run folder:

- ``last.safetensors`` + ``last.json``: model and Adam state after the latest epoch, with the epoch number,
  best validation loss, epochs without improvement and the history (resumed with ``resume=True``);
- ``best.safetensors``: the model weights of the best validation epoch (exported at the end);
- ``history.jsonl``: one JSON line per epoch (training loss parts, validation metrics, seconds).

Reproducibility: epoch ``e`` draws its data from ``np.random.default_rng([seed, 0, e])`` and seeds torch with
``seed + e``, so a resumed run continues the same sequence; validation data come from
``np.random.default_rng([seed, 1])`` and never overlap the training stream.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import distributed
from neurocontrast.training.checkpoint import load_checkpoint as _load_checkpoint
from neurocontrast.training.checkpoint import save_checkpoint as _save_checkpoint

log = logging.getLogger(__name__)


def train(model: torch.nn.Module, batch_fn: Callable[[np.random.Generator], Dict[str, torch.Tensor]],
          loss_fn: Callable[[torch.nn.Module, Dict[str, torch.Tensor]], tuple],
          val_fn: Callable[[torch.nn.Module], Dict[str, float]], out_dir: str, *, epochs: int = 100,
          steps_per_epoch: int = 100, lr: float = 1e-4, patience: int = 10, seed: int = 0, resume: bool = False,
          max_minutes: Optional[float] = None, lr_decay: Optional[Callable[[int], float]] = None,
          log_fn: Callable[[str], None] = print) -> Dict:
    """Train ``model`` with Adam.

    batch_fn(rng) → batch dict; loss_fn(model, batch) → (loss tensor, dict of floats); val_fn(model) → dict
    with at least ``"loss"`` (lower is better; the model is in eval mode and under no_grad when called).
    Stops after ``epochs``, after ``patience`` epochs without validation improvement (early stopping), or
    when ``max_minutes`` of wall time have passed (the epoch in progress is finished and validated first).
    ``lr_decay(epoch)`` multiplies the learning rate (None: constant). Returns the final meta dict (epoch,
    best_loss, best_epoch, history). Raises NeuroContrastError on a non-finite loss.
    Under torchrun the model is trained data-parallel (:mod:`neurocontrast.training.distributed`): rank 0
    writes the files and logs, every rank resumes from ``last``.
    """
    os.makedirs(out_dir, exist_ok=True)
    log_fn = distributed.main_only(log_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = os.path.join(out_dir, "last")
    meta = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0, "bad_epochs": 0, "history": [], "seed": seed}
    if resume and os.path.exists(last + ".json"):
        meta = _load_checkpoint(last, model, optimizer)
        log_fn(f"resumed from epoch {meta['epoch']} (best {meta['best_loss']:.4f} at epoch {meta['best_epoch']})")
    net = distributed.wrap(model)  # the model itself in a single process
    start = time.time()
    while meta["epoch"] < epochs and meta["bad_epochs"] < patience:
        epoch = meta["epoch"] + 1
        rng = distributed.epoch_rng(seed, epoch)  # default_rng([seed, 0, epoch]) in a single process
        torch.manual_seed(distributed.torch_seed(seed, epoch))
        if lr_decay is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_decay(epoch)
        model.train()
        sums: Dict[str, float] = {}
        t0 = time.time()
        steps = 0
        for _ in range(steps_per_epoch):
            batch = batch_fn(rng)
            loss, parts = loss_fn(net, batch)
            if distributed.any_rank(not torch.isfinite(loss)):
                raise NeuroContrastError(f"training loss became {float(loss)} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            for k, v in dict(parts, loss=float(loss.detach())).items():
                sums[k] = sums.get(k, 0.0) + v
            if distributed.any_rank(max_minutes is not None and time.time() - start > 60 * max_minutes):
                break
        model.eval()
        with torch.no_grad():
            val = distributed.from_main(val_fn(net))
        record = {"epoch": epoch, "steps": steps, "seconds": round(time.time() - t0, 1),
                  "train": {k: round(v / max(steps, 1), 5) for k, v in sums.items()},
                  "val": {k: round(float(v), 5) for k, v in val.items()}}
        meta["history"].append(record)
        meta["epoch"] = epoch
        if distributed.active():
            meta["distributed"] = distributed.world_info(model)
        improved = val["loss"] < meta["best_loss"]
        if improved:
            meta.update(best_loss=float(val["loss"]), best_epoch=epoch, bad_epochs=0)
        else:
            meta["bad_epochs"] += 1
        if distributed.is_main():
            if improved:
                from safetensors.torch import save_file
                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                          os.path.join(out_dir, "best.safetensors"))
            _save_checkpoint(last, model, optimizer, meta)
            with open(os.path.join(out_dir, "history.jsonl"), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        distributed.barrier()  # the other ranks read best/last only after rank 0 wrote them
        log_fn(f"epoch {epoch}: train {record['train'].get('loss', float('nan')):.4f} val {val['loss']:.4f} "
               f"{' '.join(f'{k}={v:.3f}' for k, v in val.items() if k != 'loss')} ({record['seconds']} s)")
        if distributed.any_rank(max_minutes is not None and time.time() - start > 60 * max_minutes):
            log_fn(f"time limit of {max_minutes} min reached after epoch {epoch}")
            break
    return meta


def load_best(model: torch.nn.Module, out_dir: str) -> torch.nn.Module:
    """Load ``best.safetensors`` of a run folder into ``model``. Raises NeuroContrastError if absent."""
    from safetensors.torch import load_file

    path = os.path.join(out_dir, "best.safetensors")
    if not os.path.exists(path):
        raise NeuroContrastError(f"no best.safetensors in {out_dir}: has the run finished an epoch?")
    model.load_state_dict(load_file(path))
    return model
