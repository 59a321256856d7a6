"""Perfusion maps from ΔR2* curves and an AIF: CBF, CBV, MTT, Tmax, TTP.

Formulas (Cao et al. eq. 4–7; Østergaard et al. MRM 36:715, 1996), with k(t) = CBF·R(t) the flow-scaled
residue from :func:`neurocontrast.perfusion.deconvolution.deconvolve` (1/s) and C_t, C_a the tissue and
arterial ΔR2* curves (1/s)::

    kH/ρ = (1 − H_large) / (1 − H_small) / ρ        [mL/g]   (0.55/0.75/1.04 = 0.705 by default)
    CBF  = max_t k(t) · kH/ρ · 100 · 60               [mL/100 g/min]
    CBV  = ∫C_t dt / ∫C_a dt · kH/ρ · 100             [mL/100 g]   (trapezoid over the whole series)
    MTT  = CBV / CBF · 60                             [s]          (central volume theorem)
    Tmax = argmax_t k(t) · Δt                         [s]          (circulant index i >= T → (i − 2T)·Δt),
           located between frames (parabola through the peak) and corrected for the regularisation lag
           (:func:`~neurocontrast.perfusion.deconvolution.tmax_calibration`)
    TTP  = argmax_t C_t(t) · Δt                       [s from the first frame of the series]

The hematocrit factor corrects for the difference between large-vessel (AIF) and capillary hematocrit:
tracer is confined to plasma, so ∫C_a over-represents the blood concentration seen by tissue by
(1 − H_small)/(1 − H_large) (Rempp et al., Radiology 193:637, 1994). Dividing by the density ρ (g/mL)
turns "per 100 mL of tissue" into "per 100 g".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Dict, Optional, Tuple

import numpy as np

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.perfusion.deconvolution import (CSVD_THRESHOLD, METHODS, OSVD_OI, SSVD_THRESHOLD,
                                                   TMAX_REFERENCE_MTTS_S, deconvolve, lag_corrected_tmax, osvd,
                                                   OSVD_THRESHOLDS, argmax_rows, residue_delay_s, residue_peak_s,
                                                   threadpool_limits, tikhonov_gcv_lambda, tmax_calibrations)
from neurocontrast.perfusion.signal import check_tr, spatial_mask
from neurocontrast.progress import ProgressCallback, report
from neurocontrast.threads import thread_map

log = logging.getLogger(__name__)

_SVD_DEFAULT_THRESHOLDS = {"ssvd": SSVD_THRESHOLD, "csvd": CSVD_THRESHOLD}

MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")
#: Unit of every map the pipeline can produce (networks may add ``tmax_uncertainty``), and of the volumes
#: and curves of its report. The one table the CLI report, the PNG and the Slicer nodes read.
MAP_UNITS = {"cbf": "mL/100 g/min", "cbv": "mL/100 g", "mtt": "s", "tmax": "s", "ttp": "s from first frame",
             "tmax_uncertainty": "s", "volumes": "mL", "delta_r2star": "1/s",
             "rcbf": "ratio to the reference region's median", "rcbv": "ratio to the reference region's median",
             "rmtt": "ratio to the reference region's median"}


@dataclasses.dataclass(frozen=True)
class PerfusionConstants:
    """Physiological constants of the CBF/CBV scaling.

    hematocrit_large : large-vessel hematocrit H_large (AIF), default 0.45, in [0, 1).
    hematocrit_small : small-vessel (capillary) hematocrit H_small, default 0.25, in [0, 1).
    density : brain tissue density ρ in g/mL, default 1.04.
    Raises NeuroContrastError on values outside those ranges.
    """

    hematocrit_large: float = 0.45
    hematocrit_small: float = 0.25
    density: float = 1.04

    def __post_init__(self):
        for name in ("hematocrit_large", "hematocrit_small"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value < 1):
                raise NeuroContrastError(f"{name} must be a fraction in [0, 1), got {value!r}")
        if not (np.isfinite(self.density) and self.density > 0):
            raise NeuroContrastError(f"density must be > 0 g/mL, got {self.density!r}")

    @property
    def kh_over_rho(self) -> float:
        """kH/ρ = (1 − H_large)/(1 − H_small)/ρ in mL/g (0.705 for the defaults)."""
        return (1.0 - self.hematocrit_large) / (1.0 - self.hematocrit_small) / self.density

    def as_dict(self) -> Dict[str, float]:
        """The constants and kH/ρ as a plain dict (for reports)."""
        d = dataclasses.asdict(self)
        d["kh_over_rho"] = self.kh_over_rho
        return d


@dataclasses.dataclass
class PerfusionMaps:
    """Perfusion maps, each (Z, Y, X) float32; 0 outside the brain mask.

    cbf mL/100 g/min, cbv mL/100 g, mtt s, tmax s, ttp s (from the series start). ``details``: how they
    were computed (e.g. the Tikhonov λ chosen by GCV, the Tmax rule), for the report.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    ttp: np.ndarray
    details: Dict[str, object] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> Dict[str, np.ndarray]:
        """``{"cbf": ..., "cbv": ..., "mtt": ..., "tmax": ..., "ttp": ...}``."""
        return {name: getattr(self, name) for name in MAP_NAMES}


