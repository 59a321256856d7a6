"""Low-dose T1c simulation from a pre- and a post-contrast T1 (training and testing data).

Public API
----------
``simulate_lowdose(pre, post, dose=0.25, brain_mask=None, seed=0) -> LowDoseResult``
    arrays (z, y, x) on one grid (co-registered); returns the simulated low-dose image and its parameters.
``simulate_lowdose_files(pre_path, post_path, dose, out_path, seed=0, brain_mask_path=None) -> dict``
    reads two files, co-registers pre to post rigidly when their grids differ, writes the low-dose image in
    the native geometry of ``post`` plus a JSON sidecar ``<out>.json`` with every parameter. This is what
    ``neurocontrast contrast simulate-lowdose --pre T1 --post C --dose D --out OUT`` calls.
``check_dose(dose) -> float``   dose fraction in (0, 1], else NeuroContrastError.

Model (Pinetz et al. MIDL short paper and 2023 MICCAI: the noise must be preserved, not smoothed away)
-----------------------------------------------------------------------------------------------------
1. radiometric matching pre' = a · pre + b (robust fit on non-enhancing brain);
2. enhancement z̃ = post − pre'; its noise σ_sub from the negative half inside the brain;
3. low = pre' + d · z̃ + n, n ~ N(0, σ_add²).  With independent acquisition noise σ_a = σ_sub / √2 in pre
   and post, pre' + d · z̃ = (1 − d) pre' + d · post carries noise σ_a √((1 − d)² + d²) < σ_a, i.e. it is
   too smooth for a real acquisition. σ_add = σ_a √(1 − (1 − d)² − d²) = σ_a √(2 d (1 − d))
   restores the total noise of one acquisition, σ_a (d = 1 returns post exactly).
Gadolinium enhancement is taken as linear in dose (T1-weighted signal at clinical concentrations); this is
the same simplification as the papers' simulated-dose experiments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from neurocontrast.contrast.subtraction import noise_sigma, radiometric_match
from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)


def check_dose(dose) -> float:
    """The dose fraction as float; NeuroContrastError unless 0 < dose ≤ 1 (fraction of the standard dose)."""
    try:
        value = float(dose)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"dose must be a number in (0, 1] (fraction of the standard dose), "
                                 f"got {dose!r}") from None
    if not np.isfinite(value) or not 0.0 < value <= 1.0:
        raise NeuroContrastError(f"dose must be in (0, 1] (fraction of the standard dose, e.g. 0.25), got {dose!r}")
    return value


@dataclasses.dataclass
class LowDoseResult:
    """Simulated low-dose image (z, y, x) float32 in post units and the parameters used."""

    image: np.ndarray
    dose: float
    scale: float
    offset: float
    sigma_subtraction: float
    sigma_acquisition: float
    sigma_added: float
    seed: int

    def parameters(self) -> dict:
        """Every parameter (JSON serialisable), without the image."""
        d = dataclasses.asdict(self)
        d.pop("image")
        return d


def _default_mask(post: np.ndarray) -> np.ndarray:
    """Foreground of a post-contrast image: non-zero voxels if skull-stripped, else Otsu + hole filling."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if (post == 0).mean() >= 0.3:
        return post != 0
    fg = post > threshold_otsu(post)
    return ndimage.binary_fill_holes(fg)


