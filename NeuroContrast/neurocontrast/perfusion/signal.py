"""DSC signal to ΔR2*(t): automatic baseline (pre-bolus) detection, ΔR2* conversion, bolus arrival.

The T2*-weighted DSC signal drops while the contrast bolus passes. With S0 the pre-bolus (baseline)
signal, the change of the transverse relaxation rate is (Cao et al., eq. 1; Rosen et al. 1990)::

    ΔR2*(t) = -ln(S(t) / S0) / TE        [1/s, TE in s]

which is proportional to the tracer concentration (Cao et al., eq. 2).

The baseline is found from the data, never from a fixed frame window (:func:`detect_baseline`): the first
frames of a DSC run are often brighter than the rest because the longitudinal magnetisation has not yet
reached its steady state; they are skipped; the baseline ends before the bolus arrives.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Optional, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)

#: Fewest frames a DSC series must have to separate baseline, bolus and recirculation.
MIN_FRAMES = 10
#: Non-steady-state frames are only searched in the first this many seconds (a few T1 of grey matter).
NON_STEADY_STATE_MAX_S = 10.0
#: A frame belongs to the bolus when the curve deviates from the baseline level by more than this many
#: robust noise standard deviations.
ARRIVAL_SIGMAS = 3.0



def check_tr(tr_s) -> float:
    """``tr_s`` as a float; raises NeuroContrastError unless it is a finite positive frame interval (s)."""
    if not (tr_s is not None and np.isfinite(tr_s) and tr_s > 0):
        raise NeuroContrastError(f"tr_s must be a positive frame interval in seconds, got {tr_s!r}")
    return float(tr_s)


def spatial_mask(brain_mask, spatial: Tuple[int, ...], name: str = "brain_mask") -> np.ndarray:
    """``brain_mask`` as a bool array of shape ``spatial`` (all True when None); GeometryError on a shape mismatch."""
    from neurocontrast.errors import GeometryError

    if brain_mask is None:
        return np.ones(spatial, dtype=bool)
    mask = np.asarray(brain_mask).astype(bool)
    if mask.shape != tuple(spatial):
        raise GeometryError(f"{name} has shape {mask.shape} but the series has (Z, Y, X) = {tuple(spatial)}")
    return mask

class _BolusFrames(NamedTuple):
    level: float        # baseline level of the (rising) curve
    noise_sd: float     # robust frame-to-frame noise SD
    start: int          # first steady-state baseline frame
    arrival: int        # first frame of the bolus (baseline ends before it)
    peak: int           # frame of the bolus peak


def _validate_series(signal: np.ndarray, name: str = "signal") -> np.ndarray:
    arr = np.asarray(signal)
    if arr.ndim < 1:
        raise NeuroContrastError(f"{name} must be an array with time on axis 0, got a scalar")
    if arr.shape[0] < MIN_FRAMES:
        raise NeuroContrastError(f"{name} has {arr.shape[0]} frames on axis 0 (time); at least {MIN_FRAMES} "
                                 "are needed to find a baseline and the bolus")
    # one float64-accumulated sum (no temporary array) is finite exactly when every value is
    if not np.isfinite(arr.sum(dtype=np.float64)) and not np.all(np.isfinite(arr)):
        raise NeuroContrastError(f"{name} contains NaN or infinite values")
    return arr


def _robust_sd(x: np.ndarray) -> float:
    """Noise SD from first differences (MAD-based), insensitive to slow trends and single outliers."""
    if x.size < 3:
        return 0.0
    d = np.diff(x)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _bolus_frames(rising: np.ndarray, tr_s: Optional[float]) -> _BolusFrames:
    """Analyse a curve that RISES during the bolus (concentration-like; pass -signal for a signal curve).

    1. peak = argmax of a 3-frame moving average (ignoring the last frame so an end ramp is no peak);
    2. level = median of the frames before the peak, noise SD from first differences of those frames;
    3. arrival = first frame of the contiguous run ending at the peak that exceeds level + 3 SD
       (and 5 % of the peak height, so that tiny noise SDs of very smooth curves do not trigger early),
       moved back (at most 2 frames) over the early upslope while the 3-frame average stays above
       level + 2 SD;
    4. start = leading frames within the first 10 s that lie BELOW level - 3 SD in this rising
       orientation (i.e. a signal above the steady state) are non-steady-state frames and skipped;
    5. steps 2–4 are repeated once with the level taken from [start, arrival).
    """
    x = np.asarray(rising, dtype=np.float64)
    n = x.size
    if np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())):
        raise NeuroContrastError("the signal does not change over time: there is no contrast bolus in the "
                                 "series (a constant series, or the wrong file)")
    smooth = np.convolve(np.pad(x, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    peak = int(np.argmax(smooth[: n - 1]))
    if peak < 2:
        raise NeuroContrastError(f"the bolus peak is at frame {peak}: no pre-bolus baseline frames exist "
                                 "(the series must start before the contrast arrives)")
    max_nss = n if not tr_s else max(1, int(np.floor(NON_STEADY_STATE_MAX_S / float(tr_s))))
    start, lo, hi = 0, 0, peak
    for _ in range(2):
        seg = x[lo:hi] if hi - lo >= 2 else x[:peak]
        level = float(np.median(seg))
        sd = _robust_sd(seg)
        height = float(smooth[peak] - level)
        thr = max(ARRIVAL_SIGMAS * sd, 0.05 * height)
        # arrival: walk back from the peak while the smoothed curve is above level + thr
        i = peak
        while i > 0 and x[i - 1] > level + thr:
            i -= 1
        # back off to the onset (at most 2 frames): the 3-frame average (which already sees the next
        # frame) still above level + 2 SD belongs to the early upslope that the 3-SD threshold missed
        j = i
        while i > 2 and j - i < 2 and smooth[i - 1] > level + 2.0 * sd:
            i -= 1
        arrival = i
        # non-steady-state: leading frames lying clearly on the "no contrast but brighter" side
        start = 0
        nss_thr = max(ARRIVAL_SIGMAS * sd, 0.01 * abs(height))
        while start < min(max_nss, arrival - 2) and x[start] < level - nss_thr:
            start += 1
        lo, hi = start, arrival
    if arrival - start < 2:
        raise NeuroContrastError(f"only {arrival - start} baseline frame(s) before the bolus arrives at frame "
                                 f"{arrival}; at least 2 pre-bolus frames are needed for S0")
    return _BolusFrames(level, sd, start, arrival, peak)


def _global_curve(signal: np.ndarray) -> np.ndarray:
    """Mean signal over the voxels that carry signal (temporal mean above 10 % of the 99th percentile).

    Computed without copying the series: the mean over the kept voxels is a matrix-vector product per block
    of voxels (float32 BLAS), accumulated in float64.
    """
    if signal.ndim == 1:
        return signal.astype(np.float64)
    flat = signal.reshape(signal.shape[0], -1)
    mean = flat.mean(axis=0, dtype=np.float32)
    ref = np.percentile(mean, 99)
    keep = mean > 0.1 * ref if ref > 0 else np.ones(mean.shape, bool)
    if not np.any(keep):
        keep = np.ones(mean.shape, bool)
    weights = keep.astype(flat.dtype if flat.dtype.kind == "f" else np.float32)
    total = np.zeros(flat.shape[0], np.float64)
    block = 1 << 16
    for v0 in range(0, flat.shape[1], block):
        part = flat[:, v0:v0 + block]
        total += (part if part.dtype.kind == "f" else part.astype(np.float32)) @ weights[v0:v0 + block]
    return total / float(np.count_nonzero(keep))


def detect_baseline(signal: np.ndarray, tr_s: Optional[float] = None) -> Tuple[int, int]:
    """Automatically find the pre-bolus baseline frames of a DSC series.

    Parameters
    ----------
    signal : (T, ...) array, raw DSC signal (arbitrary units, any dtype), time on axis 0. A whole series
        (T, Z, Y, X) is reduced to the mean curve of the voxels carrying signal (temporal mean above 10 % of
        the 99th percentile, so background is ignored); a (T,) array is used as is.
    tr_s : float, optional. Frame interval in s. Limits the search for non-steady-state frames to the first
        10 s (``NON_STEADY_STATE_MAX_S``); without it the whole pre-bolus segment is searched.

    Returns
    -------
    (start, stop) : int frame indices; the baseline is ``signal[start:stop]``. ``start`` skips the
        non-steady-state first frames whose signal is elevated above the steady-state level (by more than
        3 robust noise SDs); ``stop`` is the first frame of the bolus (signal below the baseline by more
        than 3 noise SDs and 5 % of the bolus depth, contiguous up to the bolus minimum).

    Raises
    ------
    NeuroContrastError : fewer than 10 frames, NaN/inf values, tr_s <= 0, a curve constant over time (no
        bolus), or fewer than 2 baseline frames before the bolus.

    Source: baseline of the indicator-dilution analysis (Østergaard et al., MRM 36:715, 1996); the
    non-steady-state frames are the approach to the longitudinal steady state of a T1-saturated EPI train.
    """
    arr = _validate_series(signal)
    if tr_s is not None and not (np.isfinite(tr_s) and tr_s > 0):
        raise NeuroContrastError(f"tr_s must be a positive number of seconds, got {tr_s!r}")
    curve = _global_curve(arr)
    frames = _bolus_frames(-curve, tr_s)
    if frames.start:
        log.info("baseline: skipped %d non-steady-state frame(s)", frames.start)
    return frames.start, frames.arrival


def delta_r2star(signal: np.ndarray, te_s: float, baseline: Optional[Tuple[int, int]] = None,
                 tr_s: Optional[float] = None) -> np.ndarray:
    """ΔR2*(t) = −ln(S(t)/S0)/TE (Cao et al. eq. 1) with S0 the per-voxel mean over the baseline frames.

    Parameters
    ----------
    signal : (T, ...) array, raw DSC signal (any positive units), time on axis 0.
    te_s : float, echo time in s (e.g. 0.03); must be > 0.
    baseline : (start, stop) frame indices of the pre-bolus baseline; detected with
        :func:`detect_baseline` (using ``tr_s``) when None.
    tr_s : float, optional, frame interval in s (only used for baseline detection).

    Returns
    -------
    float32 array of the same shape, ΔR2* in 1/s. Voxels whose S0 <= 0 (background) are 0; samples with
    S(t) <= 0 inside the object are evaluated at S = 1e-3·S0 (counted in a log line).

    Raises
    ------
    NeuroContrastError : te_s missing or <= 0, fewer than 10 frames, NaN/inf, invalid baseline range.
    """
    check_te(te_s)
    arr = _validate_series(signal)
    if baseline is None:
        baseline = detect_baseline(arr, tr_s)
    start, stop = int(baseline[0]), int(baseline[1])
    if not (0 <= start < stop <= arr.shape[0]):
        raise NeuroContrastError(f"baseline {baseline} is not a frame range within 0..{arr.shape[0]}")
    data = arr.astype(np.float32, copy=False)
    s0 = baseline_signal(data[start:stop])
    out = data / np.where(s0 > 0, s0, np.float32(1.0))           # S/S0, the one float32 copy
    n_bad = ratio_to_delta_r2star(out, s0 > 0, te_s)
    if n_bad:
        log.info("delta_r2star: %d sample(s) with S(t) <= 0 set to 1e-3 * S0", n_bad)
    return out


def check_te(te_s) -> float:
    """The echo time in s, validated for ΔR2*. Raises NeuroContrastError when missing, <= 0 or > 1 s (ms?)."""
    if te_s is None or not np.isfinite(te_s) or te_s <= 0:
        raise NeuroContrastError(f"TE must be a positive echo time in seconds (e.g. 0.03), got {te_s!r}")
    if te_s > 1.0:
        raise NeuroContrastError(f"TE = {te_s} s is implausible for DSC (expected ~0.02-0.06 s); "
                                 "was it given in ms?")
    return float(te_s)


def baseline_signal(frames: np.ndarray) -> np.ndarray:
    """S0: the mean of the baseline ``frames`` (B, ...) per voxel, accumulated in float64. Returns float32 (...)."""
    return np.asarray(frames).mean(axis=0, dtype=np.float64).astype(np.float32)


def ratio_to_delta_r2star(ratio: np.ndarray, valid: np.ndarray, te_s: float) -> int:
    """In place: S/S0 (float32, time on axis 0, e.g. (T,) one curve or (1, N) one frame) → ΔR2* = −ln(S/S0)/TE
    in 1/s (Cao et al. eq. 1).

    ``valid`` (the voxel axes of ``ratio``, bool) marks S0 > 0; elsewhere (background) ΔR2* is 0. Samples
    with S/S0 <= 0 inside the object are evaluated at 1e-3 (the caller logs the returned count).
    Returns the number of such samples.
    """
    if not np.all(valid):
        if ratio.ndim == 1:
            ratio[:] = 1.0
        else:
            ratio[..., ~valid] = 1.0
    bad = ratio <= 0
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        np.copyto(ratio, np.float32(1e-3), where=bad)
    del bad
    np.log(ratio, out=ratio)
    ratio *= np.float32(-1.0 / te_s)
    return n_bad


def bolus_arrival(curve: np.ndarray, tr_s: float) -> float:
    """Bolus arrival time of one curve, in s from the first frame.

    Parameters
    ----------
    curve : (T,) float. A concentration-like curve (ΔR2*, rising during the bolus) or a raw signal curve
        (falling); the orientation is detected from the larger excursion from the median.
    tr_s : float, frame interval in s (> 0).

    Returns
    -------
    float, s. The time at which the curve leaves the baseline level by the arrival threshold
    (3 robust noise SDs and 5 % of the peak height) on the contiguous rise to the peak, linearly
    interpolated between the last baseline frame and the first bolus frame.

    Raises
    ------
    NeuroContrastError : not 1D, fewer than 10 frames, NaN, tr_s <= 0, no baseline before the peak.
    """
    x = _validate_series(curve, "curve").astype(np.float64)
    if x.ndim != 1:
        raise NeuroContrastError(f"curve must be 1D (T,), got shape {x.shape}")
    if not (np.isfinite(tr_s) and tr_s > 0):
        raise NeuroContrastError(f"tr_s must be a positive number of seconds, got {tr_s!r}")
    # orientation from the larger excursion, ignoring the possibly elevated non-steady-state frames
    skip = min(x.size // 5, int(np.ceil(NON_STEADY_STATE_MAX_S / tr_s)))
    tail = x[skip:]
    med = np.median(tail)
    if (med - tail.min()) > (tail.max() - med):
        x = -x
    fr = _bolus_frames(x, tr_s)
    thr = fr.level + max(ARRIVAL_SIGMAS * fr.noise_sd, 0.05 * (x[fr.peak] - fr.level))
    i = fr.arrival
    if i == 0:
        return 0.0
    x0, x1 = x[i - 1], x[i]
    frac = 1.0 if x1 == x0 else float(np.clip((thr - x0) / (x1 - x0), 0.0, 1.0))
    return float((i - 1 + frac) * tr_s)
