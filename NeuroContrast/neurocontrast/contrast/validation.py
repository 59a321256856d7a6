"""Held-out validation of the virtual-contrast and differential-contrast models on one case (model space).

:func:`heldout_case_metrics` is what training writes into every fold model's record (``metrics``), what
``info["validation"]`` of a run reports and what docs/models/ quote. On a held-out case with a pre-contrast
T1 and a standard-dose T1c, both standardised on the T1's scale (:mod:`neurocontrast.contrast.preprocessing.intensity`),
for each low dose d (simulated, :func:`neurocontrast.contrast.lowdose.simulate_lowdose`, seeded):

- rows ``low`` (the input), ``physics`` (:func:`neurocontrast.contrast.physics.dose_extrapolation`) and
  ``network`` (the virtual T1c): SSIM and PSNR against the real T1c inside the brain
  (:func:`neurocontrast.metrics.ssim`/``psnr``, the project's one convention), enhancement ROC AUC
  (:func:`neurocontrast.metrics.enhancement_auc`) and *enhancement restored*: mean(image − T1) / mean(T1c − T1)
  over the enhancing voxels (T1c − T1 above both 3 σ of the subtraction noise and the Otsu threshold of the
  enhancement map); the low-dose input restores d by construction;
- amplification (the network fed the real T1c with the dose channel at 1 / gain): the enhancement factor
  mean(T1c-pro − T1) / mean(T1c − T1) over the enhancing voxels, the ratio of normal-appearing brain medians
  (T1c-pro / T1c; normal = brain minus the enhancing voxels dilated by 2 voxels), for 1 and 2 passes;
- differential (a conditional model): mean predicted standard-dose signal / mean real signal T1c − T1 over
  the enhancing voxels, per dose.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from neurocontrast import metrics as M
from neurocontrast.errors import NeuroContrastError

VALIDATION_DOSES = (0.1, 0.25, 0.5)
#: default gain of amplification: the dose channel is set to 1 / gain (the input is "1/gain of the output's dose")
AMPLIFY_GAIN = 2.0


def enhancing_voxels(t1: np.ndarray, t1c: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Brain voxels where T1c − T1 exceeds both 3 σ (σ from its negative half) and its Otsu threshold.
    Raises NeuroContrastError if there is none."""
    from neurocontrast.contrast.subtraction import noise_sigma

    z = np.where(brain, t1c - t1, 0.0)
    sigma = noise_sigma(z, brain)
    _, otsu = M.otsu_binarise(np.clip(z, 0, None), brain)
    enh = brain & (z > max(3.0 * sigma, otsu))
    if not enh.any():
        raise NeuroContrastError("the reference T1c shows no enhancing voxel above the noise")
    return enh


def _restored(image, t1, t1c, enh) -> float:
    return float(np.mean(image[enh] - t1[enh]) / np.mean(t1c[enh] - t1[enh]))


def image_row(image: np.ndarray, t1: np.ndarray, t1c: np.ndarray, brain: np.ndarray, enh: np.ndarray) -> Dict:
    """SSIM, PSNR, enhancement AUC and enhancement restored of one image against the real T1c."""
    auc = M.enhancement_auc(image, t1c, t1, brain)["auc"]
    return {"ssim": round(M.ssim(image, t1c, brain), 4), "psnr": round(M.psnr(image, t1c, brain), 2),
            "auc": round(float(auc), 4), "restored": round(_restored(image, t1, t1c, enh), 3)}


def heldout_case_metrics(t1: np.ndarray, t1c: np.ndarray, brain: np.ndarray, *,
                         virtual_fn: Optional[Callable[[np.ndarray, float], np.ndarray]] = None,
                         signal_fn: Optional[Callable[[np.ndarray, float], np.ndarray]] = None,
                         doses: Sequence[float] = VALIDATION_DOSES, gain: float = AMPLIFY_GAIN,
                         seed: int = 0) -> Dict:
    """The held-out figures of one case (module docstring).

    t1, t1c: (Z, Y, X) float32 standardised on the T1's scale; brain: bool. ``virtual_fn(low, dose_channel)``
    → virtual T1c (the network on this case with that low-dose image); ``signal_fn(low, dose)`` → predicted
    standard-dose signal (differential). Returns {"doses": {d: {"low", "physics", "network"?, "differential"?}},
    "amplification": {...}?}. Raises NeuroContrastError on an empty brain or no enhancement.
    """
    from neurocontrast.contrast.lowdose import simulate_lowdose
    from neurocontrast.contrast.physics import dose_extrapolation

    brain = np.asarray(brain, dtype=bool)
    enh = enhancing_voxels(t1, t1c, brain)
    out: Dict = {"enhancing_voxels": int(enh.sum()), "doses": {}}
    for i, d in enumerate(doses):
        low = np.where(brain, simulate_lowdose(t1, t1c, d, brain, seed=seed + i).image, 0.0).astype(np.float32)
        phys = dose_extrapolation(t1, low, d, brain)
        row = {"low": image_row(low, t1, t1c, brain, enh), "physics": image_row(phys.full, t1, t1c, brain, enh)}
        if virtual_fn is not None:
            row["network"] = image_row(np.where(brain, virtual_fn(low, d), 0.0), t1, t1c, brain, enh)
        real = float(np.mean(t1c[enh] - t1[enh]))
        row["physics_signal_ratio"] = round(float(np.mean(phys.signal[enh])) / real, 3)
        if signal_fn is not None:
            row["differential_signal_ratio"] = round(float(np.mean(signal_fn(low, d)[enh])) / real, 3)
        out["doses"][f"{d:g}"] = row
    if virtual_fn is not None:
        from scipy import ndimage

        normal = brain & ~ndimage.binary_dilation(enh, iterations=2)
        amp, rows = t1c, {}
        for k in (1, 2):
            amp = np.where(brain, virtual_fn(amp, 1.0 / gain), 0.0)
            rows[f"repeat{k}"] = {"enhancement_factor": round(_restored(amp, t1, t1c, enh), 3),
                                  "normal_brain_ratio": round(float(np.median(amp[normal]) / np.median(t1c[normal])), 4)}
        out["amplification"] = {"gain_asked": gain, **rows}
    return out
