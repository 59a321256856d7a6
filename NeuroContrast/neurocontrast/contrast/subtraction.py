"""Differential contrast: radiometric matching, subtraction images, noise harmonisation, enhancement mask.

Public API (arrays are (z, y, x) float, on one grid, already co-registered; masks bool of the same shape)
---------------------------------------------------------------------------------------------------------
``radiometric_match(pre, post, mask, n_iter=5, k=2.5) -> RadiometricMatch(scale, offset, n_used)``
``subtraction(pre, post, mask, match=None) -> (z, match)``          z̃ = post − (scale·pre + offset)
``noise_sigma(z, mask) -> float``                                    σ from the negative half inside the brain
``local_statistics(z, mask, sigma, window_mm=15, spacing=(1,1,1), k=3) -> (m, s)``
``harmonise(z, mask, sigma=None, window_mm=15, spacing=(1,1,1)) -> (z_h, info)``   Pinetz eq. (1)
``enhancement_mask(z, sigma, threshold=3.0, width=0.5) -> p in [0, 1]``             p = sigmoid(w z + b)
``contrast_signal(z, p) -> y = p ⊙ z``
``differential_inputs(pre, post, mask, spacing=(1,1,1)) -> dict`` (all of the above in one call)

Source: Pinetz et al., "Differential contrast enhancement using conditional deep learning for Gadolinium
dose reduction in brain MRI" (MIDL short paper, Method section and eq. 1) and Pinetz et al. 2024
(arXiv:2403.03539). Robust linear radiometric matching follows the "registered rigidly and radiometrically"
step of Pinetz et al. 2023 (MICCAI).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from neurocontrast.errors import NeuroContrastError


def _check(pre: np.ndarray, post: np.ndarray, mask: Optional[np.ndarray], names=("pre", "post")):
    pre = np.asarray(pre, dtype=np.float64)
    post = np.asarray(post, dtype=np.float64)
    if pre.ndim != 3 or post.ndim != 3:
        raise NeuroContrastError(f"{names[0]} and {names[1]} must be 3D (z, y, x) arrays, got {pre.ndim}D and "
                                 f"{post.ndim}D")
    if pre.shape != post.shape:
        raise NeuroContrastError(f"{names[0]} shape {pre.shape} differs from {names[1]} shape {post.shape}; "
                                 "co-register and resample first")
    if not (np.all(np.isfinite(pre)) and np.all(np.isfinite(post))):
        raise NeuroContrastError(f"{names[0]} or {names[1]} contains NaN or infinite values")
    if mask is None:
        mask = np.ones(pre.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pre.shape:
        raise NeuroContrastError(f"brain mask shape {mask.shape} differs from image shape {pre.shape}")
    if mask.sum() < 100:
        raise NeuroContrastError(f"the brain mask has {int(mask.sum())} voxels; at least 100 are needed")
    return pre, post, mask


@dataclasses.dataclass(frozen=True)
class RadiometricMatch:
    """post ≈ scale · pre + offset on non-enhancing brain (``n_used`` voxels kept by the robust fit)."""

    scale: float
    offset: float
    n_used: int

    def apply(self, pre: np.ndarray) -> np.ndarray:
        """``scale · pre + offset`` as float32."""
        return (self.scale * np.asarray(pre, dtype=np.float64) + self.offset).astype(np.float32)


def radiometric_match(pre: np.ndarray, post: np.ndarray, mask: Optional[np.ndarray] = None, n_iter: int = 5,
                      k: float = 2.5) -> RadiometricMatch:
    """Robust linear intensity match of the pre-contrast image onto the post-contrast image.

    Least squares ``post = a · pre + b`` over the brain mask, refitted ``n_iter`` times on the voxels whose
    residual lies within ``k`` robust SDs (1.4826 · MAD) of the median: enhancing voxels (large positive
    residuals) and misregistered edges drop out. pre/post: (z, y, x) same shape, any units. Returns a
    :class:`RadiometricMatch`. Raises NeuroContrastError on shape mismatch, NaNs, a tiny mask or a constant
    pre image. Source: Pinetz et al. 2023/2024 (radiometric registration before subtraction).
    """
    pre, post, mask = _check(pre, post, mask)
    x, y = pre[mask], post[mask]
    if np.ptp(x) == 0:
        raise NeuroContrastError("the pre-contrast image is constant inside the brain mask")
    keep = np.ones(x.size, dtype=bool)
    a, b = 1.0, 0.0
    for _ in range(max(1, n_iter)):
        a, b = np.polyfit(x[keep], y[keep], 1)
        r = y - (a * x + b)
        med = np.median(r[keep])
        mad = 1.4826 * np.median(np.abs(r[keep] - med))
        if mad == 0:
            break
        new_keep = np.abs(r - med) <= k * mad
        if new_keep.sum() < 50 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return RadiometricMatch(float(a), float(b), int(keep.sum()))


def subtraction(pre: np.ndarray, post: np.ndarray, mask: Optional[np.ndarray] = None,
                match: Optional[RadiometricMatch] = None) -> Tuple[np.ndarray, RadiometricMatch]:
    """Subtraction image z̃ = post − (a · pre + b) after radiometric matching (Pinetz, Method).

    Returns (z̃ (z, y, x) float32 in post units, the match used). ``match`` skips the fit when given.
    """
    pre, post, mask = _check(pre, post, mask)
    if match is None:
        match = radiometric_match(pre, post, mask)
    return (post - (match.scale * pre + match.offset)).astype(np.float32), match


def noise_sigma(z: np.ndarray, mask: Optional[np.ndarray] = None, centre: float = 0.0) -> float:
    """Noise SD of a subtraction image from its negative half inside the brain (Pinetz, Method).

    Contrast agent only raises the signal, so values below ``centre`` are noise: for Gaussian noise the
    RMS of the negative half equals σ. z: (z, y, x) float; mask: bool. Raises NeuroContrastError if no
    voxel in the mask is below the centre.
    """
    z = np.asarray(z, dtype=np.float64)
    values = z[mask] if mask is not None else z.ravel()
    neg = values[values < centre] - centre
    if neg.size < 10:
        raise NeuroContrastError("fewer than 10 negative subtraction values in the brain mask; cannot estimate "
                                 "the noise level")
    return float(np.sqrt(np.mean(neg ** 2)))


def local_statistics(z: np.ndarray, mask: np.ndarray, sigma: float, window_mm: float = 15.0,
                     spacing: Sequence[float] = (1.0, 1.0, 1.0), k: float = 3.0) -> Tuple[np.ndarray, np.ndarray]:
    """Robust local mean m and SD s of a subtraction image with large Gaussian windows (Pinetz, eq. 1).

    Normalised convolution: m = G*(w z) / G*w and s² = G*(w (z − m)²) / G*w with a Gaussian G of SD
    ``window_mm`` (mm; ``spacing`` per array axis (z, y, x) in mm) and weights w = brain mask without
    outliers, |z − m| > k · σ (enhancement, vessels, artefacts), found in two passes (first against the
    global median, then the first-pass local mean). Returns (m, s) float32 (z, y, x); outside the mask's
    reach s falls back to σ. Raises NeuroContrastError for σ ≤ 0 or window ≤ 0.
    """
    if not sigma > 0:
        raise NeuroContrastError(f"noise sigma must be > 0, got {sigma}")
    if not window_mm > 0:
        raise NeuroContrastError(f"window_mm must be > 0, got {window_mm}")
    z = np.asarray(z, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    sig_vox = [window_mm / float(s) for s in spacing]
    eps = 1e-6

    def smooth(a):
        return ndimage.gaussian_filter(a, sig_vox, mode="constant")

    centre = np.full(z.shape, np.median(z[mask]), dtype=np.float32)
    for _ in range(2):
        w = (mask & (np.abs(z - centre) <= k * sigma)).astype(np.float32)
        norm = smooth(w)
        m = smooth(w * z) / np.maximum(norm, eps)
        centre = m.astype(np.float32)
    var = smooth(w * (z - m) ** 2) / np.maximum(norm, eps)
    s = np.sqrt(np.maximum(var, 0))
    valid = norm > 1e-3
    m = np.where(valid, m, 0.0).astype(np.float32)
    s = np.where(valid & (s > 0.05 * sigma), s, sigma).astype(np.float32)
    return m, s


def harmonise(z: np.ndarray, mask: np.ndarray, sigma: Optional[float] = None, window_mm: float = 15.0,
              spacing: Sequence[float] = (1.0, 1.0, 1.0), k: float = 3.0,
              sigma_out: Optional[float] = None) -> Tuple[np.ndarray, Dict[str, float]]:
    """Noise harmonisation of a subtraction image, Pinetz eq. (1): z = (z̃ − m) / s · σ_out.

    σ (noise of z̃) defaults to :func:`noise_sigma`; σ_out (the common noise level; Pinetz multiplies both
    the low- and the standard-dose image by σ_LD) defaults to σ. Local m, s from :func:`local_statistics`
    with Gaussian windows of ``window_mm`` mm. Returns (z_h (z, y, x) float32, 0 outside the mask,
    {"sigma", "sigma_out", "window_mm"}).
    """
    z = np.asarray(z, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if sigma is None:
        sigma = noise_sigma(z, mask)
    sigma_out = sigma if sigma_out is None else float(sigma_out)
    m, s = local_statistics(z, mask, sigma, window_mm, spacing, k)
    out = ((z - m) / s * sigma_out).astype(np.float32)
    out[~mask] = 0.0
    return out, {"sigma": float(sigma), "sigma_out": float(sigma_out), "window_mm": float(window_mm)}


def enhancement_mask(z: np.ndarray, sigma: float, threshold: float = 3.0, width: float = 0.5,
                     w: Optional[float] = None, b: Optional[float] = None) -> np.ndarray:
    """Soft contrast-enhancement mask p = sigmoid(w · z + b) in [0, 1] (Pinetz, Method).

    By default w = 1 / (width · σ) and b = −threshold / width: p = 0.5 at z = threshold · σ and rises from
    0.12 to 0.88 over ±width · 2σ around it, which suppresses noise and keeps faint enhancement. Explicit
    ``w``/``b`` override. Returns float32 of z's shape. Raises NeuroContrastError for σ ≤ 0 or width ≤ 0.
    """
    if w is None or b is None:
        if not sigma > 0 or not width > 0:
            raise NeuroContrastError(f"sigma and width must be > 0, got sigma={sigma}, width={width}")
        w = 1.0 / (width * sigma)
        b = -threshold / width
    arg = np.clip(w * np.asarray(z, dtype=np.float64) + b, -60, 60)
    return (1.0 / (1.0 + np.exp(-arg))).astype(np.float32)


def contrast_signal(z: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Contrast signal y = p ⊙ z (Pinetz, Method): the training target and the network's output space."""
    return (np.asarray(p, dtype=np.float32) * np.asarray(z, dtype=np.float32)).astype(np.float32)


def differential_inputs(pre: np.ndarray, post: np.ndarray, mask: np.ndarray,
                        spacing: Sequence[float] = (1.0, 1.0, 1.0), window_mm: float = 15.0,
                        sigma_out: Optional[float] = None, threshold: float = 3.0,
                        width: float = 0.5) -> Dict[str, object]:
    """All differential-contrast quantities of one pre/post pair in one call.

    Returns {"match": RadiometricMatch, "z_raw": z̃, "sigma": σ of z̃, "z": harmonised z (σ_out noise),
    "sigma_out", "p": enhancement mask of z, "y": contrast signal p ⊙ z}; arrays (z, y, x) float32.
    """
    z_raw, match = subtraction(pre, post, mask)
    sigma = noise_sigma(z_raw, mask)
    z, info = harmonise(z_raw, mask, sigma, window_mm, spacing, sigma_out=sigma_out)
    p = enhancement_mask(z, info["sigma_out"], threshold, width)
    return {"match": match, "z_raw": z_raw, "sigma": sigma, "z": z, "sigma_out": info["sigma_out"], "p": p,
            "y": contrast_signal(z, p)}
