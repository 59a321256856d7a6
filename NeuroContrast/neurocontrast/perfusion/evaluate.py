"""Evaluation of perfusion maps: accuracy against the digital phantom (the demo) and comparison of predicted
with reference maps (``neurocontrast evaluate perfusion``; the metrics of Cao et al. Table 1 and 2).

:func:`run_demo` -- phantom → pipeline → :func:`phantom_accuracy` → outputs; :func:`evaluate_perfusion` --
per-case map metrics (:func:`evaluate_case`), CSV, Markdown summary and box plots.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional

from neurocontrast.perfusion.pipeline import HYPOPERFUSION_THRESHOLD_S

#: Maps compared by :func:`evaluate_case`, in table order.
EVAL_MAPS = ("cbv", "cbf", "tmax", "mtt", "ttp")


@dataclasses.dataclass
class EvaluationSummary:
    """What :func:`evaluate_perfusion` measured: ``lines`` (the Markdown summary), ``map_rows`` and
    ``segmentation_rows`` (one dict per case/map/region, as in the CSV files), ``paths`` (files written)."""

    lines: List[str]
    map_rows: List[Dict[str, Any]]
    segmentation_rows: List[Dict[str, Any]]
    paths: List[str]


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` did: the pipeline ``result``, the ``phantom``, its ``accuracy``
    (:func:`phantom_accuracy`), ``paths`` written, and ``timings`` (phantom_s, maps_s, total_s)."""

    result: Any
    phantom: Any
    accuracy: Dict[str, float]
    paths: Dict[str, str]
    timings: Dict[str, float]


def phantom_accuracy(result, phantom) -> Dict[str, float]:
    """Accuracy of a pipeline result against the phantom truth, inside the brain mask without the arteries.

    Returns ``cbf_median_ratio``, ``cbv_median_ratio`` (median of estimate/truth), ``tmax_mae_s``,
    ``dice_tmax_gt_6s`` (pipeline hypoperfusion mask vs true Tmax > 6 s), ``hypoperfused_ml`` and
    ``true_hypoperfused_ml``; in the graded rim around the territory (true Tmax 2-8 s,
    :data:`~neurocontrast.perfusion.phantom.PENUMBRA_GRADE_S`): ``tmax_bias_rim_s`` (mean estimate − truth,
    s), ``tmax_mae_rim_s`` and ``rim_read_gt_6s_fraction`` (share of rim voxels with true Tmax <= 4.5 s that
    read > 6 s).
    """
    import numpy as np

    from neurocontrast import metrics
    from neurocontrast.perfusion.phantom import LABELS

    truth = phantom.truth
    region = phantom.brain_mask & (phantom.labels != LABELS["artery"])
    out: Dict[str, float] = {}
    for name in ("cbf", "cbv", "mtt"):
        if name in result.maps:
            ratio = result.maps[name][region] / np.maximum(truth[name][region], 1e-6)
            out[f"{name}_median_ratio"] = float(np.median(ratio))
    if "tmax" in result.maps:
        out["tmax_mae_s"] = float(np.mean(np.abs(result.maps["tmax"][region] - truth["tmax"][region])))
        pred = result.hypoperfusion_mask if result.hypoperfusion_mask is not None else result.maps["tmax"] > 6
        ref = phantom.hypoperfused_truth(6.0)
        out["dice_tmax_gt_6s"] = metrics.dice(pred & phantom.brain_mask, ref)
        out["hypoperfused_ml"] = float(pred.sum() * phantom.geometry.voxel_volume_ml)
        out["true_hypoperfused_ml"] = float(ref.sum() * phantom.geometry.voxel_volume_ml)
        rim = region & (truth["territory"] == 1)
        if rim.any():
            err = result.maps["tmax"][rim] - truth["tmax"][rim]
            out["tmax_bias_rim_s"] = float(np.mean(err))
            out["tmax_mae_rim_s"] = float(np.mean(np.abs(err)))
            early = truth["tmax"][rim] <= 4.5
            out["rim_read_gt_6s_fraction"] = float(np.mean(result.maps["tmax"][rim][early] > 6.0)) if early.any() else 0.0
    return out


