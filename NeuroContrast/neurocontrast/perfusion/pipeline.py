"""The whole DSC perfusion job: DSC series + AIF/VOF/brain masks → maps, hypoperfusion, report, files.

:func:`run_perfusion` chains the core steps (Cao et al. eq. 1-8), each a named function below:

1. :func:`check_inputs` -- TR plausible, TE when needed, masks on the grid, no constant frames;
2. :func:`baseline_and_brain` -- pre-bolus baseline frames and the brain mask (given or automatic);
3. :func:`vascular_curves` -- the AIF (mask or automatic suggestion) and VOF ΔR2* curves, the AIF rescaled
   to the VOF for partial volume (eq. 8); the same function draws the curves of the Slicer panel;
4. :func:`tissue_delta_r2star` -- ΔR2*(t) = −ln(S/S0)/TE (eq. 1) of the brain voxels only, in float32,
   smoothed in plane inside the brain (on its bounding box);
5. :func:`compute_method_maps` -- a registered method (:data:`MAP_METHODS`): deconvolution (sSVD, cSVD,
   oSVD, Tikhonov; eq. 3-7 in :func:`~neurocontrast.perfusion.maps.compute_maps`) or a network (ST-Net,
   AIF-free Tmax net, from :mod:`neurocontrast.perfusion.deep`, imported only when chosen);
6. :func:`hypoperfusion_and_mismatch` -- Tmax > 4/6/8/10 s masks and volumes and, with a core, the mismatch;
7. :func:`build_report` -- the JSON report, with the whole :class:`~neurocontrast.perfusion.parameters.PerfusionOptions`.

:mod:`neurocontrast.perfusion.outputs` writes the result (``write_outputs``, also importable from here) and
holds the command line's one call ``perfusion_from_files``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.lesion import TMAX_THRESHOLDS
from neurocontrast.perfusion.maps import MAP_NAMES, MAP_UNITS  # noqa: F401  (MAP_NAMES re-exported)
from neurocontrast.perfusion.parameters import SMOOTHING_FWHM_MM, PerfusionOptions  # noqa: F401
from neurocontrast.progress import ProgressCallback, report as report_progress, scaled

log = logging.getLogger(__name__)

#: Tmax thresholds (s) of the hypoperfusion masks (:data:`~neurocontrast.perfusion.lesion.TMAX_THRESHOLDS`).
THRESHOLDS_S = TMAX_THRESHOLDS
#: The clinical Tmax threshold (s), written as hypoperfusion.nii.gz and shown in the Slicer segmentation.
HYPOPERFUSION_THRESHOLD_S = 6.0


@dataclasses.dataclass(frozen=True)
class MapMethod:
    """One entry of :data:`MAP_METHODS`.

    kind ``"deconvolution"``: ``target`` is a deconvolution method name of
    :data:`neurocontrast.perfusion.deconvolution.METHODS`, run through ``compute_maps``.
    kind ``"network"``: ``target`` is ``"module:function"`` with the signature
    ``fn(dsc, *, aif_signal (T,) float or None, brain_mask (Z,Y,X) bool, progress, aif_scale (the VOF
    rescaling factor, 1.0 without), constants (PerfusionConstants)) -> dict of (Z,Y,X) float32``
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
    "stnet-s": MapMethod("stnet-s", "network", "neurocontrast.perfusion.deep:stnet_s_maps", True,
                         "ST-Net-S, the fast distilled student of ST-Net (CPU option)"),
    "tmaxnet": MapMethod("tmaxnet", "network", "neurocontrast.perfusion.deep:tmaxnet_maps", False,
                         "AIF-free Tmax network"),
}


def deconvolution_methods() -> tuple:
    """Names of the registered deconvolution methods, in registry order (osvd, csvd, ssvd, tikhonov)."""
    return tuple(name for name, entry in MAP_METHODS.items() if entry.kind == "deconvolution")


