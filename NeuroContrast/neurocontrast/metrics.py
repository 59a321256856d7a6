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


# ----------------------------------------------------------------------------------------------------------
# Virtual contrast metrics (Ammari et al. 2022, Bône et al., Pinetz et al.): enhancement maps and their ROC,
# lesion-wise false-positive / false-negative enhancement components, dose consistency, harmonised CNR/LBR/CEP.
# ----------------------------------------------------------------------------------------------------------
COMPONENT_SIZE_EDGES_MM = (5.0, 10.0)


def enhancement_map(post: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Enhancement map max(post − pre, 0) (Ammari et al., Methods "Statistical analysis": the pre-contrast T1
    subtracted from the post-contrast image, 0-clipped). Arrays of one shape and intensity scale; float32."""
    post = np.asarray(post, dtype=np.float32)
    pre = np.asarray(pre, dtype=np.float32)
    if post.shape != pre.shape:
        raise NeuroContrastError(f"post shape {post.shape} differs from pre shape {pre.shape}")
    return np.clip(post - pre, 0.0, None)


def otsu_binarise(image: np.ndarray, mask=None) -> Tuple[np.ndarray, float]:
    """Binarise with Otsu's threshold (scikit-image ``threshold_otsu``) computed on the in-mask values.

    Returns (bool array, threshold); voxels outside the mask are False. Raises on an empty mask.
    """
    from skimage.filters import threshold_otsu

    image = np.asarray(image, dtype=np.float64)
    m = np.ones(image.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    values = image[m & np.isfinite(image)]
    if values.size == 0:
        raise NeuroContrastError("Otsu binarisation: the mask selects no finite voxel")
    thr = float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())
    return (image > thr) & m, thr


def enhancement_auc(candidate_post: np.ndarray, reference_post: np.ndarray, pre: np.ndarray,
                    mask=None) -> Dict[str, float]:
    """Voxel-wise ROC of a candidate enhancement map against the Otsu-binarised reference enhancement map.

    Maps are max(post − pre, 0) (:func:`enhancement_map`); the reference map is binarised with Otsu inside
    ``mask`` (the brain); the candidate map is the score. Ammari et al. 2022 (Methods and Figure 5, following
    their ref. 36). All images on one grid and one intensity scale (standardise first). Returns
    ``{"auc", "threshold", "sensitivity", "specificity", "youden_j", "otsu_threshold", "positive_fraction"}``
    (Youden operating point of the candidate). Raises NeuroContrastError if the reference map has one class.
    """
    ref_map = enhancement_map(reference_post, pre)
    cand_map = enhancement_map(candidate_post, pre)
    if cand_map.shape != ref_map.shape:
        raise NeuroContrastError(f"candidate shape {cand_map.shape} differs from reference shape {ref_map.shape}")
    m = np.ones(ref_map.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    labels, thr = otsu_binarise(ref_map, m)
    op = youden_operating_point(cand_map, labels, m)
    return {"auc": op["auc"], "threshold": op["threshold"], "sensitivity": op["sensitivity"],
            "specificity": op["specificity"], "youden_j": op["youden_j"], "otsu_threshold": thr,
            "positive_fraction": float(labels[m].mean())}


def _size_class(diameter_mm: float, edges=COMPONENT_SIZE_EDGES_MM) -> str:
    if diameter_mm < edges[0]:
        return f"<{edges[0]:g}mm"
    if diameter_mm < edges[1]:
        return f"{edges[0]:g}-{edges[1]:g}mm"
    return f">={edges[1]:g}mm"


def enhancement_components(predicted: np.ndarray, reference: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                           min_volume_ml: float = 0.01, mask=None) -> Dict[str, object]:
    """Lesion-wise false-positive and false-negative enhancement components by size (hallucination check).

    predicted, reference: bool (z, y, x) enhancement masks (e.g. Otsu-binarised enhancement maps, or a
    lesion segmentation as reference); spacing per array axis in mm. Components are 26-connected
    (scipy.ndimage.label); those under ``min_volume_ml`` are ignored (noise specks). A predicted component
    touching no reference voxel is a false positive (hallucinated enhancement); a reference component touching
    no predicted voxel is a false negative (missed lesion). Size = equivalent-sphere diameter
    (6V/π)^(1/3) in mm, classed <5, 5-10, ≥10 mm (Bône's lesion size thresholds). Returns
    ``{"n_predicted", "n_reference", "true_positive", "false_positive", "false_negative",
    "fp_by_size": {class: n}, "fn_by_size": {class: n}, "fp_components": [{"volume_ml", "diameter_mm",
    "centroid_zyx"}], "fn_components": [...]}``.
    """
    from scipy import ndimage

    a = np.asarray(predicted, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    if a.shape != b.shape:
        raise NeuroContrastError(f"predicted shape {a.shape} differs from reference shape {b.shape}")
    if mask is not None:
        a, b = a & mask, b & mask
    voxel_ml = float(np.prod(spacing)) / 1000.0
    structure = np.ones((3,) * a.ndim, dtype=bool)

    def components(x, other):
        lab, n = ndimage.label(x, structure)
        if n == 0:
            return []
        idx = np.arange(1, n + 1)
        sizes = ndimage.sum_labels(np.ones_like(lab), lab, idx)
        hits = ndimage.sum_labels(other, lab, idx)
        cents = ndimage.center_of_mass(x, lab, idx)
        out = []
        for size, hit, cent in zip(sizes, hits, cents):
            vol = float(size) * voxel_ml
            if vol < min_volume_ml:
                continue
            d = float((6.0 * vol * 1000.0 / np.pi) ** (1.0 / 3.0))
            out.append({"volume_ml": vol, "diameter_mm": d, "centroid_zyx": [float(c) for c in cent],
                        "hit": bool(hit > 0)})
        return out

    pred = components(a, b)
    ref = components(b, a)
    fp = [c for c in pred if not c["hit"]]
    fn = [c for c in ref if not c["hit"]]
    classes = [_size_class(0.0), _size_class(COMPONENT_SIZE_EDGES_MM[0]), _size_class(COMPONENT_SIZE_EDGES_MM[1])]

    def by_size(items):
        counts = {c: 0 for c in classes}
        for it in items:
            counts[_size_class(it["diameter_mm"])] += 1
        return counts

    for c in pred + ref:
        c.pop("hit")
    return {"n_predicted": len(pred), "n_reference": len(ref), "true_positive": len(ref) - len(fn),
            "false_positive": len(fp), "false_negative": len(fn), "fp_by_size": by_size(fp), "fn_by_size": by_size(fn),
            "fp_components": fp, "fn_components": fn}


def dose_consistency(doses: Sequence[float], signals: Sequence[float]) -> Dict[str, float]:
    """Does the predicted contrast signal grow with the conditioning dose? (Pinetz et al., conditioning on dose.)

    doses: conditioning doses (≥ 2 distinct); signals: a summary of the model output at each dose (e.g. the
    mean contrast signal in the enhancing lesion). Returns ``{"n", "spearman", "slope" (signal per unit dose,
    least squares), "monotonic" (1.0 if the signal never decreases with dose, else 0.0),
    "max_decrease" (largest drop between consecutive doses, ≥ 0)}``. Raises on fewer than 2 doses.
    """
    from scipy import stats

    d = np.asarray(doses, dtype=np.float64).ravel()
    s = np.asarray(signals, dtype=np.float64).ravel()
    if d.shape != s.shape:
        raise NeuroContrastError(f"{d.size} doses but {s.size} signals")
    if np.unique(d).size < 2 or not np.all(np.isfinite(s)):
        raise NeuroContrastError("dose consistency needs at least 2 distinct doses and finite signals")
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    steps = np.diff(s)
    rho = float(stats.spearmanr(d, s)[0]) if np.ptp(s) > 0 else float("nan")
    return {"n": int(d.size), "spearman": rho, "slope": float(np.polyfit(d, s, 1)[0]),
            "monotonic": float(np.all(steps >= 0)), "max_decrease": float(max(0.0, -steps.min()))}


def harmonised_contrast_metrics(post: np.ndarray, pre: np.ndarray, lesion_roi: np.ndarray,
                                brain_roi: np.ndarray) -> Dict[str, float]:
    """CNR, LBR and CEP (Bône et al. formulae, :func:`cnr`, :func:`lbr`, :func:`cep`) with pre/post harmonisation.

    The pre-contrast T1 is mapped onto the post-contrast intensity scale by a robust linear fit over the
    healthy-brain ROI (``neurocontrast.contrast.subtraction.radiometric_match``, non-enhancing tissue), so CEP
    compares like with like; CNR and LBR are computed on ``post`` as is (CNR is invariant to a linear
    intensity map, LBR to a scale). Returns ``{"cnr", "lbr", "cep" (%), "pre_scale", "pre_offset"}``.
    """
    from neurocontrast.contrast.subtraction import radiometric_match

    post = np.asarray(post, dtype=np.float64)
    pre = np.asarray(pre, dtype=np.float64)
    brain = np.asarray(brain_roi, dtype=bool)
    match = radiometric_match(pre, post, brain & ~np.asarray(lesion_roi, dtype=bool))
    pre_h = match.scale * pre + match.offset
    return {"cnr": cnr(post, lesion_roi, brain), "lbr": lbr(post, lesion_roi, brain),
            "cep": cep(post, pre_h, lesion_roi), "pre_scale": match.scale, "pre_offset": match.offset}
