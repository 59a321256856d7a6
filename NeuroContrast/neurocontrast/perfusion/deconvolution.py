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
  ``"lcurve"`` (or None) picks λ per voxel at the corner (maximum curvature) of the L-curve
  (Hansen & O'Leary, SIAM J Sci Comput 14:1487, 1993) over a log grid of 40 values in [1e-3, 1].
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from scipy.linalg import blas  # imported before threadpool_limits so that its OpenBLAS is limited too

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
#: Default λ grid of the L-curve (relative to the largest singular value).
LCURVE_LAMBDAS = tuple(np.logspace(-3, 0, 40))


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


def _truncated_pinv(matrix: np.ndarray, threshold: float) -> np.ndarray:
    if not (0 <= threshold < 1):
        raise NeuroContrastError(f"SVD threshold must be in [0, 1) (fraction of the largest singular value), "
                                 f"got {threshold!r}")
    u, s, vt = np.linalg.svd(matrix)
    keep = s >= threshold * s[0]
    inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return (vt.T * inv) @ u.T


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
    t = aif.shape[0]
    length = 2 * t
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, vt = np.linalg.svd(aif_matrix(aif, tr_s, circulant=True))
    # components kept by each threshold (singular values sorted descending)
    ranks = np.array([int(np.count_nonzero(s >= x * s[0])) for x in thr])
    v = np.ascontiguousarray(vt.T, dtype=np.float32)                          # (L, L)
    # residue rows and their second differences stacked: one product updates both
    w = np.asfortranarray(np.vstack([vt.T, np.diff(vt.T, n=2, axis=0)]), dtype=np.float32)  # (2L-2, L)
    proj = np.ascontiguousarray((u[:t, :] / s[None, :]).T, dtype=np.float32)  # (L, T): zero-padded tissue
    limit = np.float32(oi * length)
    n = tissue.shape[1]
    out = np.empty((length, n), dtype=np.float32)
    chosen = np.empty(n, dtype=np.float32)

    def run_chunk(c0: int) -> None:
        c = np.ascontiguousarray(tissue[:, c0:c0 + chunk_size], dtype=np.float32)
        m = c.shape[1]
        b = proj @ c                                                          # (L, m) = S^-1 U^T c
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
        keep = np.arange(length)[:, None] < r_sel[None, :]                    # (L, m) components per voxel
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


def _tikhonov(tissue, aif, tr_s, lambda_, lambdas=LCURVE_LAMBDAS):
    u, s, vt = np.linalg.svd(aif_matrix(aif, tr_s))
    beta = u.T @ tissue.astype(np.float64)   # (T, N)
    if lambda_ is None or (isinstance(lambda_, str) and lambda_.lower() == "lcurve"):
        lam = np.asarray(lambdas, dtype=np.float64) * s[0]          # (n_l,)
        f = s[None, :] ** 2 / (s[None, :] ** 2 + lam[:, None] ** 2)   # (n_l, T) filter factors
        beta2 = beta ** 2
        eta2 = (f / s[None, :]) ** 2 @ beta2                          # ||k||^2      (n_l, N)
        rho2 = (1.0 - f) ** 2 @ beta2                                 # ||A k - c||^2 (n_l, N)
        tiny = 1e-300
        x = 0.5 * np.log(rho2 + tiny)
        y = 0.5 * np.log(eta2 + tiny)
        ll = np.log(lam)
        dx, dy = np.gradient(x, ll, axis=0), np.gradient(y, ll, axis=0)
        ddx, ddy = np.gradient(dx, ll, axis=0), np.gradient(dy, ll, axis=0)
        kappa = (dx * ddy - ddx * dy) / np.maximum((dx ** 2 + dy ** 2) ** 1.5, tiny)
        kappa[[0, -1]] = -np.inf                                      # corners need both neighbours
        best = np.argmax(kappa, axis=0)                               # (N,)
        coef = f[best].T / s[:, None]                                 # (T, N)
    else:
        try:
            rel = float(lambda_)
        except (TypeError, ValueError):
            raise NeuroContrastError(f"lambda_ must be a positive number, None or 'lcurve', got {lambda_!r}") from None
        if not (np.isfinite(rel) and rel > 0):
            raise NeuroContrastError(f"lambda_ must be > 0 (relative to the largest singular value), got {rel!r}")
        lam = rel * s[0]
        coef = (s / (s ** 2 + lam ** 2))[:, None]
    return (vt.T @ (coef * beta)).astype(np.float32)


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
        (default 0.1). lambda_ : Tikhonov λ relative to the largest singular value, or None/"lcurve".
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
    matrix; Tikhonov with the L-curve of Hansen & O'Leary (1993); Cao et al. eq. 3.
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
