"""Deconvolution of tissue ΔR2* curves by the AIF: sSVD, block-circulant cSVD, oSVD and Tikhonov.

Indicator-dilution model (Østergaard et al., MRM 36:715, 1996; Cao et al. eq. 3)::

    C_t(t) = CBF · (C_a ⊗ R)(t) = (C_a ⊗ k)(t),   k(t) = CBF · R(t)  [1/s]

Discretised with the AIF matrix of Wu et al. (MRM 50:164, 2003, eq. 6), which assumes the AIF varies
linearly-quadratically within a sampling interval (Simpson-like weights)::

    a_ij = Δt · (C_a(t_{i-j-1}) + 4 C_a(t_{i-j}) + C_a(t_{i-j+1})) / 6     for 0 <= j <= i, else 0

with samples outside the series taken as 0. Every method returns the flow-scaled residue ``k`` in 1/s,
so that ``max(k)·6000`` is CBF in mL/100 mL/min before the hematocrit and density correction
(see :mod:`neurocontrast.perfusion.maps`).

Methods (``METHODS``):

- ``"ssvd"``: standard truncated SVD of the T×T lower-triangular matrix; singular values below
  ``ssvd_threshold`` × (largest singular value) are discarded (default 0.2, Østergaard 1996). Sensitive
  to tracer delay (CBF underestimated when the tissue bolus arrives after the AIF).
- ``"csvd"``: block-circulant SVD (Wu 2003): AIF and tissue zero-padded to L = 2T, circulant matrix
  ``D_ij = a_{(i-j) mod L}``; truncation at ``csvd_threshold`` × max singular value (default 0.1).
  Insensitive to delay; an index i >= T of the residue means a negative delay (i − L)·Δt.
- ``"osvd"``: oscillation-index cSVD (Wu 2003): for every voxel the lowest truncation threshold whose
  residue has an oscillation index OI <= ``osvd_oi`` is used. OI (Wu 2003, eq. 9)::

      OI = 1/(L · max k) · Σ_{i=2}^{L-1} |k_i − 2 k_{i−1} + k_{i−2}|

  Default ``osvd_oi = 0.095``, the value Wu et al. 2003 derived from simulations as the one that made
  oSVD's CBF least sensitive to the SNR (their recommended OI for clinical SNR). The candidate thresholds
  ``osvd_thresholds`` (fractions of the largest singular value) default to :data:`OSVD_THRESHOLDS`.
  Implementation: the SVD is computed once; the residues for all thresholds follow as matrix products
  over chunks of voxels, added rank block by rank block (thresholds differ only in how many singular
  components they keep), and the OI of all voxels is evaluated per threshold at once; no per-voxel loop
  (NumPy + single-threaded BLAS per block, blocks spread over worker threads).
- ``"tikhonov"``: Tikhonov regularisation of the T×T system, ``min ||A k − c||² + λ²||k||²`` solved with
  SVD filter factors s²/(s²+λ²); ``lambda_`` is relative to the largest singular value. A float fixes λ;
  ``"gcv"`` (or None) picks one λ for the whole series by generalised cross-validation pooled over all
  voxels (Golub, Heath & Wahba 1979; :func:`tikhonov_gcv_lambda`) over a log grid of 61 values in [1e-3, 1].
  (The per-voxel L-curve corner used before was unstable on noisy curves: docs/perfusion.md.)

Tmax: the maximum of a regularised residue lies after the true delay, because truncation blurs the
residue's step at the delay (noise-free, Δt 1.5 s: sSVD +2.3 s, cSVD +2.0 s, oSVD +1.2 s on average).
:func:`residue_peak_s` locates the peak between frames and :func:`tmax_calibration` /
:func:`correct_tmax` remove the lag measured on reference curves deconvolved with the same AIF and the
same regularisation (see :func:`neurocontrast.perfusion.maps.compute_maps`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

try:  # threadpoolctl is installed with scikit-learn (a dependency)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - without it BLAS keeps its own threading (slower, same results)
    import contextlib

    def threadpool_limits(*args, **kwargs):
        return contextlib.nullcontext()

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.signal import check_tr

METHODS = ("ssvd", "csvd", "osvd", "tikhonov")

#: Default oscillation-index limit for oSVD (Wu et al., MRM 50:164, 2003).
OSVD_OI = 0.095
#: Default candidate truncation thresholds of oSVD (fractions of the largest singular value), ascending.
OSVD_THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30,
                   0.40, 0.50, 0.65, 0.80)
#: Default sSVD threshold (Østergaard et al. 1996).
SSVD_THRESHOLD = 0.2
#: Default cSVD threshold.
CSVD_THRESHOLD = 0.1
#: Default λ grid of Tikhonov's generalised cross-validation (relative to the largest singular value).
GCV_LAMBDAS = tuple(np.logspace(-3, 0, 61))


# ----------------------------------------------------------------------------------------------------
# AIF matrices
# ----------------------------------------------------------------------------------------------------

def _simpson_weights(aif: np.ndarray, tr_s: float) -> np.ndarray:
    """a_k = Δt (C(k-1) + 4C(k) + C(k+1))/6 with zeros outside the given samples. (n,) float64."""
    p = np.pad(np.asarray(aif, dtype=np.float64), 1)
    return tr_s * (p[:-2] + 4.0 * p[1:-1] + p[2:]) / 6.0


def aif_matrix(aif: np.ndarray, tr_s: float, circulant: bool = False) -> np.ndarray:
    """The discrete convolution matrix of the AIF (Wu et al. 2003, eq. 6 and eq. 8).

    Parameters
    ----------
    aif : (T,) float, AIF concentration (ΔR2*, 1/s). tr_s : float, frame interval in s.
    circulant : False → (T, T) lower-triangular Toeplitz matrix; True → (2T, 2T) block-circulant matrix
        of the AIF zero-padded to L = 2T (Wu 2003).

    Returns
    -------
    float64 (T, T) or (2T, 2T); ``A @ k`` approximates the convolution C_a ⊗ k sampled at the frames.
    """
    aif = np.asarray(aif, dtype=np.float64)
    t = aif.shape[0]
    if circulant:
        length = 2 * t
        a = _simpson_weights(np.concatenate([aif, np.zeros(length - t)]), tr_s)
        idx = (np.arange(length)[:, None] - np.arange(length)[None, :]) % length
        return a[idx]
    a = _simpson_weights(aif, tr_s)
    diff = np.arange(t)[:, None] - np.arange(t)[None, :]
    return np.where(diff >= 0, a[np.clip(diff, 0, None)], 0.0)


def oscillation_index(residue: np.ndarray) -> np.ndarray:
    """Oscillation index of residues (Wu et al. 2003, eq. 9).

    residue : (L, N) or (L,) float, flow-scaled residue k. Returns (N,) or scalar float64, dimensionless;
    +inf where max(k) <= 0.
    """
    k = np.asarray(residue, dtype=np.float64)
    length = k.shape[0]
    d2 = np.abs(k[2:] - 2.0 * k[1:-1] + k[:-2]).sum(axis=0)
    mx = k.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi = np.where(mx > 0, d2 / (length * np.where(mx > 0, mx, 1.0)), np.inf)
    return oi


def residue_delay_s(index: np.ndarray, n_frames: int, length: int, tr_s: float) -> np.ndarray:
    """Convert residue sample indices to delays in s: ``index·Δt``, or ``(index − L)·Δt`` for circulant
    residues (``length > n_frames``) where ``index >= n_frames`` (negative delays, Wu 2003)."""
    index = np.asarray(index)
    if length > n_frames:
        index = np.where(index >= n_frames, index - length, index)
    return index.astype(np.float64) * float(tr_s)


# ----------------------------------------------------------------------------------------------------
# Tmax: sub-frame residue peak and the correction of the regularisation lag
# ----------------------------------------------------------------------------------------------------

#: MTT (s) of the reference residue exp(−t/MTT) with which :func:`tmax_calibration` measures the lag.
TMAX_REFERENCE_MTT_S = 4.0
#: Reference MTTs (s) of the lag tables between which :func:`lag_corrected_tmax` interpolates (log scale).
TMAX_REFERENCE_MTTS_S = (2.0, 4.0, 8.0, 16.0)


def argmax_rows(values: np.ndarray) -> np.ndarray:
    """First index of the maximum along axis 0, like ``np.argmax(values, axis=0)`` for finite values.

    values : (L, N) float. Returns (N,) int64. NumPy's argmax over the slow axis of a C-ordered array walks
    each column with a stride (≈ 22 ms for 100 × 32 768 float32 here); this running comparison, row by row
    over contiguous rows, takes a quarter of that.
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] == 0:
        return np.argmax(values, axis=0)
    best = values[0].copy()
    index = np.zeros(values.shape[1], np.int64)
    better = np.empty(values.shape[1], bool)
    for row in range(1, values.shape[0]):
        np.greater(values[row], best, out=better)
        index[better] = row
        np.maximum(best, values[row], out=best)
    return index


