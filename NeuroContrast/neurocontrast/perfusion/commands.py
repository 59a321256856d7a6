"""Command-line subcommands of the perfusion domain: ``perfusion``, ``phantom``, ``demo``, ``evaluate perfusion``.

Registered by :func:`register` into the parsers of :mod:`neurocontrast.cli`. Heavy imports happen inside
the command functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

DECONVOLUTION = ("osvd", "csvd", "ssvd", "tikhonov")
NETWORKS = ("stnet", "tmaxnet")

PERFUSION_USAGE = ("neurocontrast perfusion DSC (--aif-mask M | --aif auto) --vof-mask M [--brain-mask M] "
                   "[--method osvd|csvd|ssvd|tikhonov|stnet|tmaxnet] [--te S] [--tr S] [--core-mask M] --out DIR")


def register(groups: Dict[str, argparse._SubParsersAction]) -> None:
    """Add ``perfusion``, ``phantom``, ``demo`` (top level) and ``evaluate perfusion``."""
    top = groups[""]

    p = top.add_parser(
        "perfusion", usage=PERFUSION_USAGE,
        help="DSC-MRI perfusion maps (CBF, CBV, MTT, Tmax, TTP) and Tmax > 6 s hypoperfusion",
        description="Compute CBF, CBV, MTT, Tmax and TTP maps from a 4D DSC-MRI series by deconvolution "
                    "(oSVD, cSVD, sSVD, Tikhonov) or a network (ST-Net, AIF-free Tmax net), the Tmax > 4/6/8/10 s "
                    "hypoperfusion volumes and, with --core-mask, the mismatch. Writes cbf/cbv/mtt/tmax/ttp/"
                    "hypoperfusion .nii.gz, report.json and overview.png into --out.")
    p.add_argument("dsc", metavar="DSC", help="4D DSC series: NIfTI, NRRD (.seq.nrrd) or a DICOM folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--aif-mask", metavar="M", help="AIF mask (non-zero voxels) on the DSC grid")
    src.add_argument("--aif", choices=["auto"], help="'auto': automatic AIF (Mouridsen 2006 clustering)")
    p.add_argument("--vof-mask", metavar="M",
                   help="VOF mask (superior sagittal sinus); the AIF is rescaled to its area (Cao eq. 8). "
                        "Required for deconvolution methods")
    p.add_argument("--brain-mask", metavar="M", help="brain mask (default: automatic Otsu mask of the baseline)")
    p.add_argument("--core-mask", metavar="M", help="infarct core mask (e.g. ADC < 620): adds the mismatch")
    p.add_argument("--method", default="osvd", choices=DECONVOLUTION + NETWORKS, help="map method (default osvd)")
    p.add_argument("--te", type=float, metavar="S", help="echo time in s (overrides the header/sidecar)")
    p.add_argument("--tr", type=float, metavar="S", help="frame interval in s (overrides the header/sidecar)")
    p.add_argument("--osvd-oi", type=float, metavar="OI", help="oSVD oscillation-index target (default 0.095)")
    p.add_argument("--ssvd-threshold", type=float, metavar="F", help="sSVD relative singular-value threshold (0.2)")
    p.add_argument("--tikhonov-lambda", type=float, metavar="L",
                   help="Tikhonov λ relative to the largest singular value (default: L-curve per voxel)")
    p.add_argument("--smoothing-fwhm", type=float, default=5.0, metavar="MM",
                   help="in-plane Gaussian smoothing of the tissue ΔR2* inside the brain before deconvolution, "
                        "FWHM in mm (default 5; 0 = none)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS <fraction> <message>' lines instead of a bar (for the Slicer module)")
    p.set_defaults(func=cmd_perfusion)

    p = top.add_parser("phantom", help="write the digital DSC phantom with its ground truth",
                       description="Generate the digital DSC-MRI phantom (grey/white matter, CSF, an MCA "
                                   "hypoperfused wedge with delayed bolus, AIF and VOF voxels with partial "
                                   "volume, Rician noise) and write dsc.nii.gz + dsc.json, the AIF/VOF/brain "
                                   "masks and truth_<map>.nii.gz into OUTDIR.")
    p.add_argument("outdir", metavar="OUTDIR", help="output folder (created)")
    _phantom_options(p)
    p.set_defaults(func=cmd_phantom)

    p = top.add_parser("demo", help="run the whole job on the embedded phantom and print its accuracy",
                       description="Generate the phantom, compute oSVD perfusion maps, print the accuracy "
                                   "against the ground truth (CBF/CBV median ratio, Tmax MAE, Dice of "
                                   "Tmax > 6 s) and the time, and write the outputs (maps, report.json, "
                                   "overview.png) and the phantom inputs (phantom/) into --out.")
    p.add_argument("--out", default="neurocontrast-demo", metavar="DIR",
                   help="output folder (default ./neurocontrast-demo)")
    p.add_argument("--method", default="osvd", choices=DECONVOLUTION, help="deconvolution method (default osvd)")
    p.add_argument("--smoothing-fwhm", type=float, default=5.0, metavar="MM",
                   help="in-plane smoothing of the tissue ΔR2*, FWHM in mm (default 5; 0 = none)")
    _phantom_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    if "evaluate" in groups:
        p = groups["evaluate"].add_parser(
            "perfusion", help="compare predicted perfusion maps with reference maps (Cao Table 1/2 metrics)",
            description="Compare the maps in PRED_DIR with those in REF_DIR (cbf, cbv, mtt, tmax, ttp .nii.gz; "
                        "truth_<map>.nii.gz also accepted). Folders of case sub-folders are matched by name. "
                        "Writes per-map PSNR, SSIM, Pearson, Spearman, NRMSE (whole brain and reference "
                        "Tmax > 6 s region) and the Tmax > 6 s segmentation AUC, Dice, IoU, HD95 and ROC-optimal "
                        "thresholds as CSV, Markdown and a box-plot PNG into --out.")
        p.add_argument("pred_dir", metavar="PRED_DIR", help="predicted maps (a case folder or a folder of cases)")
        p.add_argument("ref_dir", metavar="REF_DIR", help="reference maps (same layout)")
        p.add_argument("--mask", metavar="M", help="evaluation mask (default: brain_mask.nii.gz in the case "
                                                  "folder of REF_DIR or PRED_DIR, else voxels non-zero in either)")
        p.add_argument("--threshold", type=float, default=6.0, metavar="S", help="Tmax threshold in s (default 6)")
        p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
        p.set_defaults(func=cmd_evaluate)


def _phantom_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snr", type=float, default=40.0, help="baseline grey-matter SNR (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--shape", type=int, nargs=3, default=(8, 64, 64), metavar=("Z", "Y", "X"),
                   help="volume size in voxels (default 8 64 64)")
    p.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    p.add_argument("--tr", type=float, default=1.5, metavar="S", help="frame interval in s (default 1.5)")
    p.add_argument("--te", type=float, default=0.03, metavar="S", help="echo time in s (default 0.03)")
    p.add_argument("--dispersion", type=float, default=0.0, metavar="S",
                   help="dispersion time constant in the hypoperfused territory, s (default 0: none)")


def _progress(description: str, disable: bool, lines: bool = False):
    from neurocontrast.progress import progress_lines, tqdm_progress

    if lines:
        return progress_lines()
    return tqdm_progress(description, disable=disable or not sys.stderr.isatty())


def _make_phantom(args):
    from neurocontrast.perfusion.phantom import generate_phantom

    return generate_phantom(tuple(args.shape), args.frames, args.tr, args.te, args.snr, args.seed,
                            dispersion_s=args.dispersion)


def cmd_perfusion(args) -> int:
    """``neurocontrast perfusion``: read the series and masks, run the pipeline, write the outputs."""
    from neurocontrast.io import read_dsc, read_mask
    from neurocontrast.errors import NeuroContrastError
    from neurocontrast.perfusion.pipeline import run_perfusion, write_outputs

    if args.method in DECONVOLUTION and not args.vof_mask:
        raise NeuroContrastError(f"--vof-mask is required for method {args.method} (the AIF is rescaled to the "
                                 "VOF for partial volume, Cao eq. 8)")
    for opt in ("te", "tr"):
        value = getattr(args, opt)
        if value is not None and not value > 0:
            raise NeuroContrastError(f"--{opt} must be > 0 s, got {value}")
    if args.smoothing_fwhm < 0:
        raise NeuroContrastError(f"--smoothing-fwhm must be >= 0 mm, got {args.smoothing_fwhm}")
    t0 = time.perf_counter()
    dsc = read_dsc(args.dsc, tr_s=args.tr, te_s=args.te)
    geo = dsc.geometry

    def _mask(path: Optional[str], name: str):
        return None if not path else read_mask(path, geo, name=name, reference_name=f"the DSC series ({os.path.basename(args.dsc)})")

    aif_mask = _mask(args.aif_mask, "AIF mask")
    vof_mask = _mask(args.vof_mask, "VOF mask")
    brain_mask = _mask(args.brain_mask, "brain mask")
    core_mask = _mask(args.core_mask, "core mask")
    params = {}
    if args.osvd_oi is not None:
        params["osvd_oi"] = args.osvd_oi
    if args.ssvd_threshold is not None:
        params["ssvd_threshold"] = args.ssvd_threshold
    if args.tikhonov_lambda is not None:
        params["lambda_"] = args.tikhonov_lambda
    with _progress(f"perfusion ({args.method})", args.no_progress, getattr(args, "progress_lines", False)) as progress:
        result = run_perfusion(dsc, aif_mask, vof_mask, brain_mask, aif="auto" if args.aif == "auto" else "mask",
                               method=args.method, core_mask=core_mask, smoothing_fwhm_mm=args.smoothing_fwhm,
                               progress=progress, **params)
        result.report["timings_s"]["read_s"] = round(time.perf_counter() - t0 - result.report["timings_s"]["total_s"], 3)
        paths = write_outputs(result, args.out, title=f"Perfusion: {os.path.basename(args.dsc.rstrip(os.sep))}")
    vols = result.report.get("volumes_ml", {})
    print(f"{args.method}: maps written to {args.out} ({len(paths)} files) in {time.perf_counter() - t0:.1f} s")
    if vols:
        print("hypoperfusion: " + ", ".join(f"{k.replace('tmax_gt_', 'Tmax>')} {v:.1f} mL" for k, v in vols.items()))
    return 0


def cmd_phantom(args) -> int:
    """``neurocontrast phantom OUTDIR``: generate and write the phantom."""
    from neurocontrast.perfusion.phantom import write_phantom

    t0 = time.perf_counter()
    phantom = _make_phantom(args)
    paths = write_phantom(phantom, args.outdir)
    print(f"phantom {tuple(phantom.signal.shape)} (t, z, y, x), TR {phantom.tr_s:g} s, TE {phantom.te_s:g} s, "
          f"SNR {args.snr:g}: {len(paths)} files in {args.outdir} ({time.perf_counter() - t0:.1f} s)")
    print(f"try: neurocontrast perfusion {paths['dsc']} --aif-mask {paths['aif_mask']} "
          f"--vof-mask {paths['vof_mask']} --brain-mask {paths['brain_mask']} --out {os.path.join(args.outdir, 'maps')}")
    return 0


def phantom_accuracy(result, phantom) -> Dict[str, float]:
    """Accuracy of a pipeline result against the phantom truth, inside the brain mask without the arteries.

    Returns ``cbf_median_ratio``, ``cbv_median_ratio`` (median of estimate/truth), ``tmax_mae_s``,
    ``dice_tmax_gt_6s`` (pipeline hypoperfusion mask vs true Tmax > 6 s), ``hypoperfused_ml`` and
    ``true_hypoperfused_ml``.
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
    return out


