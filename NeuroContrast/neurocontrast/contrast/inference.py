"""Network inference for VirtualGadolinium: ensembles of folds × flip test-time augmentation.

The papers' recipe (Ammari et al. 2022, "Training and evaluating the model"; Bône et al. 2022): five models
trained on five folds, each applied to the eight mirrored versions of the input (flips about every subset of
the three axes), the 40 predictions un-mirrored and averaged (simple Euclidean mean). Here both counts are
options: ``ensemble`` (how many fold models, in name order) and ``tta`` (1 = no mirroring, 8 = all mirrors;
2 and 4 are also accepted: mirrors about x, then y, then z).

Everything here works on arrays in *model space* (the preprocessed 1 mm atlas grid, standardised intensities);
:mod:`neurocontrast.contrast.virtual` and :mod:`neurocontrast.contrast.differential` do the preprocessing
and the return to the native grid.

- Spatial sizes are padded with zeros to multiples of ``2**depth`` and cropped back.
- On CUDA the forward pass runs under ``torch.autocast`` (fp16 or bf16); on CPU always fp32 (half
  precision is ~50× slower on CPU).
- When the whole volume would not fit the memory budget, MONAI's ``sliding_window_inference`` runs on
  overlapping patches (Gaussian blending).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report

log = logging.getLogger(__name__)

#: Architectures that :func:`build_network` can construct from a weights record.
ARCHITECTURES = ("ResidualUNet3D", "ConditionalResidualUNet3D")

#: Default model (name prefix) per task; the folds are ``<prefix>-fold<k>``.
DEFAULT_MODELS = {"virtual": "virtual-demo", "differential": "differential-demo"}

#: Flip axes (of a (N, C, Z, Y, X) tensor) in the order the TTA subsets are built: x, y, z.
_FLIP_AXES = (4, 3, 2)


def flip_sets(tta: int) -> List[Tuple[int, ...]]:
    """The mirror configurations for ``tta`` ∈ {1, 2, 4, 8}: tuples of tensor axes to flip.

    ``tta=8`` gives all eight subsets of the three spatial axes (Ammari et al. 2022). Raises
    NeuroContrastError for other counts.
    """
    if tta not in (1, 2, 4, 8):
        raise NeuroContrastError(f"tta must be 1, 2, 4 or 8 mirror configurations, got {tta}")
    n_axes = int(round(math.log2(tta)))
    axes = _FLIP_AXES[:n_axes]
    sets = []
    for r in range(n_axes + 1):
        sets.extend(itertools.combinations(axes, r))
    return [tuple(s) for s in sets]


def resolve_device(device: str = "cpu") -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) → a torch device string.

    Raises NeuroContrastError if CUDA is asked for and not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NeuroContrastError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        return device
    if device != "cpu":
        raise NeuroContrastError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return "cpu"


@dataclasses.dataclass
class LoadedModel:
    """A network ready for inference with its registry record."""

    network: "object"  # torch.nn.Module
    info: "object"  # neurocontrast.weights.ModelInfo

    @property
    def input_channels(self) -> List[str]:
        return list(self.info.input_channels)

    @property
    def conditional(self) -> bool:
        return self.info.architecture == "ConditionalResidualUNet3D"


def build_network(architecture: str, config: Dict):
    """Construct an untrained network from a record's ``architecture`` and ``config`` (constructor kwargs).

    Raises NeuroContrastError on an unknown architecture or bad configuration.
    """
    from neurocontrast.networks.conditional import ConditionalResidualUNet3D
    from neurocontrast.networks.unet3d import ResidualUNet3D

    classes = {"ResidualUNet3D": ResidualUNet3D, "ConditionalResidualUNet3D": ConditionalResidualUNet3D}
    if architecture not in classes:
        raise NeuroContrastError(f"unknown architecture {architecture!r}; expected one of {', '.join(classes)}")
    try:
        return classes[architecture](**config)
    except TypeError as exc:
        raise NeuroContrastError(f"bad configuration for {architecture}: {exc}") from None


def fold_names(prefix: str, models_dir=None) -> List[str]:
    """Names of the registered models that form the ensemble ``prefix``: ``prefix`` itself if it is a model,
    else every ``prefix-fold<k>`` in k order. Raises NeuroContrastError if there is none."""
    from neurocontrast import weights

    names = [m.name for m in weights.list_models(models_dir)]
    if prefix in names:
        return [prefix]
    folds = [n for n in names if n.startswith(prefix + "-fold") and n[len(prefix) + 5:].isdigit()]
    folds.sort(key=lambda n: int(n[len(prefix) + 5:]))
    if not folds:
        available = ", ".join(names) or "none"
        raise NeuroContrastError(f"no model or fold models named {prefix!r} (available: {available}); train one "
                                 "with `neurocontrast train virtual|differential` or set NEUROCONTRAST_MODELS_DIR")
    return folds


def load_ensemble(model: Union[str, Sequence[str]], ensemble: Optional[int] = None, device: str = "cpu",
                  models_dir=None) -> List[LoadedModel]:
    """Load the first ``ensemble`` fold models of ``model`` (a name prefix, a model name or a list of names).

    Weights are sha256-checked (:func:`neurocontrast.weights.load_state_dict`). ``ensemble=None`` loads all
    folds. Raises NeuroContrastError if fewer folds exist than asked for, or a file is corrupt.
    """
    from neurocontrast import weights

    names = list(model) if not isinstance(model, str) else fold_names(model, models_dir)
    if ensemble is not None:
        if ensemble < 1:
            raise NeuroContrastError(f"ensemble must be ≥ 1 model, got {ensemble}")
        if ensemble > len(names):
            raise NeuroContrastError(f"--ensemble {ensemble} asked for but only {len(names)} model(s) exist "
                                     f"({', '.join(names)})")
        names = names[:ensemble]
    loaded = []
    for name in names:
        state, info = weights.load_state_dict(name, models_dir=models_dir)
        net = build_network(info.architecture, info.config)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise NeuroContrastError(f"model '{name}': weights do not fit {info.architecture}"
                                     f"({info.config}): {str(exc).splitlines()[0]}") from None
        net.eval().to(device)
        for p in net.parameters():
            p.requires_grad_(False)
        loaded.append(LoadedModel(net, info))
    channels = {tuple(m.input_channels) for m in loaded}
    if len(channels) > 1:
        raise NeuroContrastError(f"the ensemble's models expect different input channels: {sorted(channels)}")
    return loaded


def load_task_models(task: str, model: Union[str, Sequence[str]], ensemble: Optional[int] = None,
                     tta: Optional[int] = None, device: str = "cpu", models_dir=None):
    """Model loading shared by :func:`~neurocontrast.contrast.virtual.run_virtual` and
    :func:`~neurocontrast.contrast.differential.run_differential`.

    Resolves the device, fills the default ensemble size and mirror count for it
    (:func:`neurocontrast.contrast.virtual.default_passes`), validates ``tta``, loads the folds
    (:func:`load_ensemble`) and checks that they fit ``task`` (``"virtual"``: a plain network with a
    ``t1c_low`` channel; ``"differential"``: a conditional network). Returns (models, device, tta).
    Raises NeuroContrastError on an unknown task, a missing model or a model of the other task.
    """
    from neurocontrast.contrast.virtual import CONTRAST_CHANNEL, default_passes

    if task not in DEFAULT_MODELS:
        raise NeuroContrastError(f"task must be one of {sorted(DEFAULT_MODELS)}, got {task!r}")
    device = resolve_device(device)
    d_ens, d_tta = default_passes(device)
    ensemble = d_ens if ensemble is None else ensemble
    tta = d_tta if tta is None else tta
    flip_sets(tta)  # validate early
    models = load_ensemble(model, ensemble, device=device, models_dir=models_dir)
    first = models[0]
    if task == "differential" and not first.conditional:
        raise NeuroContrastError(f"model {first.info.name} is not a conditional differential-contrast model")
    if task == "virtual" and (first.conditional or CONTRAST_CHANNEL not in first.input_channels):
        raise NeuroContrastError(f"model {first.info.name!r} has no '{CONTRAST_CHANNEL}' input channel "
                                 f"({first.input_channels}); it is not a virtual-contrast model")
    return models, device, tta


def _pad_to_multiple(x, multiple: int):
    """Zero-pad the last three axes of ``x`` (N, C, Z, Y, X) up to multiples of ``multiple``."""
    import torch.nn.functional as F

    pads = []
    crop = []
    for size in reversed(x.shape[2:]):
        total = (-size) % multiple
        pads.extend([total // 2, total - total // 2])
    for i, size in enumerate(x.shape[2:]):
        before = pads[2 * (2 - i)]
        crop.append(slice(before, before + size))
    if any(pads):
        x = F.pad(x, pads)
    return x, tuple(crop)


def estimated_memory_bytes(shape_zyx: Sequence[int], base_channels: int) -> int:
    """Rough peak memory (bytes) of one fp32 forward pass without gradients on a ``shape_zyx`` volume.

    Empirical: about 10 full-resolution feature maps of ``base_channels`` floats (the peak RSS of a 96³ pass
    of ``ResidualUNet3D`` with base 8, depth 3 was 272 MB; this gives 270 MB).
    """
    return int(np.prod(shape_zyx)) * base_channels * 4 * 10


def predict(models: Sequence[LoadedModel], inputs: np.ndarray, *, tta: int = 8, device: str = "cpu",
            condition=None, amp: Optional[str] = "auto", roi_size: Optional[Sequence[int]] = None,
            max_memory_gb: Optional[float] = None, overlap: float = 0.25,
            progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """Average the predictions of ``models`` × ``tta`` mirror configurations on one volume.

    Parameters
    ----------
    models : loaded networks (:func:`load_ensemble`), all with the same input channels.
    inputs : ``(C, Z, Y, X)`` float32, the channels in the models' ``input_channels`` order, model space.
    tta : 1, 2, 4 or 8 mirror configurations (:func:`flip_sets`).
    device : ``"cpu"`` or ``"cuda"`` (see :func:`resolve_device`).
    condition : ``(1, 4)`` condition tensor for conditional models (:func:`condition_vector`), else None.
    amp : ``"auto"`` (fp16 on CUDA, none on CPU), ``"fp16"``, ``"bf16"`` or None. Ignored on CPU.
    roi_size : patch size for sliding-window inference; None = whole volume unless the estimated memory
        exceeds ``max_memory_gb`` (default: 4 GB on CPU, 80 % of free GPU memory on CUDA), then 96³ patches.
    overlap : sliding-window overlap fraction.
    progress : callback (fraction, message).

    Returns ``(Z, Y, X)`` float32, the mean prediction (first output channel).

    Raises NeuroContrastError on a channel-count mismatch, NaNs in the input, or a missing condition.
    """
    import torch

    if not models:
        raise NeuroContrastError("no model to run")
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4:
        raise NeuroContrastError(f"inputs must be (C, Z, Y, X), got shape {inputs.shape}")
    n_channels = len(models[0].input_channels) or models[0].network.in_channels
    if inputs.shape[0] != n_channels:
        raise NeuroContrastError(f"the model expects {n_channels} input channels "
                                 f"({', '.join(models[0].input_channels)}), got {inputs.shape[0]}")
    if not np.all(np.isfinite(inputs)):
        raise NeuroContrastError("network inputs contain NaN or infinite values")
    conditional = models[0].conditional
    if conditional and condition is None:
        raise NeuroContrastError("the differential model needs a condition (dose, field strength, relaxivity, σ)")
    device = resolve_device(device)
    on_cuda = device.startswith("cuda")
    amp_dtype = None
    if on_cuda and amp:
        amp_dtype = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
        if amp_dtype is None:
            raise NeuroContrastError(f"amp must be 'auto', 'fp16', 'bf16' or None, got {amp!r}")

    multiple = max(m.network.size_multiple for m in models)
    x = torch.from_numpy(inputs[None]).to(device)
    x, crop = _pad_to_multiple(x, multiple)
    base = max(int(m.info.config.get("base_channels", 16)) for m in models)
    if roi_size is None:
        if max_memory_gb is None:
            if on_cuda:
                free, _ = torch.cuda.mem_get_info()
                max_memory_gb = 0.8 * free / 2 ** 30
            else:
                max_memory_gb = float(os.environ.get("NEUROCONTRAST_MAX_MEMORY_GB", 4.0))
        if estimated_memory_bytes(x.shape[2:], base) > max_memory_gb * 2 ** 30:
            roi_size = (96, 96, 96)
            log.info("volume %s exceeds the %.1f GB budget: sliding-window inference with %s patches",
                     tuple(x.shape[2:]), max_memory_gb, roi_size)
    if roi_size is not None:
        roi_size = tuple(int(math.ceil(min(r, s) / multiple) * multiple) for r, s in zip(roi_size, x.shape[2:]))
    cond = None if condition is None else torch.as_tensor(condition, dtype=torch.float32).to(device)

    flips = flip_sets(tta)
    total = len(models) * len(flips)
    acc = torch.zeros((1, 1) + tuple(x.shape[2:]), dtype=torch.float32, device=device)
    done = 0
    report(progress, 0.0, f"0/{total} passes")
    with torch.inference_mode():
        for m in models:
            net = m.network

            def run(t, _net=net):
                return _net(t, cond) if conditional else _net(t)

            for axes in flips:
                xi = torch.flip(x, axes) if axes else x
                with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None) if on_cuda \
                        else _nullcontext():
                    if roi_size is not None:
                        from monai.inferers import sliding_window_inference

                        y = sliding_window_inference(xi, roi_size, 1, run, overlap=overlap, mode="gaussian")
                    else:
                        y = run(xi)
                y = y[:, :1].float()
                acc += torch.flip(y, axes) if axes else y
                done += 1
                report(progress, done / total, f"{done}/{total} passes")
    out = (acc / total)[0, 0][crop]
    return out.cpu().numpy().astype(np.float32)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