def residue_peak_s(residue: np.ndarray, n_frames: int, tr_s: float, index: Optional[np.ndarray] = None) -> np.ndarray:
    """Sub-frame time of the residue maximum: parabola through the maximum sample and its two neighbours.

    residue : (L, N) float, k(t); L = T (sSVD, Tikhonov: no interpolation at the first or last sample) or
    L = 2T (circulant: neighbours wrap around, index i >= T is the delay (i − L)·Δt).
    n_frames : T. tr_s : Δt in s. index : (N,) int, the sample of each maximum when already known
    (:func:`argmax_rows`). Returns (N,) float64 in s; the vertex offset is limited to ±Δt/2.
    """
    k = np.asarray(residue)
    length, n = k.shape
    i = argmax_rows(k) if index is None else np.asarray(index)
    cols = np.arange(n)
    if length > n_frames:
        prev, nxt = k[(i - 1) % length, cols], k[(i + 1) % length, cols]
    else:
        prev, nxt = k[np.maximum(i - 1, 0), cols], k[np.minimum(i + 1, length - 1), cols]
    top = k[i, cols]
    den = prev.astype(np.float64) - 2.0 * top + nxt
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(den < 0, 0.5 * (prev - nxt) / np.where(den < 0, den, -1.0), 0.0)
    if length == n_frames:
        offset = np.where((i == 0) | (i == length - 1), 0.0, offset)
    return residue_delay_s(i, n_frames, length, tr_s) + np.clip(offset, -0.5, 0.5) * float(tr_s)