def run_demo(out_dir: str, *, shape=(8, 64, 64), n_frames: int = 60, tr_s: float = 1.5, te_s: float = 0.03,
             snr: float = 40.0, seed: int = 0, dispersion_s: float = 0.0, options=None, progress=None) -> DemoResult:
    """The whole job on the digital phantom (:func:`~neurocontrast.perfusion.phantom.generate_phantom`):
    maps with ``options`` (:class:`~neurocontrast.perfusion.parameters.PerfusionOptions`, default oSVD),
    :func:`phantom_accuracy` written into the report, outputs and the phantom inputs (``phantom/``) in
    ``out_dir``. Raises NeuroContrastError on invalid phantom or method parameters or an output folder
    that :func:`~neurocontrast.perfusion.pipeline.prepare_output_folder` refuses."""
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom
    from neurocontrast.perfusion.pipeline import prepare_output_folder, run_perfusion, write_outputs

    prepare_output_folder(out_dir)
    t0 = time.perf_counter()
    phantom = generate_phantom(tuple(shape), n_frames, tr_s, te_s, snr, seed, dispersion_s=dispersion_s)
    t_gen = time.perf_counter() - t0
    result = run_perfusion(phantom.to_dsc(), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask,
                           options=options, progress=progress)
    acc = phantom_accuracy(result, phantom)
    result.report["phantom_accuracy"] = acc
    result.report["phantom_parameters"] = phantom.params
    method = result.report["method"]

    def _phantom_inputs(folder: str) -> Dict[str, str]:
        write_phantom(phantom, os.path.join(folder, "phantom"))
        return {"phantom": os.path.join(folder, "phantom")}

    paths = write_outputs(result, out_dir, title=f"NeuroContrast demo: digital phantom, {method}",
                          extra=_phantom_inputs)
    timings = {"phantom_s": t_gen, "maps_s": result.report["timings_s"]["total_s"],
               "total_s": time.perf_counter() - t0}
    return DemoResult(result, phantom, acc, paths, timings)


EVAL_MAPS = ("cbv", "cbf", "tmax", "mtt", "ttp")


