"""The physics baseline of virtual contrast: linear dose extrapolation of the enhancement.

Gadolinium enhancement on T1-weighted images is close to linear in dose at clinical concentrations (the
assumption behind every simulated-dose experiment in the papers). A low-dose image is then
``low = pre' + d · z + n`` with ``pre' = a · pre + b`` the radiometrically matched pre-contrast T1 and ``z``
the standard-dose enhancement, so the standard dose is extrapolated as

    full ≈ pre' + p ⊙ (low − pre') / d

with ``p = sigmoid(w · (low − pre') + b)`` the noise-aware soft enhancement mask of Pinetz et al.: σ from the
negative half of the subtraction inside the brain (contrast only raises the signal, so values below zero are
noise), p = 0.5 at 3 σ. Without the mask the 1/d gain would multiply the subtraction noise everywhere
(4× at d = 0.25); with it non-enhancing brain keeps the pre-contrast T1's noise and enhancing voxels get the
full gain. This is what a network has to beat (`contrast virtual --method physics`, the ``physics`` row of
`evaluate contrast`).

Sources: radiometric matching, σ from the negative half and the soft mask p: Pinetz et al., MIDL short paper
and arXiv:2403.03539 (Method; :mod:`neurocontrast.contrast.subtraction`); linear dose response: the
simulated-dose protocols of Ammari et al. 2022 and Pinetz et al. 2023.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from neurocontrast.contrast.lowdose import check_dose
from neurocontrast.contrast.subtraction import RadiometricMatch, enhancement_mask, noise_sigma, radiometric_match
from neurocontrast.errors import NeuroContrastError

#: soft-mask threshold (in σ) and width of :func:`neurocontrast.contrast.subtraction.enhancement_mask`
THRESHOLD_SIGMA = 3.0
WIDTH = 0.5


@dataclasses.dataclass
class DoseExtrapolation:
    """Result of :func:`dose_extrapolation`: arrays (Z, Y, X) float32 in the low-dose image's units.

    full: extrapolated standard-dose image; signal: its enhancement p ⊙ (low − pre') / d; mask_p: soft
    enhancement mask; pre_matched: a · pre + b. dose, sigma (noise SD of low − pre'), match.
    """

    full: np.ndarray
    signal: np.ndarray
    mask_p: np.ndarray
    pre_matched: np.ndarray
    dose: float
    sigma: float
    match: RadiometricMatch

    def parameters(self) -> dict:
        """Scalars for reports (JSON-able)."""
        return {"method": "physics: pre' + p ⊙ (low − pre') / d", "dose": self.dose, "sigma": self.sigma,
                "match_scale": self.match.scale, "match_offset": self.match.offset,
                "threshold_sigma": THRESHOLD_SIGMA, "width": WIDTH}


def dose_extrapolation(pre: np.ndarray, low: np.ndarray, dose: float, brain: Optional[np.ndarray] = None, *,
                       threshold_sigma: float = THRESHOLD_SIGMA, width: float = WIDTH,
                       match: Optional[RadiometricMatch] = None) -> DoseExtrapolation:
    """Extrapolate a low-dose T1c to the standard dose (see the module docstring).

    pre, low: (Z, Y, X) co-registered pre-contrast T1 and low-dose T1c (any units; ``low``'s are kept).
    dose: the low dose as a fraction of the standard dose, (0, 1]. brain: bool mask (default: voxels where
    ``low`` is non-zero). ``match``: a radiometric match to reuse (else fitted robustly). Outside the brain
    the result is ``low``. Raises NeuroContrastError on a dose outside (0, 1], shape mismatch, NaNs, a
    tiny mask or a subtraction without negative values.
    """
    dose = check_dose(dose)
    pre = np.asarray(pre, dtype=np.float32)
    low = np.asarray(low, dtype=np.float32)
    if pre.shape != low.shape:
        raise NeuroContrastError(f"pre shape {pre.shape} differs from low-dose shape {low.shape}; co-register first")
    brain = (low != 0) if brain is None else np.asarray(brain, dtype=bool)
    if match is None:
        match = radiometric_match(pre, low, brain)
    pre_m = match.apply(pre)
    z = (low - pre_m).astype(np.float32)
    sigma = noise_sigma(z, brain)
    if not sigma > 0:
        raise NeuroContrastError("the subtraction low − pre has no noise inside the brain (identical images?)")
    p = enhancement_mask(z, sigma, threshold_sigma, width)
    signal = np.where(brain, p * z / dose, 0.0).astype(np.float32)
    full = np.where(brain, pre_m + signal, low).astype(np.float32)
    return DoseExtrapolation(full, signal, np.where(brain, p, 0.0).astype(np.float32), pre_m, dose, float(sigma),
                             match)
