"""Training the VirtualGadolinium networks (``neurocontrast train virtual|differential``).

Data layout (one folder per patient; file names without extension, any of .nii.gz, .nii, .nrrd, .mha)::

    DATA/
      case-001/
        t1.nii.gz          pre-contrast T1                                   (required)
        t1c.nii.gz         standard-dose post-contrast T1 (the target)      (required)
        flair.nii.gz       T2-FLAIR                                          (optional, see --missing-channels)
        t2.nii.gz, adc.nii.gz                                                (optional)
        brain_mask.nii.gz  brain mask (optional; else from the preprocessing)
        case.json          {"field_strength_t": 3.0, "agent": "gadoterate"} (optional)
      case-002/ ...

Preprocessing: each case once, as at inference. Cases whose sequences already share one skull-stripped grid
(BraTS-style; detected, or all cases with ``--preprocessed``) get only the intensity standardisation
(:func:`neurocontrast.contrast.preprocessing.prepare_same_grid`), the others the full chain
(:func:`neurocontrast.contrast.preprocessing.preprocess`); intensities are on the pre-contrast T1's scale
after radiometric matching (:mod:`neurocontrast.contrast.preprocessing.intensity`). Arrays are cropped to
the brain's bounding box and cached (``OUT/cache/<case>-v2.npz``).

Samples (drawn fresh for every crop, so no two iterations see the same noise):

- a dose d uniform in ``--dose-range`` (default 0.1–0.5) and a low-dose crop ``T1 + d (T1c − T1) + n``,
  n ~ N(0, σ_a² · 2 d (1 − d)) with σ_a = σ_sub / √2 from the negative half of the case's T1c − T1 (the
  noise-preserving model of :mod:`neurocontrast.contrast.lowdose`, Pinetz et al. 2023);
- intensity augmentation: a global scale (× U(0.85, 1.15)) and a smooth multiplicative bias field
  (±10 %, linear in each axis) applied alike to T1, low-dose and target (they are one acquisition chain, so
  their enhancement stays linear in dose); gamma (U(0.8, 1.25)) and a scale on FLAIR/T2/ADC only (a gamma on
  the T1-weighted images would make the enhancement non-linear in dose); mirroring about every axis;
- crops (``--crop``, default 32³) centred half on enhancing voxels, half anywhere in the brain.

Virtual task (Ammari et al. 2022; Bône et al. 2022, with the changes in the model card): inputs
(``--channels``, default t1, flair, t1c_low, dose, physics — ``dose`` is a constant channel d inside the
brain, so one network covers every dose and amplification can ask for a gain; ``physics`` is the dose
extrapolation T1 + p ⊙ (low − T1) / d), target T1c, residual 3D UNet whose output is the physics
extrapolation (or, without that channel, the low-dose input) plus a predicted enhancement correction
(unbounded, no sigmoid; a zero head starts exactly at the physics baseline), enhancement-weighted L1 loss (``--enhancement-weight``,
:func:`enhancement_weight_map`).

Differential task (Pinetz et al. 2024): the conditional residual UNet predicts a correction to the physics
baseline: signal = p_LD ⊙ (low − T1) / d + network(p_LD ⊙ (low − T1) / d, low | d, B, r1, σ_LD), trained on
the real standard-dose signal y_SD = p_SD ⊙ (T1c − T1) with a brain + 4 p_SD weighted Huber loss; its head
starts at zero, i.e. exactly at the physics baseline, so the predicted signal starts at the right scale.

Folds: ``--folds 0`` (default) is leave-one-case-out: fold k is validated on case k (sorted names) and
trained on the rest; ``--folds K`` deals shuffled cases into K groups. Validation: fixed crops of the
held-out cases at d ∈ {0.1, 0.25, 0.5}; the checkpoint with the lowest validation loss is the model. Then
the held-out case is evaluated whole (:func:`neurocontrast.contrast.validation.heldout_case_metrics`) and
the figures are written into the model's record (``metrics``). Checkpoints:
:mod:`neurocontrast.training.checkpoint` (``OUT/fold<k>/checkpoint``), ``--resume`` continues.
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

from neurocontrast.contrast.synthetic import make_synthetic_cases  # noqa: F401  (kept importable from here)
from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report
from neurocontrast.training import distributed
from neurocontrast.training.checkpoint import load_if_present, save_checkpoint

log = logging.getLogger(__name__)

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEQUENCES = ("t1", "t2", "flair", "adc", "t1c", "t1c_low")
#: input channels that are not images: ``dose`` is the constant dose fraction inside the brain, ``physics`` the
#: dose extrapolation T1 + p ⊙ (low − T1) / d (:mod:`neurocontrast.contrast.physics`)
PSEUDO_CHANNELS = ("dose", "physics")
TASKS = ("virtual", "differential")
LOSSES = ("l2", "l1")
CACHE_VERSION = "v2"


@dataclasses.dataclass
class TrainConfig:
    """Training options (the command line's flags). Units: crop in voxels, time in minutes, doses fractions."""

    task: str = "virtual"
    name: str = ""
    channels: Tuple[str, ...] = ("t1", "flair", "t1c_low", "dose", "physics")
    base_channels: int = 8
    depth: int = 3
    blocks_per_level: int = 1
    crop: int = 32
    batch_size: int = 2
    learning_rate: float = 1e-3
    iterations: int = 2000
    max_minutes: float = 20.0
    validate_every: int = 50
    folds: int = 0
    fold: Optional[int] = None
    dose_range: Tuple[float, float] = (0.1, 0.5)
    validation_doses: Tuple[float, ...] = (0.1, 0.25, 0.5)
    field_strength_t: float = 1.5
    agent: str = "gadoterate"
    enhance_fraction: float = 0.5
    loss: str = "l1"
    enhancement_weight: float = 10.0
    augment: bool = True
    missing_channels: str = "zero"
    preprocessed: bool = False
    registration: str = "default"
    evaluate_heldout: bool = True
    heldout_slices: Optional[int] = None
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
        if self.folds == 1 or self.folds < 0:
            raise NeuroContrastError(f"--folds must be 0 (leave one case out) or ≥ 2, got {self.folds}")
        lo, hi = self.dose_range
        if not 0 < lo <= hi < 1 or not all(0 < d <= 1 for d in self.validation_doses):
            raise NeuroContrastError(f"doses must be fractions of the standard dose: 0 < low ≤ high < 1, got "
                                     f"--dose-range {lo}..{hi}")
        if self.loss not in LOSSES:
            raise NeuroContrastError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if not np.isfinite(self.enhancement_weight) or self.enhancement_weight < 0:
            raise NeuroContrastError(f"--enhancement-weight must be ≥ 0, got {self.enhancement_weight}")
        if self.missing_channels not in ("error", "zero"):
            raise NeuroContrastError("--missing-channels must be 'error' or 'zero'")
        if self.task == "virtual":
            unknown = [c for c in self.channels if c not in SEQUENCES + PSEUDO_CHANNELS or c == "t1c"]
            if unknown:
                raise NeuroContrastError(f"unknown input channel(s) {unknown}; choose from "
                                         f"{[c for c in SEQUENCES if c != 't1c'] + list(PSEUDO_CHANNELS)}")
            if "t1c_low" not in self.channels or "t1" not in self.channels:
                raise NeuroContrastError("the virtual-contrast model needs the 't1' and 't1c_low' input channels")

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
    """Patient-wise split. ``folds=0``: leave one case out (group k = [k]); else case indices shuffled with
    ``seed`` and dealt into ``folds`` groups (round robin). Raises NeuroContrastError if there are fewer
    cases than folds."""
    if folds == 0:
        return [[i] for i in range(len(cases))]
    if len(cases) < folds:
        raise NeuroContrastError(f"{len(cases)} cases cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(len(cases))
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]


def _same_grid_stripped(files: Dict[str, str], names: Sequence[str]) -> bool:
    """All ``names`` on one grid and the T1 already skull-stripped (BraTS-style)."""
    import SimpleITK as sitk

    from neurocontrast.contrast.preprocessing import detect_skull_stripped
    from neurocontrast.io import Geometry

    readers = {}
    for n in names:
        r = sitk.ImageFileReader()
        r.SetFileName(files[n])
        r.ReadImageInformation()
        readers[n] = (r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection())
    first = readers[names[0]]
    same = all(np.allclose(np.concatenate([np.ravel(a) for a in v]), np.concatenate([np.ravel(a) for a in first]),
                           atol=1e-4) for v in readers.values())
    return bool(same and detect_skull_stripped(sitk.ReadImage(files["t1"]))["stripped"])


def _bbox_crop(arrays: Dict[str, np.ndarray], brain: np.ndarray, margin: int = 4, multiple: int = 8):
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, brain.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return {k: v[sl] for k, v in arrays.items()}


def prepare_case(case_dir: Path, config: TrainConfig, cache_dir: Optional[Path] = None,
                 progress: Optional[ProgressCallback] = None) -> Dict[str, np.ndarray]:
    """Model-space arrays of one case, ``(Z, Y, X)`` cropped to the brain's bounding box: the sequences
    found (t1, t1c, flair, t2, adc) standardised on the T1's scale (float32), ``brain`` (bool) and
    ``sigma_a`` (0-d: acquisition noise SD σ_sub / √2 of T1c − T1). Same-grid skull-stripped cases (or all,
    with ``config.preprocessed``) skip registration. Cached in ``cache_dir/<case>-v2.npz``. Raises
    NeuroContrastError on unreadable images or cases without t1/t1c."""
    from neurocontrast.contrast.subtraction import noise_sigma

    if cache_dir is not None:
        cached = Path(cache_dir) / f"{case_dir.name}-{CACHE_VERSION}.npz"
        if cached.exists():
            with np.load(cached) as data:
                return {k: data[k] for k in data.files}
    files = _load_native(case_dir, SEQUENCES + ("brain_mask",))
    names = [n for n in ("t1", "t1c", "flair", "t2", "adc") if n in files]
    images = {n: files[n] for n in names}
    same_grid = config.preprocessed or _same_grid_stripped(files, names)
    if same_grid:
        from neurocontrast.contrast.preprocessing import prepare_same_grid

        case = prepare_same_grid(images, reference="t1", brain_mask=files.get("brain_mask"))
    else:
        from neurocontrast.contrast.preprocessing import preprocess

        case = preprocess(images, reference="t1", progress=progress, registration=config.registration,
                          brain_mask=files.get("brain_mask"))
    brain = np.asarray(case.brain_mask, dtype=bool)
    out = _bbox_crop({"brain": brain, **{n: np.asarray(case.images[n], np.float32) for n in names}}, brain)
    out["sigma_a"] = np.asarray(noise_sigma(out["t1c"] - out["t1"], out["brain"]) / np.sqrt(2.0), np.float32)
    out["same_grid"] = np.asarray(bool(same_grid))
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(cache_dir) / f"{case_dir.name}-{CACHE_VERSION}.{os.getpid()}.tmp.npz"  # atomic: ranks may
        np.savez_compressed(tmp, **out)  # prepare the same case at once
        os.replace(tmp, Path(cache_dir) / f"{case_dir.name}-{CACHE_VERSION}.npz")
    return out


# --------------------------------------------------------------------------------------------- samples


@dataclasses.dataclass
class ContrastCase:
    """One prepared training case: arrays (Z, Y, X) on the T1's scale, sampling coordinates, metadata."""

    name: str
    arrays: Dict[str, np.ndarray]
    brain: np.ndarray
    sigma_a: float
    weight: Optional[np.ndarray]
    brain_coords: np.ndarray  # (K, 3)
    hot_coords: np.ndarray  # (H, 3)
    field_strength_t: float
    agent: str


def _coords(mask: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    coords = np.argwhere(mask)
    if len(coords) > limit:
        coords = coords[rng.choice(len(coords), limit, replace=False)]
    return coords.astype(np.int32)


def build_case(name: str, arrays: Dict[str, np.ndarray], meta: Dict, config: TrainConfig) -> ContrastCase:
    """A :class:`ContrastCase` from :func:`prepare_case` arrays; raises NeuroContrastError when a needed
    channel is absent and ``config.missing_channels == "error"``."""
    brain = np.asarray(arrays["brain"], dtype=bool)
    images = {k: np.asarray(v, np.float32) for k, v in arrays.items() if k in SEQUENCES}
    if config.task == "virtual":
        for ch in config.channels:
            if ch in PSEUDO_CHANNELS or ch == "t1c_low" or ch in images:
                continue
            if config.missing_channels == "error":
                raise NeuroContrastError(f"case {name} has no '{ch}' image (needed as an input channel); add it or "
                                         "train with --missing-channels zero")
            log.warning("case %s has no %s: zero-filled channel", name, ch)
            images[ch] = np.zeros_like(images["t1"])
    enh = np.where(brain, images["t1c"] - images["t1"], 0.0)
    sigma_a = float(arrays["sigma_a"])
    hot = brain & (enh > max(3.0 * np.sqrt(2.0) * sigma_a, 0.5 * float(np.percentile(enh[brain], 99.5))))
    weight = None
    if config.task == "virtual" and config.enhancement_weight > 0:
        weight = enhancement_weight_map(images["t1c"], images["t1"], brain, config.enhancement_weight)
    rng = np.random.default_rng(config.seed)
    return ContrastCase(name, images, brain, sigma_a, weight, _coords(brain, 200000, rng), _coords(hot, 50000, rng),
                        float(meta.get("field_strength_t", config.field_strength_t)),
                        str(meta.get("agent", config.agent)))


def _bias_field(shape: Sequence[int], rng: np.random.Generator, amplitude: float = 0.1) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    c = rng.uniform(-amplitude, amplitude, 3).astype(np.float32)
    return (1.0 + sum(ci * g for ci, g in zip(c, grids)) / 3.0).astype(np.float32)


def sample(case: ContrastCase, config: TrainConfig, rng: np.random.Generator, dose: Optional[float] = None,
           augment: bool = True, centre: Optional[np.ndarray] = None):
    """One training sample ``(x (C, c, c, c), y (1, c, c, c), condition (4,) or None, weight (1, c, c, c))``
    (see the module docstring). ``dose`` None draws one from ``config.dose_range``."""
    from neurocontrast.contrast.subtraction import enhancement_mask

    if dose is None:
        dose = float(rng.uniform(*config.dose_range))
    if centre is None:
        pool = case.hot_coords if (len(case.hot_coords) and rng.random() < config.enhance_fraction) \
            else case.brain_coords
        centre = pool[int(rng.integers(len(pool)))]
    origin = _crop_origin(centre, case.brain.shape, config.crop)
    crop = {k: _crop(v, origin, config.crop) for k, v in case.arrays.items()}
    brain = _crop(case.brain, origin, config.crop)
    t1, t1c = crop["t1"], crop["t1c"]
    sigma_add = case.sigma_a * np.sqrt(2.0 * dose * (1.0 - dose))
    low = np.where(brain, t1 + dose * (t1c - t1) + rng.normal(0.0, sigma_add, t1.shape), 0.0).astype(np.float32)
    if augment and config.augment:
        factor = float(rng.uniform(0.85, 1.15)) * _bias_field(t1.shape, rng)
        t1, t1c, low = t1 * factor, t1c * factor, low * factor
        for k in ("flair", "t2", "adc"):
            if k in crop and crop[k].any():
                v = np.clip(crop[k], 0, None)
                crop[k] = (float(rng.uniform(0.85, 1.15)) * v ** float(rng.uniform(0.8, 1.25))).astype(np.float32)
    weight = _crop(case.weight, origin, config.crop) if case.weight is not None else None
    condition = None
    if config.task == "virtual":
        values = {"t1": t1, "t1c_low": low, "dose": np.where(brain, dose, 0.0).astype(np.float32)}
        if "physics" in config.channels:
            z_low = low - t1
            sigma_low = case.sigma_a * np.sqrt(2.0 * dose) * float(np.mean(factor) if augment and config.augment
                                                                   else 1.0)
            values["physics"] = np.where(brain, t1 + enhancement_mask(z_low, sigma_low) * z_low / dose,
                                         0.0).astype(np.float32)
        x = np.stack([values[ch] if ch in values else crop[ch] for ch in config.channels]).astype(np.float32)
        y = t1c[None].astype(np.float32)
        w = None if weight is None else weight[None]
    else:
        from neurocontrast.contrast import differential

        sigma_sub = np.sqrt(2.0) * case.sigma_a
        sigma_low = case.sigma_a * np.sqrt(2.0 * dose)
        z_low, z_full = low - t1, t1c - t1
        physics = np.where(brain, enhancement_mask(z_low, sigma_low) * z_low / dose, 0.0)
        p_full = enhancement_mask(z_full, sigma_sub)
        target = np.where(brain, p_full * z_full, 0.0)
        x = np.stack([physics, low]).astype(np.float32)
        y = (target - physics)[None].astype(np.float32)
        condition = differential.condition_for(dose, case.field_strength_t, case.agent, sigma_low).numpy()[0]
        w = (brain.astype(np.float32) + 4.0 * np.where(brain, p_full, 0.0))[None].astype(np.float32)
    if augment:
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
                w = np.flip(w, axis) if w is not None else None
    return (np.ascontiguousarray(x), np.ascontiguousarray(y), condition,
            None if w is None else np.ascontiguousarray(w))


def sample_batch(cases: Sequence[ContrastCase], config: TrainConfig, rng: np.random.Generator, augment: bool = True):
    """One training batch: ``(x (B, C, c, c, c), y (B, 1, c, c, c), cond (B, 4) or None, w or None)``."""
    items = [sample(cases[int(rng.integers(len(cases)))], config, rng, augment=augment)
             for _ in range(config.batch_size)]
    xs, ys, cs, ws = zip(*items)
    return (np.stack(xs), np.stack(ys), None if cs[0] is None else np.stack(cs),
            None if ws[0] is None else np.stack(ws))


def validation_batches(cases: Sequence[ContrastCase], config: TrainConfig, per_case: int = 4) -> List:
    """Fixed validation samples of the held-out cases (seeded, no augmentation), at every validation dose:
    half centred on enhancement, half anywhere in the brain."""
    rng = np.random.default_rng(config.seed + 9973)
    batches = []
    for case in cases:
        for dose in config.validation_doses:
            for i in range(per_case):
                pool = case.hot_coords if (i % 2 == 0 and len(case.hot_coords)) else case.brain_coords
                centre = pool[int(rng.integers(len(pool)))]
                x, y, c, w = sample(case, config, rng, dose=dose, augment=False, centre=centre)
                batches.append((x[None], y[None], None if c is None else c[None], None if w is None else w[None]))
    return batches


# --------------------------------------------------------------------------------------------- model


def residual_channel(channels: Sequence[str]) -> str:
    """The input the virtual network's output is added to: the physics extrapolation when it is a channel
    (the network then learns a correction of the baseline), else the low-dose T1c."""
    return "physics" if "physics" in channels else "t1c_low"


def build_model(config: TrainConfig):
    """The network for ``config`` and its (architecture, constructor config, input channel names).

    Both start from a zero head: the virtual network is then exactly the identity on its residual channel
    (:func:`residual_channel`: the physics extrapolation, or the low-dose T1c), the differential one
    exactly the physics baseline."""
    import torch

    from neurocontrast.networks.conditional import ConditionalResidualUNet3D
    from neurocontrast.networks.unet3d import ResidualUNet3D

    if config.task == "virtual":
        kwargs = dict(in_channels=len(config.channels), out_channels=1, base_channels=config.base_channels,
                      depth=config.depth, blocks_per_level=config.blocks_per_level, final_activation="none",
                      residual_channel=list(config.channels).index(residual_channel(config.channels)))
        net = ResidualUNet3D(**kwargs)
        head, names = net.head, list(config.channels)
        arch = "ResidualUNet3D"
    else:
        kwargs = dict(in_channels=2, out_channels=1, base_channels=config.base_channels, depth=config.depth,
                      blocks_per_level=config.blocks_per_level, condition_dim=4, hidden=32)
        net = ConditionalResidualUNet3D(**kwargs)
        head, names = net.unet.head, ["physics_signal", "t1c_low"]
        arch = "ConditionalResidualUNet3D"
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return net, arch, kwargs, names


def _loss(pred, target, weight, task: str, kind: str = "l1"):
    import torch.nn.functional as F

    if task == "virtual":
        per_voxel = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    else:
        per_voxel = F.huber_loss(pred, target, reduction="none", delta=0.1)
    if weight is None:
        return per_voxel.mean()
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


def case_metadata(case_dir: Path, config: TrainConfig) -> Dict:
    """``case.json`` merged over the defaults (field strength, agent, low dose)."""
    meta = {"field_strength_t": config.field_strength_t, "agent": config.agent}
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


def enhancement_weight_map(reference: np.ndarray, pre: np.ndarray, brain: np.ndarray, strength: float) -> np.ndarray:
    """Voxel weights ``1 + strength · clip((reference − pre) / τ, 0, 1)`` for the enhancement-weighted loss.

    ``reference`` (full-dose T1c) and ``pre`` (T1) are ``(Z, Y, X)`` images standardised on the T1's scale,
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


def _crop_origin(center: np.ndarray, shape: Sequence[int], crop: int) -> Tuple[int, int, int]:
    return tuple(int(min(max(c - crop // 2, 0), max(s - crop, 0))) for c, s in zip(center, shape))


def _crop(arr: np.ndarray, origin: Sequence[int], crop: int) -> np.ndarray:
    z, y, x = origin
    out = arr[..., z:z + crop, y:y + crop, x:x + crop]
    pad = [(0, 0)] * (out.ndim - 3) + [(0, crop - s) for s in out.shape[-3:]]
    return np.pad(out, pad) if any(p[1] for p in pad) else out


def _to_torch(batch, device: str = "cpu"):
    import torch

    x, y, c, w = batch
    return (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device),
            None if c is None else torch.from_numpy(c).float().to(device),
            None if w is None else torch.from_numpy(w).to(device))


def _forward(net, x, c):
    return net(x, c) if c is not None else net(x)


def evaluate_loss(net, batches, task: str, device: str = "cpu", kind: str = "l1") -> Tuple[float, float, float]:
    """Mean validation loss of ``net``, of the low-dose input as prediction (virtual) and of the physics
    baseline (differential: zero correction; virtual: T1 + p ⊙ (low − T1)/d is not rebuilt on crops, so
    the low-dose value is returned twice)."""
    import torch

    net.eval()
    losses, base = [], []
    with torch.inference_mode():
        for batch in batches:
            x, y, c, w = _to_torch(batch, device)
            losses.append(float(_loss(_forward(net, x, c), y, w, task, kind)))
            if task == "virtual":
                ident = x[:, net.residual_channel:net.residual_channel + 1]
            else:
                ident = torch.zeros_like(y)
            base.append(float(_loss(ident, y, w, task, kind)))
    net.train()
    return float(np.mean(losses)), float(np.mean(base)), float(np.mean(base))


def heldout_metrics(net, case: ContrastCase, config: TrainConfig, device: str = "cpu") -> Dict:
    """Whole-volume held-out figures of a trained fold on its validation case
    (:func:`neurocontrast.contrast.validation.heldout_case_metrics`)."""
    import torch

    from neurocontrast.contrast import validation
    from neurocontrast.contrast.physics import dose_extrapolation
    from neurocontrast.contrast.inference import _pad_to_multiple

    t1, t1c, brain = case.arrays["t1"], case.arrays["t1c"], case.brain
    arrays = case.arrays
    if config.heldout_slices:  # an axial slab centred on the slice with the most enhancing voxels (CPU budget)
        enh = validation.enhancing_voxels(t1, t1c, brain)
        centre = int(np.argmax(enh.sum(axis=(1, 2))))
        half = int(config.heldout_slices) // 2
        lo = max(0, min(centre - half, brain.shape[0] - int(config.heldout_slices)))
        sl = slice(lo, lo + int(config.heldout_slices))
        arrays = {k: v[sl] for k, v in case.arrays.items()}
        t1, t1c, brain = arrays["t1"], arrays["t1c"], brain[sl]
    net.eval()

    def run(x, cond=None):
        with torch.inference_mode():
            xt, crop = _pad_to_multiple(torch.from_numpy(x[None]).to(device), net.size_multiple)
            out = net(xt, cond) if cond is not None else net(xt)
            return out[0, 0][crop].cpu().numpy()

    if config.task == "virtual":
        def virtual_fn(low, dose_value):
            values = {"t1": t1, "t1c_low": low, "dose": np.where(brain, dose_value, 0.0).astype(np.float32)}
            if "physics" in config.channels:
                values["physics"] = dose_extrapolation(t1, low, dose_value, brain).full
            x = np.stack([values[ch] if ch in values else arrays[ch] for ch in config.channels])
            return run(x.astype(np.float32))

        out = validation.heldout_case_metrics(t1, t1c, brain, virtual_fn=virtual_fn, doses=config.validation_doses,
                                              seed=config.seed)
        out["region"] = _region(config, brain)
        return out
    from neurocontrast.contrast import differential

    def signal_fn(low, dose):
        phys = dose_extrapolation(t1, low, dose, brain)
        cond = differential.condition_for(dose, case.field_strength_t, case.agent, phys.sigma)
        x = np.stack([phys.signal, low]).astype(np.float32)
        return phys.signal + np.where(brain, run(x, cond.to(device)), 0.0)

    out = validation.heldout_case_metrics(t1, t1c, brain, signal_fn=signal_fn, doses=config.validation_doses,
                                          seed=config.seed)
    out["region"] = _region(config, brain)
    return out


def _region(config: TrainConfig, brain: np.ndarray) -> str:
    if config.heldout_slices:
        return (f"axial slab of {brain.shape[0]} slices centred on the slice with the most enhancing voxels "
                f"({int(brain.sum())} brain voxels)")
    return f"whole brain ({int(brain.sum())} voxels)"


def train_fold(cases: Sequence[ContrastCase], val_cases: Sequence[ContrastCase], config: TrainConfig, fold: int,
               out_dir: Path, resume: bool = False, progress: Optional[ProgressCallback] = None, training_facts=None,
               evaluate_only: bool = False):
    """Train one fold; returns the :class:`neurocontrast.weights.ModelInfo` of its best network (with the
    held-out figures of its validation case(s) in ``metrics`` when ``config.evaluate_heldout``), or None on the
    ranks > 0 of a torchrun job (see :mod:`neurocontrast.training.distributed`)."""
    import torch
    from safetensors.torch import load_file, save_file

    from neurocontrast import weights

    torch.manual_seed(config.seed + fold)
    cases = distributed.shard(cases)  # this rank's training cases under torchrun, else all
    net, architecture, kwargs, channel_names = build_model(config)
    net.to(config.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    folder = out_dir / f"fold{fold}"
    stem = str(folder / "checkpoint")
    state = {"iteration": 0, "best_val": None, "best_iteration": None, "elapsed_s": 0.0, "history": []}
    if resume or evaluate_only:
        loaded = load_if_present(stem, net, optimizer)
        if loaded is not None:
            state = loaded
            log.info("fold %d: resumed at iteration %d", fold, state["iteration"])
        elif evaluate_only:
            raise NeuroContrastError(f"--evaluate-only: no checkpoint of fold {fold} in {folder}")
    ddp_net = distributed.wrap(net)  # DistributedDataParallel under torchrun, else net itself
    val = [] if evaluate_only else validation_batches(val_cases, config)
    best_path = folder / "best.safetensors"
    start_time = time.monotonic() - state["elapsed_s"]
    net.train()
    it = state["iteration"]
    while it < config.iterations and not evaluate_only:
        rng = distributed.rank_rng([config.seed, fold, it])
        x, y, c, w = _to_torch(sample_batch(cases, config, rng), config.device)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(_forward(ddp_net, x, c), y, w, config.task, config.loss)
        if not torch.isfinite(loss):
            raise NeuroContrastError(f"training loss became {float(loss)} at iteration {it}")
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        it += 1
        elapsed = time.monotonic() - start_time
        out_of_time = distributed.any_rank(elapsed > config.max_minutes * 60)
        if it % config.validate_every == 0 or it == config.iterations or out_of_time:
            val_loss, base_loss, _ = distributed.from_main(evaluate_loss(ddp_net, val, config.task, config.device,
                                                                         config.loss))
            state["history"].append({"iteration": it, "train_loss": float(loss), "val_loss": val_loss,
                                     "baseline_val_loss": base_loss, "elapsed_s": round(elapsed, 1)})
            log.info("fold %d it %d train %.5f val %.5f (baseline %.5f) %.0fs", fold, it, float(loss), val_loss,
                     base_loss, elapsed)
            distributed.main_only(print)(f"fold {fold} it {it} train {float(loss):.5f} val {val_loss:.5f} baseline {base_loss:.5f} "
                  f"{elapsed:.0f}s", flush=True)
            if state["best_val"] is None or val_loss < state["best_val"]:
                state["best_val"], state["best_iteration"] = val_loss, it
                if distributed.is_main():
                    folder.mkdir(parents=True, exist_ok=True)
                    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                              str(best_path))
            state["iteration"], state["elapsed_s"] = it, elapsed
            if distributed.is_main():
                save_checkpoint(stem, net, optimizer, state)
            distributed.barrier()  # the other ranks read the checkpoint only after rank 0 wrote it
            report(progress, it / config.iterations, f"fold {fold}: iteration {it}, val {val_loss:.4g}")
        if out_of_time:
            log.info("fold %d: time budget of %.1f min reached at iteration %d", fold, config.max_minutes, it)
            break
    if not distributed.is_main():  # rank 0 evaluates and writes the model record
        return None
    best = load_file(str(best_path))
    metrics = {}
    if config.evaluate_heldout:
        net.load_state_dict(best)
        report(progress, 1.0, f"fold {fold}: held-out evaluation")
        metrics = {"heldout": {c.name: heldout_metrics(net, c, config, config.device) for c in val_cases}}
    last = state["history"][-1] if state["history"] else {}
    facts = dict(training_facts or {})
    facts.update({"fold": fold, "iterations": it, "best_iteration": state["best_iteration"],
                  "best_val_loss": state["best_val"], "baseline_val_loss": last.get("baseline_val_loss"),
                  "train_cases": [c.name for c in cases], "validation_cases": [c.name for c in val_cases],
                  "minutes": round(state["elapsed_s"] / 60, 1),
                  "config": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in dataclasses.asdict(config).items()}})
    return weights.save_model(best, out_dir, f"{config.model_name}-fold{fold}", architecture, kwargs,
                              input_channels=channel_names, version="3",
                              model_card=f"docs/models/{config.model_name}.md",
                              description=f"{config.task} contrast model, fold {fold} (trained with "
                                          "`neurocontrast train`)", training=facts, metrics=metrics)


def train(data_dir, out_dir, config: TrainConfig, resume: bool = False,
          progress: Optional[ProgressCallback] = None, evaluate_only: bool = False) -> List:
    """Train the fold models (or only ``config.fold``) from the case folders of ``data_dir``.

    ``evaluate_only``: skip training, take each fold's checkpointed best network and redo the held-out
    evaluation and the record. Returns the list of written :class:`ModelInfo` records. Raises
    NeuroContrastError on a bad layout (see the module docstring) or bad options.
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
    if config.fold is not None and not 0 <= config.fold < len(groups):
        raise NeuroContrastError(f"--fold must be in 0..{len(groups) - 1}, got {config.fold}")
    prepared = []
    for i, case_dir in enumerate(case_dirs):
        report(progress, 0.1 * i / len(case_dirs), f"preparing {case_dir.name}")
        arrays = prepare_case(case_dir, config, out / "cache")
        prepared.append(build_case(case_dir.name, arrays, case_metadata(case_dir, config), config))
    facts = {"task": config.task, "cases": [c.name for c in case_dirs], "folds": "leave one case out"
             if config.folds == 0 else f"{config.folds} groups", "low_dose": "simulated on the fly, dose uniform in "
             f"{config.dose_range[0]:g}-{config.dose_range[1]:g}, fresh noise per crop", "seed": config.seed}
    infos = []
    folds = [config.fold] if config.fold is not None else list(range(len(groups)))
    for n, k in enumerate(folds):
        val = [prepared[i] for i in groups[k]]
        tr = [prepared[i] for i in range(len(prepared)) if i not in groups[k]]
        sub = None if progress is None else (lambda f, m, n=n: report(progress, 0.1 + 0.9 * (n + f) / len(folds), m))
        infos.append(train_fold(tr, val, config, k, out, resume=resume, progress=sub, training_facts=facts,
                                evaluate_only=evaluate_only))
    return infos