def _find_map(folder: str, name: str) -> Optional[str]:
    for candidate in (f"{name}.nii.gz", f"truth_{name}.nii.gz", f"{name}.nii", f"{name}.nrrd"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _cases(pred_dir: str, ref_dir: str) -> List[tuple]:
    """(case name, pred folder, ref folder) pairs: the folders themselves or their matching sub-folders."""
    from neurocontrast.errors import NeuroContrastError

    for folder, what in ((pred_dir, "PRED_DIR"), (ref_dir, "REF_DIR")):
        if not os.path.isdir(folder):
            raise NeuroContrastError(f"{what} {folder} is not a folder")
    if any(_find_map(ref_dir, m) for m in EVAL_MAPS):
        return [(os.path.basename(os.path.normpath(pred_dir)), pred_dir, ref_dir)]
    subs = sorted(d for d in os.listdir(ref_dir) if os.path.isdir(os.path.join(ref_dir, d)))
    pairs = [(d, os.path.join(pred_dir, d), os.path.join(ref_dir, d)) for d in subs
             if os.path.isdir(os.path.join(pred_dir, d))]
    if not pairs:
        raise NeuroContrastError(f"no reference maps (cbf/cbv/tmax .nii.gz) in {ref_dir} and no case sub-folders "
                                 f"shared with {pred_dir}")
    return pairs


def evaluate_case(pred_dir: str, ref_dir: str, mask_path: Optional[str] = None,
                  threshold_s: float = HYPOPERFUSION_THRESHOLD_S) -> Dict[str, object]:
    """Metrics of one case (see :func:`cmd_evaluate`). Returns {"maps": [rows], "segmentation": row or None}.

    Map rows: map, region ("whole_brain" or "hypoperfused"), psnr, ssim (per axial slice, averaged over the
    mask voxels), pearson, spearman, nrmse (:mod:`neurocontrast.metrics` conventions).
    Segmentation (needs tmax in both): auc (predicted Tmax as score for the reference Tmax > threshold),
    dice, iou, hd95_mm of the predicted mask (Tmax > threshold inside the mask, islands < 1 mL removed as in
    :func:`neurocontrast.perfusion.lesion.hypoperfusion`) against the reference Tmax > threshold, threshold_youden_s (max sensitivity + specificity − 1) and threshold_cao_s (where
    sensitivity = specificity, Cao et al. §3.2). Raises NeuroContrastError on missing maps or geometry mismatch.
    """
    import numpy as np

    from neurocontrast import metrics
    from neurocontrast.errors import NeuroContrastError
    from neurocontrast.io import check_same_geometry, read_mask, read_volume

    names = [m for m in EVAL_MAPS if _find_map(pred_dir, m) and _find_map(ref_dir, m)]
    if not names:
        raise NeuroContrastError(f"no map (cbf, cbv, mtt, tmax, ttp) exists in both {pred_dir} and {ref_dir}")
    pred, ref, geo = {}, {}, None
    for m in names:
        ref[m], g_ref = read_volume(_find_map(ref_dir, m), f"reference {m}")
        pred[m], g_pred = read_volume(_find_map(pred_dir, m), f"predicted {m}")
        check_same_geometry(g_ref, g_pred, f"reference {m}", f"predicted {m}")
        geo = geo or g_ref
        check_same_geometry(geo, g_ref, "the first reference map", f"reference {m}")
    if mask_path:
        mask = read_mask(mask_path, geo, name="evaluation mask", reference_name="the reference maps")
    else:
        auto = next((p for p in (os.path.join(ref_dir, "brain_mask.nii.gz"), os.path.join(pred_dir, "brain_mask.nii.gz"))
                     if os.path.isfile(p)), None)
        if auto:
            mask = read_mask(auto, geo, name="brain mask", reference_name="the reference maps")
        else:
            mask = np.zeros(geo.shape, bool)
            for m in names:
                mask |= (ref[m] != 0) | (pred[m] != 0)
    if not mask.any():
        raise NeuroContrastError("the evaluation mask is empty")
    rows = []
    hyp_ref = ref["tmax"] > threshold_s if "tmax" in ref else None
    regions = [("whole_brain", mask)]
    if hyp_ref is not None and (hyp_ref & mask).sum() >= 2:
        regions.append(("hypoperfused", hyp_ref & mask))
    for m in names:
        for region, sel in regions:
            row = {"map": m, "region": region, "voxels": int(sel.sum())}
            for key, fn in (("psnr", metrics.psnr), ("nrmse", metrics.nrmse), ("pearson", metrics.pearson),
                            ("spearman", metrics.spearman)):
                row[key] = fn(pred[m], ref[m], sel)
            row["ssim"] = _slice_ssim(pred[m], ref[m], sel)
            rows.append(row)
    seg = None
    if hyp_ref is not None:
        from neurocontrast.perfusion.lesion import hypoperfusion

        labels = hyp_ref & mask
        # the same rule as the pipeline's hypoperfusion mask: Tmax > threshold, islands < 1 mL removed
        hyp_pred = hypoperfusion(pred["tmax"], geo, brain_mask=mask, thresholds=(threshold_s,)).masks[threshold_s]
        spacing_zyx = tuple(geo.spacing[::-1])
        seg = {"threshold_s": threshold_s, "reference_ml": float(labels.sum() * geo.voxel_volume_ml),
               "predicted_ml": float(hyp_pred.sum() * geo.voxel_volume_ml),
               "auc": metrics.roc_auc(pred["tmax"], labels, mask), "dice": metrics.dice(hyp_pred, labels),
               "iou": metrics.iou(hyp_pred, labels), "hd95_mm": metrics.hd95(hyp_pred, labels, spacing_zyx)}
        if labels.any() and not labels[mask].all():
            from sklearn.metrics import roc_curve

            seg["threshold_youden_s"] = metrics.youden_operating_point(pred["tmax"], labels, mask)["threshold"]
            fpr, tpr, thr = roc_curve(labels[mask].ravel(), pred["tmax"][mask].ravel().astype(float))
            best = int(np.argmin(np.abs(tpr - (1.0 - fpr))[1:])) + 1  # skip the +inf threshold
            seg["threshold_cao_s"] = float(thr[best])
        else:
            seg["threshold_youden_s"] = seg["threshold_cao_s"] = float("nan")
    return {"maps": rows, "segmentation": seg}


def _slice_ssim(pred, ref, mask) -> float:
    """SSIM per axial slice (2D, 7×7 window, the reference's in-mask range over the whole volume), averaged
    over the mask voxels: DSC slices are thick, so in-plane structure is what SSIM should compare."""
    import numpy as np

    from neurocontrast import metrics

    rng = metrics.data_range(ref, mask)
    total, weight = 0.0, 0
    for z in range(ref.shape[0]):
        n = int(mask[z].sum())
        if n:
            total += n * metrics.ssim(pred[z], ref[z], mask[z], data_range_value=rng)
            weight += n
    return float(total / weight) if weight else float(np.nan)


def evaluate_perfusion(pred_dir: str, ref_dir: str, out_dir: str, *, mask_path: Optional[str] = None,
                       threshold_s: float = HYPOPERFUSION_THRESHOLD_S) -> EvaluationSummary:
    """Compare predicted perfusion maps with reference maps over one case or a folder of cases.

    Writes into ``out_dir`` (created): ``metrics.csv`` (per case, map and region: PSNR, SSIM, PCC, SCC,
    NRMSE; see :func:`evaluate_case`), ``segmentation.csv`` (Tmax > ``threshold_s`` s: AUC, Dice, IoU, HD95,
    ROC thresholds), ``summary.md`` (mean (SD) over cases in the layout of Cao et al. Table 1 and 2) and
    ``boxplot.png`` (Cao Fig. 2e-f). Returns an :class:`EvaluationSummary`.
    Raises NeuroContrastError on missing folders or maps and geometry mismatches.
    """
    import csv

    import numpy as np

    pairs = _cases(pred_dir, ref_dir)
    os.makedirs(out_dir, exist_ok=True)
    map_rows, seg_rows = [], []
    for case, pdir, rdir in pairs:
        res = evaluate_case(pdir, rdir, mask_path, threshold_s)
        map_rows += [{"case": case, **r} for r in res["maps"]]
        if res["segmentation"] is not None:
            seg_rows.append({"case": case, **res["segmentation"]})
    map_fields = ["case", "map", "region", "voxels", "psnr", "ssim", "pearson", "spearman", "nrmse"]
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=map_fields)
        w.writeheader()
        for r in map_rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in map_fields})
    seg_fields = ["case", "threshold_s", "reference_ml", "predicted_ml", "auc", "dice", "iou", "hd95_mm",
                  "threshold_youden_s", "threshold_cao_s"]
    if seg_rows:
        with open(os.path.join(out_dir, "segmentation.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=seg_fields)
            w.writeheader()
            for r in seg_rows:
                w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in seg_fields})

    def _ms(values) -> str:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        if v.size == 0:
            return "–"
        return f"{v.mean():.3f}" if v.size == 1 else f"{v.mean():.3f} ({v.std(ddof=1):.3f})"

    lines = ["# Perfusion evaluation", "", f"Predictions: `{pred_dir}`  ", f"Reference: `{ref_dir}`  ",
             f"Cases: {len(pairs)}. Values are mean (SD) over cases (Cao et al. Table 1 and 2 layout).", ""]
    lines += ["## Maps (Table 2)", "", "| map | region | PSNR ↑ | SSIM ↑ | PCC ↑ | SCC ↑ | NRMSE ↓ |",
              "|---|---|---|---|---|---|---|"]
    for m in EVAL_MAPS:
        for region in ("whole_brain", "hypoperfused"):
            sel = [r for r in map_rows if r["map"] == m and r["region"] == region]
            if sel:
                lines.append(f"| {m.upper() if m != 'tmax' else 'Tmax'} | {region.replace('_', ' ')} | "
                             + " | ".join(_ms([r[k] for r in sel]) for k in ("psnr", "ssim", "pearson", "spearman", "nrmse"))
                             + " |")
    if seg_rows:
        lines += ["", f"## Hypoperfused area, Tmax > {threshold_s:g} s (Table 1)", "",
                  "| AUC ↑ | Dice ↑ | IoU ↑ | HD95 (mm) ↓ | ROC threshold Youden (s) | ROC threshold sens = spec (s) |",
                  "|---|---|---|---|---|---|",
                  "| " + " | ".join(_ms([r[k] for r in seg_rows]) for k in
                                    ("auc", "dice", "iou", "hd95_mm", "threshold_youden_s", "threshold_cao_s")) + " |"]
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    _boxplot(map_rows, seg_rows, os.path.join(out_dir, "boxplot.png"))
    files = ["metrics.csv", "summary.md", "boxplot.png"] + (["segmentation.csv"] if seg_rows else [])
    return EvaluationSummary(lines, map_rows, seg_rows, [os.path.join(out_dir, f) for f in files])


