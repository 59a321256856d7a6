"""One resumable checkpoint format for every training loop (safetensors + JSON, no pickle).

A checkpoint ``<stem>`` is two files written atomically (temporary names, then ``os.replace``):

- ``<stem>.safetensors``: the model's state dict under ``model.<key>`` and the optimizer's per-parameter
  state under ``opt.<param index>.<key>`` (Adam's ``step``, ``exp_avg``, ``exp_avg_sq``);
- ``<stem>.json``: the caller's metadata (iteration or epoch, best loss, history...) plus the optimizer's
  ``param_groups`` (learning rate, betas...), so that a resumed run continues exactly.

Used by :mod:`neurocontrast.training.loops` (ST-Net, Tmax net) and
:mod:`neurocontrast.training.contrast_training` (VirtualGadolinium).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

from neurocontrast.errors import NeuroContrastError


def save_checkpoint(stem: str, model, optimizer, meta: Dict) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (see the module docstring). Creates the folder."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{pid}.{key}"] = t.detach().cpu().contiguous()
    meta = dict(meta, param_groups=opt["param_groups"])
    stem = os.fspath(stem)
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    tmp = stem + ".tmp"
    save_file(tensors, tmp + ".safetensors")
    with open(tmp + ".json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    os.replace(tmp + ".safetensors", stem + ".safetensors")
    os.replace(tmp + ".json", stem + ".json")


def has_checkpoint(stem: str) -> bool:
    """True when both files of checkpoint ``stem`` exist."""
    stem = os.fspath(stem)
    return os.path.exists(stem + ".safetensors") and os.path.exists(stem + ".json")


def load_checkpoint(stem: str, model, optimizer) -> Dict:
    """Restore model and optimizer from checkpoint ``stem``; returns the metadata (without param_groups).

    Raises NeuroContrastError if the files are missing or do not fit the model."""
    from safetensors.torch import load_file

    stem = os.fspath(stem)
    if not has_checkpoint(stem):
        raise NeuroContrastError(f"no checkpoint {stem}.safetensors + {stem}.json")
    tensors = load_file(stem + ".safetensors")
    with open(stem + ".json", encoding="utf-8") as fh:
        meta = json.load(fh)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise NeuroContrastError(f"checkpoint {stem} does not fit the model: {str(exc).splitlines()[0]}") from None
    state: Dict[int, Dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


def load_if_present(stem: str, model, optimizer) -> Optional[Dict]:
    """:func:`load_checkpoint` when the checkpoint exists, else None."""
    return load_checkpoint(stem, model, optimizer) if has_checkpoint(stem) else None