def _reference_tissue(aif: np.ndarray, tr_s: float, delays_s: np.ndarray, mtt_s: float) -> np.ndarray:
    """(T, M) curves (C_a ⊗ exp(−t/MTT))(t − d) for the AIF linear between its samples (20 sub-steps per
    frame), one column per delay d (s). Scale is irrelevant: only the peak position is used."""
    t = aif.shape[0]
    dt = tr_s / 20.0
    fine = np.arange(0.0, (t + 1) * tr_s, dt)
    frames = np.arange(t) * tr_s
    aif_fine = np.interp(fine, frames, aif, right=0.0)
    conv = np.convolve(aif_fine, np.exp(-fine / mtt_s))[: fine.size] * dt
    return np.interp(frames[:, None] - np.asarray(delays_s, dtype=np.float64)[None, :], fine, conv, left=0.0)


def tmax_calibration(aif: np.ndarray, tr_s: float, method: str, cut: float, *,
                     mtt_s: float = TMAX_REFERENCE_MTT_S) -> Tuple[np.ndarray, np.ndarray, float]:
    """Measured residue peak versus true delay for this AIF and regularisation (the Tmax lag table).

    Truncation (and Tikhonov filtering) blurs the step of the residue at the tissue delay, and the blurred
    maximum lies after the step: noise-free curves with delays 0–10.5 s (Δt 1.5 s, MTT 3–6 s) read on
    average 2.3 s (sSVD 0.2), 2.0 s (cSVD 0.1) and 1.2 s (oSVD) late (docs/perfusion.md). The table
    deconvolves reference tissue curves ``(C_a ⊗ exp(−t/MTT))(t − d)`` (MTT ``mtt_s``, d on a Δt/4 grid)
    with the same AIF matrix and the same regularisation and records where their peaks land.

    Parameters
    ----------
    aif : (T,) float AIF (1/s). tr_s : Δt in s. method : ``"ssvd"``, ``"csvd"`` (also for an oSVD voxel,
        whose residue is the cSVD residue at its chosen threshold) or ``"tikhonov"``.
    cut : the threshold (fraction of the largest singular value) or Tikhonov's relative λ.
    mtt_s : MTT of the reference residue, s (default :data:`TMAX_REFERENCE_MTT_S`).

    Returns
    -------
    measured : (M,) float64 s, peak times (:func:`residue_peak_s`), made non-decreasing.
    delay : (M,) float64 s, the true delays. Circulant methods cover −T·Δt/4 … T·Δt/2, the others 0 … T·Δt/2.
    mtt_read : float s, the median MTT the method reads on these curves (∫C_t/∫C_a / max k: the
        regularisation lowers max k, so it reads longer than ``mtt_s``), the abscissa of
        :func:`lag_corrected_tmax`.
    """
    return tmax_calibrations(aif, tr_s, method, [cut], [mtt_s])[float(cut)][0]


