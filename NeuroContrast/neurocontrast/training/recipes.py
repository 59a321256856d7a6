"""Training recipes behind ``neurocontrast train stnet|tmaxnet``: data, loss, validation and export.

- ST-Net (Cao et al. 2.2.3-2.3): MAE on CBV, CBF, Tmax + w × physics loss (eq. 9), Adam lr 1e-4, batch 512,
  early stopping on the validation loss, lesion:normal voxel sampling 1:2 and a patch stride;
- ST-Net-S (the student): the same data and loss + MAE to a trained ST-Net's outputs (distillation).
- Tmax net (Hess et al. 2.1-2.2): weighted Laplace NLL (eq. 1-4; β-NLL, after an L1 warm-up, with extra
  weight on delayed voxels), Adam lr 5e-4 halved every 4 epochs, batches of 4 slices, temporal-shift
  augmentation; inputs peak-normalised and aligned on the arterial peak inside the network.

Data: synthetic slices (:func:`neurocontrast.training.datasets.random_slice`) by default, or user cases
(``data_dir``, layout :data:`neurocontrast.training.datasets.USER_LAYOUT`).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import datasets, distributed, losses, loops


def _slice_stream(data_dir: Optional[str], targets, need_aif: bool, size: int, varied: bool = False):
    """A function rng → next training slice (synthetic or user)."""
    if data_dir:
        source = datasets.UserSliceSource(data_dir, targets, need_aif)
        source.cases = distributed.shard(source.cases)  # this rank's cases under torchrun, else all
        streams: Dict[int, Iterator] = {}

        def next_user(rng: np.random.Generator) -> datasets.SliceSample:
            key = 0
            if key not in streams:
                streams[key] = source.stream(int(rng.integers(1 << 31)))
            return next(streams[key])
        return next_user
    return lambda rng: datasets.random_slice(rng, (size, size), varied=varied)


def train_stnet(out_dir: str, *, epochs: int = 400, steps_per_epoch: int = 50, batch_size: int = 512,
                lr: float = 1e-4, patience: int = 50, seed: int = 0, resume: bool = False,
                max_minutes: Optional[float] = None, physics_weight: float = 0.1, lesion_ratio: float = 0.5,
                stride: int = 1, n_frames: int = 50, slice_size: int = 48, voxels_per_slice: int = 256,
                val_slices: int = 12, data_dir: Optional[str] = None, student: bool = False,
                teacher: Optional[torch.nn.Module] = None, distill_weight: float = 1.0, distill_voxels: int = 256,
                init_state: Optional[Dict[str, torch.Tensor]] = None, dropout: float = 0.5,
                cbv_skip: bool = True, log_fn: Callable[[str], None] = print):
    """Train ST-Net, or its student ST-Net-S; returns (model with the best weights, meta).

    student : train :class:`~neurocontrast.networks.stnet.STNetS` instead of ST-Net. teacher : a trained ST-Net;
    when given, the loss adds ``distill_weight`` × MAE(student, teacher) on the first ``distill_voxels`` voxels
    of each batch (knowledge distillation: the student learns from the teacher and the phantom truth).
    init_state : start from these weights (e.g. a student pre-trained on the truth). dropout : ST-Net's head
    dropout (paper 0.5). See the module docstring for the rest.
    """
    from neurocontrast.networks.stnet import STNet, STNetS

    torch.manual_seed(seed)
    model = (STNetS(n_frames=n_frames, cbv_skip=cbv_skip) if student
             else STNet(n_frames=n_frames, dropout=dropout, cbv_skip=cbv_skip))
    if init_state is not None:
        model.load_state_dict(init_state)
    if teacher is not None:
        teacher.eval()
    next_slice = _slice_stream(data_dir, ("cbv", "cbf", "tmax"), True, slice_size)

    def make_batch(rng: np.random.Generator, n: int) -> Dict[str, torch.Tensor]:
        parts: List[Dict[str, np.ndarray]] = []
        total = 0
        while total < n:
            b = datasets.stnet_batch_from_slice(next_slice(rng), n_frames, rng, min(voxels_per_slice, n - total),
                                                lesion_ratio, stride, model.target_scale)
            if b is not None:
                parts.append(b)
                total += len(b["target"])
        batch = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
        if teacher is not None:
            with torch.no_grad():
                k = min(distill_voxels, n)
                batch["teacher"] = teacher(batch["patches"][:k], batch["reference"][:k])
        return batch

    val_rng = np.random.default_rng([seed, 1])
    val_batches = [make_batch(val_rng, voxels_per_slice) for _ in range(val_slices)]

    def loss_fn(m, batch):
        pred = m(batch["patches"], batch["reference"])
        loss, parts = losses.stnet_loss(pred, batch["target"], batch["physics_cbv"], physics_weight)
        if "teacher" in batch:
            k = batch["teacher"].shape[0]
            distill = (pred[:k] - batch["teacher"]).abs().mean()
            loss = loss + distill_weight * distill
            parts["distill"] = float(distill.detach())
        return loss, parts

    def val_fn(m) -> Dict[str, float]:
        preds = torch.cat([m(b["patches"], b["reference"]) for b in val_batches])
        target = torch.cat([b["target"] for b in val_batches])
        err = (preds - target).abs().mean(0)
        return {"loss": float(err.mean()), "mae_cbv": float(err[0]), "mae_cbf": float(err[1]),
                "mae_tmax": float(err[2])}

    meta = loops.train(model, lambda rng: make_batch(rng, batch_size), loss_fn, val_fn, out_dir, epochs=epochs,
                       steps_per_epoch=steps_per_epoch, lr=lr, patience=patience, seed=seed, resume=resume,
                       max_minutes=max_minutes, log_fn=log_fn)
    loops.load_best(model, out_dir)
    model.eval()
    return model, meta


def train_tmaxnet(out_dir: str, *, epochs: int = 30, steps_per_epoch: int = 50, batch_size: int = 4,
                  lr: float = 5e-4, patience: int = 10, seed: int = 0, resume: bool = False,
                  max_minutes: Optional[float] = None, n_frames: int = 64, slice_size: int = 48,
                  encoding: int = 256, shift_range=(-4, 20), val_slices: int = 12, data_dir: Optional[str] = None,
                  crop: Optional[int] = None, lesion_crop_fraction: float = 0.5, lr_halving_epochs: int = 4,
                  nll_beta: float = 1.0, input_scale: float = 1.0, dropout: float = 0.1, curve_norm: str = "peak",
                  align_frame: Optional[int] = 12, warmup_l1_epochs: int = 2, delayed_weight: float = 1.0,
                  delayed_threshold_s: float = 4.0, select_on: str = "mae", varied: bool = False,
                  init_state: Optional[Dict[str, torch.Tensor]] = None, log_fn: Callable[[str], None] = print):
    """Train the Tmax net; returns (model with the best weights, meta). See the module docstring.

    crop : train on random crop × crop windows of each slice instead of the whole slice (the paper trains on
    1×32×256 patches); a fraction ``lesion_crop_fraction`` of the windows is centred on a hypoperfused voxel
    (where the slice has one). The arterial patch is always found on the whole slice. Validation uses whole
    slices. lr_halving_epochs : the learning rate is halved every this many epochs (paper: 4).
    nll_beta : β of :func:`~neurocontrast.training.losses.laplace_nll` (0 = the paper's plain Laplace NLL;
    the default 1 keeps the network from collapsing to the median Tmax, as it did with β = 0 here).
    dropout, curve_norm, align_frame : :class:`~neurocontrast.networks.tmaxnet.TmaxNet` options (defaults as
    the shipped model: 0.1, ``"peak"``, 12; the paper's 0.5 / no normalisation / no alignment (None) did not
    learn the delay on the CPU budget, see docs/models/tmaxnet.md). With ``align_frame`` set, the output layer
    starts small (weights × 0.1, Tmax bias 0.3 = ~2 s) instead of the large random Tmax of the Xavier init.
    warmup_l1_epochs : for the first N epochs the mean is trained with the (weighted) L1 loss and b with the
    Laplace NLL of the detached mean; then the weighted Laplace NLL of eq. 1-4 (β = ``nll_beta``).
    delayed_weight : extra loss weight for voxels with true Tmax > ``delayed_threshold_s`` (weight 1 + w), to
    counter the rarity of delayed voxels. select_on : ``"loss"`` (validation NLL) or ``"mae"`` (validation Tmax
    MAE, s) chooses the best epoch; with a warm-up the NLL of early epochs is not comparable, so use ``"mae"``.
    varied : synthetic slices with the varied acquisition and bolus of
    :data:`neurocontrast.training.datasets.VARIED` (TR 1-2.5 s, 40-80 frames, baseline 5-20 frames,
    recirculation, T1 leakage, bolus widths of real series). init_state : start from these weights (fine-tuning;
    the output-layer re-initialisation for ``align_frame`` is then skipped).
    """
    from neurocontrast.networks.tmaxnet import TmaxNet

    torch.manual_seed(seed)
    if select_on not in ("loss", "mae"):
        raise NeuroContrastError(f"select_on must be 'loss' or 'mae', got {select_on!r}")
    model = TmaxNet(n_frames=n_frames, encoding=encoding, input_scale=input_scale, dropout=dropout,
                    curve_norm=curve_norm, align_frame=align_frame)
    if init_state is not None:
        model.load_state_dict(init_state)
    elif align_frame is not None:
        with torch.no_grad():
            model.out.weight.mul_(0.1)
            model.out.bias[0] = 0.3
            model.out.bias[1] = -1.0
    state = {"epoch": 1}

    def lr_decay(epoch: int) -> float:
        state["epoch"] = epoch  # the loss needs the epoch (L1 warm-up)
        return 0.5 ** ((epoch - 1) // max(1, lr_halving_epochs))
    next_slice = _slice_stream(data_dir, ("tmax",), False, slice_size, varied)

    def one(rng, shift: bool):
        while True:
            sl = next_slice(rng)
            s = datasets.tmaxnet_sample_from_slice(sl, n_frames, rng if shift else None,
                                                   tuple(shift_range), model.target_scale)
            if s is None:
                continue
            if crop and shift:
                s = datasets.crop_sample(s, sl.lesion, crop, rng, lesion_crop_fraction)
            return s

    def stack(samples) -> Dict[str, torch.Tensor]:
        shapes = {s["voxels"].shape for s in samples}
        if len(shapes) != 1:  # user data of different slice sizes: one slice per batch
            samples = samples[:1]
        return {k: torch.from_numpy(np.stack([np.asarray(s[k]) for s in samples])) for k in samples[0]}

    val_rng = np.random.default_rng([seed, 1])
    val_batches = [stack([one(val_rng, False)]) for _ in range(val_slices)]

    def loss_fn(m, batch):
        out = m(batch["voxels"], batch["arterial"])
        scale = m.target_scale * batch["dt"].view(-1, 1, 1)
        weight = losses.importance_weight(batch["target"] * scale, out[:, 0].detach() * scale)
        if delayed_weight:
            weight = weight * (1.0 + delayed_weight * (batch["target"] * scale > delayed_threshold_s).to(weight.dtype))
        if state["epoch"] <= warmup_l1_epochs:
            m_ = batch["mask"].to(weight.dtype)
            l1 = ((out[:, 0] - batch["target"]).abs() * weight * m_).sum() / (weight * m_).sum().clamp_min(1e-6)
            loss = l1 + losses.laplace_nll(out[:, 0].detach(), out[:, 1], batch["target"], None, batch["mask"])
        else:
            loss = losses.laplace_nll(out[:, 0], out[:, 1], batch["target"], weight, batch["mask"], nll_beta)
        mae = float(((out[:, 0] - batch["target"]).abs() * scale)[batch["mask"]].mean().detach())
        return loss, {"mae_tmax_s": mae}

    def val_fn(m) -> Dict[str, float]:
        nll, mae, n, inter, total = 0.0, 0.0, 0, 0.0, 0.0
        for b in val_batches:
            out = m(b["voxels"], b["arterial"])
            scale = m.target_scale * b["dt"].view(-1, 1, 1)
            w = losses.importance_weight(b["target"] * scale, out[:, 0] * scale)
            nll += float(losses.laplace_nll(out[:, 0], out[:, 1], b["target"], w, b["mask"], nll_beta))
            mae += float(((out[:, 0] - b["target"]).abs() * scale)[b["mask"]].mean())
            pred6, true6 = (out[:, 0] * scale > 6.0) & b["mask"], (b["target"] * scale > 6.0) & b["mask"]
            inter += float((pred6 & true6).sum())
            total += float(pred6.sum() + true6.sum())
            n += 1
        res = {"loss": nll / n, "mae_tmax_s": mae / n, "nll": nll / n, "dice6": 2 * inter / max(total, 1.0)}
        if select_on == "mae":
            res["loss"] = mae / n
        return res

    meta = loops.train(model, lambda rng: stack([one(rng, True) for _ in range(batch_size)]), loss_fn, val_fn,
                       out_dir, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr, patience=patience, seed=seed,
                       resume=resume, max_minutes=max_minutes, lr_decay=lr_decay,
                       log_fn=log_fn)
    loops.load_best(model, out_dir)
    model.eval()
    return model, meta


_CARDS = {"STNet": "stnet", "STNetS": "stnet-s", "TmaxNet": "tmaxnet"}
_DESCRIPTIONS = {"STNet": "ST-Net (Cao et al.) CBV/CBF/Tmax, calibrated inputs",
                 "STNetS": "ST-Net-S: fast distilled student of ST-Net (CBV/CBF/Tmax)",
                 "TmaxNet": "AIF-free Tmax net (Hess et al.) with Laplace uncertainty"}


def export(model: torch.nn.Module, meta: Dict, out_dir: str, name: str, data: str, extra: Optional[Dict] = None):
    """Write the trained model into a models folder with :func:`neurocontrast.weights.save_model`."""
    from neurocontrast.weights import save_model

    arch = type(model).__name__
    if arch not in ("STNet", "STNetS", "TmaxNet"):
        raise NeuroContrastError(f"cannot export a {arch}")
    best = [h for h in meta["history"] if h["epoch"] == meta["best_epoch"]]
    training = {"data": data, "epochs_run": meta["epoch"], "best_epoch": meta["best_epoch"],
                "seed": meta.get("seed"), **(extra or {})}
    return save_model(model.state_dict(), out_dir, name, arch, model.config(),
                      input_channels=["dsc"] if arch == "TmaxNet" else ["dsc", "aif_signal"],
                      model_card=f"docs/models/{_CARDS[arch]}.md", description=_DESCRIPTIONS[arch],
                      training=training, metrics={"validation": best[0]["val"] if best else {}})