def cmd_demo(args) -> int:
    """``neurocontrast demo``: phantom → oSVD maps → accuracy, timings and outputs."""
    from neurocontrast.perfusion.phantom import write_phantom
    from neurocontrast.perfusion.pipeline import run_perfusion, write_outputs

    t0 = time.perf_counter()
    phantom = _make_phantom(args)
    t_gen = time.perf_counter() - t0
    with _progress(f"demo ({args.method})", args.no_progress) as progress:
        result = run_perfusion(phantom.to_dsc(), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask,
                               method=args.method, smoothing_fwhm_mm=args.smoothing_fwhm, progress=progress)
    t_maps = result.report["timings_s"]["total_s"]
    acc = phantom_accuracy(result, phantom)
    result.report["phantom_accuracy"] = acc
    result.report["phantom_parameters"] = phantom.params
    paths = write_outputs(result, args.out, title=f"NeuroContrast demo: digital phantom, {args.method}")
    write_phantom(phantom, os.path.join(args.out, "phantom"))
    total = time.perf_counter() - t0
    shape = tuple(phantom.signal.shape)
    print(f"NeuroContrast demo: phantom {shape[1:]} x {shape[0]} frames, TR {phantom.tr_s:g} s, "
          f"TE {phantom.te_s:g} s, SNR {args.snr:g}; method {args.method}, smoothing {args.smoothing_fwhm:g} mm")
    print(f"  CBF median ratio to truth   {acc.get('cbf_median_ratio', float('nan')):.3f}")
    print(f"  CBV median ratio to truth   {acc.get('cbv_median_ratio', float('nan')):.3f}")
    print(f"  Tmax mean absolute error    {acc.get('tmax_mae_s', float('nan')):.2f} s")
    print(f"  Dice of Tmax > 6 s          {acc.get('dice_tmax_gt_6s', float('nan')):.3f} "
          f"({acc.get('hypoperfused_ml', 0):.1f} mL vs true {acc.get('true_hypoperfused_ml', 0):.1f} mL)")
    print(f"  time: phantom {t_gen:.2f} s, maps {t_maps:.2f} s, total with writing {total:.2f} s")
    print(f"  outputs in {os.path.abspath(args.out)}: {', '.join(sorted(os.path.basename(p) for p in paths.values()))}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# evaluate perfusion

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
                  threshold_s: float = 6.0) -> Dict[str, object]:
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


