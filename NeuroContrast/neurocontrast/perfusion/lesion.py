"""Hypoperfused tissue from Tmax, and the perfusion–core mismatch (DEFUSE-3 target mismatch).

- Hypoperfusion: voxels inside the brain with Tmax above a threshold (4, 6, 8, 10 s; Tmax > 6 s is the
  critically hypoperfused tissue of DEFUSE-3, Albers et al., NEJM 378:708, 2018). Connected components
  (26-connectivity, ``scipy.ndimage.label``) smaller than ``min_island_ml`` (default 1.0 mL, see
  :data:`MIN_ISLAND_ML`) are removed before volumes are reported, as automated stroke software does.
- Infarct core from ADC (:func:`adc_core`): ADC < 620 × 10⁻⁶ mm²/s inside the brain (the RAPID MRI rule,
  Purushotham et al., Int J Stroke 10:348, 2015; DEFUSE-3), without the brain's edge, without voxels next
  to CSF and without clusters below 0.1 mL; optionally DWI-hyperintense.
- Mismatch (DEFUSE-3): mismatch volume = hypoperfused − core (mL), ratio = hypoperfused / core;
  target mismatch when core < 70 mL, ratio >= 1.8 and mismatch volume >= 15 mL.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Sequence

import numpy as np

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.io import Geometry

log = logging.getLogger(__name__)

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
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask.copy()
    box = ndimage.find_objects(mask.astype(np.uint8))[0]            # label the mask's bounding box only
    labels, n = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    out = np.zeros(mask.shape, bool)
    out[box] = keep[labels]
    return out


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
    return mismatch_volumes(np.count_nonzero(hypo) * voxel_ml, np.count_nonzero(core) * voxel_ml)


# ------------------------------------------------------------------------------------------------ ADC core

#: ADC threshold of the ischaemic core, mm²/s (RAPID: 620 × 10⁻⁶ mm²/s; Purushotham et al. 2015).
ADC_CORE_THRESHOLD_MM2_S = 620e-6
#: ADC above which a voxel is CSF (free water ≈ 3 × 10⁻³ mm²/s at 37 °C; tissue ≤ 1.2 × 10⁻³), mm²/s.
ADC_CSF_MM2_S = 2.0e-3
#: Smallest connected core cluster kept, mL (isolated low-ADC voxels are noise and edge artefacts).
ADC_MIN_CLUSTER_ML = 0.1
#: With a DWI: the core must also be brighter than this multiple of the brain's median DWI.
DWI_HYPERINTENSITY_RATIO = 1.3
#: Units an ADC map may come in, as factors to mm²/s.
ADC_UNITS = {"mm2/s": 1.0, "1e-3 mm2/s": 1e-3, "1e-6 mm2/s": 1e-6}


@dataclasses.dataclass
class CoreResult:
    """Infarct core from ADC.

    mask : (Z, Y, X) bool on the ADC grid. volume_ml : float. unit : the ADC unit used (a key of
    :data:`ADC_UNITS`) and ``unit_source`` ("given" or "inferred from the brain median ...").
    steps_ml : the volume after each step (threshold, edge, CSF, clusters, DWI), mL. parameters : the rule.
    """

    mask: np.ndarray
    volume_ml: float
    unit: str
    unit_source: str
    steps_ml: Dict[str, float]
    parameters: Dict[str, object]

    def as_dict(self) -> Dict[str, object]:
        """Everything but the mask (for report.json)."""
        return {"core_ml": self.volume_ml, "adc_unit": self.unit, "adc_unit_source": self.unit_source,
                "steps_ml": dict(self.steps_ml), "parameters": dict(self.parameters)}


@dataclasses.dataclass
class DiffusionImages:
    """The diffusion images of the same session: ``adc`` (Z, Y, X) float on ``geometry`` (its own grid, need
    not be the DSC grid), optional ``dwi`` (trace, b = 1000 s/mm², same grid), ``unit`` of the ADC (a key of
    :data:`ADC_UNITS`, None = inferred) and ``name`` (for messages)."""

    adc: np.ndarray
    geometry: Geometry
    dwi: Optional[np.ndarray] = None
    unit: Optional[str] = None
    name: str = "ADC"


def adc_unit(adc: np.ndarray, brain: np.ndarray, unit: Optional[str] = None):
    """The unit of an ADC map: given, or inferred from the median over the brain.

    Normal brain (with some CSF) has a median ADC of 0.6–2.0 × 10⁻³ mm²/s, so a median in [0.4, 2.5]
    × 10⁻³ means mm²/s, in [0.4, 2.5] means 10⁻³ mm²/s, in [400, 2500] means 10⁻⁶ mm²/s (µm²/s).
    Returns ``(unit key, factor to mm²/s, source text)``. Raises NeuroContrastError on an unknown unit or
    a median that fits none of them (a DWI or an exponential ADC passed as ADC, a scaled integer map).
    """
    if unit is not None:
        if unit not in ADC_UNITS:
            raise NeuroContrastError(f"unknown ADC unit {unit!r}; expected one of {', '.join(ADC_UNITS)}")
        return unit, ADC_UNITS[unit], "given"
    med = float(np.median(adc[brain]))
    for key, factor in ADC_UNITS.items():
        if 0.4e-3 <= med * factor <= 2.5e-3:
            return key, factor, f"inferred from the brain median {med:.4g}"
    raise NeuroContrastError(f"the ADC map's brain median is {med:.4g}, which fits no ADC unit (expected about "
                             "1e-3 mm²/s, 1 × 1e-3 mm²/s or 1000 × 1e-6 mm²/s): is it an ADC map? Give its unit")


def adc_core(adc: np.ndarray, geometry: Geometry, *, brain_mask: Optional[np.ndarray] = None,
             dwi: Optional[np.ndarray] = None, unit: Optional[str] = None,
             threshold_mm2_s: float = ADC_CORE_THRESHOLD_MM2_S, csf_mm2_s: float = ADC_CSF_MM2_S,
             min_cluster_ml: float = ADC_MIN_CLUSTER_ML, edge_voxels: int = 1,
             dwi_ratio: float = DWI_HYPERINTENSITY_RATIO) -> CoreResult:
    """Infarct core: ADC < 620 × 10⁻⁶ mm²/s inside the brain, cleaned so that the volume means something.

    A bare threshold over a skull-stripped ADC marks partial volume at the brain's edge and next to CSF,
    susceptibility and noise voxels: on the ISLES 2022 case in ../shared/data/stroke it marks 57.3 mL where
    the expert infarct is 6.7 mL (docs/perfusion.md). Steps:

    1. brain: ``brain_mask``, or ADC > 0 (skull-stripped maps are 0 outside), eroded in plane by
       ``edge_voxels`` (8-neighbourhood per slice, so that thick-slice slabs keep their voxels) — the outer
       shell mixes tissue with background;
    2. ADC < ``threshold_mm2_s`` (RAPID MRI: 620 × 10⁻⁶ mm²/s, Purushotham et al. 2015);
    3. CSF exclusion: voxels with a 26-neighbour of ADC > ``csf_mm2_s`` (2 × 10⁻³ mm²/s) are dropped
       (partial volume and Gibbs ringing at the CSF border give falsely low ADC);
    4. with a ``dwi`` on the same grid: only voxels brighter than ``dwi_ratio`` × the brain's median DWI
       (restricted diffusion is DWI-bright; dark low-ADC voxels are artefacts);
    5. 26-connected clusters smaller than ``min_cluster_ml`` (0.1 mL) are removed.

    Parameters
    ----------
    adc : (Z, Y, X) float ADC map. geometry : its grid. brain_mask : (Z, Y, X) bool (optional).
    dwi : (Z, Y, X) float trace DWI (b = 1000 s/mm², optional). unit : a key of :data:`ADC_UNITS`, or None
    to infer it (:func:`adc_unit`, logged). Thresholds in mm²/s; min_cluster_ml in mL; edge_voxels >= 0.

    Returns
    -------
    :class:`CoreResult`.

    Raises
    ------
    GeometryError : a mask or the DWI not on the ADC grid. NeuroContrastError : NaN in the ADC, an empty
    brain, an ADC of unknown unit, parameters out of range.
    """
    from scipy import ndimage

    adc = _check_volume(adc, geometry, "ADC").astype(np.float64)
    if not np.all(np.isfinite(adc)):
        raise NeuroContrastError("the ADC map contains NaN or infinite values")
    if not (0 < threshold_mm2_s < csf_mm2_s) or min_cluster_ml < 0 or int(edge_voxels) < 0 or dwi_ratio <= 0:
        raise NeuroContrastError("adc_core needs 0 < threshold < csf threshold, min_cluster_ml >= 0, "
                                 "edge_voxels >= 0 and dwi_ratio > 0")
    brain = (adc > 0) if brain_mask is None else _check_volume(brain_mask, geometry, "brain mask").astype(bool)
    if not brain.any():
        raise NeuroContrastError("the ADC map has no brain voxel (all <= 0 and no brain mask)")
    key, factor, source = adc_unit(adc, brain, unit)
    if source != "given":
        log.info("ADC unit %s (%s)", key, source)
    adc_si = adc * factor
    voxel_ml = geometry.voxel_volume_ml
    st = np.ones((3, 3, 3), bool)
    steps: Dict[str, float] = {}
    core = brain & (adc_si < threshold_mm2_s)
    steps["threshold"] = float(core.sum() * voxel_ml)
    # in plane: a slab of few thick slices would lose every voxel to a 3D erosion
    inner = (ndimage.binary_erosion(brain, np.ones((1, 3, 3), bool), iterations=int(edge_voxels))
             if int(edge_voxels) else brain)
    core &= inner
    steps["without_edge"] = float(core.sum() * voxel_ml)
    csf = ndimage.binary_dilation(brain & (adc_si > csf_mm2_s), st)
    core &= ~csf
    steps["without_csf_border"] = float(core.sum() * voxel_ml)
    if dwi is not None:
        dwi = _check_volume(dwi, geometry, "DWI").astype(np.float64)
        core &= dwi > dwi_ratio * float(np.median(dwi[brain]))
        steps["dwi_hyperintense"] = float(core.sum() * voxel_ml)
    core = remove_small_islands(core, int(np.ceil(min_cluster_ml / voxel_ml - 1e-9)))
    steps["without_small_clusters"] = float(core.sum() * voxel_ml)
    params = {"threshold_mm2_s": threshold_mm2_s, "csf_mm2_s": csf_mm2_s, "min_cluster_ml": min_cluster_ml,
              "edge_voxels": int(edge_voxels), "dwi": dwi is not None,
              "dwi_ratio": dwi_ratio if dwi is not None else None}
    return CoreResult(mask=core, volume_ml=steps["without_small_clusters"], unit=key, unit_source=source,
                      steps_ml=steps, parameters=params)


def mismatch_volumes(hypoperfused_ml: float, core_ml: float) -> Dict[str, object]:
    """DEFUSE-3 mismatch from volumes alone (core and hypoperfusion measured on different grids, e.g. the
    ADC and the DSC series, without co-registration): the same keys as :func:`mismatch`."""
    hypo_ml, core_ml = float(hypoperfused_ml), float(core_ml)
    if hypo_ml < 0 or core_ml < 0:
        raise NeuroContrastError(f"volumes must be >= 0 mL, got hypoperfused {hypo_ml}, core {core_ml}")
    mismatch_ml = hypo_ml - core_ml
    ratio = hypo_ml / core_ml if core_ml > 0 else (float("inf") if hypo_ml > 0 else float("nan"))
    target = bool(core_ml < DEFUSE3_MAX_CORE_ML and ratio >= DEFUSE3_MIN_RATIO
                  and mismatch_ml >= DEFUSE3_MIN_MISMATCH_ML)
    return {"core_ml": core_ml, "hypoperfused_ml": hypo_ml, "mismatch_ml": mismatch_ml, "ratio": ratio,
            "target_mismatch": target,
            "criteria": {"core_ml_below": DEFUSE3_MAX_CORE_ML, "ratio_at_least": DEFUSE3_MIN_RATIO,
                         "mismatch_ml_at_least": DEFUSE3_MIN_MISMATCH_ML}}
