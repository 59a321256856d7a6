"""The whole DSC perfusion job: DSC series + AIF/VOF/brain masks → maps, hypoperfusion, report, files.

:func:`run_perfusion` chains the core steps (Cao et al. eq. 1-8):

1. baseline detection and ΔR2*(t) = −ln(S/S0)/TE (eq. 1, :mod:`~neurocontrast.perfusion.signal`);
2. the AIF from a mask or from the automatic suggestion (:func:`~neurocontrast.perfusion.aif.suggest_aif`),
   rescaled to the VOF for partial volume (eq. 8) when a VOF mask is given;
3. the maps by a registered method (:data:`MAP_METHODS`): deconvolution (sSVD, cSVD, oSVD, Tikhonov;
   eq. 3-7 in :func:`~neurocontrast.perfusion.maps.compute_maps`) or a network (ST-Net, AIF-free Tmax net,
   from :mod:`neurocontrast.perfusion.deep`, imported only when chosen);
4. hypoperfusion masks and volumes for Tmax > 4/6/8/10 s and, with a core mask, the mismatch.

:func:`write_outputs` writes the maps as NIfTI on the DSC grid, ``report.json`` and ``overview.png``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report as report_progress, scaled

log = logging.getLogger(__name__)

#: Names of the maps written by :func:`write_outputs`, in display order.
MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")
#: Tmax thresholds (s) of the hypoperfusion masks; 6 s is the clinical one written as hypoperfusion.nii.gz.
THRESHOLDS_S = (4.0, 6.0, 8.0, 10.0)
HYPOPERFUSION_THRESHOLD_S = 6.0
#: Default in-plane Gaussian smoothing (FWHM, mm) of the tissue ΔR2* before deconvolution (0 = none).
#: Measured on the phantom at SNR 40 (6 noise seeds, oSVD): Dice of Tmax > 6 s 0.963-0.967 with 5 mm,
#: 0.895-0.925 without; CBV median ratio unchanged (docs/perfusion.md).
SMOOTHING_FWHM_MM = 5.0


@dataclasses.dataclass(frozen=True)
class MapMethod:
    """One entry of :data:`MAP_METHODS`.

    kind ``"deconvolution"``: ``target`` is a deconvolution method name of
    :data:`neurocontrast.perfusion.deconvolution.METHODS`, run through ``compute_maps``.
    kind ``"network"``: ``target`` is ``"module:function"`` with the signature
    ``fn(dsc, *, aif_signal (T,) float or None, brain_mask (Z,Y,X) bool, progress) -> dict of (Z,Y,X) float32``
    (keys among cbf, cbv, mtt, tmax, ttp, tmax_uncertainty), imported when first called.
    """

    name: str
    kind: str
    target: str
    needs_aif: bool = True
    description: str = ""

    def load(self) -> Callable:
        """The network callable (kind "network"); raises NeuroContrastError if its module is not installed."""
        if self.kind != "network":
            raise NeuroContrastError(f"map method {self.name!r} is a deconvolution method, not a network")
        module_name, func_name = self.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise NeuroContrastError(f"map method {self.name!r} needs {module_name}, which is not installed "
                                         f"in this build; use one of osvd, csvd, ssvd, tikhonov") from None
            raise
        func = getattr(module, func_name, None)
        if func is None:
            raise NeuroContrastError(f"map method {self.name!r}: {module_name} has no function {func_name}")
        return func


#: Registry of map methods: name → :class:`MapMethod`. Add an entry to plug in a new method.
MAP_METHODS: Dict[str, MapMethod] = {
    "osvd": MapMethod("osvd", "deconvolution", "osvd", True,
                      "block-circulant SVD with oscillation-index threshold (Wu et al. 2003)"),
    "csvd": MapMethod("csvd", "deconvolution", "csvd", True, "block-circulant truncated SVD (Wu et al. 2003)"),
    "ssvd": MapMethod("ssvd", "deconvolution", "ssvd", True, "standard truncated SVD (Østergaard et al. 1996)"),
    "tikhonov": MapMethod("tikhonov", "deconvolution", "tikhonov", True, "Tikhonov regularisation"),
    "stnet": MapMethod("stnet", "network", "neurocontrast.perfusion.deep:stnet_maps", True,
                       "spatiotemporal network (Cao et al.)"),
    "tmaxnet": MapMethod("tmaxnet", "network", "neurocontrast.perfusion.deep:tmaxnet_maps", False,
                         "AIF-free Tmax network"),
}


@dataclasses.dataclass
class PerfusionResult:
    """Everything :func:`run_perfusion` computed.

    maps : name → (Z, Y, X) float32 (cbf mL/100 g/min, cbv mL/100 g, mtt/tmax/ttp s; networks may add
        ``tmax_uncertainty``). geometry : the DSC grid. brain_mask, aif_mask, vof_mask : (Z, Y, X) bool
        (vof_mask None when not given). hypoperfusion : ``HypoperfusionResult`` (masks and volumes per
        threshold) or None when no Tmax map exists. times_s : (T′,) s of the frames used (non-steady-state
        frames dropped). aif : (T′,) ΔR2* AIF used (rescaled),
        aif_raw : before rescaling, vof : (T,) or None (1/s). report : the JSON-able report dict.
        core_mask : (Z, Y, X) bool or None. baseline_signal : (Z, Y, X) float32 mean pre-bolus signal S0.
    """

    maps: Dict[str, np.ndarray]
    geometry: Any
    brain_mask: np.ndarray
    aif_mask: Optional[np.ndarray]
    vof_mask: Optional[np.ndarray]
    hypoperfusion: Any
    times_s: np.ndarray
    aif: Optional[np.ndarray]
    aif_raw: Optional[np.ndarray]
    vof: Optional[np.ndarray]
    report: Dict[str, Any]
    core_mask: Optional[np.ndarray] = None
    baseline_signal: Optional[np.ndarray] = None

    @property
    def hypoperfusion_mask(self) -> Optional[np.ndarray]:
        """(Z, Y, X) bool Tmax > 6 s mask (None without a Tmax map)."""
        if self.hypoperfusion is None:
            return None
        return self.hypoperfusion.masks[HYPOPERFUSION_THRESHOLD_S]


def _check_mask(mask, shape, name: str, required: bool = False) -> Optional[np.ndarray]:
    if mask is None:
        if required:
            raise NeuroContrastError(f"{name} is required")
        return None
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise NeuroContrastError(f"{name} has shape {arr.shape} but the DSC volume grid is (z, y, x) = {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise NeuroContrastError(f"{name} contains NaN or infinite values")
    return arr != 0


def automatic_brain_mask(signal: np.ndarray, baseline=None) -> np.ndarray:
    """A head/brain mask from the DSC series when the user gives none.

    Otsu threshold (scikit-image) of the mean baseline signal, then per slice hole filling and the
    largest 3D connected component (scipy.ndimage). signal : (T, Z, Y, X); baseline : (start, stop) frames
    (all frames if None). Returns (Z, Y, X) bool. Raises NeuroContrastError if nothing is above the threshold.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    start, stop = baseline if baseline is not None else (0, signal.shape[0])
    mean = np.asarray(signal[start:stop], dtype=np.float32).mean(axis=0)
    if not np.any(mean > 0) or np.ptp(mean) == 0:
        raise NeuroContrastError("cannot derive a brain mask: the baseline signal is constant; give --brain-mask")
    mask = mean > threshold_otsu(mean)
    mask = ndimage.binary_opening(mask, structure=np.ones((1, 3, 3), bool))
    for k in range(mask.shape[0]):
        mask[k] = ndimage.binary_fill_holes(mask[k])
    lab, n = ndimage.label(mask)
    if n == 0:
        raise NeuroContrastError("cannot derive a brain mask from the DSC baseline signal; give --brain-mask")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _json_clean(value):
    """Make numpy scalars/arrays and non-finite floats JSON-safe (NaN/inf → None)."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_clean(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else None
    return value


def _map_summary(maps: Dict[str, np.ndarray], mask: np.ndarray) -> Dict[str, Dict[str, float]]:
    out = {}
    for name, arr in maps.items():
        vals = arr[mask]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            p5, p50, p95 = np.percentile(vals, [5, 50, 95])
            out[name] = {"median": float(p50), "p5": float(p5), "p95": float(p95), "mean": float(vals.mean())}
    return out


def run_perfusion(dsc, aif_mask=None, vof_mask=None, brain_mask=None, *, aif: str = "mask",
                  method: str = "osvd", constants=None, core_mask=None, smoothing_fwhm_mm: float = SMOOTHING_FWHM_MM,
                  progress: Optional[ProgressCallback] = None, **params) -> PerfusionResult:
    """Compute perfusion maps, hypoperfusion volumes and a report from a DSC series.

    Parameters
    ----------
    dsc : :class:`neurocontrast.io.DSCSeries` (signal (T, Z, Y, X), tr_s s, te_s s).
    aif_mask : (Z, Y, X) bool/int, the arterial voxels; required when ``aif="mask"``.
    vof_mask : (Z, Y, X), venous voxels (superior sagittal sinus); when given the AIF is rescaled so that
        its area equals the VOF's (partial-volume correction, Cao et al. eq. 8).
    brain_mask : (Z, Y, X); default an automatic Otsu mask of the baseline signal (:func:`automatic_brain_mask`).
    aif : ``"mask"`` or ``"auto"`` (Mouridsen 2006 clustering via ``suggest_aif``, within the brain mask).
    method : a key of :data:`MAP_METHODS` (osvd, csvd, ssvd, tikhonov, stnet, tmaxnet).
    constants : ``PerfusionConstants`` (hematocrits 0.45/0.25, density 1.04 g/mL by default).
    core_mask : (Z, Y, X) optional infarct core (e.g. ADC < 620); adds the mismatch summary.
    smoothing_fwhm_mm : in-plane Gaussian smoothing of the tissue ΔR2* inside the brain before
        deconvolution (:func:`smooth_in_mask`), FWHM in mm (default :data:`SMOOTHING_FWHM_MM` = 5; 0 = none).
        The AIF/VOF curves are taken unsmoothed, and the AIF/VOF voxels are left out of the smoothing.
    progress : callback(fraction, message). params : method parameters passed to ``compute_maps``
        (``osvd_oi``, ``ssvd_threshold``, ``lambda_`` ...).

    Returns
    -------
    :class:`PerfusionResult`.

    Raises
    ------
    NeuroContrastError : unknown method or aif mode, TE missing/≤ 0 for a deconvolution method, masks of a
        different shape, an empty AIF or VOF mask, an AIF mask outside the brain/head, a network method
        whose module is absent.
    """
    from neurocontrast.perfusion import aif as aif_mod
    from neurocontrast.perfusion import lesion, maps as maps_mod, signal as signal_mod

    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    method = str(method).lower()
    if method not in MAP_METHODS:
        raise NeuroContrastError(f"unknown perfusion method {method!r}; expected one of {', '.join(MAP_METHODS)}")
    entry = MAP_METHODS[method]
    if aif not in ("mask", "auto"):
        raise NeuroContrastError(f"aif must be 'mask' or 'auto', got {aif!r}")
    if smoothing_fwhm_mm is None or not np.isfinite(smoothing_fwhm_mm) or smoothing_fwhm_mm < 0:
        raise NeuroContrastError(f"smoothing_fwhm_mm must be >= 0 mm, got {smoothing_fwhm_mm!r}")
    signal = np.asarray(dsc.signal)
    if signal.ndim != 4:
        raise NeuroContrastError(f"the DSC series must be 4D (t, z, y, x), got shape {signal.shape}")
    shape = signal.shape[1:]
    tr_s = float(dsc.tr_s)
    if not (np.isfinite(tr_s) and tr_s > 0):
        raise NeuroContrastError(f"TR (frame interval) must be > 0 s, got {dsc.tr_s!r}")
    te_s = dsc.te_s
    if entry.kind == "deconvolution" and (te_s is None or not np.isfinite(te_s) or te_s <= 0):
        raise NeuroContrastError(f"TE must be a positive echo time in s for method {method} (give --te), got {te_s!r}")
    aif_mask = _check_mask(aif_mask, shape, "AIF mask")
    vof_mask = _check_mask(vof_mask, shape, "VOF mask")
    brain_mask = _check_mask(brain_mask, shape, "brain mask")
    core_mask = _check_mask(core_mask, shape, "core mask")
    if aif == "mask" and aif_mask is None and entry.needs_aif:
        raise NeuroContrastError("an AIF mask is required (or use aif='auto' / --aif auto)")
    if aif_mask is not None and not aif_mask.any():
        raise NeuroContrastError("the AIF mask is empty: it selects no voxel")
    if vof_mask is not None and not vof_mask.any():
        raise NeuroContrastError("the VOF mask is empty: it selects no voxel")
    constants = constants or maps_mod.PerfusionConstants()

    # 1. baseline and ΔR2*
    report_progress(progress, 0.0, "baseline")
    t0 = time.perf_counter()
    baseline = signal_mod.detect_baseline(signal, tr_s)
    brain_source = "given"
    if brain_mask is None:
        brain_mask = automatic_brain_mask(signal, baseline)
        brain_source = "automatic (Otsu of the baseline signal, largest component)"
        log.info("no brain mask given: automatic mask with %d voxels", int(brain_mask.sum()))
    if not brain_mask.any():
        raise NeuroContrastError("the brain mask is empty: it selects no voxel")
    s0 = signal[baseline[0]:baseline[1]].mean(axis=0)
    dr2 = None
    te_ok = te_s is not None and np.isfinite(te_s) and te_s > 0
    if not te_ok and aif == "auto":
        raise NeuroContrastError(f"TE must be a positive echo time in s for the automatic AIF (give --te), got {te_s!r}")
    if te_ok:  # networks work on the signal; ΔR2* then only feeds the AIF/VOF curves of the report
        dr2 = _delta_r2star(signal_mod, signal, te_s, baseline)
    timings["delta_r2star_s"] = time.perf_counter() - t0

    # 2. AIF / VOF
    t0 = time.perf_counter()
    aif_curve = aif_raw = vof_curve = None
    aif_q = vof_q = None
    factor = None
    if aif == "auto" and entry.needs_aif:
        report_progress(progress, 0.05, "suggesting AIF")
        aif_mask = np.asarray(aif_mod.suggest_aif(dr2, tr_s, brain_mask=brain_mask), dtype=bool)
        if not aif_mask.any():
            raise NeuroContrastError("the automatic AIF suggestion found no arterial voxel; draw an AIF mask")
    if aif_mask is not None and dr2 is not None:
        near_brain = _dilate(brain_mask, 3)
        if not (aif_mask & near_brain).any():
            raise NeuroContrastError(f"the AIF mask ({int(aif_mask.sum())} voxels) lies outside the brain: "
                                     "no AIF voxel is within 3 voxels of the brain mask")
        head_level = np.median(s0[brain_mask])
        if np.all(s0[aif_mask] < 0.1 * head_level):
            raise NeuroContrastError("the AIF mask lies outside the head: its baseline signal is below 10 % "
                                     "of the brain's")
        # the bolus reaches the arteries before the tissue: end the baseline before the AIF's own arrival
        try:
            aif_baseline = signal_mod.detect_baseline(signal[:, aif_mask].mean(axis=1)[:, None], tr_s)
        except NeuroContrastError as exc:  # no clear bolus in the AIF voxels: keep the whole-brain baseline
            log.warning("baseline of the AIF curve not found (%s); keeping frames %s", exc, baseline)
            aif_baseline = baseline
        if aif_baseline[1] < baseline[1] and aif_baseline[1] - baseline[0] >= 2:
            log.info("baseline shortened from frames %s to end at the AIF arrival (frame %d)", baseline,
                     aif_baseline[1])
            baseline = (baseline[0], int(aif_baseline[1]))
            s0 = signal[baseline[0]:baseline[1]].mean(axis=0)
            dr2 = _delta_r2star(signal_mod, signal, te_s, baseline)
        aif_raw = aif_mod.curve_from_mask(dr2, aif_mask)
        aif_q = _shift_times(aif_mod.aif_quality(aif_raw, tr_s), baseline[0] * tr_s)
        aif_curve = aif_raw
        if vof_mask is not None:
            if np.all(s0[vof_mask] < 0.1 * head_level):
                raise NeuroContrastError("the VOF mask lies outside the head: its baseline signal is below 10 % "
                                         "of the brain's")
            vof_curve = aif_mod.curve_from_mask(dr2, vof_mask)
            vof_q = _shift_times(aif_mod.aif_quality(vof_curve, tr_s), baseline[0] * tr_s)
            aif_curve, factor = aif_mod.rescale_aif_to_vof(aif_raw, vof_curve, tr_s)
    timings["aif_s"] = time.perf_counter() - t0

    # 3. maps
    t0 = time.perf_counter()
    if smoothing_fwhm_mm and dr2 is not None:
        report_progress(progress, 0.08, "spatial smoothing")
        vessels = np.zeros(shape, bool)  # AIF/VOF voxels are neither smoothed nor smeared into their neighbours
        for m in (aif_mask, vof_mask):
            if m is not None:
                vessels |= m
        smoothed = smooth_in_mask(dr2, brain_mask & ~vessels, dsc.geometry.spacing, smoothing_fwhm_mm)
        keep = brain_mask & vessels
        if keep.any():
            smoothed[:, keep] = dr2[:, keep]
        dr2 = smoothed
    timings["smoothing_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report_progress(progress, 0.1, f"{method} maps")
    map_progress = scaled(progress, 0.1, 0.9)
    if entry.kind == "deconvolution":
        pm = maps_mod.compute_maps(dr2, aif_curve, tr_s, method=entry.target, brain_mask=brain_mask,
                                   constants=constants, progress=map_progress, **params)
        maps = {k: np.asarray(v, dtype=np.float32) for k, v in pm.as_dict().items()}
        if baseline[0] > 0:  # TTP counts from the first frame of the series, not of the cropped one
            maps["ttp"] = np.where(brain_mask, maps["ttp"] + baseline[0] * tr_s, 0.0).astype(np.float32)
    else:
        func = entry.load()
        aif_signal = None
        if aif_mask is not None:
            aif_signal = signal[:, aif_mask].mean(axis=1).astype(np.float32)
        maps = {k: np.asarray(v, dtype=np.float32) for k, v in
                func(dsc, aif_signal=aif_signal, brain_mask=brain_mask, progress=map_progress).items()}
        if "mtt" not in maps and "cbv" in maps and "cbf" in maps:
            with np.errstate(divide="ignore", invalid="ignore"):
                maps["mtt"] = np.where(maps["cbf"] > 0, 60.0 * maps["cbv"] / maps["cbf"], 0.0).astype(np.float32)
    for name, arr in maps.items():
        if arr.shape != tuple(shape):
            raise NeuroContrastError(f"method {method} returned map {name} of shape {arr.shape}, expected {shape}")
    timings["maps_s"] = time.perf_counter() - t0

    # 4. hypoperfusion and mismatch
    t0 = time.perf_counter()
    report_progress(progress, 0.92, "hypoperfusion")
    hyp = None
    mism = None
    if "tmax" in maps:
        hyp = lesion.hypoperfusion(maps["tmax"], dsc.geometry, brain_mask=brain_mask, thresholds=THRESHOLDS_S)
        if core_mask is not None:
            mism = lesion.mismatch(hyp.masks[HYPOPERFUSION_THRESHOLD_S], core_mask, dsc.geometry)
    timings["hypoperfusion_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    report_progress(progress, 1.0, "done")

    from neurocontrast import __version__

    rep: Dict[str, Any] = {
        "software": f"neurocontrast {__version__}",
        "input": {"path": getattr(dsc, "path", None), "shape_tzyx": list(signal.shape),
                  "geometry": dsc.geometry.describe(), "tr_s": tr_s, "te_s": te_s},
        "method": method,
        "method_description": entry.description,
        "parameters": {"baseline_frames": [int(baseline[0]), int(baseline[1])], "aif": aif,
                       "brain_mask": brain_source, "brain_voxels": int(brain_mask.sum()),
                       "brain_volume_ml": float(brain_mask.sum() * dsc.geometry.voxel_volume_ml),
                       "aif_voxels": int(aif_mask.sum()) if aif_mask is not None else 0,
                       "vof_voxels": int(vof_mask.sum()) if vof_mask is not None else 0,
                       "vof_rescaling_factor": factor, "smoothing_fwhm_mm": smoothing_fwhm_mm,
                       "hypoperfusion_thresholds_s": list(THRESHOLDS_S),
                       **{k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                          for k, v in params.items()}},
        "constants": {"hematocrit_large": constants.hematocrit_large,
                      "hematocrit_small": constants.hematocrit_small, "density_g_per_ml": constants.density,
                      "kh_over_rho": constants.kh_over_rho},
        "aif_quality": aif_q,
        "vof_quality": vof_q,
        "aif_points_zyx": (np.argwhere(aif_mask).tolist() if aif_mask is not None and aif_mask.sum() <= 200 else None),
        "volumes_ml": ({f"tmax_gt_{thr:g}s": float(hyp.volumes_ml[thr]) for thr in THRESHOLDS_S}
                       if hyp is not None else {}),
        "mismatch": mism,
        "map_summary_in_brain": _map_summary(maps, brain_mask),
        "units": {"cbf": "mL/100 g/min", "cbv": "mL/100 g", "mtt": "s", "tmax": "s", "ttp": "s from first frame",
                  "volumes": "mL", "delta_r2star": "1/s"},
        "timings_s": timings,
    }
    return PerfusionResult(maps=maps, geometry=dsc.geometry, brain_mask=brain_mask, aif_mask=aif_mask,
                           vof_mask=vof_mask, hypoperfusion=hyp, times_s=np.arange(baseline[0], signal.shape[0]) * tr_s,
                           aif=aif_curve, aif_raw=aif_raw, vof=vof_curve, report=_json_clean(rep),
                           core_mask=core_mask, baseline_signal=s0.astype(np.float32))


def smooth_in_mask(values: np.ndarray, mask: np.ndarray, spacing_xyz, fwhm_mm: float) -> np.ndarray:
    """In-plane Gaussian smoothing of a (T, Z, Y, X) series restricted to ``mask`` (normalised convolution:
    smooth(values·mask)/smooth(mask), so nothing leaks in from outside the brain). ``fwhm_mm`` is the full
    width at half maximum in mm (σ = FWHM/2.355 per axis, divided by the x/y spacing). Returns float32,
    0 outside the mask. Slices are smoothed independently (DSC slices are thick)."""
    from scipy import ndimage

    if fwhm_mm is None or fwhm_mm <= 0:
        return values
    sx, sy = float(spacing_xyz[0]), float(spacing_xyz[1])
    sigma = (0.0, fwhm_mm / 2.3548 / sy, fwhm_mm / 2.3548 / sx)
    m = mask.astype(np.float32)
    weight = ndimage.gaussian_filter(m, sigma=sigma, mode="constant")
    out = np.empty(values.shape, dtype=np.float32)
    safe = np.where(mask, np.maximum(weight, 1e-6), 1.0)
    for k in range(values.shape[0]):  # frame by frame keeps the memory at one volume
        out[k] = np.where(mask, ndimage.gaussian_filter(values[k] * m, sigma=sigma, mode="constant") / safe, 0.0)
    return out


def _shift_times(quality: Dict[str, Any], offset_s: float) -> Dict[str, Any]:
    """Quality figures of a curve that starts ``offset_s`` after the series: times from the first frame."""
    out = dict(quality)
    for key in ("time_to_peak_s", "arrival_s", "first_moment_s"):
        if isinstance(out.get(key), (int, float)) and np.isfinite(out[key]):
            out[key] = float(out[key]) + offset_s
    return out


def _delta_r2star(signal_mod, signal: np.ndarray, te_s: float, baseline) -> np.ndarray:
    """ΔR2* of the frames from the first steady-state baseline frame on (non-steady-state frames dropped,
    so that they enter neither the deconvolution nor the CBV integral). Returns (T − start, Z, Y, X)."""
    start, stop = int(baseline[0]), int(baseline[1])
    return signal_mod.delta_r2star(signal[start:], te_s, (0, stop - start))


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=np.ones((1, 3, 3), bool), iterations=iterations)


def write_outputs(result: PerfusionResult, out_dir: str, *, overview: bool = True,
                  title: Optional[str] = None) -> Dict[str, str]:
    """Write a :class:`PerfusionResult` into ``out_dir`` (created). Returns {name: path}.

    Files: ``<map>.nii.gz`` for each map (cbf, cbv, mtt, tmax, ttp, and any extra network map),
    ``hypoperfusion.nii.gz`` (uint8 Tmax > 6 s), ``report.json``, ``overview.png`` (see
    :func:`neurocontrast.perfusion.report.overview_figure`). All volumes on the DSC grid.
    Raises NeuroContrastError if ``out_dir`` exists and is not a folder.
    """
    from neurocontrast.io import write_volume

    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NeuroContrastError(f"output {out_dir} exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    paths: Dict[str, str] = {}
    for name, arr in result.maps.items():
        paths[name] = write_volume(np.nan_to_num(arr, nan=0.0).astype(np.float32), result.geometry,
                                   os.path.join(out_dir, f"{name}.nii.gz"))
    if result.hypoperfusion_mask is not None:
        paths["hypoperfusion"] = write_volume(result.hypoperfusion_mask.astype(np.uint8), result.geometry,
                                              os.path.join(out_dir, "hypoperfusion.nii.gz"))
    if overview:
        from neurocontrast.perfusion.report import overview_figure

        paths["overview"] = overview_figure(result, os.path.join(out_dir, "overview.png"), title=title)
    result.report.setdefault("timings_s", {})["write_s"] = time.perf_counter() - t0
    result.report["outputs"] = {k: os.path.basename(v) for k, v in paths.items()}
    paths["report"] = os.path.join(out_dir, "report.json")
    with open(paths["report"], "w", encoding="utf-8") as fh:
        json.dump(_json_clean(result.report), fh, indent=2)
    return paths