def compute_maps(delta_r2star: np.ndarray, aif: np.ndarray, tr_s: float, *, method: str = "osvd",
                 brain_mask: Optional[np.ndarray] = None, constants: Optional[PerfusionConstants] = None,
                 progress: Optional[ProgressCallback] = None, chunk_size: int = 32768,
                 tmax_correction: bool = True, n_threads: Optional[int] = None, **method_params) -> PerfusionMaps:
    """CBF, CBV, MTT, Tmax and TTP maps by deconvolution (formulas in the module docstring).

    Parameters
    ----------
    delta_r2star : (T, Z, Y, X) float, tissue ΔR2* in 1/s (see :func:`~neurocontrast.perfusion.signal.delta_r2star`).
    aif : (T,) float, AIF ΔR2* in 1/s (partial-volume corrected, e.g. with
        :func:`~neurocontrast.perfusion.aif.rescale_aif_to_vof`).
    tr_s : float, frame interval in s.
    method : one of :data:`~neurocontrast.perfusion.deconvolution.METHODS`.
    brain_mask : (Z, Y, X) bool, voxels to compute (all voxels when None). Outside it every map is 0.
    constants : :class:`PerfusionConstants` (defaults 0.45, 0.25, 1.04).
    progress : callback(fraction, message).
    chunk_size : voxels deconvolved per block (bounds the memory to ~ chunk_size·2T·4 bytes per array per thread).
    n_threads : worker threads over the blocks (default: the CPUs this process may use).
    tmax_correction : True (default): Tmax is the residue peak located between frames
        (:func:`~neurocontrast.perfusion.deconvolution.residue_peak_s`) minus the lag that the method's
        regularisation puts on the peak for this AIF (:func:`~neurocontrast.perfusion.deconvolution.
        tmax_calibration`; per chosen threshold for oSVD). False: the frame of the maximum × Δt (Wu 2003;
        one to two frames late, docs/perfusion.md).
    **method_params : passed to :func:`~neurocontrast.perfusion.deconvolution.deconvolve`
        (osvd_oi, osvd_thresholds, ssvd_threshold, csvd_threshold, lambda_).

    Returns
    -------
    :class:`PerfusionMaps`, each (Z, Y, X) float32. MTT is 0 where CBF <= 0. Its ``details`` hold the
    Tikhonov λ chosen by generalised cross-validation over all brain voxels (``tikhonov_lambda``) and
    the Tmax rule (``tmax``).

    Raises
    ------
    NeuroContrastError : delta_r2star not 4D, AIF length differs from T, NaN/inf, tr_s <= 0, unknown method;
    GeometryError : brain_mask shape differs from (Z, Y, X); NeuroContrastError if the mask is empty.
    """
    data = np.asarray(delta_r2star)
    if data.ndim != 4:
        raise NeuroContrastError(f"delta_r2star must be a 4D series (T, Z, Y, X), got shape {data.shape}")
    aif = np.asarray(aif, dtype=np.float64)
    if aif.ndim != 1 or aif.shape[0] != data.shape[0]:
        raise NeuroContrastError(f"the AIF must be (T,) = ({data.shape[0]},) to match the series, got {aif.shape}")
    if str(method).lower() not in METHODS:
        raise NeuroContrastError(f"unknown deconvolution method {method!r}; expected one of {', '.join(METHODS)}")
    tr_s = check_tr(tr_s)
    constants = constants or PerfusionConstants()
    spatial = data.shape[1:]
    mask = spatial_mask(brain_mask, spatial)
    if not mask.any():
        raise NeuroContrastError("brain_mask is empty: no voxel to compute")
    t = data.shape[0]
    index = np.flatnonzero(mask.ravel())
    flat = data.reshape(t, -1)
    n = index.size
    scale = constants.kh_over_rho
    aif_area = float(np.trapezoid(aif, dx=tr_s))
    if aif_area <= 0:
        raise NeuroContrastError("the AIF area is <= 0: no bolus in the arterial curve")
    cbf = np.zeros(n, np.float32)
    cbv = np.zeros(n, np.float32)
    tmax = np.zeros(n, np.float32)
    ttp = np.zeros(n, np.float32)
    method = str(method).lower()
    params = dict(method_params)
    details: Dict[str, object] = {"tmax": "residue peak, sub-frame, lag-corrected" if tmax_correction
                                  else "frame of the residue maximum"}
    if method == "tikhonov":
        lam = params.get("lambda_")
        if lam is None or (isinstance(lam, str) and lam.lower() == "gcv"):
            report(progress, 0.0, "Tikhonov: λ by generalised cross-validation over the brain")
            tissue_all = flat[:, index].astype(np.float32)
            if not np.all(np.isfinite(tissue_all)):
                raise NeuroContrastError("delta_r2star contains NaN or infinite values inside the brain mask")
            lam = tikhonov_gcv_lambda(tissue_all, aif, tr_s)
            del tissue_all
            log.info("Tikhonov λ = %.4g × largest singular value (GCV over %d voxels)", lam, n)
        params["lambda_"] = float(lam)
        details["tikhonov_lambda"] = float(lam)
    # Tmax lag tables, one per threshold (oSVD: every candidate, cSVD tables) and reference MTT, with one SVD
    if method == "osvd":
        table_method, cuts = "csvd", [float(c) for c in (params.get("osvd_thresholds") or OSVD_THRESHOLDS)]
    elif method == "tikhonov":
        table_method, cuts = "tikhonov", [params["lambda_"]]
    else:
        table_method, cuts = method, [float(params.get(f"{method}_threshold", _SVD_DEFAULT_THRESHOLDS[method]))]
    tables = tmax_calibrations(aif, tr_s, table_method, cuts, TMAX_REFERENCE_MTTS_S) if tmax_correction else {}

    def _lag_corrected(k: np.ndarray, imax: np.ndarray, chosen: Optional[np.ndarray], mtt_est: np.ndarray) -> np.ndarray:
        peak = residue_peak_s(k, t, tr_s, index=imax)
        if chosen is None:
            return lag_corrected_tmax(peak, mtt_est, tables[cuts[0]])
        out = np.empty_like(peak)
        order = np.argsort(chosen, kind="stable")       # voxels grouped by their oSVD threshold
        values, starts = np.unique(chosen[order], return_index=True)
        for cut, lo, hi in zip(values, starts, list(starts[1:]) + [order.size]):
            sel = order[lo:hi]
            nearest = min(cuts, key=lambda c: abs(c - float(cut)))   # ``chosen`` holds the cuts in float32
            out[sel] = lag_corrected_tmax(peak[sel], mtt_est[sel], tables[nearest])
        return out

    report(progress, 0.0, f"{method} deconvolution of {n} voxels")
    done = [0]
    lock = threading.Lock()
    contiguous = n == mask.size

    def process(c0: int) -> None:   # one block of voxels; blocks run on worker threads (BLAS and ufuncs free the GIL)
        sl = slice(c0, min(n, c0 + chunk_size))
        # the voxels of a block (a slice, no copy, when every voxel is computed, as the pipeline does)
        tissue = (flat[:, sl] if contiguous else flat[:, index[sl]]).astype(np.float32, copy=False)
        if not np.all(np.isfinite(tissue)):
            raise NeuroContrastError("delta_r2star contains NaN or infinite values inside the brain mask")
        chosen = None
        if method == "osvd":
            k, chosen = osvd(tissue, aif, tr_s, oi=params.get("osvd_oi", OSVD_OI),
                             thresholds=params.get("osvd_thresholds"), chunk_size=params.get("chunk_size", 2048),
                             n_threads=1)
        else:
            k = deconvolve(tissue, aif, tr_s, method, **params)
        length = k.shape[0]
        imax = argmax_rows(k)
        kmax = k[imax, np.arange(k.shape[1])]
        area = np.trapezoid(tissue, dx=tr_s, axis=0)
        cbf[sl] = kmax * (scale * 6000.0)
        cbv[sl] = area / aif_area * (scale * 100.0)
        if tmax_correction:
            with np.errstate(divide="ignore", invalid="ignore"):
                mtt_est = area / aif_area / kmax                       # s; non-finite → shortest table
            tmax[sl] = _lag_corrected(k, imax, chosen, mtt_est)
        else:
            tmax[sl] = residue_delay_s(imax, t, length, tr_s)
        ttp[sl] = argmax_rows(tissue) * tr_s
        with lock:
            done[0] += sl.stop - sl.start
            report(progress, done[0] / n, f"{method}: {done[0]}/{n} voxels")

    # SciPy's OpenBLAS (oSVD's sgemm) must be loaded BEFORE the limit is set: loaded inside a worker, its
    # default threads came back at the first inner context's exit and thrashed the other worker (50 s vs 2.6 s)
    from scipy.linalg import blas  # noqa: F401

    with threadpool_limits(limits=1, user_api="blas"):   # one BLAS thread per worker
        thread_map(process, range(0, n, chunk_size), n_threads)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 0, cbv / np.where(cbf > 0, cbf, 1.0) * 60.0, 0.0).astype(np.float32)

    def _to_volume(values: np.ndarray) -> np.ndarray:
        vol = np.zeros(mask.size, np.float32)
        vol[index] = values
        return vol.reshape(spatial)

    return PerfusionMaps(cbf=_to_volume(cbf), cbv=_to_volume(cbv), mtt=_to_volume(mtt),
                         tmax=_to_volume(tmax), ttp=_to_volume(ttp), details=details)


