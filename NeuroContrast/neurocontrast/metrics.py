"""Image and segmentation metrics shared by PerfusionNet, VirtualGadolinium and ReaderStudy.

All functions take NumPy arrays of the same shape (any dimension unless stated) and an optional boolean
``mask`` restricting the comparison. Library implementations are used where they exist (scikit-image
SSIM/PSNR, SciPy correlations, scikit-learn ROC, MONAI Hausdorff distance).

Conventions
-----------
- **PSNR** (dB): ``10 log10(data_range² / MSE)`` over the mask, ``data_range`` = max − min of the
  reference inside the mask unless given.
- **SSIM**: scikit-image ``structural_similarity`` (Wang et al. 2004; 7-voxel uniform window, K1 0.01,
  K2 0.03) computed on the whole array with the reference's in-mask data range; the SSIM *map* is then
  averaged over the mask. This is the one SSIM convention of the project.
- **NRMSE**: RMSE over the mask divided by the reference's in-mask range (max − min).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError


def _prepare(prediction: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray]):
    prediction = np.asarray(prediction, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if prediction.shape != reference.shape:
        raise NeuroContrastError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    if mask is None:
        mask = np.ones(reference.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != reference.shape:
        raise NeuroContrastError(f"mask shape {mask.shape} differs from image shape {reference.shape}")
    mask = mask & np.isfinite(prediction) & np.isfinite(reference)
    if not mask.any():
        raise NeuroContrastError("the mask selects no finite voxel")
    return prediction, reference, mask


def data_range(reference: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """max − min of ``reference`` inside ``mask`` (1.0 if the reference is constant)."""
    values = np.asarray(reference)[mask] if mask is not None else np.asarray(reference).ravel()
    rng = float(np.max(values) - np.min(values)) if values.size else 0.0
    return rng if rng > 0 else 1.0


def psnr(prediction, reference, mask=None, data_range_value: Optional[float] = None) -> float:
    """Peak signal-to-noise ratio in dB over ``mask`` (see module conventions). ``inf`` if identical."""
    p, r, m = _prepare(prediction, reference, mask)
    rng = data_range_value if data_range_value is not None else data_range(r, m)
    mse = float(np.mean((p[m] - r[m]) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(rng ** 2 / mse))


def ssim(prediction, reference, mask=None, data_range_value: Optional[float] = None) -> float:
    """Mean SSIM over ``mask`` (scikit-image, see module conventions). 2D or 3D arrays (size ≥ 7 per axis;
    smaller axes get a smaller odd window)."""
    from skimage.metrics import structural_similarity

    p, r, m = _prepare(prediction, reference, mask)
    rng = data_range_value if data_range_value is not None else data_range(r, m)
    p = np.where(np.isfinite(p), p, 0.0)
    r = np.where(np.isfinite(r), r, 0.0)
    squeeze = tuple(i for i, s in enumerate(r.shape) if s == 1)
    p2, r2, m2 = np.squeeze(p, squeeze), np.squeeze(r, squeeze), np.squeeze(m, squeeze)
    win = min(7, min(r2.shape) if min(r2.shape) % 2 == 1 else min(r2.shape) - 1)
    if win < 3:
        raise NeuroContrastError(f"SSIM needs at least 3 voxels along each non-singleton axis, got shape {r.shape}")
    _, smap = structural_similarity(r2, p2, data_range=rng, full=True, win_size=win)
    return float(np.mean(smap[m2]))


def nrmse(prediction, reference, mask=None) -> float:
    """Root-mean-square error over ``mask`` divided by the reference's in-mask range."""
    p, r, m = _prepare(prediction, reference, mask)
    return float(np.sqrt(np.mean((p[m] - r[m]) ** 2)) / data_range(r, m))


def pearson(prediction, reference, mask=None) -> float:
    """Pearson correlation coefficient over ``mask`` (scipy.stats.pearsonr); NaN if either side is constant."""
    from scipy import stats

    p, r, m = _prepare(prediction, reference, mask)
    if np.ptp(p[m]) == 0 or np.ptp(r[m]) == 0:
        return float("nan")
    return float(stats.pearsonr(p[m], r[m])[0])


def spearman(prediction, reference, mask=None) -> float:
    """Spearman rank correlation over ``mask`` (scipy.stats.spearmanr); NaN if either side is constant."""
    from scipy import stats

    p, r, m = _prepare(prediction, reference, mask)
    if np.ptp(p[m]) == 0 or np.ptp(r[m]) == 0:
        return float("nan")
    return float(stats.spearmanr(p[m], r[m])[0])