def simulate_lowdose(pre: np.ndarray, post: np.ndarray, dose: float = 0.25, brain_mask: Optional[np.ndarray] = None,
                     seed: int = 0, sigma_acquisition: Optional[float] = None) -> LowDoseResult:
    """Simulate a low-dose post-contrast T1 (see the module docstring for the model and its source).

    pre, post: (z, y, x) arrays on one grid (co-registered), float, same units up to a linear map.
    dose: fraction of the standard dose in (0, 1]. brain_mask: bool (z, y, x) for the radiometric fit and
    the noise estimate (default: the image foreground). seed: random generator seed (reproducible noise).
    sigma_acquisition: the noise SD of one acquisition in post units when known (e.g. measured in air or on
    a repeat scan); by default σ_sub/√2. When pre and post are different sequences (BraTS T1 vs T1c) the
    subtraction "noise" includes structural mismatch and the default overestimates it.
    Returns :class:`LowDoseResult` (image float32, post units; negative values are kept, as in the data).
    Raises NeuroContrastError on a dose outside (0, 1], shapes that differ, non-3D arrays, NaNs, a tiny mask.
    """
    dose = check_dose(dose)
    pre = np.asarray(pre, dtype=np.float64)
    post = np.asarray(post, dtype=np.float64)
    if pre.ndim != 3 or post.ndim != 3:
        raise NeuroContrastError(f"pre and post must be 3D volumes, got {pre.ndim}D and {post.ndim}D")
    if pre.shape != post.shape:
        raise NeuroContrastError(f"pre shape {pre.shape} differs from post shape {post.shape}; co-register first")
    if not (np.all(np.isfinite(pre)) and np.all(np.isfinite(post))):
        raise NeuroContrastError("pre or post contains NaN or infinite values")
    mask = _default_mask(post) if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    match = radiometric_match(pre, post, mask)
    pre_m = match.scale * pre + match.offset
    z = post - pre_m
    sigma_sub = noise_sigma(z, mask)
    if sigma_acquisition is None:
        sigma_a = sigma_sub / np.sqrt(2.0)
    else:
        sigma_a = float(sigma_acquisition)
        if not np.isfinite(sigma_a) or sigma_a < 0:
            raise NeuroContrastError(f"sigma_acquisition must be a finite value >= 0, got {sigma_acquisition!r}")
    sigma_add = sigma_a * np.sqrt(max(0.0, 2.0 * dose * (1.0 - dose)))
    rng = np.random.default_rng(seed)
    low = pre_m + dose * z
    if sigma_add > 0:
        low = low + rng.normal(0.0, sigma_add, size=low.shape)
    return LowDoseResult(low.astype(np.float32), dose, match.scale, match.offset, float(sigma_sub), float(sigma_a),
                         float(sigma_add), int(seed))


def simulate_lowdose_files(pre_path, post_path, dose: float, out_path, seed: int = 0,
                           brain_mask_path=None) -> dict:
    """File version of :func:`simulate_lowdose` for ``neurocontrast contrast simulate-lowdose``.

    Reads ``pre_path`` and ``post_path`` (3D; NIfTI/NRRD/DICOM folder). If their grids differ, pre is
    co-registered rigidly to post (Mattes MI, as in preprocessing) and resampled onto post's grid (B-spline,
    logged). Writes the low-dose image to ``out_path`` on post's exact native grid and a JSON sidecar
    (``out_path`` with ``.json`` replacing the image extension) with the parameters. Returns
    ``{"image": out_path, "parameters": sidecar path, **parameters}``.
    Raises NeuroContrastError for a bad dose (checked first), missing files, 2D/NaN images, mismatched
    sequences (no physical overlap) or a brain mask on another grid.
    """
    import SimpleITK as sitk

    from neurocontrast.contrast.preprocessing import (REGISTRATION_PRESETS, _register, _resample,
                                                      validate_inputs)
    from neurocontrast.io import Geometry, read_mask

    dose = check_dose(dose)
    loaded = validate_inputs({"post": post_path, "pre": pre_path}, reference="post")
    pre_img, post_img = loaded["pre"], loaded["post"]
    geometry = Geometry.from_image(post_img)
    registered = False
    if not Geometry.from_image(pre_img).same_as(geometry):
        log.warning("pre and post grids differ: registering pre rigidly to post and resampling it (B-spline)")
        init = sitk.CenteredTransformInitializer(post_img, pre_img, sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
        tr, _ = _register(post_img, pre_img, sitk.Euler3DTransform(init), REGISTRATION_PRESETS["default"])
        pre_img = _resample(pre_img, geometry, tr, "bspline")
        registered = True
    pre = sitk.GetArrayFromImage(pre_img)
    post = sitk.GetArrayFromImage(post_img)
    mask = None
    if brain_mask_path is not None:
        mask = read_mask(os.fspath(brain_mask_path), geometry, "brain mask", "the post-contrast image")
    result = simulate_lowdose(pre, post, dose, mask, seed)
    out_path = os.fspath(out_path)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(geometry.to_image(result.image), out_path, useCompression=True)
    base = out_path[:-7] if out_path.endswith(".nii.gz") else os.path.splitext(out_path)[0]
    sidecar = base + ".json"
    params = result.parameters() | {"pre": os.fspath(pre_path), "post": os.fspath(post_path),
                                    "pre_registered_to_post": registered,
                                    "brain_mask": None if brain_mask_path is None else os.fspath(brain_mask_path),
                                    "model": "pre' + dose·(post − pre') + N(0, σ_add²), Pinetz noise-preserving"}
    Path(sidecar).write_text(json.dumps(params, indent=1))
    return {"image": out_path, "parameters": sidecar, **params}