def relative_to_reference(values: np.ndarray, reference_mask: np.ndarray) -> np.ndarray:
    """Normalise a map to the median inside a reference region (e.g. contralateral white matter): rCBF, rCBV.

    values : (Z, Y, X) float map. reference_mask : (Z, Y, X) bool.
    Returns float32 ``values / median(values[reference_mask])`` (dimensionless).
    Raises GeometryError on shape mismatch, NeuroContrastError if the reference is empty or its median <= 0.
    """
    values = np.asarray(values, dtype=np.float32)
    ref = np.asarray(reference_mask).astype(bool)
    if ref.shape != values.shape:
        raise GeometryError(f"reference_mask has shape {ref.shape} but the map has shape {values.shape}")
    if not ref.any():
        raise NeuroContrastError("reference_mask is empty: cannot normalise")
    med = float(np.median(values[ref]))
    if not (np.isfinite(med) and med > 0):
        raise NeuroContrastError(f"the median of the map in the reference region is {med:g}; it must be > 0")
    return (values / np.float32(med)).astype(np.float32)


#: Relative maps written by the pipeline: name → the absolute map normalised.
RELATIVE_MAPS = {"rcbf": "cbf", "rcbv": "cbv", "rmtt": "mtt"}


def contralateral_white_matter(maps: Dict[str, np.ndarray], brain_mask: np.ndarray, geometry, *,
                               hypoperfused_mask: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None,
                               baseline_signal: Optional[np.ndarray] = None, depth_mm: float = 10.0, normal_tmax_s: float = 4.0) -> Tuple[np.ndarray, Dict[str, object]]:
    """Contralateral normal-appearing white matter (NAWM), the usual reference of rCBF/rCBV/rMTT.

    1. side: the hemisphere (patient left/right of the brain's centroid, from the grid's direction cosines,
       DICOM LPS) holding less of ``hypoperfused_mask``; without hypoperfusion both hemispheres;
    2. white-matter-like: at least ``depth_mm`` inside the brain's edge (in-plane distance per slice, DSC
       slices being thick), and in the lower half of those deep voxels by the pre-bolus signal S0
       (``baseline_signal``: white matter is darker than grey matter on T2*-weighted EPI, and the choice
       then does not bias the perfusion medians) or, without S0, by CBV (white matter has about half the
       CBV of grey matter; deep grey nuclei and vessels fall in the upper half);
    3. normal-appearing: Tmax <= ``normal_tmax_s`` (when a Tmax map is given) and not in ``exclude``
       (AIF/VOF voxels, a core mask).

    maps : name → (Z, Y, X) float (needs ``cbv``; ``tmax`` optional). brain_mask : (Z, Y, X) bool.
    geometry : :class:`neurocontrast.io.Geometry`. Returns ``(mask (Z, Y, X) bool, info dict: side,
    voxels, volume_ml, rule)``. Raises NeuroContrastError when no voxel qualifies (brain too small or
    thin, everything hypoperfused): give a reference mask instead.
    """
    from scipy import ndimage

    brain = np.asarray(brain_mask, dtype=bool)
    if "cbv" not in maps:
        raise NeuroContrastError("a CBV map is needed to find normal-appearing white matter")
    cbv = np.asarray(maps["cbv"], dtype=np.float64)
    if cbv.shape != brain.shape:
        raise GeometryError(f"the CBV map has shape {cbv.shape} but the brain mask has shape {brain.shape}")
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty: no reference region")
    # patient left-right (LPS x) of every voxel: direction · (index · spacing), separable over the three axes
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    step = direction[0] * np.asarray(geometry.spacing, dtype=np.float64)     # mm of LPS x per index i, j, k
    lr = (np.arange(brain.shape[2])[None, None, :] * step[0] + np.arange(brain.shape[1])[None, :, None] * step[1]
          + np.arange(brain.shape[0])[:, None, None] * step[2])
    left = lr > lr[brain].mean()                  # LPS: +x is the patient's left
    side, region = "both", brain.copy()
    if hypoperfused_mask is not None:
        hypo = np.asarray(hypoperfused_mask, dtype=bool) & brain
        n_left, n_right = int((hypo & left).sum()), int((hypo & ~left).sum())
        if n_left != n_right:
            side = "right" if n_left > n_right else "left"
            region = brain & (~left if side == "right" else left)
    sx, sy = float(geometry.spacing[0]), float(geometry.spacing[1])
    depth = np.zeros(brain.shape)
    for z in np.flatnonzero(brain.any(axis=(1, 2))):   # slices holding brain only
        depth[z] = ndimage.distance_transform_edt(brain[z], sampling=(sy, sx))
    deep = region & (depth >= depth_mm)
    if "tmax" in maps:
        deep &= np.asarray(maps["tmax"]) <= normal_tmax_s
    if exclude is not None:
        deep &= ~np.asarray(exclude, dtype=bool)
    deep &= cbv > 0
    if not deep.any():
        raise NeuroContrastError(f"no normal-appearing white matter found ({side} hemisphere, >= {depth_mm:g} mm "
                                 "deep, normal Tmax): give a reference mask")
    if baseline_signal is not None:
        s0 = np.asarray(baseline_signal, dtype=np.float64)
        if s0.shape != brain.shape:
            raise GeometryError(f"baseline_signal has shape {s0.shape} but the brain mask has shape {brain.shape}")
        key, by = s0, "S0"
    else:
        key, by = cbv, "CBV"
    ref = deep & (key <= np.median(key[deep]))
    info = {"reference": "contralateral normal-appearing white matter (automatic)", "side": side,
            "voxels": int(ref.sum()), "volume_ml": float(ref.sum() * geometry.voxel_volume_ml),
            "rule": {"depth_mm": depth_mm, "normal_tmax_s": normal_tmax_s,
                     "white_matter": f"{by} at most the median of the deep voxels"}}
    return ref, info


def relative_maps(maps: Dict[str, np.ndarray], reference_mask: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
    """rCBF, rCBV, rMTT: each map divided by its median in the reference region (:func:`relative_to_reference`).

    maps : name → (Z, Y, X) float with cbf, cbv, mtt (those present are used). reference_mask : (Z, Y, X)
    bool. Returns ``({"rcbf": ..., "rcbv": ..., "rmtt": ...} float32 dimensionless, {"cbf": median in the
    reference, ...} in the maps' units)``. Raises as :func:`relative_to_reference`.
    """
    ref = np.asarray(reference_mask, dtype=bool)
    out, medians = {}, {}
    for rel, name in RELATIVE_MAPS.items():
        if name in maps:
            out[rel] = relative_to_reference(maps[name], ref)
            medians[name] = float(np.median(np.asarray(maps[name])[ref]))
    return out, medians