def network_methods() -> tuple:
    """Names of the registered network methods (stnet, tmaxnet, and any added entry)."""
    return tuple(name for name, entry in MAP_METHODS.items() if entry.kind == "network")


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
        core : :class:`~neurocontrast.perfusion.lesion.CoreResult` from an ADC map (or None) and
        core_geometry its grid (the ADC's). Relative maps rcbf, rcbv, rmtt are in ``maps`` when a reference
        region was found.
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
    core: Any = None
    core_geometry: Any = None

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


@dataclasses.dataclass
class VascularCurves:
    """The arterial and venous curves of a series, as :func:`vascular_curves` computes them.

    baseline : (start, stop) frames of the series used for S0 (ended at the AIF's own arrival when earlier).
    times_s : (T − start,) s from the first frame of the series. aif_raw : (T − start,) ΔR2* (1/s) mean
    of the AIF voxels; aif : the one used (× ``factor`` after VOF rescaling); vof : the VOF curve or None.
    factor : ∫VOF/∫AIF, or None without a VOF or with rescaling off (``rescale_factor`` holds the value
    it would have been). aif_quality, vof_quality : :func:`~neurocontrast.perfusion.aif.aif_quality` with
    times from the first frame of the series. unit : "1/s".
    """

    baseline: Tuple[int, int]
    times_s: np.ndarray
    aif_raw: Optional[np.ndarray]
    aif: Optional[np.ndarray]
    vof: Optional[np.ndarray]
    factor: Optional[float]
    rescale_factor: Optional[float]
    aif_quality: Optional[Dict[str, Any]]
    vof_quality: Optional[Dict[str, Any]]
    unit: str = "1/s"


def _mask_delta_r2star(signal_mod, signal: np.ndarray, mask: np.ndarray, te_s: float, baseline) -> np.ndarray:
    """(T − start, N) float32 ΔR2* of the voxels of ``mask`` (the same values as on the whole grid)."""
    start, stop = int(baseline[0]), int(baseline[1])
    return signal_mod.delta_r2star(signal[start:, mask], te_s, (0, stop - start))


def vascular_curves(signal: np.ndarray, tr_s: float, te_s: float, aif_mask: Optional[np.ndarray],
                    vof_mask: Optional[np.ndarray] = None, *, baseline: Optional[Tuple[int, int]] = None,
                    vof_rescale: bool = True) -> VascularCurves:
    """AIF and VOF ΔR2*(t) curves; the one function behind the pipeline and the Slicer panel's live curves.

    Parameters
    ----------
    signal : (T, Z, Y, X) raw DSC signal. tr_s : frame interval in s. te_s : echo time in s (> 0).
    aif_mask, vof_mask : (Z, Y, X) bool or None (at least one).
    baseline : (start, stop) of the whole series (:func:`~neurocontrast.perfusion.signal.detect_baseline`
        when None). When the AIF's own bolus arrives earlier than ``stop`` (the arteries fill first), the
        baseline ends at the AIF arrival (at least 2 frames kept), so that S0 holds no contrast.
    vof_rescale : scale the AIF so that its area equals the VOF's (Cao et al. eq. 8; van Osch 2001).

    Returns :class:`VascularCurves`: ΔR2* = −ln(S/S0)/TE (Cao eq. 1) per voxel from the first steady-state
    baseline frame on, averaged over each mask.

    Raises NeuroContrastError : TE missing or <= 0, both masks None, an empty mask, a VOF or AIF without a
    bolus (area <= 0) when rescaling.
    """
    from neurocontrast.perfusion import aif as aif_mod
    from neurocontrast.perfusion import signal as signal_mod

    if te_s is None or not np.isfinite(te_s) or te_s <= 0:
        raise NeuroContrastError(f"TE must be a positive echo time in s to compute ΔR2* curves, got {te_s!r}")
    if aif_mask is None and vof_mask is None:
        raise NeuroContrastError("an AIF or VOF mask is needed for the vascular curves")
    for mask, name in ((aif_mask, "AIF mask"), (vof_mask, "VOF mask")):
        if mask is not None and not np.any(mask):
            raise NeuroContrastError(f"the {name} is empty: it selects no voxel")
    if baseline is None:
        baseline = signal_mod.detect_baseline(signal, tr_s)
    baseline = (int(baseline[0]), int(baseline[1]))
    if aif_mask is not None:
        try:
            aif_baseline = signal_mod.detect_baseline(signal[:, aif_mask].mean(axis=1)[:, None], tr_s)
        except NeuroContrastError as exc:  # no clear bolus in the AIF voxels: keep the whole-brain baseline
            log.warning("baseline of the AIF curve not found (%s); keeping frames %s", exc, baseline)
            aif_baseline = baseline
        if aif_baseline[1] < baseline[1] and aif_baseline[1] - baseline[0] >= 2:
            log.info("baseline shortened from frames %s to end at the AIF arrival (frame %d)", baseline,
                     aif_baseline[1])
            baseline = (baseline[0], int(aif_baseline[1]))
    offset = baseline[0] * tr_s

    def curve(mask):
        if mask is None:
            return None, None
        mean = _mask_delta_r2star(signal_mod, signal, mask, te_s, baseline).astype(np.float64).mean(axis=1)
        return mean, _shift_times(aif_mod.aif_quality(mean, tr_s), offset)

    aif_raw, aif_q = curve(aif_mask)
    vof, vof_q = curve(vof_mask)
    aif_used, factor, would_be = aif_raw, None, None
    if aif_raw is not None and vof is not None:
        rescaled, would_be = aif_mod.rescale_aif_to_vof(aif_raw, vof, tr_s)
        if vof_rescale:
            aif_used, factor = rescaled, would_be
        else:
            log.info("VOF rescaling off: the AIF is used as measured (rescaling would multiply it by %.2f)",
                     would_be)
    times = (np.arange(signal.shape[0] - baseline[0]) + baseline[0]) * tr_s
    return VascularCurves(baseline, times, aif_raw, aif_used, vof, factor, would_be, aif_q, vof_q)


@dataclasses.dataclass
class _Inputs:
    signal: np.ndarray
    tr_s: float
    te_s: Optional[float]
    aif_mask: Optional[np.ndarray]
    vof_mask: Optional[np.ndarray]
    brain_mask: Optional[np.ndarray]
    core_mask: Optional[np.ndarray]
    warnings: list


def check_inputs(dsc, aif_mask, vof_mask, brain_mask, core_mask, options: PerfusionOptions) -> _Inputs:
    """Validate the series and masks for ``options`` (step 1). Raises NeuroContrastError with the reason:
    not 4D, frame interval outside 0.3–5 s, TE missing for a deconvolution or the automatic AIF, constant
    (zero-filled) frames, masks of another shape or empty, no AIF mask for a method that needs one.
    Negative signal samples are counted into ``warnings`` (a magnitude series has none)."""
    from neurocontrast.dsc_io import check_dsc_values, check_frame_interval

    entry = MAP_METHODS[options.method]
    signal = np.asarray(dsc.signal)
    if signal.ndim != 4:
        raise NeuroContrastError(f"the DSC series must be 4D (t, z, y, x), got shape {signal.shape}")
    shape = signal.shape[1:]
    tr_s = check_frame_interval(dsc.tr_s, "the DSC series", "s")
    te_s = dsc.te_s
    te_ok = te_s is not None and np.isfinite(te_s) and te_s > 0
    if not te_ok and (entry.kind == "deconvolution" or (options.aif == "auto" and entry.needs_aif)):
        what = f"method {options.method}" if entry.kind == "deconvolution" else "the automatic AIF"
        raise NeuroContrastError(f"TE must be a positive echo time in s for {what} (give --te), got {te_s!r}; "
                                 "the maps (ratios of tissue to arterial ΔR2*) do not depend on its value, "
                                 "only the ΔR2* curves (1/s) scale with it, so the protocol's TE is enough")
    lowest = check_dsc_values(signal, "the DSC series")
    warnings = []
    n_negative = int(np.count_nonzero(signal < 0)) if lowest < 0 else 0
    if n_negative:
        message = (f"{n_negative} negative signal sample(s): a magnitude DSC series has none (phase, "
                   "subtracted or badly rescaled data?); they count as S <= 0")
        log.warning(message)
        warnings.append(message)
    masks = {name: _check_mask(m, shape, label) for name, m, label in
             (("aif", aif_mask, "AIF mask"), ("vof", vof_mask, "VOF mask"), ("brain", brain_mask, "brain mask"),
              ("core", core_mask, "core mask"))}
    if options.aif == "mask" and masks["aif"] is None and entry.needs_aif:
        raise NeuroContrastError("an AIF mask is required (or use aif='auto' / --aif auto)")
    for name, label in (("aif", "AIF"), ("vof", "VOF"), ("brain", "brain")):
        if masks[name] is not None and not masks[name].any():
            raise NeuroContrastError(f"the {label} mask is empty: it selects no voxel")
    return _Inputs(signal, tr_s, te_s if te_ok else None, masks["aif"], masks["vof"], masks["brain"],
                   masks["core"], warnings)


def baseline_and_brain(signal: np.ndarray, tr_s: float, brain_mask: Optional[np.ndarray]):
    """Step 2: ``(baseline (start, stop), brain_mask (Z, Y, X) bool, source str)``; the automatic brain
    mask (:func:`automatic_brain_mask`) when none is given. Raises NeuroContrastError (no bolus, empty mask)."""
    from neurocontrast.perfusion import signal as signal_mod

    baseline = signal_mod.detect_baseline(signal, tr_s)
    if brain_mask is not None:
        return baseline, brain_mask, "given"
    brain_mask = automatic_brain_mask(signal, baseline)
    log.info("no brain mask given: automatic mask with %d voxels", int(brain_mask.sum()))
    return baseline, brain_mask, "automatic (Otsu of the baseline signal, largest component)"


def _check_vessel_masks(signal, baseline, brain_mask, aif_mask, vof_mask) -> None:
    """AIF/VOF masks must lie in the head: near the brain, with a baseline signal above 10 % of the brain's."""
    start, stop = baseline
    bbox = _bounding_box(brain_mask)
    head_level = np.median(signal[start:stop][(slice(None),) + bbox][:, brain_mask[bbox]].mean(axis=0))
    if aif_mask is not None:
        if not (aif_mask & _dilate(brain_mask, 3)).any():
            raise NeuroContrastError(f"the AIF mask ({int(aif_mask.sum())} voxels) lies outside the brain: "
                                     "no AIF voxel is within 3 voxels of the brain mask")
        if np.all(signal[start:stop, aif_mask].mean(axis=0) < 0.1 * head_level):
            raise NeuroContrastError("the AIF mask lies outside the head: its baseline signal is below 10 % "
                                     "of the brain's")
    if vof_mask is not None and np.all(signal[start:stop, vof_mask].mean(axis=0) < 0.1 * head_level):
        raise NeuroContrastError("the VOF mask lies outside the head: its baseline signal is below 10 % "
                                 "of the brain's")


def _bounding_box(mask: np.ndarray) -> Tuple[slice, slice, slice]:
    """The smallest (z, y, x) slices holding every True voxel of ``mask``."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)


def tissue_delta_r2star(signal: np.ndarray, te_s: float, baseline, brain_mask: np.ndarray, spacing_xyz,
                        smoothing_fwhm_mm: float, vessels: Optional[np.ndarray] = None,
                        n_threads: Optional[int] = None) -> np.ndarray:
    """Step 4: ΔR2* (Cao eq. 1) of the brain voxels, float32, from the first baseline frame on.

    Returns (T − start, N) float32, N = brain voxels in C order (``np.flatnonzero(brain_mask)``). Only
    the brain voxels are converted, frame by frame over ``n_threads`` threads (default: the available
    CPUs), with the same conversion as :func:`~neurocontrast.perfusion.signal.delta_r2star`; with
    ``smoothing_fwhm_mm`` > 0 each frame is then smoothed in plane (:func:`smooth_in_mask`) on the brain's
    bounding box, except ``vessels`` (AIF/VOF voxels), which are neither smoothed nor smeared into their
    neighbours.
    """
    from neurocontrast.perfusion import signal as signal_mod
    from neurocontrast.threads import thread_map

    te_s = signal_mod.check_te(te_s)
    start, stop = int(baseline[0]), int(baseline[1])
    flat = signal.reshape(signal.shape[0], -1)[start:]
    index = np.flatnonzero(brain_mask)
    s0 = signal_mod.baseline_signal(np.take(flat[:stop - start], index, axis=1))
    valid = s0 > 0
    s0 = np.where(valid, s0, np.float32(1.0))
    smoother = None
    if smoothing_fwhm_mm:
        box = _bounding_box(brain_mask)
        vessel_box = vessels[box] if vessels is not None else np.zeros(brain_mask[box].shape, bool)
        smoother = _FrameSmoother(brain_mask[box], ~vessel_box[brain_mask[box]], spacing_xyz, smoothing_fwhm_mm)
    dr2 = np.empty((flat.shape[0], index.size), np.float32)
    bad = np.zeros(flat.shape[0], np.int64)

    def convert(t: int) -> None:   # one frame: gather, S/S0, ΔR2*, smoothing (NumPy and ndimage free the GIL)
        ratio = np.take(flat[t], index).astype(np.float32, copy=False) / s0
        bad[t] = signal_mod.ratio_to_delta_r2star(ratio[None, :], valid, te_s)   # (1, N): one frame
        dr2[t] = ratio if smoother is None else smoother(ratio)

    thread_map(convert, range(flat.shape[0]), n_threads)
    if bad.sum():
        log.info("delta_r2star: %d sample(s) with S(t) <= 0 set to 1e-3 * S0", int(bad.sum()))
    return dr2


def compute_method_maps(entry: MapMethod, options: PerfusionOptions, dsc, inputs: _Inputs, curves, baseline,
                        brain_mask: np.ndarray, progress, details: Optional[Dict[str, Any]] = None
                        ) -> Dict[str, np.ndarray]:
    """Step 5: the maps of ``entry`` as (Z, Y, X) float32 (0 outside the brain for deconvolution).
    ``details`` (a dict, optional) receives how the deconvolution computed them (``PerfusionMaps.details``:
    the Tmax rule, the Tikhonov λ chosen by GCV).

    Deconvolution: :func:`tissue_delta_r2star` then ``compute_maps`` with ``options.deconvolve_kwargs()``;
    TTP counted from the first frame of the series. Network: ``entry.load()(dsc, aif_signal, brain_mask,
    progress, aif_scale, constants)``, MTT = 60·CBV/CBF when the network gives no MTT. Raises NeuroContrastError when a map has
    another shape.
    """
    from neurocontrast.perfusion import maps as maps_mod

    shape = inputs.signal.shape[1:]
    if entry.kind == "deconvolution":
        vessels = np.zeros(shape, bool)
        for m in (inputs.aif_mask, inputs.vof_mask):
            if m is not None:
                vessels |= m
        report_progress(progress, 0.0, "ΔR2* and smoothing")
        dr2 = tissue_delta_r2star(inputs.signal, inputs.te_s, baseline, brain_mask, dsc.geometry.spacing,
                                  options.smoothing_fwhm_mm, vessels)
        report_progress(progress, 0.1, f"{options.method} maps")
        n = dr2.shape[1]  # the brain voxels as an (N, 1, 1) "volume": no grid copy for the deconvolution
        pm = maps_mod.compute_maps(dr2.reshape(dr2.shape[0], n, 1, 1), curves.aif, inputs.tr_s,
                                   method=entry.target, brain_mask=None, constants=options.constants,
                                   progress=scaled(progress, 0.1, 1.0), **options.deconvolve_kwargs())
        if details is not None:
            details.update(pm.details)
        maps = {}
        for name, values in pm.as_dict().items():
            full = np.zeros(shape, np.float32)
            full[brain_mask] = values.reshape(n)
            maps[name] = full
        if baseline[0] > 0:  # TTP counts from the first frame of the series, not of the cropped one
            maps["ttp"] = np.where(brain_mask, maps["ttp"] + baseline[0] * inputs.tr_s, 0.0).astype(np.float32)
    else:
        func = entry.load()
        aif_signal = None
        if inputs.aif_mask is not None:
            aif_signal = inputs.signal[:, inputs.aif_mask].mean(axis=1).astype(np.float32)
        # the networks take the AIF with the same VOF rescaling and kH/ρ as the deconvolution
        factor = curves.factor if curves is not None and curves.factor is not None else 1.0
        maps = {k: np.asarray(v, dtype=np.float32) for k, v in
                func(dsc, aif_signal=aif_signal, brain_mask=brain_mask, progress=progress, aif_scale=float(factor),
                     constants=options.constants).items()}
        if "mtt" not in maps and "cbv" in maps and "cbf" in maps:
            with np.errstate(divide="ignore", invalid="ignore"):
                maps["mtt"] = np.where(maps["cbf"] > 0, 60.0 * maps["cbv"] / maps["cbf"], 0.0).astype(np.float32)
    for name, arr in maps.items():
        if arr.shape != tuple(shape):
            raise NeuroContrastError(f"method {options.method} returned map {name} of shape {arr.shape}, "
                                     f"expected {shape}")
    return maps


def hypoperfusion_and_mismatch(maps, geometry, brain_mask, core_mask):
    """Step 6: ``(HypoperfusionResult or None, mismatch dict or None)`` for Tmax > :data:`THRESHOLDS_S`."""
    from neurocontrast.perfusion import lesion

    if "tmax" not in maps:
        return None, None
    hyp = lesion.hypoperfusion(maps["tmax"], geometry, brain_mask=brain_mask, thresholds=THRESHOLDS_S)
    mism = None
    if core_mask is not None:
        mism = lesion.mismatch(hyp.masks[HYPOPERFUSION_THRESHOLD_S], core_mask, geometry)
    return hyp, mism


def run_perfusion(dsc, aif_mask=None, vof_mask=None, brain_mask=None, *, options: Optional[PerfusionOptions] = None,
                  core_mask=None, diffusion=None, reference_mask=None, progress: Optional[ProgressCallback] = None,
                  **overrides) -> PerfusionResult:
    """Compute perfusion maps, hypoperfusion volumes and a report from a DSC series.

    Parameters
    ----------
    dsc : :class:`neurocontrast.dsc_io.DSCSeries` (signal (T, Z, Y, X), tr_s s, te_s s).
    aif_mask : (Z, Y, X) bool/int, the arterial voxels; required when ``options.aif == "mask"``.
    vof_mask : (Z, Y, X), venous voxels (superior sagittal sinus); the AIF is rescaled so that its area
        equals the VOF's (partial-volume correction, Cao et al. eq. 8) unless ``options.vof_rescale`` is off.
    brain_mask : (Z, Y, X); default an automatic Otsu mask of the baseline signal (:func:`automatic_brain_mask`).
    options : :class:`~neurocontrast.perfusion.parameters.PerfusionOptions` (method, AIF mode, smoothing,
        VOF rescaling, SVD/Tikhonov parameters, constants), written whole into the report.
    core_mask : (Z, Y, X) optional infarct core (e.g. ADC < 620); adds the mismatch summary.
    diffusion : :class:`~neurocontrast.perfusion.lesion.DiffusionImages` (ADC, optional DWI) of the session:
        the core from ADC (:func:`~neurocontrast.perfusion.lesion.adc_core`) and the mismatch; on the DSC grid
        the mismatch is voxel-wise, on another grid it is computed from the volumes (no resampling).
    reference_mask : (Z, Y, X) reference region of the relative maps rCBF, rCBV, rMTT (default: contralateral
        normal-appearing white matter, :func:`~neurocontrast.perfusion.maps.contralateral_white_matter`).
    progress : callback(fraction, message).
    **overrides : fields of ``options`` or of its families, e.g. ``method="csvd"``, ``aif="auto"``,
        ``smoothing_fwhm_mm=0``, ``constants=...``, ``csvd_threshold=0.15``, ``osvd_oi=0.1``, ``lambda_=0.3``
        (:meth:`PerfusionOptions.updated`; None values are ignored).

    Returns
    -------
    :class:`PerfusionResult`.

    Raises
    ------
    NeuroContrastError : unknown method, aif mode or parameter; a frame interval outside 0.3–5 s; TE missing
        or <= 0 for a deconvolution method or the automatic AIF; constant (zero-filled) frames; a series
        without a bolus; masks of a different shape; an empty AIF or VOF mask; an AIF/VOF mask outside the
        brain/head; a network method whose module is absent.
    """
    options = (options or PerfusionOptions()).updated(**{k: v for k, v in overrides.items() if v is not None})
    entry = MAP_METHODS[options.method]
    clock = _Clock()
    inputs = check_inputs(dsc, aif_mask, vof_mask, brain_mask, core_mask, options)
    report_progress(progress, 0.0, "baseline")
    baseline, brain, brain_source = baseline_and_brain(inputs.signal, inputs.tr_s, inputs.brain_mask)
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty: it selects no voxel")
    clock.lap("baseline_s")
    aif_mask = inputs.aif_mask
    if options.aif == "auto" and entry.needs_aif:
        aif_mask = _automatic_aif(inputs, baseline, brain, progress)
        inputs.aif_mask = aif_mask
    if options.vof == "auto":
        if inputs.vof_mask is not None:
            raise NeuroContrastError("give either a VOF mask or the automatic VOF, not both")
        if inputs.te_s is not None:
            inputs.vof_mask = _automatic_vof(inputs, baseline, brain, dsc.geometry, aif_mask, progress)
    curves = None
    if inputs.te_s is not None and (aif_mask is not None or inputs.vof_mask is not None):
        _check_vessel_masks(inputs.signal, baseline, brain, aif_mask, inputs.vof_mask)
        if aif_mask is not None:
            curves = vascular_curves(inputs.signal, inputs.tr_s, inputs.te_s, aif_mask, inputs.vof_mask,
                                     baseline=baseline, vof_rescale=options.vof_rescale)
            baseline = curves.baseline
            if curves.vof is None and options.vof_rescale:
                message = ("no VOF: the AIF is used as measured, so absolute CBF and CBV scale with its partial "
                           "volume (draw a VOF in the superior sagittal sinus, or use the automatic VOF)")
                log.warning(message)
                inputs.warnings.append(message)
    clock.lap("aif_s")
    details: Dict[str, Any] = {}
    maps = compute_method_maps(entry, options, dsc, inputs, curves, baseline, brain, scaled(progress, 0.08, 0.9),
                               details)
    clock.lap("maps_s")
    report_progress(progress, 0.92, "hypoperfusion")
    if diffusion is not None and inputs.core_mask is not None:
        raise NeuroContrastError("give either a core mask or an ADC map for the core, not both")
    core = core_from_adc(diffusion, dsc.geometry)
    if core is not None and diffusion.geometry.same_as(dsc.geometry):
        inputs.core_mask = core.mask
    hyp, mism = hypoperfusion_and_mismatch(maps, dsc.geometry, brain, inputs.core_mask)
    if core is not None and mism is None and hyp is not None:
        from neurocontrast.perfusion import lesion

        mism = lesion.mismatch_volumes(hyp.volumes_ml[HYPOPERFUSION_THRESHOLD_S], core.volume_ml)
        mism["grid"] = "volumes only: the ADC grid differs from the DSC grid (not resampled)"
    s0 = inputs.signal[baseline[0]:baseline[1]].mean(axis=0, dtype=np.float32)
    relative, relative_info = relative_perfusion_maps(maps, dsc.geometry, brain, hyp, inputs, reference_mask, s0)
    maps.update(relative)
    clock.lap("hypoperfusion_s")
    report_progress(progress, 1.0, "done")
    rep = build_report(dsc, inputs, options, entry, baseline, brain, brain_source, curves, maps, hyp, mism,
                       clock.total())
    rep["maps_details"] = details
    rep["parameters"]["vof"] = options.vof
    rep["vof_points_zyx"] = (np.argwhere(inputs.vof_mask).tolist()
                             if inputs.vof_mask is not None and inputs.vof_mask.sum() <= 200 else None)
    rep["relative_maps"] = relative_info
    rep["core_from_adc"] = None if core is None else core.as_dict()
    if relative_info.get("warning"):
        rep["warnings"].append(relative_info["warning"])
    start, stop = baseline
    return PerfusionResult(maps=maps, geometry=dsc.geometry, brain_mask=brain, aif_mask=aif_mask,
                           vof_mask=inputs.vof_mask, hypoperfusion=hyp,
                           times_s=np.arange(start, inputs.signal.shape[0]) * inputs.tr_s,
                           aif=None if curves is None else curves.aif,
                           aif_raw=None if curves is None else curves.aif_raw,
                           vof=None if curves is None else curves.vof, report=_json_clean(rep),
                           core_mask=inputs.core_mask,
                           baseline_signal=s0, core=core, core_geometry=None if core is None else diffusion.geometry)


def automatic_aif(dsc, brain_mask=None, *, options: Optional[PerfusionOptions] = None,
                  progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """The AIF that :func:`run_perfusion` finds with ``options.aif == "auto"``, for the same inputs, without
    computing the maps (steps 1-3: inputs, baseline and brain, then the automatic AIF,
    :func:`~neurocontrast.perfusion.aif.suggest_aif` after Mouridsen et al. 2006 on the unsmoothed ΔR2* of
    the brain, and the run's check that it lies in the head).

    Parameters
    ----------
    dsc : :class:`neurocontrast.dsc_io.DSCSeries` (signal (T, Z, Y, X), tr_s s, te_s s).
    brain_mask : (Z, Y, X) bool/int on the DSC grid, or None for the run's automatic brain mask
        (:func:`automatic_brain_mask`).
    options : :class:`~neurocontrast.perfusion.parameters.PerfusionOptions`; ``aif`` is taken as ``"auto"``.
        A method that needs no AIF (``tmaxnet``) uses none in a run; the voxels returned are still those the
        automatic AIF selects.
    progress : callback(fraction, message).

    Returns
    -------
    (Z, Y, X) bool, the AIF voxels.

    Raises
    ------
    NeuroContrastError : as :func:`run_perfusion` does (frame interval, constant frames, mask shape, an empty
        brain mask, no bolus); TE unknown (ΔR2* needs it); no arterial voxel found (draw the AIF by hand); the
        AIF found outside the head.
    """
    options = dataclasses.replace(options or PerfusionOptions(), aif="auto")
    inputs, baseline, brain = _vessel_search_inputs(dsc, None, brain_mask, options, "AIF")
    mask = _automatic_aif(inputs, baseline, brain, progress)
    _check_vessel_masks(inputs.signal, baseline, brain, mask, None)
    return mask


def automatic_vof(dsc, aif_mask=None, brain_mask=None, *, options: Optional[PerfusionOptions] = None,
                  progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """The VOF that :func:`run_perfusion` finds with ``options.vof == "auto"``, for the same inputs, without
    computing the maps (steps 1-3: inputs, baseline and brain, the automatic AIF when ``options.aif`` is
    ``"auto"``, then :func:`~neurocontrast.perfusion.aif.suggest_vof` near the posterior midline).

    Parameters as :func:`run_perfusion` (``dsc`` a DSCSeries; masks (Z, Y, X) on its grid). Returns (Z, Y, X)
    bool, the VOF voxels. Raises NeuroContrastError as :func:`run_perfusion` does, when TE is unknown
    (ΔR2* needs it), and when no venous bolus is found near the posterior midline (draw the VOF by hand).
    """
    options = dataclasses.replace(options or PerfusionOptions(), vof="auto")
    # without an AIF the VOF is still found (the mean curve of the search region is the arterial reference)
    checked = options if aif_mask is not None else dataclasses.replace(options, aif="auto")
    inputs, baseline, brain = _vessel_search_inputs(dsc, aif_mask, brain_mask, checked, "VOF")
    aif = inputs.aif_mask
    if options.aif == "auto" and MAP_METHODS[options.method].needs_aif:
        aif = _automatic_aif(inputs, baseline, brain, progress)
    return _automatic_vof(inputs, baseline, brain, dsc.geometry, aif, progress)


def _vessel_search_inputs(dsc, aif_mask, brain_mask, options: PerfusionOptions, what: str):
    """Steps 1-2 of a run for the automatic AIF/VOF: ``(inputs, baseline, brain)``. Raises NeuroContrastError as
    :func:`run_perfusion` does, when TE is unknown (ΔR2* needs it) and when the brain mask is empty."""
    inputs = check_inputs(dsc, aif_mask, None, brain_mask, None, options)
    if inputs.te_s is None:
        raise NeuroContrastError(f"TE is unknown for this series: the automatic {what} needs ΔR2* (enter TE)")
    baseline, brain, _ = baseline_and_brain(inputs.signal, inputs.tr_s, inputs.brain_mask)
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty: it selects no voxel")
    return inputs, baseline, brain


def _automatic_vof(inputs: _Inputs, baseline, brain: np.ndarray, geometry, aif_mask, progress) -> np.ndarray:
    """The automatic VOF (:func:`~neurocontrast.perfusion.aif.suggest_vof`) in the posterior midline region
    around the brain, on the unsmoothed ΔR2*; the AIF's peak (when known) is the arterial reference."""
    from neurocontrast.perfusion import aif as aif_mod
    from neurocontrast.perfusion import signal as signal_mod

    report_progress(progress, 0.05, "suggesting VOF")
    region = aif_mod.posterior_midline_region(brain, geometry)
    if aif_mask is not None:
        region &= ~aif_mask
    if not region.any():
        raise NeuroContrastError("no region to search for the automatic VOF near the posterior midline of the "
                                 "brain; draw a VOF mask in the superior sagittal sinus")
    box = _bounding_box(region)
    start, stop = baseline
    signal = inputs.signal[(slice(start, None),) + box]
    dr2 = signal_mod.delta_r2star(signal, inputs.te_s, (0, stop - start))
    arterial_ttp = None
    if aif_mask is not None:
        aif_dr2 = signal_mod.delta_r2star(inputs.signal[start:, aif_mask].mean(axis=1)[:, None, None, None],
                                          inputs.te_s, (0, stop - start))
        arterial_ttp = float(np.argmax(aif_dr2.ravel()) * inputs.tr_s)
    found = aif_mod.suggest_vof(dr2, inputs.tr_s, region[box], baseline_signal=signal[: stop - start].mean(axis=0),
                                arterial_ttp_s=arterial_ttp)
    mask = np.zeros(brain.shape, bool)
    mask[box] = found
    return mask


def core_from_adc(diffusion, geometry):
    """Step 6a: the infarct core from ``diffusion`` (:class:`~neurocontrast.perfusion.lesion.DiffusionImages`)
    by :func:`~neurocontrast.perfusion.lesion.adc_core`, or None without diffusion images."""
    if diffusion is None:
        return None
    from neurocontrast.perfusion import lesion

    if not isinstance(diffusion, lesion.DiffusionImages):
        raise NeuroContrastError(f"diffusion must be a DiffusionImages, got {type(diffusion).__name__}")
    return lesion.adc_core(diffusion.adc, diffusion.geometry, dwi=diffusion.dwi, unit=diffusion.unit)


def relative_perfusion_maps(maps, geometry, brain, hyp, inputs: _Inputs, reference_mask, baseline_signal=None):
    """Step 6b: rCBF, rCBV, rMTT (:func:`~neurocontrast.perfusion.maps.relative_maps`) to ``reference_mask``
    or to contralateral normal-appearing white matter (chosen with the pre-bolus ``baseline_signal``). Returns ``(maps {name: (Z, Y, X) float32}, info)``;
    when no reference is found, no maps and ``info["warning"]``."""
    from neurocontrast.perfusion import maps as maps_mod

    if "cbf" not in maps or "cbv" not in maps:
        return {}, {"reference": None}
    exclude = np.zeros(brain.shape, bool)
    for m in (inputs.aif_mask, inputs.vof_mask, inputs.core_mask):
        if m is not None:
            exclude |= m
    if reference_mask is not None:
        ref = _check_mask(reference_mask, brain.shape, "reference mask") & brain
        if not ref.any():
            raise NeuroContrastError("the reference mask selects no brain voxel")
        info: Dict[str, Any] = {"reference": "given mask", "voxels": int(ref.sum()),
                                "volume_ml": float(ref.sum() * geometry.voxel_volume_ml)}
    else:
        try:
            ref, info = maps_mod.contralateral_white_matter(
                maps, brain, geometry, hypoperfused_mask=None if hyp is None else hyp.masks[HYPOPERFUSION_THRESHOLD_S],
                exclude=exclude, baseline_signal=baseline_signal)
        except NeuroContrastError as exc:
            return {}, {"reference": None, "warning": f"no relative maps: {exc}"}
    try:
        relative, medians = maps_mod.relative_maps(maps, ref)
    except NeuroContrastError as exc:
        if reference_mask is not None:
            raise
        return {}, {"reference": None, "warning": f"no relative maps: {exc}"}
    brain_f = brain.astype(np.float32)
    info["medians"] = medians
    return {k: v * brain_f for k, v in relative.items()}, info


def _automatic_aif(inputs: _Inputs, baseline, brain: np.ndarray, progress) -> np.ndarray:
    """The automatic AIF (Mouridsen 2006 via ``suggest_aif``) on the brain's ΔR2* (unsmoothed)."""
    from neurocontrast.perfusion import aif as aif_mod
    from neurocontrast.perfusion import signal as signal_mod

    report_progress(progress, 0.04, "suggesting AIF")
    box = _bounding_box(brain)
    start, stop = baseline
    dr2 = signal_mod.delta_r2star(inputs.signal[(slice(start, None),) + box], inputs.te_s, (0, stop - start))
    found = np.asarray(aif_mod.suggest_aif(dr2, inputs.tr_s, brain_mask=brain[box]), dtype=bool)
    if not found.any():
        raise NeuroContrastError("the automatic AIF suggestion found no arterial voxel; draw an AIF mask")
    mask = np.zeros(brain.shape, bool)
    mask[box] = found
    return mask


class _Clock:
    """Named laps of ``time.perf_counter`` for the report's ``timings_s``."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: Dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> Dict[str, float]:
        return {**self.laps, "total_s": time.perf_counter() - self.start}


def build_report(dsc, inputs: _Inputs, options: PerfusionOptions, entry: MapMethod, baseline, brain, brain_source,
                 curves: Optional[VascularCurves], maps, hyp, mism, timings) -> Dict[str, Any]:
    """Step 7: the JSON-able report (input, whole options, derived parameters, AIF/VOF quality, volumes,
    mismatch, map summary, units, timings, warnings)."""
    from neurocontrast import __version__

    aif_mask, vof_mask = inputs.aif_mask, inputs.vof_mask
    return {
        "software": f"neurocontrast {__version__}",
        "input": {"path": getattr(dsc, "path", None), "shape_tzyx": list(inputs.signal.shape),
                  "geometry": dsc.geometry.describe(), "tr_s": inputs.tr_s, "te_s": inputs.te_s},
        "method": options.method,
        "method_description": entry.description,
        "options": options.as_dict(),
        "parameters": {"baseline_frames": [int(baseline[0]), int(baseline[1])], "aif": options.aif,
                       "brain_mask": brain_source, "brain_voxels": int(brain.sum()),
                       "brain_volume_ml": float(brain.sum() * dsc.geometry.voxel_volume_ml),
                       "aif_voxels": int(aif_mask.sum()) if aif_mask is not None else 0,
                       "vof_voxels": int(vof_mask.sum()) if vof_mask is not None else 0,
                       "vof_rescaling_factor": None if curves is None else curves.factor,
                       "vof_area_ratio": None if curves is None else curves.rescale_factor,
                       "smoothing_fwhm_mm": options.smoothing_fwhm_mm,
                       "hypoperfusion_thresholds_s": list(THRESHOLDS_S)},
        "constants": options.constants.as_dict(),
        "aif_quality": None if curves is None else curves.aif_quality,
        "vof_quality": None if curves is None else curves.vof_quality,
        "aif_points_zyx": (np.argwhere(aif_mask).tolist() if aif_mask is not None and aif_mask.sum() <= 200 else None),
        "volumes_ml": ({f"tmax_gt_{thr:g}s": float(hyp.volumes_ml[thr]) for thr in THRESHOLDS_S}
                       if hyp is not None else {}),
        "mismatch": mism,
        "map_summary_in_brain": _map_summary(maps, brain),
        "units": {k: MAP_UNITS[k] for k in (*maps, "volumes", "delta_r2star") if k in MAP_UNITS},
        "warnings": list(inputs.warnings),
        "timings_s": timings,
    }


def smooth_in_mask(values: np.ndarray, mask: np.ndarray, spacing_xyz, fwhm_mm: float,
                   n_threads: Optional[int] = None) -> np.ndarray:
    """In-plane Gaussian smoothing of a (T, Z, Y, X) series restricted to ``mask`` (normalised convolution:
    smooth(values·mask)/smooth(mask), so nothing leaks in from outside the brain). ``fwhm_mm`` is the full
    width at half maximum in mm (σ = FWHM/2.355 per axis, divided by the x/y spacing). Returns float32,
    0 outside the mask. Slices and frames are smoothed independently (DSC slices are thick): scipy.ndimage's
    Gaussian filter (σ = 0 on z) frame by frame, frames spread over ``n_threads`` threads."""
    from neurocontrast.threads import thread_map

    if fwhm_mm is None or fwhm_mm <= 0:
        return values
    mask = np.asarray(mask, dtype=bool)
    inside = np.asarray(values, dtype=np.float32)[:, mask]
    smoother = _FrameSmoother(mask, np.ones(inside.shape[1], bool), spacing_xyz, fwhm_mm)
    out = np.zeros(np.shape(values), np.float32)

    def smooth(t: int) -> None:
        out[t][mask] = smoother(inside[t])

    thread_map(smooth, range(inside.shape[0]), n_threads)
    return out


class _FrameSmoother:
    """The normalised in-plane convolution of :func:`smooth_in_mask` on the voxels of ``region`` (Z, Y, X)
    bool, in C order: ``use`` (N,) bool marks the voxels that are smoothed and contribute (the others, e.g.
    vessels, keep their values and do not leak). Calling it on one frame's values (N,) float32 returns the
    smoothed frame (N,) float32; it is thread-safe (scipy.ndimage releases the GIL)."""

    def __init__(self, region: np.ndarray, use: np.ndarray, spacing_xyz, fwhm_mm: float):
        from scipy import ndimage

        self.shape = region.shape
        sx, sy = float(spacing_xyz[0]), float(spacing_xyz[1])
        self.sigma = (0.0, fwhm_mm / 2.3548 / sy, fwhm_mm / 2.3548 / sx)
        self.use = np.asarray(use, dtype=bool)
        self.used = np.flatnonzero(region)[self.use]
        m = np.zeros(region.size, np.float32)
        m[self.used] = 1.0
        weight = ndimage.gaussian_filter(m.reshape(self.shape), sigma=self.sigma, mode="constant").ravel()
        self.inverse = (1.0 / np.maximum(weight[self.used], 1e-6)).astype(np.float32)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        grid = np.zeros(int(np.prod(self.shape)), np.float32)
        grid[self.used] = values[self.use]
        grid = ndimage.gaussian_filter(grid.reshape(self.shape), sigma=self.sigma, mode="constant").ravel()
        out = np.array(values, dtype=np.float32)
        out[self.use] = grid[self.used] * self.inverse
        return out


def _shift_times(quality: Dict[str, Any], offset_s: float) -> Dict[str, Any]:
    """Quality figures of a curve that starts ``offset_s`` after the series: times from the first frame."""
    out = dict(quality)
    for key in ("time_to_peak_s", "arrival_s", "first_moment_s"):
        if isinstance(out.get(key), (int, float)) and np.isfinite(out[key]):
            out[key] = float(out[key]) + offset_s
    return out


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=np.ones((1, 3, 3), bool), iterations=iterations)


#: Output writing lives in :mod:`neurocontrast.perfusion.outputs`; its functions stay importable from here.
_OUTPUT_NAMES = ("prepare_output_folder", "write_outputs", "perfusion_from_files")


def __getattr__(name):  # PEP 562: lazy, since outputs imports this module
    if name in _OUTPUT_NAMES:
        from neurocontrast.perfusion import outputs

        return getattr(outputs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