def dice(prediction: np.ndarray, reference: np.ndarray, mask=None) -> float:
    """Dice coefficient 2|A∩B|/(|A|+|B|) of two boolean arrays (1.0 if both are empty)."""
    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    if mask is not None:
        a, b = a & mask, b & mask
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def iou(prediction: np.ndarray, reference: np.ndarray, mask=None) -> float:
    """Intersection over union (Jaccard) of two boolean arrays (1.0 if both are empty)."""
    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    if mask is not None:
        a, b = a & mask, b & mask
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] = None) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between two boolean masks (MONAI).

    ``spacing`` is per array axis (same order as the array's axes, e.g. (z, y, x) mm). Returns NaN if
    either mask is empty.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    if a.shape != b.shape:
        raise NeuroContrastError(f"mask shapes differ: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        return float("nan")
    squeeze = tuple(i for i, s in enumerate(a.shape) if s == 1)
    sp = None if spacing is None else [float(s) for i, s in enumerate(spacing) if i not in squeeze]
    a2, b2 = np.squeeze(a, squeeze), np.squeeze(b, squeeze)
    ta = torch.from_numpy(a2[None, None].astype(np.float32))
    tb = torch.from_numpy(b2[None, None].astype(np.float32))
    value = compute_hausdorff_distance(ta, tb, percentile=95, spacing=sp)
    return float(value.reshape(-1)[0])


def roc_auc(scores: np.ndarray, labels: np.ndarray, mask=None) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (scikit-learn). NaN if one class is absent."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if mask is not None:
        s, y = s[mask], y[mask]
    s, y = s.ravel(), y.ravel()
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def youden_operating_point(scores: np.ndarray, labels: np.ndarray, mask=None) -> Dict[str, float]:
    """ROC operating point maximising Youden's J = sensitivity + specificity − 1 (scikit-learn roc_curve).

    Returns ``{"threshold", "sensitivity", "specificity", "youden_j", "auc"}``; the threshold is the score
    at or above which a voxel is called positive (for Tmax this is the ROC-optimal Tmax threshold in s).
    """
    from sklearn.metrics import roc_curve

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if mask is not None:
        s, y = s[mask], y[mask]
    s, y = s.ravel(), y.ravel()
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if y.all() or not y.any():
        raise NeuroContrastError("the ROC needs both positive and negative voxels")
    fpr, tpr, thresholds = roc_curve(y, s)
    j = tpr - fpr
    best = int(np.argmax(j))
    return {"threshold": float(thresholds[best]), "sensitivity": float(tpr[best]),
            "specificity": float(1.0 - fpr[best]), "youden_j": float(j[best]), "auc": roc_auc(s, y)}


def image_metrics(prediction, reference, mask=None) -> Dict[str, float]:
    """PSNR, SSIM, NRMSE, Pearson and Spearman over ``mask`` in one dict (keys are the metric names)."""
    return {"psnr": psnr(prediction, reference, mask), "ssim": ssim(prediction, reference, mask),
            "nrmse": nrmse(prediction, reference, mask), "pearson": pearson(prediction, reference, mask),
            "spearman": spearman(prediction, reference, mask)}


def _roi_values(image: np.ndarray, roi: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    roi = np.asarray(roi, dtype=bool)
    if roi.shape != image.shape:
        raise NeuroContrastError(f"{name} ROI shape {roi.shape} differs from image shape {image.shape}")
    values = image[roi]
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise NeuroContrastError(f"the {name} ROI is empty")
    return values


def cnr(image: np.ndarray, lesion_roi: np.ndarray, brain_roi: np.ndarray) -> float:
    """Contrast-to-noise ratio (SI_lesion − SI_brain) / SD_brain (Bône et al., Methods, CNR formula).

    SI are means over the ROIs, SD the sample standard deviation (ddof=1) over the healthy-brain ROI.
    Raises NeuroContrastError on an empty ROI or a constant brain ROI.
    """
    lesion = _roi_values(image, lesion_roi, "lesion")
    brain = _roi_values(image, brain_roi, "healthy-brain")
    sd = float(np.std(brain, ddof=1)) if brain.size > 1 else 0.0
    if sd == 0:
        raise NeuroContrastError("the healthy-brain ROI has zero standard deviation; CNR is undefined")
    return float((lesion.mean() - brain.mean()) / sd)


def lbr(image: np.ndarray, lesion_roi: np.ndarray, brain_roi: np.ndarray) -> float:
    """Lesion-to-brain ratio SI_lesion / SI_brain (Bône et al., LBR formula). Raises on a zero brain mean."""
    lesion = _roi_values(image, lesion_roi, "lesion")
    brain = _roi_values(image, brain_roi, "healthy-brain")
    if brain.mean() == 0:
        raise NeuroContrastError("the healthy-brain ROI has zero mean intensity; LBR is undefined")
    return float(lesion.mean() / brain.mean())


def cep(post: np.ndarray, pre: np.ndarray, lesion_roi: np.ndarray) -> float:
    """Contrast enhancement percentage 100 · (SI_lesion − SI_lesion^pre) / SI_lesion^pre (Bône et al., CEP).

    ``pre`` is the pre-contrast T1 on the same grid as ``post`` (resample it in physical space first) and
    on a comparable intensity scale (harmonise first). Returns percent. Raises on a zero pre-contrast mean.
    """
    lesion_post = _roi_values(post, lesion_roi, "lesion")
    lesion_pre = _roi_values(pre, lesion_roi, "lesion (pre-contrast)")
    if lesion_pre.mean() == 0:
        raise NeuroContrastError("the pre-contrast lesion mean is zero; CEP is undefined")
    return float(100.0 * (lesion_post.mean() - lesion_pre.mean()) / lesion_pre.mean())