def tmax_calibrations(aif: np.ndarray, tr_s: float, method: str, cuts: Sequence[float],
                      mtts_s: Sequence[float] = TMAX_REFERENCE_MTTS_S) -> Dict[float, list]:
    """:func:`tmax_calibration` tables for several thresholds and reference MTTs with one SVD of the AIF matrix
    (and one set of reference curves per MTT): ``{cut: [table for each MTT in mtts_s]}``, cuts as floats.

    The residue of every threshold is ``V · f(S) · Uᵀ c`` with the filter of :func:`_svd_filter`, the same
    filter as the deconvolution itself (an oSVD voxel uses the cSVD tables of its chosen threshold).
    """
    aif = np.asarray(aif, dtype=np.float64)
    t = aif.shape[0]
    if method not in ("ssvd", "csvd", "tikhonov"):
        raise NeuroContrastError(f"no Tmax calibration for method {method!r}")
    circulant = method == "csvd"
    lo = -0.25 * t * tr_s if circulant else 0.0
    delays = np.arange(lo, 0.5 * t * tr_s + 1e-9, tr_s / 4.0)
    aif_area = np.trapezoid(aif, dx=tr_s)
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, vt = np.linalg.svd(aif_matrix(aif, tr_s, circulant=circulant))
        out: Dict[float, list] = {float(c): [] for c in cuts}
        for mtt_s in mtts_s:
            tissue = _reference_tissue(aif, tr_s, delays, mtt_s)
            proj = u[:t, :].T @ tissue                        # Uᵀc of the zero-padded curves (L, M)
            area = np.trapezoid(tissue, dx=tr_s, axis=0)
            for cut in out:
                k = vt.T @ (_svd_filter(method, s, cut)[:, None] * proj)
                measured = np.maximum.accumulate(residue_peak_s(k, t, tr_s))
                with np.errstate(divide="ignore", invalid="ignore"):
                    mtt_read = area / aif_area / k.max(axis=0)
                out[cut].append((measured, delays, float(np.nanmedian(mtt_read))))
    return out


def correct_tmax(measured_s: np.ndarray, calibration: Tuple[np.ndarray, ...]) -> np.ndarray:
    """Map measured residue peaks (s) to delays through a :func:`tmax_calibration` table.

    Inside the table: linear interpolation of the inverse; outside it the end offsets are kept (slope 1).
    (N,) float64 in s.
    """
    measured_s = np.asarray(measured_s, dtype=np.float64)
    table, delays = calibration[0], calibration[1]
    # strictly increasing abscissa for np.interp (flat stretches of the table get a tiny slope)
    table = table + np.arange(table.size) * 1e-9
    out = np.interp(measured_s, table, delays)
    out = np.where(measured_s < table[0], measured_s - (table[0] - delays[0]), out)
    return np.where(measured_s > table[-1], measured_s - (table[-1] - delays[-1]), out)