def _boxplot(map_rows, seg_rows, path: str) -> None:
    """Box plots per metric (boxes per map, whole brain) and of the segmentation metrics, as in Cao Fig. 2e-f."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    metrics_list = ["psnr", "ssim", "pearson", "spearman", "nrmse"]
    names = [m for m in EVAL_MAPS if any(r["map"] == m for r in map_rows)]
    ncols = len(metrics_list) + (1 if seg_rows else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(2.6 * ncols, 3.4), dpi=110)
    colours = {"whole_brain": "#4c72b0", "hypoperfused": "#dd8452"}
    for ax, metric in zip(axes, metrics_list):
        data, pos, cols = [], [], []
        for i, m in enumerate(names):
            for j, region in enumerate(("whole_brain", "hypoperfused")):
                vals = [r[metric] for r in map_rows if r["map"] == m and r["region"] == region
                        and r[metric] is not None and np.isfinite(r[metric])]
                if vals:
                    data.append(vals)
                    pos.append(i + (j - 0.5) * 0.36)
                    cols.append(colours[region])
        if data:
            bp = ax.boxplot(data, positions=pos, widths=0.3, patch_artist=True, showfliers=False,
                            medianprops={"color": "black"})
            for patch, c in zip(bp["boxes"], cols):
                patch.set_facecolor(c)
                patch.set_alpha(0.6)
            for d, p, c in zip(data, pos, cols):  # every case as a point (readable also for one case)
                ax.scatter(np.full(len(d), p), d, s=22, color=c, edgecolors="black", linewidths=0.6, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.upper() if n != "tmax" else "Tmax" for n in names], fontsize=8)
        ax.set_title(metric.upper() if metric != "pearson" and metric != "spearman"
                     else {"pearson": "PCC", "spearman": "SCC"}[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    if seg_rows:
        ax = axes[-1]
        keys = ["auc", "dice", "iou"]
        data = [[r[k] for r in seg_rows if r[k] is not None and np.isfinite(r[k])] for k in keys]
        keep = [(k, d) for k, d in zip(keys, data) if d]
        if keep:
            bp = ax.boxplot([d for _, d in keep], patch_artist=True, widths=0.5, showfliers=False,
                            medianprops={"color": "black"})
            for patch in bp["boxes"]:
                patch.set_facecolor("#c44e52")
                patch.set_alpha(0.6)
            for i, (_, d) in enumerate(keep, start=1):
                ax.scatter(np.full(len(d), i), d, s=22, color="#c44e52", edgecolors="black", linewidths=0.6,
                           zorder=3)
            ax.set_xticks(range(1, len(keep) + 1))
            ax.set_xticklabels([k.upper() for k, _ in keep], fontsize=8)
        ax.set_title(f"Tmax > {seg_rows[0]['threshold_s']:g} s segmentation", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=colours["whole_brain"], label="whole brain"),
                        Patch(color=colours["hypoperfused"], label="hypoperfused (reference Tmax > 6 s)")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, facecolor="white")
    plt.close(fig)
