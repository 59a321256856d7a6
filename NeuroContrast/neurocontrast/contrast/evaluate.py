"""Evaluate a virtual (or amplified) T1c against the reference T1c, with the low-dose input as baseline.

Public API
----------
``evaluate_contrast(low_path, virtual_path, reference_path, brain_mask_path=None, lesion_mask_path=None,
out_dir="contrast_evaluation", *, pre_path=None, progress=None) -> dict``
    what ``neurocontrast evaluate contrast`` calls. Writes to ``out_dir``: ``metrics.csv`` (one row per image:
    low, virtual, reference), ``metrics.json``, ``report.md`` and ``comparison.png`` (low-dose, virtual and
    reference slices and their enhancement maps side by side). Returns {"csv", "json", "markdown", "png",
    "rows": [dict per image], "slice_index" (axial slice of the figure, LPS-oriented volume), "mask_source"}.
``evaluate_arrays(low, virtual, reference, brain_mask, pre=None, lesion_mask=None, spacing=(1,1,1)) -> rows``

Method (Ammari et al. 2022, Methods "Statistical analysis" and Table 3; Bône et al., Table 4)
-------------------------------------------------------------------------------------------
- every image is compared *as given*, in the reference's intensity units: no per-image re-standardisation,
  so a globally darkened or brightened image is penalised (the project's one SSIM convention,
  :func:`neurocontrast.metrics.ssim`: scikit-image SSIM map, 7-voxel window, data range = the reference's
  in-brain max − min, averaged over the brain mask; PSNR and NRMSE with the same range);
- with the pre-contrast T1 (``pre_path``) it is matched radiometrically onto the reference (robust linear
  fit, :func:`neurocontrast.contrast.subtraction.radiometric_match`); enhancement maps max(image − pre', 0),
  ROC AUC of each map against the Otsu-binarised reference map with Youden's operating point,
  false-positive / false-negative enhancement components by size, and *enhancement restored*:
  mean(image − pre') / mean(reference − pre') over the enhancing voxels
  (:func:`neurocontrast.contrast.validation.enhancing_voxels`);
- with the pre-contrast T1 and ``dose``: a ``physics`` row, the dose extrapolation of the low-dose image
  (:func:`neurocontrast.contrast.physics.dose_extrapolation`), the baseline a network must beat;
- with a lesion mask: CNR, LBR and (with pre) CEP, the pre-contrast T1 harmonised onto each post image by a
  robust linear fit over the healthy brain (= brain minus the lesion dilated by 3 voxels).
All inputs must share the low-dose image's grid (GeometryError otherwise); a pre-contrast T1 on another
grid is resampled in physical space (linear, logged). Without a brain mask, a skull-stripped reference
gives its non-zero voxels, otherwise the Otsu head foreground is used and the report says so.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from neurocontrast import metrics as M
from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report

log = logging.getLogger(__name__)

_COLUMNS = ["image", "ssim", "psnr", "nrmse", "auc", "restored", "sensitivity", "specificity", "youden_threshold",
            "fp_components", "fn_components", "fp_by_size", "fn_by_size", "cnr", "lbr", "cep"]


def evaluate_arrays(low: np.ndarray, virtual: np.ndarray, reference: np.ndarray, brain_mask: np.ndarray,
                    pre: Optional[np.ndarray] = None, lesion_mask: Optional[np.ndarray] = None,
                    spacing: Sequence[float] = (1.0, 1.0, 1.0), dose: Optional[float] = None) -> List[Dict[str, object]]:
    """Metrics of the low-dose, physics-baseline and virtual images against the reference (module docstring).

    Arrays (z, y, x) on one grid, native units; brain_mask / lesion_mask bool; spacing per array axis in mm;
    ``dose`` (with ``pre``) adds the ``physics`` row. Returns rows "low", ("physics"), "virtual" and
    "reference" (the reference row has only the lesion metrics). Raises NeuroContrastError on shape
    mismatch, an empty brain mask or a dose outside (0, 1].
    """
    from neurocontrast.contrast.subtraction import radiometric_match
    from neurocontrast.contrast.validation import enhancing_voxels

    brain = np.asarray(brain_mask, dtype=bool)
    images = {"low": np.asarray(low, np.float64), "virtual": np.asarray(virtual, np.float64),
              "reference": np.asarray(reference, np.float64)}
    for name, img in images.items():
        if img.shape != brain.shape:
            raise NeuroContrastError(f"{name} image shape {img.shape} differs from the brain mask {brain.shape}")
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty")
    pre_m = None
    if pre is not None:
        pre = np.asarray(pre, np.float64)
        pre_m = radiometric_match(pre, images["reference"], brain).apply(pre).astype(np.float64)
        if dose is not None:
            from neurocontrast.contrast.physics import dose_extrapolation

            images = {"low": images["low"], "physics": dose_extrapolation(pre, images["low"], dose, brain).full
                      .astype(np.float64), "virtual": images["virtual"], "reference": images["reference"]}
    lesion = None if lesion_mask is None else np.asarray(lesion_mask, dtype=bool) & brain
    if lesion is not None and not lesion.any():
        raise NeuroContrastError("the lesion mask has no voxel inside the brain mask")
    ref = images["reference"]
    ref_labels = enh = None
    if pre_m is not None:
        ref_labels, ref_thr = M.otsu_binarise(M.enhancement_map(ref, pre_m), brain)
        try:
            enh = enhancing_voxels(pre_m, ref, brain)
        except NeuroContrastError:
            enh = None
    healthy = None
    if lesion is not None:
        from scipy import ndimage

        healthy = brain & ~ndimage.binary_dilation(lesion, iterations=3)
    rows = []
    for name, img in images.items():
        row: Dict[str, object] = {c: "" for c in _COLUMNS}
        row["image"] = name
        if name != "reference":
            row.update(ssim=M.ssim(img, ref, brain), psnr=M.psnr(img, ref, brain), nrmse=M.nrmse(img, ref, brain))
            if pre_m is not None:
                auc = M.enhancement_auc(img, ref, pre_m, brain)
                row.update(auc=auc["auc"], sensitivity=auc["sensitivity"], specificity=auc["specificity"],
                           youden_threshold=auc["threshold"])
                if enh is not None:
                    row["restored"] = float(np.mean(img[enh] - pre_m[enh]) / np.mean(ref[enh] - pre_m[enh]))
                cand = (M.enhancement_map(img, pre_m) > ref_thr) & brain
                comp = M.enhancement_components(cand, ref_labels, spacing)
                row.update(fp_components=comp["false_positive"], fn_components=comp["false_negative"],
                           fp_by_size=json.dumps(comp["fp_by_size"]), fn_by_size=json.dumps(comp["fn_by_size"]))
        if lesion is not None:
            if pre is not None:
                h = M.harmonised_contrast_metrics(img, pre, lesion, healthy)
                row.update(cnr=h["cnr"], lbr=h["lbr"], cep=h["cep"])
            else:
                row.update(cnr=M.cnr(img, lesion, healthy), lbr=M.lbr(img, lesion, healthy))
        rows.append(row)
    return rows


def _choose_slice(brain: np.ndarray, focus: Optional[np.ndarray]) -> int:
    if focus is not None and focus.any():
        return int(np.argmax(focus.reshape(focus.shape[0], -1).sum(1)))
    return int(np.argmax(brain.reshape(brain.shape[0], -1).sum(1)))


def _figure(std: Dict[str, np.ndarray], maps: Optional[Dict[str, np.ndarray]], k: int, path: str, title: str,
            vmax_image: float = 1.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("low", "physics", "virtual", "reference") if n in std]
    rows = 2 if maps is not None else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(4 * len(names), 4.2 * rows), squeeze=False)
    # common colour scale: the 99.5th percentile of the reference map's non-zero values on this slice
    vmax = 1.0
    if maps is not None:
        nz = maps["reference"][k][maps["reference"][k] > 0]
        vmax = float(np.percentile(nz, 99.5)) if nz.size else 1.0
    for j, n in enumerate(names):
        axes[0, j].imshow(std[n][k], cmap="gray", vmin=0, vmax=vmax_image)
        axes[0, j].set_title(f"{n} T1c (slice {k})")
        if maps is not None:
            axes[1, j].imshow(maps[n][k], cmap="magma", vmin=0, vmax=max(vmax, 1e-6))
            axes[1, j].set_title(f"{n} enhancement map")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def evaluate_contrast(low_path, virtual_path, reference_path, brain_mask_path=None, lesion_mask_path=None,
                      out_dir="contrast_evaluation", *, pre_path=None, dose: Optional[float] = None,
                      progress: Optional[ProgressCallback] = None) -> dict:
    """Compare low-dose, virtual and reference T1c files and write table, Markdown and PNG (module docstring).

    Paths: 3D images (NIfTI/NRRD/DICOM folder) on one grid; masks non-zero = inside. ``pre_path``: the
    pre-contrast T1 for enhancement maps (needed for AUC, FP/FN components and CEP; without it those
    columns stay empty and the report says why). ``dose`` (with ``pre_path``): add the physics-baseline row.
    Raises NeuroContrastError/GeometryError for missing files,
    2D/NaN images, grids that differ, empty masks.
    """
    import SimpleITK as sitk

    from neurocontrast.io import check_same_geometry, read_image, read_mask, read_volume

    report(progress, 0.0, "reading images")
    low, geo = read_volume(os.fspath(low_path), "low-dose T1c")
    virtual, g_v = read_volume(os.fspath(virtual_path), "virtual T1c")
    reference, g_r = read_volume(os.fspath(reference_path), "reference T1c")
    check_same_geometry(geo, g_v, "the low-dose T1c", "the virtual T1c")
    check_same_geometry(geo, g_r, "the low-dose T1c", "the reference T1c")
    pre = None
    if pre_path is not None:
        pre, g_p = read_volume(os.fspath(pre_path), "pre-contrast T1")
        if not g_p.same_as(geo):
            log.warning("pre-contrast T1 is on another grid: resampling it in physical space (linear)")
            img = sitk.Resample(sitk.Cast(read_image(os.fspath(pre_path)), sitk.sitkFloat32), geo.to_image(low),
                                sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            pre = sitk.GetArrayFromImage(img)
    if brain_mask_path is not None:
        brain = read_mask(os.fspath(brain_mask_path), geo, "brain mask", "the low-dose T1c")
        mask_source = f"brain mask {os.path.basename(os.fspath(brain_mask_path))}"
    elif (reference == 0).mean() >= 0.3:
        brain = reference != 0
        mask_source = "non-zero voxels of the (skull-stripped) reference"
    else:
        from scipy import ndimage
        from skimage.filters import threshold_otsu

        brain = ndimage.binary_fill_holes(reference > threshold_otsu(reference))
        mask_source = "Otsu head foreground of the reference (no brain mask given: metrics include the scalp)"
    if not brain.any():
        raise NeuroContrastError("the brain mask is empty")
    lesion = None
    if lesion_mask_path is not None:
        lesion = read_mask(os.fspath(lesion_mask_path), geo, "lesion mask", "the low-dose T1c")
    report(progress, 0.3, "computing metrics")
    spacing = tuple(geo.spacing[::-1])
    if dose is not None and pre is None:
        raise NeuroContrastError("--dose adds the physics-baseline row and needs --pre (the pre-contrast T1)")
    rows = evaluate_arrays(low, virtual, reference, brain, pre, lesion, spacing, dose=dose)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, md_path, png_path = (str(out / n) for n in ("metrics.csv", "metrics.json", "report.md",
                                                                    "comparison.png"))
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(v) for k, v in r.items()})
    report(progress, 0.7, "drawing the comparison figure")
    shown = {"low": low, "virtual": virtual, "reference": reference}
    if dose is not None:
        from neurocontrast.contrast.physics import dose_extrapolation

        shown = {"low": low, "physics": dose_extrapolation(pre, low, dose, brain).full, "virtual": virtual,
                 "reference": reference}
    std = {n: np.asarray(v, np.float32) for n, v in shown.items()}
    vmax_image = float(np.percentile(reference[brain], 99.8))
    maps = None
    focus = lesion
    if pre is not None:
        from neurocontrast.contrast.subtraction import radiometric_match

        pre_m = radiometric_match(pre, reference, brain).apply(pre)
        maps = {n: M.enhancement_map(v, pre_m) * brain for n, v in std.items()}
        if focus is None:
            focus = M.otsu_binarise(maps["reference"], brain)[0]
    # display in radiological LPS order (anterior up, patient right on the left) whatever the file's axes
    def lps(a):
        return sitk.GetArrayFromImage(sitk.DICOMOrient(geo.to_image(np.asarray(a, np.float32)), "LPS"))

    std_v = {n: lps(v) for n, v in std.items()}
    maps_v = None if maps is None else {n: lps(v) for n, v in maps.items()}
    brain_v = lps(brain) > 0.5
    k = _choose_slice(brain_v, None if focus is None else lps(focus) > 0.5)
    _figure(std_v, maps_v, k, png_path, "intensities as given (reference units; grey scale 0 to the reference's "
            "in-brain 99.8th percentile)", vmax_image)
    info = {"low": os.fspath(low_path), "virtual": os.fspath(virtual_path), "reference": os.fspath(reference_path),
            "pre": None if pre_path is None else os.fspath(pre_path), "mask_source": mask_source,
            "lesion_mask": None if lesion_mask_path is None else os.fspath(lesion_mask_path),
            "geometry": geo.describe(), "slice_index": k, "rows": rows}
    Path(json_path).write_text(json.dumps(info, indent=1))
    lines = ["# Virtual contrast evaluation", "",
             f"- low-dose: `{low_path}`", f"- virtual: `{virtual_path}`", f"- reference: `{reference_path}`",
             f"- pre-contrast T1: `{pre_path}`" if pre_path else
             "- pre-contrast T1: not given, so no enhancement maps, AUC, FP/FN components or CEP",
             f"- mask: {mask_source}", f"- grid: {geo.describe()}", "",
             "Images compared as given, in the reference's units (no per-image re-standardisation); SSIM "
             "(scikit-image, 7-voxel window, data range = the reference's in-mask max − min, mean over the mask), "
             "PSNR and NRMSE inside the mask; AUC of the enhancement map max(image − pre', 0) (pre' = the T1 "
             "matched radiometrically to the reference) against the Otsu-binarised reference map (Ammari et al. "
             "2022); restored = mean enhancement over the reference's enhancing voxels relative to the "
             "reference's; physics = dose extrapolation pre' + p⊙(low − pre')/dose; CNR/LBR/CEP on the lesion "
             "mask (Bône et al.).", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "/") for c in _COLUMNS) + " |")
    lines += ["", f"![comparison](comparison.png) (axial slice {k})", ""]
    Path(md_path).write_text("\n".join(lines))
    report(progress, 1.0, "evaluation done")
    return {"csv": csv_path, "json": json_path, "markdown": md_path, "png": png_path, "rows": rows,
            "slice_index": k, "mask_source": mask_source}