def lag_corrected_tmax(peak_s: np.ndarray, mtt_read_s: np.ndarray,
                       calibrations: Sequence[Tuple[np.ndarray, ...]]) -> np.ndarray:
    """Tmax from measured residue peaks, with the lag table that matches the voxel's MTT.

    The lag of the blurred residue peak grows with the MTT (a slower decay moves the blurred maximum further
    from the step): noise-free, with one table at MTT 4 s, sSVD reads MTT 3 s −0.27 s and MTT 6 s +0.45 s late.
    Each voxel is corrected with every table and the results are interpolated linearly in log(MTT) between
    the tables, by the MTT the method *reads* (the voxel's ∫C_t/∫C_a/max k against each table's
    ``mtt_read``, both blurred alike), clipped to the tables' range.

    peak_s : (N,) s from :func:`residue_peak_s`. mtt_read_s : (N,) s, ∫C_t/∫C_a / max k of each voxel.
    calibrations : :func:`tmax_calibration` tables for several reference MTTs, ascending.
    Returns (N,) float64, s.
    """
    refs = np.log(np.maximum.accumulate(np.array([c[2] for c in calibrations], dtype=np.float64)) +
                  np.arange(len(calibrations)) * 1e-9)
    corrected = np.stack([correct_tmax(peak_s, table) for table in calibrations])   # (n_ref, N)
    if refs.size == 1:
        return corrected[0]
    mtt = np.asarray(mtt_read_s, dtype=np.float64)
    x = np.clip(np.log(np.where(np.isfinite(mtt) & (mtt > 0), mtt, np.exp(refs[0]))), refs[0], refs[-1])
    hi = np.clip(np.searchsorted(refs, x, side="right"), 1, refs.size - 1)
    w = np.clip((x - refs[hi - 1]) / (refs[hi] - refs[hi - 1]), 0.0, 1.0)
    cols = np.arange(corrected.shape[1])
    return (1.0 - w) * corrected[hi - 1, cols] + w * corrected[hi, cols]


# ----------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------

def _check_inputs(tissue: np.ndarray, aif: np.ndarray, tr_s: float) -> Tuple[np.ndarray, np.ndarray, bool]:
    tissue = np.asarray(tissue)
    aif = np.asarray(aif, dtype=np.float64)
    if aif.ndim != 1:
        raise NeuroContrastError(f"aif must be a 1D curve (T,), got shape {aif.shape}")
    squeeze = tissue.ndim == 1
    if squeeze:
        tissue = tissue[:, None]
    if tissue.ndim != 2:
        raise NeuroContrastError(f"tissue must be (T, N) curves (time on axis 0), got shape {tissue.shape}")
    if tissue.shape[0] != aif.shape[0]:
        raise NeuroContrastError(f"tissue has {tissue.shape[0]} frames but the AIF has {aif.shape[0]}; "
                                 "they must be sampled on the same frames")
    if aif.shape[0] < 10:
        raise NeuroContrastError(f"the AIF has {aif.shape[0]} frames; at least 10 are needed")
    tr_s = check_tr(tr_s)
    if not np.all(np.isfinite(aif)):
        raise NeuroContrastError("the AIF contains NaN or infinite values")
    if not np.all(np.isfinite(tissue)):
        raise NeuroContrastError("the tissue curves contain NaN or infinite values")
    if aif.max() <= 0 or np.trapezoid(aif) <= 0:
        raise NeuroContrastError("the AIF has no positive bolus (its maximum or area is <= 0); check the AIF "
                                 "mask and that the curve is ΔR2*/concentration, not raw signal")
    return tissue, aif, squeeze


def _svd_filter(method: str, s: np.ndarray, cut: float) -> np.ndarray:
    """The SVD filter f(s) of the regularised inverse ``V diag(f) Uᵀ``: truncation (sSVD, cSVD: 1/s where
    s >= cut·s_max, else 0) or Tikhonov (s/(s² + λ²), λ = cut·s_max). (len(s),) float64."""
    s = np.asarray(s, dtype=np.float64)
    if method == "tikhonov":
        lam = float(cut) * s[0]
        return s / (s ** 2 + lam ** 2)
    if not (0 <= cut < 1):
        raise NeuroContrastError(f"SVD threshold must be in [0, 1) (fraction of the largest singular value), "
                                 f"got {cut!r}")
    keep = s >= cut * s[0]
    return np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)


def _truncated_pinv(matrix: np.ndarray, threshold: float) -> np.ndarray:
    u, s, vt = np.linalg.svd(matrix)
    return (vt.T * _svd_filter("ssvd", s, threshold)) @ u.T


# ----------------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------------

def _ssvd(tissue, aif, tr_s, threshold):
    pinv = _truncated_pinv(aif_matrix(aif, tr_s), threshold).astype(np.float32)
    return pinv @ tissue.astype(np.float32, copy=False)


