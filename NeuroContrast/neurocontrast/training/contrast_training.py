"""Training the VirtualGadolinium networks (``neurocontrast train virtual|differential``).

Data layout (one folder per patient; file names without extension, any of .nii.gz, .nii, .nrrd, .mha)::

    DATA/
      case-001/
        t1.nii.gz          pre-contrast T1                                   (required)
        t1c.nii.gz         standard-dose post-contrast T1 (the target)      (required)
        t1c_low.nii.gz     real low-dose T1c; simulated from t1/t1c if absent (optional)
        flair.nii.gz       T2-FLAIR                                          (optional, see below)
        t2.nii.gz, adc.nii.gz                                                (optional)
        brain_mask.nii.gz  brain mask (optional; else from the preprocessing)
        case.json          {"field_strength_t": 3.0, "agent": "gadoterate", "dose_low": 0.25} (optional)
      case-002/ ...

Every case goes through the same preprocessing as inference (:func:`neurocontrast.contrast.preprocessing.preprocess`:
registration to T1 and to the ICBM 2009a atlas, 1 mm, brain extraction, 160×192×160 crop, percentile
[0, 1] standardisation); with ``--preprocessed`` the images are taken as already co-registered,
skull-stripped and on one grid (BraTS-style) and only the intensity standardisation is applied. Results
are cached (``OUT/cache/<case>.npz``) so that resuming or training more folds does not redo them.

Low dose: a real ``t1c_low`` is used when present; otherwise it is simulated with
:func:`neurocontrast.contrast.lowdose.simulate_lowdose` (dose ``--dose``, default 0.25, noise matched to the
real subtraction noise, Pinetz et al. 2023/2024) with a fixed seed.

Training (Ammari et al. 2022; Bône et al. 2022): L2 loss (or ``--loss l1``; ``--enhancement-weight W``
weights voxels by 1 + W·clip((T1c − T1)/τ, 0, 1), :func:`enhancement_weight_map`; the residual network starts
from a zero head, i.e. exactly the identity on the low-dose input), Adam (lr 1e-3), random mirroring about every
axis with probability 0.5, validation split by patient (``--folds K`` splits the cases into K groups; fold k
is validated on group k and trained on the rest; the checkpoint with the lowest validation loss is the
model), fixed seed. Crops (default 64³) are sampled half around enhancing voxels, half anywhere in the
brain, so that few iterations see enough enhancement. A fold's state (network, Adam moments, iteration,
best loss) is checkpointed to ``OUT/fold<k>/checkpoint.safetensors`` + ``state.json``; ``--resume``
continues from it. The best network of fold k is written as ``OUT/<name>-fold<k>.safetensors`` + record
with :func:`neurocontrast.weights.save_model`; put ``OUT`` in ``NEUROCONTRAST_MODELS_DIR`` to use it.

The differential task (Pinetz et al. 2024) trains :class:`ConditionalResidualUNet3D` on (z_LD, x_LD) →
y_SD = sigmoid(w z_SD + b) ⊙ z_SD with a brain- and enhancement-weighted Huber loss, over several simulated
doses (``--doses``), conditioned on dose, field strength, relaxivity and the subtraction noise σ_LD.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report
from neurocontrast.training import distributed

log = logging.getLogger(__name__)

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEQUENCES = ("t1", "t2", "flair", "adc", "t1c", "t1c_low")
TASKS = ("virtual", "differential")
LOSSES = ("l2", "l1")


@dataclasses.dataclass
class TrainConfig:
    """Training options (the command line's flags). Units: crop in voxels, time in minutes."""

    task: str = "virtual"
    name: str = ""
    channels: Tuple[str, ...] = ("t1", "flair", "t1c_low")
    base_channels: int = 8
    depth: int = 3
    blocks_per_level: int = 1
    crop: int = 64
    batch_size: int = 2
    learning_rate: float = 1e-3
    iterations: int = 2000
    max_minutes: float = 20.0
    validate_every: int = 50
    folds: int = 2
    fold: Optional[int] = None
    dose: float = 0.25
    doses: Tuple[float, ...] = (0.1, 0.25, 0.5)
    field_strength_t: float = 1.5
    agent: str = "gadoterate"
    enhance_fraction: float = 0.5
    loss: str = "l2"
    enhancement_weight: float = 0.0
    lowdose_realisations: int = 1
    missing_channels: str = "error"
    preprocessed: bool = False
    registration: str = "default"
    seed: int = 0
    threads: int = 1
    device: str = "cpu"

    def validate(self) -> None:
        if self.task not in TASKS:
            raise NeuroContrastError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.crop < 8 or self.crop % (2 ** self.depth):
            raise NeuroContrastError(f"--crop must be a multiple of 2**depth = {2 ** self.depth}, got {self.crop}")
        if self.iterations < 1 or self.batch_size < 1 or self.max_minutes <= 0:
            raise NeuroContrastError("--iterations, --batch-size and --max-minutes must be positive")
        if self.folds < 2:
            raise NeuroContrastError(f"--folds must be ≥ 2 (validation is split by patient), got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise NeuroContrastError(f"--fold must be in 0..{self.folds - 1}, got {self.fold}")
        if not 0 < self.dose <= 1 or not all(0 < d <= 1 for d in self.doses):
            raise NeuroContrastError("doses must be fractions of the standard dose in (0, 1]")
        if self.loss not in LOSSES:
            raise NeuroContrastError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if not np.isfinite(self.enhancement_weight) or self.enhancement_weight < 0:
            raise NeuroContrastError(f"--enhancement-weight must be ≥ 0, got {self.enhancement_weight}")
        if not 1 <= int(self.lowdose_realisations) <= 16:
            raise NeuroContrastError(f"--lowdose-realisations must be in 1..16, got {self.lowdose_realisations}")
        if self.missing_channels not in ("error", "zero"):
            raise NeuroContrastError("--missing-channels must be 'error' or 'zero'")
        if self.task == "virtual":
            unknown = [c for c in self.channels if c not in SEQUENCES]
            if unknown:
                raise NeuroContrastError(f"unknown input channel(s) {unknown}; choose from {SEQUENCES}")
            if "t1c_low" not in self.channels:
                raise NeuroContrastError("the virtual-contrast model needs the 't1c_low' input channel")

    @property
    def model_name(self) -> str:
        return self.name or f"{self.task}-model"


# --------------------------------------------------------------------------------------------- data


def find_file(case_dir: Path, stem: str) -> Optional[Path]:
    """The image ``<stem><ext>`` in ``case_dir`` for the first matching extension of :data:`EXTENSIONS`."""
    for ext in EXTENSIONS:
        path = case_dir / f"{stem}{ext}"
        if path.exists():
            return path
    return None


def find_cases(data_dir) -> List[Path]:
    """Case folders of ``data_dir`` (sub-folders holding at least ``t1`` and ``t1c``), sorted by name.

    Raises NeuroContrastError if the folder does not exist or holds fewer than two cases.
    """
    data = Path(data_dir)
    if not data.is_dir():
        raise NeuroContrastError(f"training data folder {data} does not exist")
    cases = sorted(p for p in data.iterdir() if p.is_dir() and find_file(p, "t1") and find_file(p, "t1c"))
    if len(cases) < 2:
        raise NeuroContrastError(f"{data} holds {len(cases)} case folder(s) with t1 and t1c; at least two "
                                 "are needed for a patient-wise validation split (see the documented layout)")
    return cases


def split_folds(cases: Sequence[Path], folds: int, seed: int = 0) -> List[List[int]]:
    """Patient-wise split: case indices shuffled with ``seed`` and dealt into ``folds`` groups (round robin).

    Raises NeuroContrastError if there are fewer cases than folds.
    """
    if len(cases) < folds:
        raise NeuroContrastError(f"{len(cases)} cases cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(len(cases))
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def case_metadata(case_dir: Path, config: TrainConfig) -> Dict:
    """``case.json`` merged over the defaults (field strength, agent, low dose)."""
    meta = {"field_strength_t": config.field_strength_t, "agent": config.agent, "dose_low": config.dose}
    path = case_dir / "case.json"
    if path.exists():
        try:
            meta.update(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise NeuroContrastError(f"{path} is not valid JSON: {exc}") from None
    return meta


def _load_native(case_dir: Path, names: Sequence[str]) -> Dict[str, str]:
    files = {}
    for name in names:
        path = find_file(case_dir, name)
        if path is not None:
            files[name] = str(path)
    return files


def _needed_sequences(config: TrainConfig) -> List[str]:
    if config.task == "differential":
        return ["t1", "t1c"]
    return ["t1", "t1c"] + [c for c in config.channels if c not in ("t1", "t1c", "t1c_low")]


def prepare_case(case_dir: Path, config: TrainConfig, cache_dir: Optional[Path] = None,
                 progress: Optional[ProgressCallback] = None) -> Dict[str, np.ndarray]:
    """Model-space arrays of one case, all ``(Z, Y, X)``: the needed sequences in [0, 1] float32, ``brain``
    (bool), and the low-dose T1c at each training dose as ``t1c_low@<dose>`` (``t1c_low`` = the first).

    Low dose: the case's real ``t1c_low`` when present, else simulated in native space from ``t1``/``t1c``
    (:func:`neurocontrast.contrast.lowdose.simulate_lowdose_files`, seeded) and then preprocessed like an
    acquired sequence (own registration and standardisation), as a real low-dose image would be.
    Cached in ``cache_dir/<case>-<task>-<mode>.npz``. Raises NeuroContrastError on unreadable images.
    """
    mode = "same-grid" if config.preprocessed else "atlas"
    realisations = int(config.lowdose_realisations) if config.task == "virtual" else 1
    key = f"{case_dir.name}-{config.task}-{mode}" + (f"-r{realisations}" if realisations > 1 else "")
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{key}.npz"
        if cached.exists():
            with np.load(cached) as data:
                return {k: data[k] for k in data.files}
    files = _load_native(case_dir, SEQUENCES + ("brain_mask",))
    meta = case_metadata(case_dir, config)
    images = {name: files[name] for name in _needed_sequences(config) if name in files}
    seed = config.seed + sum(map(ord, case_dir.name))
    if "t1c_low" in files:
        doses = [float(meta.get("dose_low", config.dose))]
        images[f"t1c_low@{doses[0]:g}"] = files["t1c_low"]
    else:
        from neurocontrast.contrast import lowdose

        doses = [float(config.dose)] if config.task == "virtual" else [float(d) for d in config.doses]
        work = Path(cache_dir) if cache_dir is not None else Path(case_dir)
        work.mkdir(parents=True, exist_ok=True)
        for i, dose in enumerate(doses):
            path = work / f"{case_dir.name}-lowdose-{dose:g}-seed{seed + i}.nii.gz"
            if not path.exists():
                lowdose.simulate_lowdose_files(files["t1"], files["t1c"], dose, str(path), seed=seed + i)
            images[f"t1c_low@{dose:g}"] = str(path)
        # further independently seeded realisations of the same dose (noise augmentation, virtual task): the
        # network cannot memorise one noise field, and learns to keep the enhancement under fresh noise
        for r in range(1, realisations):
            path = work / f"{case_dir.name}-lowdose-{doses[0]:g}-seed{seed + 1000 + r}.nii.gz"
            if not path.exists():
                lowdose.simulate_lowdose_files(files["t1"], files["t1c"], doses[0], str(path), seed=seed + 1000 + r)
            images[f"t1c_low@{doses[0]:g}#{r}"] = str(path)
    if config.preprocessed:
        from neurocontrast.contrast.virtual import prepare_same_grid

        case = prepare_same_grid(images, reference="t1", brain_mask=files.get("brain_mask"))
    else:
        from neurocontrast.contrast.preprocessing import preprocess

        case = preprocess(images, reference="t1", progress=progress, registration=config.registration,
                          brain_mask=files.get("brain_mask"))
    out: Dict[str, np.ndarray] = {"brain": np.asarray(case.brain_mask, dtype=bool)}
    for name in images:
        out[name] = np.asarray(case.images[name], dtype=np.float32)
    out["t1c_low"] = out[f"t1c_low@{doses[0]:g}"]
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(cache_dir) / f"{key}.{os.getpid()}.tmp.npz"  # atomic: ranks may prepare the same case
        np.savez_compressed(tmp, **out)
        os.replace(tmp, Path(cache_dir) / f"{key}.npz")
    return out


# --------------------------------------------------------------------------------------------- samples


@dataclasses.dataclass
class _Case:
    name: str
    inputs: Dict[object, np.ndarray]  # dose (differential) or (dose, realisation) (virtual) → (C, Z, Y, X)
    targets: Dict[float, np.ndarray]  # dose → (1, Z, Y, X)
    conditions: Dict[float, np.ndarray]  # dose → (4,) (differential) or empty
    weight: Optional[Dict[float, np.ndarray]]
    brain_coords: np.ndarray  # (K, 3)
    hot_coords: np.ndarray  # (H, 3)


def _coords(mask: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    coords = np.argwhere(mask)
    if len(coords) > limit:
        coords = coords[rng.choice(len(coords), limit, replace=False)]
    return coords.astype(np.int32)


def build_virtual_case(name: str, arrays: Dict[str, np.ndarray], config: TrainConfig) -> _Case:
    """Stack the configured input channels and the full-dose target. Missing optional channels raise or are
    zero-filled (``config.missing_channels``)."""
    brain = arrays["brain"]
    channels = []
    for ch in config.channels:
        if ch in arrays:
            channels.append(arrays[ch])
        elif config.missing_channels == "zero":
            log.warning("case %s has no %s: zero-filled channel", name, ch)
            channels.append(np.zeros_like(arrays["t1"]))
        else:
            raise NeuroContrastError(f"case {name} has no '{ch}' image (needed as an input channel); add it or "
                                     "train with --missing-channels zero")
    inputs = np.stack(channels).astype(np.float32)
    target = arrays["t1c"][None].astype(np.float32)
    rng = np.random.default_rng(config.seed)
    enh = (arrays["t1c"] - arrays["t1c_low"]) * brain
    hot = enh > max(0.05, float(np.percentile(enh[brain], 99.5)) * 0.5) if brain.any() else enh > 0
    # every low-dose realisation of the case (key (dose, r)); they share the target and the loss weight
    extra = sorted(k for k in arrays if k.startswith(f"t1c_low@{config.dose:g}#"))
    keyed = {(config.dose, 0): inputs}
    if extra and "t1c_low" in config.channels:
        low_index = list(config.channels).index("t1c_low")
        for k in extra:
            x = inputs.copy()
            x[low_index] = arrays[k]
            keyed[(config.dose, int(k.rsplit("#", 1)[1]))] = x
    weight = None
    if config.enhancement_weight > 0:
        w = enhancement_weight_map(arrays["t1c"], arrays["t1"], brain, config.enhancement_weight)[None]
        weight = {k: w for k in keyed}
    return _Case(name, keyed, {k: target for k in keyed}, {}, weight,
                 _coords(brain, 200000, rng), _coords(hot, 50000, rng))


def enhancement_weight_map(reference: np.ndarray, pre: np.ndarray, brain: np.ndarray, strength: float) -> np.ndarray:
    """Voxel weights ``1 + strength · clip((reference − pre) / τ, 0, 1)`` for the enhancement-weighted loss.

    ``reference`` (full-dose T1c) and ``pre`` (T1) are ``(Z, Y, X)`` standardised [0, 1] images on one grid,
    ``brain`` a bool mask; τ = max(0.05, ½ · 99.5th percentile of reference − pre in the brain), so the
    strongest enhancement gets weight 1 + strength, non-enhancing brain (and outside) 1. Returns float32
    ``(Z, Y, X)``. Rationale: Ammari et al. and Bône et al. judge the enhancing lesions, which are < 1 % of
    the brain; with a plain L2 the network minimises its loss by smoothing them (our 3-case demonstration
    model lost enhancement AUC); Pinetz et al. weight their loss by the enhancement for the same reason.
    Raises NeuroContrastError on shape mismatch or a negative strength.
    """
    reference = np.asarray(reference, dtype=np.float32)
    pre = np.asarray(pre, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    if reference.shape != pre.shape or reference.shape != brain.shape:
        raise NeuroContrastError(f"enhancement weights: shapes differ (reference {reference.shape}, pre "
                                 f"{pre.shape}, brain {brain.shape})")
    if not strength >= 0:
        raise NeuroContrastError(f"enhancement weight strength must be ≥ 0, got {strength}")
    enh = np.where(brain, reference - pre, 0.0)
    tau = max(0.05, 0.5 * float(np.percentile(enh[brain], 99.5))) if brain.any() else 0.05
    return (1.0 + strength * np.clip(enh / tau, 0.0, 1.0)).astype(np.float32)


def build_differential_case(name: str, arrays: Dict[str, np.ndarray], meta: Dict, config: TrainConfig) -> _Case:
    """Per simulated dose: inputs (z_LD, x_LD), target y_SD, condition (d, B, r1, σ_LD) and a loss weight
    (brain + 4 · p_SD) (Pinetz et al. 2024, eq. 1 and Method; :mod:`neurocontrast.contrast.differential`)."""
    from neurocontrast.contrast import differential

    brain = arrays["brain"]
    pre, full = arrays["t1"], arrays["t1c"]
    field = float(meta.get("field_strength_t", config.field_strength_t))
    agent = str(meta.get("agent", config.agent))
    inputs, targets, conditions, weights = {}, {}, {}, {}
    hot_any = np.zeros_like(brain)
    for key in sorted(k for k in arrays if k.startswith("t1c_low@")):
        dose = float(key.split("@", 1)[1])
        prepared = differential.model_inputs(pre, arrays[key], brain)
        y, p = differential.training_target(pre, full, brain, prepared["sigma"])
        inputs[dose] = prepared["x"]
        targets[dose] = y[None]
        conditions[dose] = differential.condition_for(dose, field, agent, prepared["sigma"]).numpy()[0]
        weights[dose] = (brain.astype(np.float32) + 4.0 * p)[None].astype(np.float32)
        hot_any |= p > 0.5
    rng = np.random.default_rng(config.seed)
    return _Case(name, inputs, targets, conditions, weights, _coords(brain, 200000, rng),
                 _coords(hot_any & brain, 50000, rng))


def _crop_origin(center: np.ndarray, shape: Sequence[int], crop: int) -> Tuple[int, int, int]:
    return tuple(int(min(max(c - crop // 2, 0), max(s - crop, 0))) for c, s in zip(center, shape))


def _crop(arr: np.ndarray, origin: Sequence[int], crop: int) -> np.ndarray:
    z, y, x = origin
    out = arr[..., z:z + crop, y:y + crop, x:x + crop]
    pad = [(0, 0)] * (out.ndim - 3) + [(0, crop - s) for s in out.shape[-3:]]
    return np.pad(out, pad) if any(p[1] for p in pad) else out


def sample_batch(cases: Sequence[_Case], config: TrainConfig, rng: np.random.Generator, flip: bool = True):
    """One training batch: ``(x (B, C, c, c, c), y (B, 1, c, c, c), cond (B, 4) or None, w or None)``."""
    xs, ys, cs, ws = [], [], [], []
    for _ in range(config.batch_size):
        case = cases[int(rng.integers(len(cases)))]
        dose = list(case.inputs)[int(rng.integers(len(case.inputs)))]
        pool = case.hot_coords if (len(case.hot_coords) and rng.random() < config.enhance_fraction) \
            else case.brain_coords
        center = pool[int(rng.integers(len(pool)))]
        origin = _crop_origin(center, case.inputs[dose].shape[1:], config.crop)
        x = _crop(case.inputs[dose], origin, config.crop)
        y = _crop(case.targets[dose], origin, config.crop)
        w = _crop(case.weight[dose], origin, config.crop) if case.weight else None
        if flip:
            for axis in (1, 2, 3):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
                    w = np.flip(w, axis) if w is not None else None
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
        if case.conditions:
            cs.append(case.conditions[dose])
        if w is not None:
            ws.append(np.ascontiguousarray(w))
    return (np.stack(xs), np.stack(ys), np.stack(cs) if cs else None, np.stack(ws) if ws else None)


def validation_batches(cases: Sequence[_Case], config: TrainConfig, per_case: int = 4) -> List:
    """Fixed validation crops (seeded, unflipped): half around enhancement, half anywhere in the brain."""
    rng = np.random.default_rng(config.seed + 9973)
    saved = config.batch_size
    config.batch_size = 1
    try:
        batches = [sample_batch([case], config, rng, flip=False) for case in cases for _ in range(per_case)]
    finally:
        config.batch_size = saved
    return batches


# --------------------------------------------------------------------------------------------- loop


def build_model(config: TrainConfig):
    """The network for ``config`` and its (architecture, constructor config, input channel names)."""
    from neurocontrast.networks.conditional import ConditionalResidualUNet3D
    from neurocontrast.networks.unet3d import ResidualUNet3D

    if config.task == "virtual":
        kwargs = dict(in_channels=len(config.channels), out_channels=1, base_channels=config.base_channels,
                      depth=config.depth, blocks_per_level=config.blocks_per_level, final_activation="sigmoid",
                      residual_channel=list(config.channels).index("t1c_low"))
        net = ResidualUNet3D(**kwargs)
        # exact identity start: with a zero head the output is sigmoid(logit(t1c_low)) = the low-dose input, so
        # training begins from what the low dose already shows and learns only the change of enhancement
        import torch

        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
        return net, "ResidualUNet3D", kwargs, list(config.channels)
    kwargs = dict(in_channels=2, out_channels=1, base_channels=config.base_channels, depth=config.depth,
                  blocks_per_level=config.blocks_per_level, condition_dim=4, hidden=32)
    return ConditionalResidualUNet3D(**kwargs), "ConditionalResidualUNet3D", kwargs, ["z_low", "t1c_low"]


def _loss(pred, target, weight, task: str, kind: str = "l2"):
    import torch.nn.functional as F

    if task == "virtual":
        per_voxel = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
        if weight is None:
            return per_voxel.mean()
        return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)
    per_voxel = F.huber_loss(pred, target, reduction="none", delta=0.1)
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


def _to_torch(batch, device: str = "cpu"):
    import torch

    x, y, c, w = batch
    return (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device),
            None if c is None else torch.from_numpy(c).float().to(device),
            None if w is None else torch.from_numpy(w).to(device))


def _forward(net, x, c):
    return net(x, c) if c is not None else net(x)


def evaluate_loss(net, batches, task: str, device: str = "cpu", kind: str = "l2") -> Tuple[float, float]:
    """Mean validation loss of ``net`` and of the identity baseline (low-dose input as the prediction for
    the virtual task; zero signal for the differential task); ``kind`` the virtual task's loss (l2 or l1)."""
    import torch

    net.eval()
    losses, base = [], []
    with torch.inference_mode():
        for batch in batches:
            x, y, c, w = _to_torch(batch, device)
            losses.append(float(_loss(_forward(net, x, c), y, w, task, kind)))
            if task == "virtual":
                idx = getattr(net, "residual_channel", None)
                ident = x[:, idx:idx + 1] if idx is not None else torch.zeros_like(y)
            else:
                ident = torch.zeros_like(y)
            base.append(float(_loss(ident, y, w, task, kind)))
    net.train()
    return float(np.mean(losses)), float(np.mean(base))


def _save_checkpoint(folder: Path, net, optimizer, state: Dict) -> None:
    """Network and Adam state as safetensors (``model.*``, ``optim.<param>.<key>``) + ``state.json``; atomic."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    for pid, pstate in optimizer.state_dict()["state"].items():
        for k, v in pstate.items():
            tensors[f"optim.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / "checkpoint.safetensors")
    tmp_state = folder / "state.json.tmp"
    tmp_state.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_state, folder / "state.json")


def _load_checkpoint(folder: Path, net, optimizer) -> Optional[Dict]:
    from safetensors.torch import load_file

    path, state_path = folder / "checkpoint.safetensors", folder / "state.json"
    if not (path.exists() and state_path.exists()):
        return None
    tensors = load_file(str(path))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt["state"].setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict(opt)
    return json.loads(state_path.read_text(encoding="utf-8"))


def train_fold(cases: Sequence[_Case], val_cases: Sequence[_Case], config: TrainConfig, fold: int, out_dir: Path,
               resume: bool = False, progress: Optional[ProgressCallback] = None, training_facts=None):
    """Train one fold; returns the :class:`neurocontrast.weights.ModelInfo` of its best network (None on the
    ranks > 0 of a torchrun job, see :mod:`neurocontrast.training.distributed`)."""
    import torch

    from neurocontrast import weights

    torch.manual_seed(config.seed + fold)
    cases = distributed.shard(cases)  # this rank's training cases under torchrun, else all
    net, architecture, kwargs, channel_names = build_model(config)
    net.to(config.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    folder = out_dir / f"fold{fold}"
    state = {"iteration": 0, "best_val": None, "best_iteration": None, "elapsed_s": 0.0, "history": []}
    if resume:
        loaded = _load_checkpoint(folder, net, optimizer)
        if loaded is not None:
            state = loaded
            log.info("fold %d: resumed at iteration %d", fold, state["iteration"])
    ddp_net = distributed.wrap(net)  # DistributedDataParallel under torchrun, else net itself
    val = validation_batches(val_cases, config)
    best_path = folder / "best.safetensors"
    start_time = time.monotonic() - state["elapsed_s"]
    net.train()
    it = state["iteration"]
    while it < config.iterations:
        rng = distributed.rank_rng([config.seed, fold, it])
        x, y, c, w = _to_torch(sample_batch(cases, config, rng), config.device)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(_forward(ddp_net, x, c), y, w, config.task, config.loss)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        it += 1
        elapsed = time.monotonic() - start_time
        out_of_time = distributed.any_rank(elapsed > config.max_minutes * 60)
        if it % config.validate_every == 0 or it == config.iterations or out_of_time:
            val_loss, base_loss = distributed.from_main(evaluate_loss(ddp_net, val, config.task, config.device,
                                                                      config.loss))
            state["history"].append({"iteration": it, "train_loss": float(loss), "val_loss": val_loss,
                                     "baseline_val_loss": base_loss, "elapsed_s": round(elapsed, 1)})
            log.info("fold %d it %d train %.5f val %.5f (identity %.5f) %.0fs", fold, it, float(loss), val_loss,
                     base_loss, elapsed)
            distributed.main_only(print)(f"fold {fold} it {it} train {float(loss):.5f} val {val_loss:.5f} identity {base_loss:.5f} "
                  f"{elapsed:.0f}s", flush=True)
            if state["best_val"] is None or val_loss < state["best_val"]:
                from safetensors.torch import save_file

                state["best_val"], state["best_iteration"] = val_loss, it
                if distributed.is_main():
                    folder.mkdir(parents=True, exist_ok=True)
                    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(best_path))
            state["iteration"], state["elapsed_s"] = it, elapsed
            if distributed.is_main():
                _save_checkpoint(folder, net, optimizer, state)
            distributed.barrier()  # the other ranks read the checkpoint only after rank 0 wrote it
            report(progress, it / config.iterations, f"fold {fold}: iteration {it}, val {val_loss:.4g}")
        if out_of_time:
            log.info("fold %d: time budget of %.1f min reached at iteration %d", fold, config.max_minutes, it)
            break
    from safetensors.torch import load_file

    if not distributed.is_main():  # rank 0 writes the model record
        return None
    best = load_file(str(best_path))
    last = state["history"][-1] if state["history"] else {}
    facts = dict(training_facts or {})
    facts.update({"fold": fold, "iterations": it, "best_iteration": state["best_iteration"],
                  "best_val_loss": state["best_val"], "identity_val_loss": last.get("baseline_val_loss"),
                  "train_cases": [c.name for c in cases], "validation_cases": [c.name for c in val_cases],
                  "minutes": round(state["elapsed_s"] / 60, 1),
                  "config": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in dataclasses.asdict(config).items()}})
    return weights.save_model(best, out_dir, f"{config.model_name}-fold{fold}", architecture, kwargs,
                              input_channels=channel_names, version="1",
                              model_card=f"docs/models/{config.model_name}.md",
                              description=f"{config.task} contrast model, fold {fold} (trained with "
                                          "`neurocontrast train`)", training=facts)


def train(data_dir, out_dir, config: TrainConfig, resume: bool = False,
          progress: Optional[ProgressCallback] = None) -> List:
    """Train ``config.folds`` fold models (or only ``config.fold``) from the case folders of ``data_dir``.

    Returns the list of written :class:`ModelInfo` records. Raises NeuroContrastError on a bad layout
    (see the module docstring) or bad options.
    """
    import torch

    config.validate()
    from neurocontrast.contrast.inference import resolve_device

    config.device = distributed.device(resolve_device(config.device))
    torch.set_num_threads(max(1, int(config.threads)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    case_dirs = find_cases(data_dir)
    groups = split_folds(case_dirs, config.folds, config.seed)
    prepared = []
    for i, case_dir in enumerate(case_dirs):
        report(progress, 0.1 * i / len(case_dirs), f"preparing {case_dir.name}")
        arrays = prepare_case(case_dir, config, out / "cache")
        if config.task == "virtual":
            prepared.append(build_virtual_case(case_dir.name, arrays, config))
        else:
            prepared.append(build_differential_case(case_dir.name, arrays, case_metadata(case_dir, config), config))
    facts = {"task": config.task, "cases": [c.name for c in case_dirs],
             "low_dose": "real where t1c_low exists, else simulated (neurocontrast.contrast.lowdose)",
             "preprocessed_input": config.preprocessed, "seed": config.seed}
    infos = []
    folds = [config.fold] if config.fold is not None else list(range(config.folds))
    for n, k in enumerate(folds):
        val = [prepared[i] for i in groups[k]]
        tr = [prepared[i] for i in range(len(prepared)) if i not in groups[k]]
        sub = None if progress is None else (lambda f, m, n=n: report(progress, 0.1 + 0.9 * (n + f) / len(folds), m))
        infos.append(train_fold(tr, val, config, k, out, resume=resume, progress=sub, training_facts=facts))
    return infos


# --------------------------------------------------------------------------------------------- synthetic data


def make_synthetic_cases(out_dir, n_cases: int = 3, shape: Tuple[int, int, int] = (32, 32, 32), seed: int = 0,
                         spacing_mm: float = 1.0, sequences: Sequence[str] = ("t1", "flair", "t1c")) -> List[Path]:
    """Write ``n_cases`` small skull-stripped synthetic exams in the training layout (smoke tests, demos).

    Each case: an ellipsoidal "brain" (white matter 0.7, grey-matter shell 0.5 in arbitrary units × a
    per-case scale), one or two enhancing spheres (+0.6 in ``t1c`` only, FLAIR-hyperintense oedema around
    them), Rician-like Gaussian noise, zero background; all sequences on one grid with ``spacing_mm``.
    Returns the case folders. Never real patient data.
    """
    from neurocontrast.io import Geometry, write_volume

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt((zz / 0.8) ** 2 + (yy / 0.9) ** 2 + (xx / 0.75) ** 2)
    brain = radius < 1.0
    geometry = Geometry.from_arrays(shape, (spacing_mm,) * 3)
    cases = []
    for i in range(n_cases):
        scale = float(rng.uniform(300, 1200))
        tissue = np.where(radius < 0.75, 0.7, 0.5) * brain
        lesion = np.zeros(shape, dtype=bool)
        oedema = np.zeros(shape, dtype=bool)
        for _ in range(int(rng.integers(1, 3))):
            c = rng.uniform(-0.4, 0.4, 3)
            r = float(rng.uniform(0.12, 0.25))
            d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
            lesion |= (d < r) & brain
            oedema |= (d < 1.8 * r) & brain
        images = {"t1": tissue - 0.1 * lesion, "t1c": tissue - 0.1 * lesion + 0.6 * lesion,
                  "flair": np.where(brain, 0.4 + 0.3 * oedema + 0.1 * (radius > 0.75), 0.0),
                  "t2": np.where(brain, 0.3 + 0.4 * oedema, 0.0)}
        folder = out / f"case-{i:03d}"
        for name in sequences:
            noisy = (images[name] + rng.normal(0, 0.02, shape)) * scale
            write_volume(np.where(brain, np.abs(noisy), 0.0).astype(np.float32), geometry,
                         str(folder / f"{name}.nii.gz"))
        write_volume(lesion.astype(np.uint8), geometry, str(folder / "lesion_mask.nii.gz"))
        cases.append(folder)
    return cases
