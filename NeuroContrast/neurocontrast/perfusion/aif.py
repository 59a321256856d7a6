"""Arterial input function (AIF) and venous output function (VOF): curves, quality figures, automatic AIF
suggestion (Mouridsen et al. 2006), automatic VOF suggestion in the superior sagittal sinus and VOF-based
partial-volume rescaling (Cao et al. eq. 8).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.perfusion.signal import _bolus_frames, _robust_sd, bolus_arrival, check_tr, spatial_mask

log = logging.getLogger(__name__)


def _check_series(values: np.ndarray, name: str = "values") -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 4:
        raise NeuroContrastError(f"{name} must be a 4D series (T, Z, Y, X), got shape {values.shape}")
    return values


def curve_from_mask(values: np.ndarray, mask: np.ndarray, *, within: Optional[np.ndarray] = None,
                    name: str = "AIF mask") -> np.ndarray:
    """Mean curve of the voxels in a mask.

    Parameters
    ----------
    values : (T, Z, Y, X) float, ΔR2* (1/s) or signal. mask : (Z, Y, X) bool/int, non-zero = inside.
    within : (Z, Y, X) bool, optional; e.g. the brain (or head) mask: the mask must overlap it.
    name : how the mask is called in error messages.

    Returns (T,) float64 mean curve.

    Raises GeometryError if the mask shape differs from (Z, Y, X); NeuroContrastError if the mask is
    empty, lies entirely outside ``within``, or its voxels contain NaN.
    """
    values = _check_series(values)
    mask = np.asarray(mask)
    if mask.shape != values.shape[1:]:
        raise GeometryError(f"{name} has shape {mask.shape} but the series has (Z, Y, X) = {values.shape[1:]}")
    mask = mask != 0
    if not mask.any():
        raise NeuroContrastError(f"{name} is empty: it selects no voxel")
    if within is not None:
        within = np.asarray(within, dtype=bool)
        if within.shape != mask.shape:
            raise GeometryError(f"the reference mask has shape {within.shape}, {name} has {mask.shape}")
        if not (mask & within).any():
            raise NeuroContrastError(f"{name} lies entirely outside the brain mask ({int(mask.sum())} voxels, "
                                     "none inside); it must be drawn on an artery/vein inside the head")
    curves = values[:, mask].astype(np.float64)
    if not np.all(np.isfinite(curves)):
        raise NeuroContrastError(f"the voxels of {name} contain NaN or infinite values")
    return curves.mean(axis=1)


def curve_from_points(values: np.ndarray, points_zyx: Sequence[Sequence[float]]) -> np.ndarray:
    """Mean curve at voxel positions (e.g. markups control points converted to voxel indices).

    values : (T, Z, Y, X) float. points_zyx : (P, 3) voxel indices (z, y, x), rounded to the nearest voxel.
    Returns (T,) float64. Raises NeuroContrastError for no points, non-finite points or points outside the
    volume (naming the point).
    """
    values = _check_series(values)
    pts = np.asarray(points_zyx, dtype=np.float64)
    if pts.size == 0:
        raise NeuroContrastError("no points given for the curve")
    pts = pts.reshape(-1, 3)
    if not np.all(np.isfinite(pts)):
        raise NeuroContrastError("points contain NaN or infinite coordinates")
    idx = np.rint(pts).astype(int)
    shape = np.array(values.shape[1:])
    bad = np.any((idx < 0) | (idx >= shape), axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise NeuroContrastError(f"point {first} at (z, y, x) = {tuple(pts[first])} lies outside the volume "
                                 f"of shape {tuple(shape)}")
    curves = values[:, idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64)
    return curves.mean(axis=1)


def _fwhm(curve: np.ndarray, level: float, peak: int, tr_s: float) -> float:
    half = level + 0.5 * (curve[peak] - level)
    i = peak
    while i > 0 and curve[i - 1] > half:
        i -= 1
    j = peak
    while j < curve.size - 1 and curve[j + 1] > half:
        j += 1
    left = i - 1 + (half - curve[i - 1]) / (curve[i] - curve[i - 1]) if i > 0 else 0.0
    right = j + (curve[j] - half) / (curve[j] - curve[j + 1]) if j < curve.size - 1 else float(curve.size - 1)
    return float((right - left) * tr_s)


def aif_quality(curve: np.ndarray, tr_s: float) -> Dict[str, object]:
    """Quality figures of an AIF/VOF concentration (ΔR2*) curve.

    Parameters
    ----------
    curve : (T,) float, ΔR2* in 1/s (rising during the bolus). tr_s : frame interval in s.

    Returns
    -------
    dict with
      peak (1/s, above baseline), time_to_peak_s (from the series start), arrival_s (bolus arrival, s),
      fwhm_s (full width at half maximum of the first pass, s), area (∫ curve dt, s⁻¹·s), baseline (mean
      pre-bolus level, 1/s), baseline_sd (SD of the pre-bolus frames, 1/s), noise_sd (robust
      frame-to-frame noise SD over the whole curve, 1/s), snr (peak / baseline_sd), first_moment_s
      (∫t·C/∫C), warnings (list of str: SNR < 10, FWHM > 12 s, peak in the last 20 % of the series,
      negative undershoot below −20 % of the peak).

    Raises NeuroContrastError: not (T,), fewer than 10 frames, NaN, tr_s <= 0, no bolus (peak <= baseline).
    Sources: figures used to judge AIFs in Calamante, Stroke 44:2013 and Mouridsen et al. MRM 55:524 (2006).
    """
    x = np.asarray(curve, dtype=np.float64)
    if x.ndim != 1:
        raise NeuroContrastError(f"curve must be (T,), got shape {x.shape}")
    arrival_s = bolus_arrival(x, tr_s)  # validates length, NaN and tr_s
    fr = _bolus_frames(x, tr_s)
    base = x[fr.start:fr.arrival]
    baseline = float(base.mean())
    baseline_sd = float(base.std(ddof=1)) if base.size > 1 else 0.0
    peak_idx = int(np.argmax(x))
    peak = float(x[peak_idx] - baseline)
    if peak <= 0:
        raise NeuroContrastError("the curve has no bolus (its peak is not above the baseline)")
    t = np.arange(x.size) * tr_s
    area = float(np.trapezoid(x, dx=tr_s))
    pos = np.clip(x - baseline, 0, None)
    first_moment = float(np.trapezoid(t * pos, dx=tr_s) / np.trapezoid(pos, dx=tr_s))
    snr = peak / baseline_sd if baseline_sd > 0 else float("inf")
    fwhm = _fwhm(x, baseline, peak_idx, tr_s)
    warnings = []
    if snr < 10:
        warnings.append(f"low SNR ({snr:.1f} < 10): the curve is noisy")
    if fwhm > 12:
        warnings.append(f"wide bolus (FWHM {fwhm:.1f} s > 12 s): venous or delayed/dispersed curve?")
    if peak_idx >= 0.8 * x.size:
        warnings.append("the peak lies in the last 20 % of the series: the bolus may be truncated")
    if x.min() - baseline < -0.2 * peak:
        warnings.append("negative undershoot below -20 % of the peak: signal saturation or T1 effects?")
    return {"peak": peak, "time_to_peak_s": float(peak_idx * tr_s), "arrival_s": float(arrival_s),
            "fwhm_s": fwhm, "area": area, "baseline": baseline, "baseline_sd": baseline_sd,
            "noise_sd": _robust_sd(x), "snr": float(snr), "first_moment_s": first_moment,
            "warnings": warnings}


def _first_moment(curves: np.ndarray, tr_s: float) -> np.ndarray:
    t = np.arange(curves.shape[0], dtype=np.float64)[:, None] * tr_s
    pos = np.clip(curves, 0, None)
    area = pos.sum(axis=0)
    return (t * pos).sum(axis=0) / np.where(area > 0, area, 1.0)


def suggest_aif(delta_r2star: np.ndarray, tr_s: float, brain_mask: Optional[np.ndarray] = None,
                n_voxels: int = 10, seed: int = 0, n_clusters: int = 5,
                auc_quantile: float = 0.90, roughness_quantile: float = 0.75) -> np.ndarray:
    """Automatic AIF candidates by cluster analysis (Mouridsen et al., MRM 55:524, 2006).

    1. Candidates: voxels in ``brain_mask`` (all voxels when None) whose area under the ΔR2* curve lies
       in the top 10 % (``auc_quantile`` 0.90) and which have a positive peak;
    2. the 25 % roughest of them (roughness = ∫ (C'')² dt of the unit-area curve) are excluded;
    3. k-means (``n_clusters`` 5, scikit-learn, ``seed``) on the curves normalised to unit area; the cluster
       (of at least ``n_voxels`` members) whose centroid peaks earliest is kept — among clusters peaking in
       the same frame, the one with
       the highest unit-area peak (high and narrow bolus). Mouridsen et al. choose by the first moment; the
       time of the peak is used here because the first moment of real curves is dominated by recirculation
       and late-frame noise;
    4. step 3 is repeated once on the kept cluster;
    5. the ``n_voxels`` voxels of the final cluster with the highest peaks, among those that peak no later
       than one frame after the cluster centroid, form the suggestion.

    Parameters
    ----------
    delta_r2star : (T, Z, Y, X) float, ΔR2* in 1/s. tr_s : frame interval in s.
    brain_mask : (Z, Y, X) bool, optional. n_voxels : size of the suggestion (>= 1). seed : k-means seed.

    Returns (Z, Y, X) bool mask with ``n_voxels`` voxels (fewer only if the final cluster is smaller).

    Raises GeometryError on mask shape mismatch; NeuroContrastError when fewer than ``n_clusters`` candidate
    voxels remain (no bolus in the data, mask too small), n_voxels < 1, NaN in the data.
    """
    from sklearn.cluster import KMeans

    data = _check_series(delta_r2star, "delta_r2star")
    tr_s = check_tr(tr_s)
    if int(n_voxels) < 1:
        raise NeuroContrastError(f"n_voxels must be >= 1, got {n_voxels!r}")
    spatial = data.shape[1:]
    mask = spatial_mask(brain_mask, spatial)
    index = np.flatnonzero(mask.ravel())
    curves = data.reshape(data.shape[0], -1)[:, index].astype(np.float64)
    if not np.all(np.isfinite(curves)):
        raise NeuroContrastError("delta_r2star contains NaN or infinite values")
    auc = np.trapezoid(curves, dx=tr_s, axis=0)
    peak = curves.max(axis=0)
    ok = (auc > 0) & (peak > 0)
    if np.count_nonzero(ok) < n_clusters:
        raise NeuroContrastError("no bolus in the data: fewer than "
                                 f"{n_clusters} voxels with a positive ΔR2* curve for the AIF search")
    cut = np.quantile(auc[ok], auc_quantile)
    cand = np.flatnonzero(ok & (auc >= cut))
    norm = curves[:, cand] / auc[cand]
    rough = (np.diff(norm, n=2, axis=0) ** 2).sum(axis=0)
    cand = cand[rough <= np.quantile(rough, roughness_quantile)]
    if cand.size < n_clusters:
        raise NeuroContrastError(f"only {cand.size} AIF candidate voxels; at least {n_clusters} are needed")
    cluster_ttp = int(np.median(np.argmax(curves[:, cand], axis=0)))
    for _ in range(2):
        if cand.size < max(n_clusters, 2 * int(n_voxels)):
            break
        feats = (curves[:, cand] / auc[cand]).T                      # (n, T) unit-area curves
        km = KMeans(n_clusters=n_clusters, n_init=5, random_state=seed).fit(feats)
        labels = km.labels_
        centres = km.cluster_centers_                                  # (k, T) mean unit-area curves
        sizes = np.bincount(labels, minlength=n_clusters)
        # clusters too small to supply the suggestion (isolated noisy curves) are not eligible
        eligible = sizes >= min(int(n_voxels), int(sizes.max()))
        ttp = np.where(eligible, np.argmax(centres, axis=1), np.iinfo(np.int64).max)
        height = np.where(eligible, centres.max(axis=1), -np.inf)     # peak per unit area: high and narrow
        early = np.flatnonzero(ttp == ttp.min())                       # earliest peak
        best = early[np.argmax(height[early])]
        cluster_ttp = int(ttp[best])
        cand = cand[labels == best]
    # the highest peaks among the final cluster's voxels that peak no later than the cluster (+1 frame)
    on_time = cand[np.argmax(curves[:, cand], axis=0) <= cluster_ttp + 1]
    pool = on_time if on_time.size >= int(n_voxels) else cand
    keep = pool[np.argsort(-peak[pool])[: int(n_voxels)]]
    out = np.zeros(mask.size, dtype=bool)
    out[index[keep]] = True
    log.info("suggest_aif: %d voxels, peak at %.1f s", keep.size, cluster_ttp * tr_s)
    return out.reshape(spatial)


def posterior_midline_region(brain_mask: np.ndarray, geometry, *, half_width_mm: float = 20.0,
                             posterior_fraction: float = 0.25, margin_voxels: int = 4) -> np.ndarray:
    """Where the superior sagittal sinus lies: on the brain's surface, near the midline, posteriorly.

    The brain mask is dilated in plane by ``margin_voxels`` (the sinus lies just outside the brain, the
    automatic mask may stop at its wall); kept are voxels within ``half_width_mm`` of the brain's centroid
    along patient left-right and posterior of the centroid by more than ``posterior_fraction`` of the
    brain's anterior-posterior extent. Directions come from the grid (DICOM LPS: +x left, +y posterior).

    brain_mask : (Z, Y, X) bool. geometry : :class:`neurocontrast.io.Geometry` of that grid.
    Returns (Z, Y, X) bool. Raises NeuroContrastError on an empty brain mask.
    """
    from scipy import ndimage

    brain = np.asarray(brain_mask, dtype=bool)
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty: no region to search for the VOF")
    nz, ny, nx = brain.shape
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index_xyz = np.stack([ii.ravel(), jj.ravel(), kk.ravel()]).astype(np.float64)          # (3, N)
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    physical = (direction @ (index_xyz * np.asarray(geometry.spacing, dtype=np.float64)[:, None])
                + np.asarray(geometry.origin, dtype=np.float64)[:, None])                  # LPS mm
    lr = physical[0].reshape(brain.shape)
    ap = physical[1].reshape(brain.shape)
    centre_lr, centre_ap = lr[brain].mean(), ap[brain].mean()
    extent_ap = np.ptp(ap[brain])
    near = ndimage.binary_dilation(brain, np.ones((1, 3, 3), bool), iterations=int(margin_voxels))
    return near & (np.abs(lr - centre_lr) <= half_width_mm) & (ap >= centre_ap + posterior_fraction * extent_ap)


def _first_pass_area(curves: np.ndarray, ttp: np.ndarray, peak: np.ndarray, tr_s: float) -> np.ndarray:
    """Σ over the contiguous frames around ``ttp`` where the curve is >= peak/2, times Δt. (N,) float64."""
    above = curves >= 0.5 * peak[None, :]
    t = np.arange(curves.shape[0])[:, None]
    # the run of "above" frames that contains the peak: no "below" frame between t and ttp
    below = ~above
    last_below_before = np.where(below & (t < ttp[None, :]), t, -1).max(axis=0)
    first_below_after = np.where(below & (t > ttp[None, :]), t, curves.shape[0]).min(axis=0)
    run = (t > last_below_before[None, :]) & (t < first_below_after[None, :])
    return (curves * run).sum(axis=0) * tr_s


def suggest_vof(delta_r2star: np.ndarray, tr_s: float, search_mask: np.ndarray, *,
                baseline_signal: Optional[np.ndarray] = None, arterial_ttp_s: Optional[float] = None,
                n_voxels: int = 4, tail_frames: int = 8) -> np.ndarray:
    """Automatic VOF suggestion: the voxels of a large vein (superior sagittal sinus) in ``search_mask``.

    A vein free of partial volume carries the whole tracer bolus, after the arteries and dispersed: its
    curve is **late**, **tall** and **broad** (van Osch et al., MRM 45:477, 2001; Knutsson et al. 2010).
    Kept are voxels of ``search_mask`` (e.g. :func:`posterior_midline_region`)

    1. with a baseline signal of at least 40 % of the median over the search region (``baseline_signal``
       given: no noise-floor voxels, whose ΔR2* is noise);
    2. that peak at least one frame after ``arterial_ttp_s`` (default: the peak of the mean curve of the
       search region) — late;
    3. whose last ``tail_frames`` frames average at most 35 % of their peak (back to baseline, no drift);

    of these, the rougher half (mean |second difference| relative to the peak: noise, flow artefacts) is
    dropped, and the rest are ranked by their first-pass area (the 3-frame running mean summed over the
    contiguous frames around its peak that stay above half the peak: tall × broad; the sinus's full blood
    volume fraction gives the largest first pass in the head). Among the 3·``n_voxels`` best, the 26-connected cluster with the largest total
    area is kept (one vessel, not scattered noisy voxels) and its ``n_voxels`` largest-area voxels form the
    suggestion.

    Parameters
    ----------
    delta_r2star : (T, Z, Y, X) float, ΔR2* in 1/s (baseline frames ≈ 0). tr_s : frame interval, s.
    search_mask : (Z, Y, X) bool. baseline_signal : (Z, Y, X) float S0 (optional).
    arterial_ttp_s : the AIF's time to peak in s from the first frame of ``delta_r2star`` (optional).
    n_voxels : size of the suggestion (>= 1). tail_frames : frames of the curve's tail (>= 1).

    Returns (Z, Y, X) bool with ``n_voxels`` voxels (fewer if the cluster is smaller).

    Raises GeometryError on a mask shape mismatch; NeuroContrastError when the search region is empty or
    no voxel passes the tests (no venous bolus found: draw the VOF by hand), NaN in the data, bad sizes.
    """
    from scipy import ndimage

    data = _check_series(delta_r2star, "delta_r2star")
    tr_s = check_tr(tr_s)
    if int(n_voxels) < 1 or int(tail_frames) < 1 or int(tail_frames) >= data.shape[0]:
        raise NeuroContrastError(f"n_voxels must be >= 1 and tail_frames in [1, T), got {n_voxels!r}, {tail_frames!r}")
    spatial = data.shape[1:]
    region = spatial_mask(search_mask, spatial)
    if not region.any():
        raise NeuroContrastError("the VOF search region is empty")
    index = np.flatnonzero(region.ravel())
    curves = data.reshape(data.shape[0], -1)[:, index].astype(np.float64)
    if not np.all(np.isfinite(curves)):
        raise NeuroContrastError("delta_r2star contains NaN or infinite values in the VOF search region")
    smooth = ndimage.uniform_filter1d(curves, 3, axis=0, mode="nearest")   # single-frame spikes do not win
    peak = smooth.max(axis=0)
    ttp = np.argmax(smooth, axis=0)
    auc = _first_pass_area(smooth, ttp, peak, tr_s)
    tail = curves[-int(tail_frames):].mean(axis=0)
    rough = np.abs(np.diff(curves, n=2, axis=0)).mean(axis=0) / np.where(peak > 0, peak, 1.0)
    if arterial_ttp_s is None:
        ref_frame = int(np.argmax(curves.mean(axis=1)))
    else:
        ref_frame = int(round(float(arterial_ttp_s) / tr_s))
    ok = (peak > 0) & (auc > 0) & (ttp >= ref_frame + 1) & (tail <= 0.35 * peak)
    if baseline_signal is not None:
        s0 = np.asarray(baseline_signal, dtype=np.float64)
        if s0.shape != spatial:
            raise GeometryError(f"baseline_signal has shape {s0.shape} but the series has {spatial}")
        s0 = s0.ravel()[index]
        ok &= s0 >= 0.4 * np.median(s0)
    cand = np.flatnonzero(ok)
    if cand.size > 4 * int(n_voxels):                     # the roughest half: noise and flow artefacts
        cand = cand[rough[cand] <= np.median(rough[cand])]
    if cand.size == 0:
        raise NeuroContrastError("no venous curve found for the automatic VOF (late, tall and back to baseline) "
                                 "in the search region; draw a VOF mask in the superior sagittal sinus")
    top = cand[np.argsort(-auc[cand])[: 3 * int(n_voxels)]]
    picked = np.zeros(region.size, bool)
    picked[index[top]] = True
    labels, n_lab = ndimage.label(picked.reshape(spatial), np.ones((3, 3, 3), bool))
    auc_full = np.zeros(region.size)
    auc_full[index] = auc
    totals = ndimage.sum(auc_full.reshape(spatial), labels, index=np.arange(1, n_lab + 1))
    best = int(np.argmax(totals)) + 1
    members = np.flatnonzero(labels.ravel() == best)
    keep = members[np.argsort(-auc_full[members])[: int(n_voxels)]]
    out = np.zeros(region.size, dtype=bool)
    out[keep] = True
    log.info("suggest_vof: %d voxels, peak at frame %d (arterial reference frame %d)", keep.size,
             int(np.median(np.argmax(data.reshape(data.shape[0], -1)[:, keep], axis=0))), ref_frame)
    return out.reshape(spatial)


def rescale_aif_to_vof(aif: np.ndarray, vof: np.ndarray, tr_s: float) -> Tuple[np.ndarray, float]:
    """Partial-volume correction of the AIF with the VOF (Cao et al. eq. 8; van Osch et al. MRM 2001).

    A vein large enough to be free of partial volume carries all the tracer that entered: its area under
    the curve equals the true arterial area. The AIF is scaled so that ∫AIF dt = ∫VOF dt (trapezoid over
    the whole series).

    aif, vof : (T,) float, ΔR2* in 1/s. tr_s : frame interval in s.
    Returns ``(aif * factor (T,) float64, factor = ∫VOF / ∫AIF)``. A factor < 1 (VOF smaller than the
    AIF) is logged as a warning: the VOF itself is probably partial-volumed.
    Raises NeuroContrastError: shapes differ or not 1D, NaN, tr_s <= 0, an area <= 0.
    """
    a = np.asarray(aif, dtype=np.float64)
    v = np.asarray(vof, dtype=np.float64)
    if a.ndim != 1 or v.shape != a.shape:
        raise NeuroContrastError(f"aif and vof must be (T,) curves of the same length, got {a.shape} and {v.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(v))):
        raise NeuroContrastError("aif or vof contains NaN or infinite values")
    tr_s = check_tr(tr_s)
    area_a = float(np.trapezoid(a, dx=tr_s))
    area_v = float(np.trapezoid(v, dx=tr_s))
    if area_a <= 0:
        raise NeuroContrastError(f"the AIF area is {area_a:g} (<= 0): no arterial bolus")
    if area_v <= 0:
        raise NeuroContrastError(f"the VOF area is {area_v:g} (<= 0): no venous bolus; check the VOF mask")
    factor = area_v / area_a
    if factor < 1:
        log.warning("VOF area is smaller than the AIF area (factor %.2f): the VOF may be partial-volumed", factor)
    return a * factor, float(factor)