def _csvd(tissue, aif, tr_s, threshold):
    t = aif.shape[0]
    pinv = _truncated_pinv(aif_matrix(aif, tr_s, circulant=True), threshold)
    # the padded tissue is zero beyond T: only the first T columns of the pseudo-inverse matter
    return pinv[:, :t].astype(np.float32) @ tissue.astype(np.float32, copy=False)


def osvd(tissue: np.ndarray, aif: np.ndarray, tr_s: float, oi: float = OSVD_OI,
         thresholds: Optional[Sequence[float]] = None, chunk_size: int = 2048,
         n_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """oSVD (Wu et al. 2003): block-circulant SVD with a per-voxel threshold chosen by oscillation index.

    Parameters
    ----------
    tissue : (T, N) float, tissue ΔR2* (1/s). aif : (T,) float, AIF ΔR2* (1/s). tr_s : frame interval, s.
    oi : float > 0, oscillation-index limit (default 0.095, Wu 2003).
    thresholds : ascending fractions of the largest singular value tried (default :data:`OSVD_THRESHOLDS`).
        Per voxel the LOWEST threshold whose residue has OI <= ``oi`` is used (Wu's iteration raises the
        threshold until the OI falls below the limit); if none passes, the highest.
    chunk_size : voxels per block (working memory ~ 4·2T·chunk_size·4 bytes; small blocks stay in cache).
    n_threads : worker threads over blocks (default: the CPU count); BLAS runs single-threaded inside.

    Returns
    -------
    residue : (2T, N) float32, k(t) = CBF·R(t) in 1/s (index i >= T ↔ delay (i − 2T)·Δt).
    chosen : (N,) float32, the threshold used per voxel.

    Vectorised: one SVD D = U S Vᵀ; per block of voxels B = S⁻¹Uᵀc once, then the residues of all
    thresholds are built cumulatively, ``K_r = K_r' + V[:, r':r] B[r':r]`` (thresholds differ only in how
    many singular components they keep), together with their second differences; the OI of every voxel
    is evaluated for each threshold in one pass; the selected residue is rebuilt with one masked product.
    """
    tissue, aif, squeeze = _check_inputs(tissue, aif, tr_s)
    if not (np.isfinite(oi) and oi > 0):
        raise NeuroContrastError(f"osvd_oi must be a positive oscillation-index limit, got {oi!r}")
    thr = np.asarray(OSVD_THRESHOLDS if thresholds is None else thresholds, dtype=np.float64)
    if thr.ndim != 1 or thr.size == 0 or np.any(thr < 0) or np.any(thr >= 1) or np.any(np.diff(thr) <= 0):
        raise NeuroContrastError(f"osvd thresholds must be strictly ascending fractions in [0, 1), got {thr}")
    if int(chunk_size) < 1:
        raise NeuroContrastError(f"chunk_size must be >= 1, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    from scipy.linalg import blas  # before threadpool_limits, so that scipy's OpenBLAS is limited too

    t = aif.shape[0]
    length = 2 * t
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, vt = np.linalg.svd(aif_matrix(aif, tr_s, circulant=True))
    # components kept by each threshold (singular values sorted descending)
    ranks = np.array([int(np.count_nonzero(s >= x * s[0])) for x in thr])
    rmax = int(ranks.max())                                                   # no threshold keeps more
    v = np.ascontiguousarray(vt.T[:, :rmax], dtype=np.float32)                # (L, rmax)
    # residue rows and their second differences stacked: one product updates both
    w = np.asfortranarray(np.vstack([vt.T[:, :rmax], np.diff(vt.T[:, :rmax], n=2, axis=0)]),
                          dtype=np.float32)                                   # (2L-2, rmax)
    proj = np.ascontiguousarray((u[:t, :rmax] / s[None, :rmax]).T, dtype=np.float32)  # (rmax, T): zero-padded tissue
    limit = np.float32(oi * length)
    n = tissue.shape[1]
    out = np.empty((length, n), dtype=np.float32)
    chosen = np.empty(n, dtype=np.float32)

    def run_chunk(c0: int) -> None:
        c = np.ascontiguousarray(tissue[:, c0:c0 + chunk_size], dtype=np.float32)
        m = c.shape[1]
        b = proj @ c                                                          # (rmax, m) = S^-1 U^T c
        kd = np.zeros((2 * length - 2, m), np.float32)                        # [k; D2 k]
        k, d2k = kd[:length], kd[length:]
        absbuf = np.empty((length - 2, m), np.float32)
        sel = np.full(m, thr.size - 1)                                        # fallback: highest threshold
        done = 0
        for j in range(thr.size - 1, -1, -1):                                 # descending thresholds
            r = ranks[j]
            if r > done:                                                      # kd += W[:, done:r] b[done:r]
                res = blas.sgemm(1.0, b[done:r].T, w[:, done:r].T, beta=1.0, c=kd.T, overwrite_c=1)
                if not np.shares_memory(res, kd):                             # f2py had to copy
                    kd[...] = res.T
                done = r
            mx = k.max(axis=0)
            rough = np.abs(d2k, out=absbuf).sum(axis=0)
            sel[(rough <= limit * mx) & (mx > 0)] = j                         # OI <= oi; lower thresholds win
        r_sel = ranks[sel]
        keep = np.arange(rmax)[:, None] < r_sel[None, :]                      # (rmax, m) components per voxel
        out[:, c0:c0 + m] = v @ np.where(keep, b, np.float32(0))
        chosen[c0:c0 + m] = thr[sel]

    starts = range(0, n, chunk_size)
    workers = max(1, min(n_threads or (os.cpu_count() or 1), len(starts)))
    # single-threaded BLAS per block and blocks spread over threads: many small products are far faster
    # this way than with BLAS's own threads (which spin and thrash on a busy 2-core machine)
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            for c0 in starts:
                run_chunk(c0)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run_chunk, starts))
    if squeeze:
        return out[:, 0], chosen[:1]
    return out, chosen