def cmd_evaluate(args) -> int:
    """``neurocontrast evaluate perfusion``: metrics.csv, segmentation.csv, summary.md, boxplot.png."""
    import csv

    import numpy as np

    pairs = _cases(args.pred_dir, args.ref_dir)
    os.makedirs(args.out, exist_ok=True)
    map_rows, seg_rows = [], []
    for case, pdir, rdir in pairs:
        res = evaluate_case(pdir, rdir, args.mask, args.threshold)
        map_rows += [{"case": case, **r} for r in res["maps"]]
        if res["segmentation"] is not None:
            seg_rows.append({"case": case, **res["segmentation"]})
    map_fields = ["case", "map", "region", "voxels", "psnr", "ssim", "pearson", "spearman", "nrmse"]
    with open(os.path.join(args.out, "metrics.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=map_fields)
        w.writeheader()
        for r in map_rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in map_fields})
    seg_fields = ["case", "threshold_s", "reference_ml", "predicted_ml", "auc", "dice", "iou", "hd95_mm",
                  "threshold_youden_s", "threshold_cao_s"]
    if seg_rows:
        with open(os.path.join(args.out, "segmentation.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=seg_fields)
            w.writeheader()
            for r in seg_rows:
                w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in seg_fields})

    def _ms(values) -> str:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        if v.size == 0:
            return "–"
        return f"{v.mean():.3f}" if v.size == 1 else f"{v.mean():.3f} ({v.std(ddof=1):.3f})"

    lines = ["# Perfusion evaluation", "", f"Predictions: `{args.pred_dir}`  ", f"Reference: `{args.ref_dir}`  ",
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
        lines += ["", f"## Hypoperfused area, Tmax > {args.threshold:g} s (Table 1)", "",
                  "| AUC ↑ | Dice ↑ | IoU ↑ | HD95 (mm) ↓ | ROC threshold Youden (s) | ROC threshold sens = spec (s) |",
                  "|---|---|---|---|---|---|",
                  "| " + " | ".join(_ms([r[k] for r in seg_rows]) for k in
                                    ("auc", "dice", "iou", "hd95_mm", "threshold_youden_s", "threshold_cao_s")) + " |"]
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    _boxplot(map_rows, seg_rows, os.path.join(args.out, "boxplot.png"))
    print("\n".join(lines))
    print(f"\nwritten: {os.path.join(args.out, 'metrics.csv')}, summary.md, boxplot.png"
          + (", segmentation.csv" if seg_rows else ""))
    return 0


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
