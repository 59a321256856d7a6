"""Hypoperfused tissue from Tmax, and the perfusion–core mismatch (DEFUSE-3 target mismatch).

- Hypoperfusion: voxels inside the brain with Tmax above a threshold (4, 6, 8, 10 s; Tmax > 6 s is the
  critically hypoperfused tissue of DEFUSE-3, Albers et al., NEJM 378:708, 2018). Connected components
  (26-connectivity, ``scipy.ndimage.label``) smaller than ``min_island_ml`` (default 1.0 mL, see
  :data:`MIN_ISLAND_ML`) are removed before volumes are reported, as automated stroke software does.
- Mismatch (DEFUSE-3): mismatch volume = hypoperfused − core (mL), ratio = hypoperfused / core;
  target mismatch when core < 70 mL, ratio >= 1.8 and mismatch volume >= 15 mL.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.io import Geometry

#: Default hypoperfusion thresholds of Tmax in s.
TMAX_THRESHOLDS = (4.0, 6.0, 8.0, 10.0)
#: Default smallest connected component kept in a hypoperfusion mask, mL. 1 mL is a sphere of 12.4 mm
#: diameter, about 2 % of the 70 mL core limit of DEFUSE-3: islands below it do not change a treatment
#: decision and are mostly noise, vessels or CSF-edge artefacts of the Tmax map.
MIN_ISLAND_ML = 1.0
#: DEFUSE-3 target-mismatch criteria.
DEFUSE3_MAX_CORE_ML = 70.0
DEFUSE3_MIN_RATIO = 1.8
DEFUSE3_MIN_MISMATCH_ML = 15.0


@dataclasses.dataclass
class HypoperfusionResult:
    """Tmax threshold masks and their volumes.

    masks : {threshold s: (Z, Y, X) bool}. volumes_ml : {threshold s: float mL}.
    min_island_ml : float, the island size removed.
    """

    masks: Dict[float, np.ndarray]
    volumes_ml: Dict[float, float]
    min_island_ml: float = MIN_ISLAND_ML

    def as_dict(self) -> Dict[str, float]:
        """``{"tmax_gt_6s_ml": ..., ...}`` for reports."""
        return {f"tmax_gt_{thr:g}s_ml": vol for thr, vol in self.volumes_ml.items()}


def remove_small_islands(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 26-connected components of ``mask`` with fewer than ``min_voxels`` voxels. (Z,Y,X) bool → bool."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def _check_volume(array: np.ndarray, geometry: Geometry, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise GeometryError(f"{name} has shape {array.shape} but the geometry is (z, y, x) = {geometry.shape} "
                            f"({geometry.describe()})")
    return array


def hypoperfusion(tmax: np.ndarray, geometry: Geometry, brain_mask: Optional[np.ndarray] = None,
                  thresholds: Sequence[float] = TMAX_THRESHOLDS,
                  min_island_ml: float = MIN_ISLAND_ML) -> HypoperfusionResult:
    """Tmax > threshold masks inside the brain, with islands below ``min_island_ml`` removed.

    Parameters
    ----------
    tmax : (Z, Y, X) float, Tmax in s. geometry : :class:`Geometry` of the map (voxel volume).
    brain_mask : (Z, Y, X) bool, optional; voxels outside it are never hypoperfused.
    thresholds : Tmax thresholds in s (default 4, 6, 8, 10); each > 0.
    min_island_ml : smallest 26-connected component kept, mL (default 1.0; 0 keeps everything).

    Returns
    -------
    :class:`HypoperfusionResult` with masks (Z, Y, X) bool and volumes in mL (voxel count × voxel volume).

    Raises
    ------
    GeometryError : tmax or brain_mask shape differs from the geometry.
    NeuroContrastError : empty brain mask, threshold <= 0, min_island_ml < 0, NaN inside the brain.
    """
    tmax = _check_volume(tmax, geometry, "tmax").astype(np.float32, copy=False)
    if brain_mask is None:
        brain = np.ones(tmax.shape, dtype=bool)
    else:
        brain = _check_volume(brain_mask, geometry, "brain_mask").astype(bool)
        if not brain.any():
            raise NeuroContrastError("brain_mask is empty")
    if not np.all(np.isfinite(tmax[brain])):
        raise NeuroContrastError("tmax contains NaN or infinite values inside the brain")
    thr = [float(t) for t in thresholds]
    if not thr or any(not (np.isfinite(t) and t > 0) for t in thr):
        raise NeuroContrastError(f"Tmax thresholds must be positive seconds, got {list(thresholds)}")
    if not (np.isfinite(min_island_ml) and min_island_ml >= 0):
        raise NeuroContrastError(f"min_island_ml must be >= 0 mL, got {min_island_ml!r}")
    voxel_ml = geometry.voxel_volume_ml
    min_voxels = int(np.ceil(min_island_ml / voxel_ml)) if min_island_ml > 0 else 0
    masks, volumes = {}, {}
    for t in thr:
        mask = remove_small_islands((tmax > t) & brain, min_voxels)
        masks[t] = mask
        volumes[t] = float(np.count_nonzero(mask) * voxel_ml)
    return HypoperfusionResult(masks=masks, volumes_ml=volumes, min_island_ml=float(min_island_ml))


def mismatch(hypoperfused_mask: np.ndarray, core_mask: np.ndarray, geometry: Geometry) -> Dict[str, object]:
    """Perfusion–core mismatch summary (DEFUSE-3, Albers et al. NEJM 2018).

    Parameters
    ----------
    hypoperfused_mask : (Z, Y, X) bool, e.g. Tmax > 6 s. core_mask : (Z, Y, X) bool, ischaemic core
        (e.g. ADC < 620 µm²/s or rCBF < 30 %). geometry : the grid of both.

    Returns
    -------
    dict: core_ml, hypoperfused_ml, mismatch_ml (= hypoperfused − core, mL), ratio (hypoperfused / core;
    inf when the core is empty and the hypoperfusion is not, nan when both are empty), target_mismatch
    (bool: core < 70 mL and ratio >= 1.8 and mismatch >= 15 mL), and the criteria used.

    Raises GeometryError if a mask is not on ``geometry``.
    """
    hypo = _check_volume(hypoperfused_mask, geometry, "hypoperfused_mask").astype(bool)
    core = _check_volume(core_mask, geometry, "core_mask").astype(bool)
    voxel_ml = geometry.voxel_volume_ml
    core_ml = float(np.count_nonzero(core) * voxel_ml)
    hypo_ml = float(np.count_nonzero(hypo) * voxel_ml)
    mismatch_ml = hypo_ml - core_ml
    if core_ml > 0:
        ratio = hypo_ml / core_ml
    else:
        ratio = float("inf") if hypo_ml > 0 else float("nan")
    target = bool(core_ml < DEFUSE3_MAX_CORE_ML and ratio >= DEFUSE3_MIN_RATIO
                  and mismatch_ml >= DEFUSE3_MIN_MISMATCH_ML)
    return {"core_ml": core_ml, "hypoperfused_ml": hypo_ml, "mismatch_ml": mismatch_ml, "ratio": ratio,
            "target_mismatch": target,
            "criteria": {"core_ml_below": DEFUSE3_MAX_CORE_ML, "ratio_at_least": DEFUSE3_MIN_RATIO,
                         "mismatch_ml_at_least": DEFUSE3_MIN_MISMATCH_ML}}