def tikhonov_gcv_lambda(tissue: np.ndarray, aif: np.ndarray, tr_s: float,
                        lambdas: Sequence[float] = GCV_LAMBDAS, chunk_size: int = 65536) -> float:
    """One Tikhonov λ for the whole series by generalised cross-validation (Golub, Heath & Wahba,
    Technometrics 21:215, 1979), pooled over all voxels.

    With A = U S Vᵀ (the T×T AIF matrix), β = Uᵀc and filter factors f_i = s_i²/(s_i² + λ²)::

        GCV(λ) = Σ_voxels Σ_i (1 − f_i)² β_i²  /  (T − Σ_i f_i)²

    Pooling the residuals of every voxel makes the choice stable (the per-voxel L-curve corner jumps with
    the noise of each curve: CBF Pearson r 0.57 at SNR 40 on the anatomical phantom, docs/perfusion.md).

    tissue : (T, N) float (1/s). aif : (T,) float (1/s). tr_s : Δt in s. lambdas : candidate λ relative to
    the largest singular value (default :data:`GCV_LAMBDAS`). Returns the relative λ (float) minimising GCV.
    Raises NeuroContrastError on bad curves (see :func:`deconvolve`).
    """
    tissue, aif, _ = _check_inputs(tissue, aif, tr_s)
    lam_rel = np.asarray(lambdas, dtype=np.float64)
    if lam_rel.ndim != 1 or lam_rel.size < 2 or np.any(~np.isfinite(lam_rel)) or np.any(lam_rel <= 0):
        raise NeuroContrastError(f"Tikhonov λ candidates must be >= 2 positive numbers, got {lam_rel}")
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, _ = np.linalg.svd(aif_matrix(aif, tr_s))
        beta2 = np.zeros(s.size)
        ut = u.T.astype(np.float32)
        for c0 in range(0, tissue.shape[1], int(chunk_size)):
            b = ut @ np.asarray(tissue[:, c0:c0 + int(chunk_size)], dtype=np.float32)
            beta2 += np.einsum("ij,ij->i", b, b, dtype=np.float64)
    lam = lam_rel * s[0]
    f = s[None, :] ** 2 / (s[None, :] ** 2 + lam[:, None] ** 2)          # (n_l, T)
    residual = (1.0 - f) ** 2 @ beta2
    gcv = residual / (s.size - f.sum(axis=1)) ** 2
    return float(lam_rel[int(np.argmin(gcv))])


def _tikhonov_lambda(lambda_) -> Optional[float]:
    """None for GCV (None or "gcv"), else the validated relative λ."""
    if lambda_ is None or (isinstance(lambda_, str) and lambda_.lower() == "gcv"):
        return None
    try:
        rel = float(lambda_)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"lambda_ must be a positive number, None or 'gcv', got {lambda_!r}") from None
    if not (np.isfinite(rel) and rel > 0):
        raise NeuroContrastError(f"lambda_ must be > 0 (relative to the largest singular value), got {rel!r}")
    return rel


def _tikhonov(tissue, aif, tr_s, lambda_):
    rel = _tikhonov_lambda(lambda_)
    if rel is None:
        rel = tikhonov_gcv_lambda(tissue, aif, tr_s)
    u, s, vt = np.linalg.svd(aif_matrix(aif, tr_s))
    coef = _svd_filter("tikhonov", s, rel)[:, None]
    return (vt.T @ (coef * (u.T @ tissue.astype(np.float64)))).astype(np.float32)


def deconvolve(tissue: np.ndarray, aif: np.ndarray, tr_s: float, method: str = "osvd", *,
               osvd_oi: float = OSVD_OI, osvd_thresholds: Optional[Sequence[float]] = None,
               ssvd_threshold: float = SSVD_THRESHOLD, csvd_threshold: float = CSVD_THRESHOLD,
               lambda_: Union[None, float, str] = None, chunk_size: int = 2048) -> np.ndarray:
    """Deconvolve tissue curves by the AIF; return the flow-scaled residue k(t) = CBF·R(t).

    Parameters
    ----------
    tissue : (T, N) float (or (T,)), tissue ΔR2*/concentration curves, time on axis 0 (1/s).
    aif : (T,) float, arterial input function in the same units (1/s), already partial-volume corrected.
    tr_s : float, frame interval in s.
    method : one of :data:`METHODS` (see the module docstring for each).
    osvd_oi, osvd_thresholds : oSVD oscillation-index limit (default 0.095, Wu 2003) and candidate
        thresholds. ssvd_threshold : sSVD truncation (default 0.2). csvd_threshold : cSVD truncation
        (default 0.1). lambda_ : Tikhonov λ relative to the largest singular value, or None/"gcv" (one λ for
        all the given curves by generalised cross-validation).
    chunk_size : voxels per block for oSVD.

    Returns
    -------
    (L, N) float32 (or (L,) for 1D input), k in 1/s. L = T for sSVD/Tikhonov, L = 2T for cSVD/oSVD,
    where index i >= T means the delay (i − L)·tr_s (negative). CBF [mL/100 mL/min] = 6000·max k.

    Raises
    ------
    NeuroContrastError : unknown method, shape mismatch, fewer than 10 frames, NaN/inf, tr_s <= 0,
        AIF without a positive bolus, invalid thresholds or λ.

    Sources: Østergaard et al. MRM 36:715 (1996) sSVD; Wu et al. MRM 50:164 (2003) cSVD/oSVD and the AIF
    matrix; Tikhonov with generalised cross-validation (Golub, Heath & Wahba 1979); Cao et al. eq. 3.
    """
    name = str(method).lower()
    if name not in METHODS:
        raise NeuroContrastError(f"unknown deconvolution method {method!r}; expected one of {', '.join(METHODS)}")
    tis, aif_arr, squeeze = _check_inputs(tissue, aif, tr_s)
    if name == "osvd":
        out, _ = osvd(tis, aif_arr, tr_s, oi=osvd_oi, thresholds=osvd_thresholds, chunk_size=chunk_size)
    else:
        # small SVDs and (T x T)·(T x N) products: single-threaded BLAS avoids thread thrashing
        with threadpool_limits(limits=1, user_api="blas"):
            if name == "csvd":
                out = _csvd(tis, aif_arr, tr_s, csvd_threshold)
            elif name == "ssvd":
                out = _ssvd(tis, aif_arr, tr_s, ssvd_threshold)
            else:
                out = _tikhonov(tis, aif_arr, tr_s, lambda_)
    out = np.asarray(out, dtype=np.float32)
    return out[:, 0] if squeeze else out
