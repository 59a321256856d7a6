"""Command-line subcommands of the perfusion domain: ``perfusion``, ``phantom``, ``demo``, ``evaluate perfusion``.

Registered by :func:`register` into the parsers of :mod:`neurocontrast.cli`. Each command parses, makes one
core call (:func:`~neurocontrast.perfusion.pipeline.perfusion_from_files`,
:func:`~neurocontrast.perfusion.evaluate.run_demo`, :func:`~neurocontrast.perfusion.evaluate.evaluate_perfusion`,
:func:`~neurocontrast.perfusion.phantom.write_phantom`) and prints. The method parameters' options come from
the parameter objects of :mod:`neurocontrast.perfusion.parameters`. Heavy imports happen inside the command
functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict

from neurocontrast.perfusion.parameters import (PerfusionOptions, SVDParams, TikhonovParams, add_cli_options,
                                                from_cli)
from neurocontrast.perfusion.pipeline import HYPOPERFUSION_THRESHOLD_S, deconvolution_methods, network_methods

PERFUSION_USAGE = ("neurocontrast perfusion DSC [--aif-mask M | --aif auto] [--vof-mask M | --vof auto] "
                   "[--brain-mask M] [--method METHOD] [--te S] [--tr S] [--core-mask M | --adc ADC [--dwi DWI]] "
                   "[--reference-mask M] --out DIR   (the AIF and VOF are required except for --method tmaxnet, "
                   "which needs neither)")


def register(groups: Dict[str, argparse._SubParsersAction]) -> None:
    """Add ``perfusion``, ``phantom``, ``demo`` (top level) and ``evaluate perfusion``."""
    top = groups[""]
    methods = deconvolution_methods() + network_methods()

    p = top.add_parser(
        "perfusion", usage=PERFUSION_USAGE,
        help="DSC-MRI perfusion maps (CBF, CBV, MTT, Tmax, TTP) and Tmax > 6 s hypoperfusion",
        description="Compute CBF, CBV, MTT, Tmax and TTP maps from a 4D DSC-MRI series by deconvolution "
                    "(oSVD, cSVD, sSVD, Tikhonov) or a network (ST-Net, AIF-free Tmax net), the Tmax > 4/6/8/10 s "
                    "hypoperfusion volumes and, with --core-mask, the mismatch. Writes cbf/cbv/mtt/tmax/ttp/"
                    "hypoperfusion .nii.gz, report.json and overview.png into --out, which then holds exactly "
                    "this run's outputs.")
    p.add_argument("dsc", metavar="DSC", help="4D DSC series: NIfTI, NRRD (.seq.nrrd) or a DICOM folder")
    src = p.add_mutually_exclusive_group(required=False)
    src.add_argument("--aif-mask", metavar="M", help="AIF mask (non-zero voxels) on the DSC grid")
    src.add_argument("--aif", choices=["auto"], help="'auto': automatic AIF (Mouridsen 2006 clustering)")
    vof = p.add_mutually_exclusive_group()
    vof.add_argument("--vof-mask", metavar="M",
                     help="VOF mask (superior sagittal sinus); the AIF is rescaled to its area (Cao eq. 8). "
                          "Required for deconvolution methods and ST-Net/ST-Net-S (or --vof auto)")
    vof.add_argument("--vof", choices=["auto"],
                     help="'auto': automatic VOF in the superior sagittal sinus (late, tall, broad curve "
                          "near the posterior midline)")
    p.add_argument("--no-vof-rescale", action="store_true",
                   help="use the AIF as measured (the VOF curve is still reported, with the factor rescaling "
                        "would have applied)")
    p.add_argument("--brain-mask", metavar="M", help="brain mask (default: automatic Otsu mask of the baseline)")
    core = p.add_mutually_exclusive_group()
    core.add_argument("--core-mask", metavar="M", help="infarct core mask (e.g. ADC < 620): adds the mismatch")
    core.add_argument("--adc", metavar="ADC",
                      help="ADC map of the same session (any grid): core = ADC < 620e-6 mm²/s inside the brain "
                           "(RAPID), without edge, CSF border and clusters < 0.1 mL; adds core and mismatch")
    p.add_argument("--dwi", metavar="DWI", help="trace DWI on the ADC grid: the core must also be DWI-bright")
    p.add_argument("--adc-unit", choices=["mm2/s", "1e-3 mm2/s", "1e-6 mm2/s"],
                   help="unit of the ADC map (default: inferred from its brain median, logged)")
    p.add_argument("--reference-mask", metavar="M",
                   help="reference region of rCBF/rCBV/rMTT (default: contralateral normal-appearing white matter)")
    p.add_argument("--method", default="osvd", choices=methods, help="map method (default osvd)")
    p.add_argument("--te", type=float, metavar="S", help="echo time in s (overrides the header/sidecar)")
    p.add_argument("--tr", type=float, metavar="S",
                   help="frame interval in s, 0.3-5 (overrides the header/sidecar)")
    for cls in (SVDParams, TikhonovParams, PerfusionOptions):
        add_cli_options(p, cls)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty, or an earlier NeuroContrast output (replaced whole)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder of other content")
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
                   help="output folder (default ./neurocontrast-demo; an earlier demo there is replaced)")
    p.add_argument("--method", default="osvd", choices=deconvolution_methods(),
                   help="deconvolution method (default osvd)")
    for cls in (SVDParams, TikhonovParams, PerfusionOptions):
        add_cli_options(p, cls)
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
        p.add_argument("--threshold", type=float, default=HYPOPERFUSION_THRESHOLD_S, metavar="S",
                       help=f"Tmax threshold in s (default {HYPOPERFUSION_THRESHOLD_S:g})")
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


def options_from_cli(args, **fields) -> PerfusionOptions:
    """The :class:`PerfusionOptions` of a parsed command line (the parameter objects' own options)."""
    return from_cli(PerfusionOptions, args, svd=from_cli(SVDParams, args), tikhonov=from_cli(TikhonovParams, args),
                    **fields)


def cmd_perfusion(args) -> int:
    """``neurocontrast perfusion``: :func:`~neurocontrast.perfusion.pipeline.perfusion_from_files`."""
    from neurocontrast.errors import NeuroContrastError
    from neurocontrast.perfusion.pipeline import perfusion_from_files

    from neurocontrast.perfusion.pipeline import MAP_METHODS

    needs_aif = MAP_METHODS[args.method].needs_aif
    if needs_aif and not (args.aif_mask or args.aif == "auto"):
        raise NeuroContrastError(f"method {args.method} needs an AIF: give --aif-mask M or --aif auto "
                                 "(--method tmaxnet needs neither AIF nor VOF)")
    if needs_aif and not (args.vof_mask or args.vof == "auto"):
        raise NeuroContrastError(f"--vof-mask (or --vof auto) is required for method {args.method} (the AIF is "
                                 "rescaled to the VOF for partial volume, Cao eq. 8; --no-vof-rescale turns the "
                                 "rescaling off)")
    if args.dwi and not args.adc:
        raise NeuroContrastError("--dwi needs --adc (the DWI only refines the ADC core)")
    options = options_from_cli(args, method=args.method, aif="auto" if args.aif == "auto" else "mask",
                               vof="auto" if args.vof == "auto" else "mask", vof_rescale=not args.no_vof_rescale)
    t0 = time.perf_counter()
    with _progress(f"perfusion ({args.method})", args.no_progress,
                   getattr(args, "progress_lines", False)) as progress:
        result, paths = perfusion_from_files(args.dsc, args.out, aif_mask=args.aif_mask, vof_mask=args.vof_mask,
                                             brain_mask=args.brain_mask, core_mask=args.core_mask, adc=args.adc,
                                             dwi=args.dwi, adc_unit=args.adc_unit,
                                             reference_mask=args.reference_mask, tr_s=args.tr,
                                             te_s=args.te, options=options, overwrite=args.overwrite,
                                             progress=progress)
    vols = result.report.get("volumes_ml", {})
    timings = result.report.get("timings_s", {})
    maps_s = sum(timings.get(k, 0.0) for k in ("read_s", "total_s", "write_s"))
    png = f", overview.png after {timings['overview_s']:.1f} s more" if "overview_s" in timings else ""
    print(f"{args.method}: maps read, computed and written to {args.out} ({len(paths)} files) in {maps_s:.1f} s{png} "
          f"({time.perf_counter() - t0:.1f} s in all)")
    if vols:
        print("hypoperfusion: " + ", ".join(f"{k.replace('tmax_gt_', 'Tmax>')} {v:.1f} mL" for k, v in vols.items()))
    mism = result.report.get("mismatch")
    if mism:
        ratio = "n/a (no core)" if mism.get("ratio") is None else f"{mism['ratio']:.2f}"
        print(f"core {mism['core_ml']:.1f} mL, mismatch {mism['mismatch_ml']:.1f} mL, ratio {ratio}, "
              f"target mismatch {'yes' if mism['target_mismatch'] else 'no'}")
    for warning in result.report.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_phantom(args) -> int:
    """``neurocontrast phantom OUTDIR``: generate and write the phantom."""
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    t0 = time.perf_counter()
    phantom = generate_phantom(tuple(args.shape), args.frames, args.tr, args.te, args.snr, args.seed,
                               dispersion_s=args.dispersion)
    paths = write_phantom(phantom, args.outdir)
    print(f"phantom {tuple(phantom.signal.shape)} (t, z, y, x), TR {phantom.tr_s:g} s, TE {phantom.te_s:g} s, "
          f"SNR {args.snr:g}: {len(paths)} files in {args.outdir} ({time.perf_counter() - t0:.1f} s)")
    print(f"try: neurocontrast perfusion {paths['dsc']} --aif-mask {paths['aif_mask']} "
          f"--vof-mask {paths['vof_mask']} --brain-mask {paths['brain_mask']} --out {os.path.join(args.outdir, 'maps')}")
    return 0


def cmd_demo(args) -> int:
    """``neurocontrast demo``: :func:`~neurocontrast.perfusion.evaluate.run_demo` and its accuracy."""
    from neurocontrast.perfusion.evaluate import run_demo

    options = options_from_cli(args, method=args.method)
    with _progress(f"demo ({args.method})", args.no_progress) as progress:
        demo = run_demo(args.out, shape=args.shape, n_frames=args.frames, tr_s=args.tr, te_s=args.te, snr=args.snr,
                        seed=args.seed, dispersion_s=args.dispersion, options=options, progress=progress)
    acc, shape, ph = demo.accuracy, tuple(demo.phantom.signal.shape), demo.phantom
    nan = float("nan")
    print(f"NeuroContrast demo: phantom {shape[1:]} x {shape[0]} frames, TR {ph.tr_s:g} s, "
          f"TE {ph.te_s:g} s, SNR {args.snr:g}; method {args.method}, smoothing {options.smoothing_fwhm_mm:g} mm")
    print(f"  CBF median ratio to truth   {acc.get('cbf_median_ratio', nan):.3f}")
    print(f"  CBV median ratio to truth   {acc.get('cbv_median_ratio', nan):.3f}")
    print(f"  Tmax mean absolute error    {acc.get('tmax_mae_s', nan):.2f} s")
    print(f"  Tmax bias in the 2-8 s rim  {acc.get('tmax_bias_rim_s', nan):+.2f} s "
          f"(MAE {acc.get('tmax_mae_rim_s', nan):.2f} s; true <= 4.5 s read > 6 s: "
          f"{100 * acc.get('rim_read_gt_6s_fraction', nan):.1f} %)")
    print(f"  Dice of Tmax > 6 s          {acc.get('dice_tmax_gt_6s', nan):.3f} "
          f"({acc.get('hypoperfused_ml', 0):.1f} mL vs true {acc.get('true_hypoperfused_ml', 0):.1f} mL)")
    t = demo.timings
    print(f"  time: phantom {t['phantom_s']:.2f} s, maps {t['maps_s']:.2f} s, total with writing {t['total_s']:.2f} s")
    print(f"  outputs in {os.path.abspath(args.out)}: {', '.join(sorted(os.path.basename(p) for p in demo.paths.values()))}")
    return 0


def cmd_evaluate(args) -> int:
    """``neurocontrast evaluate perfusion``: :func:`~neurocontrast.perfusion.evaluate.evaluate_perfusion`."""
    from neurocontrast.perfusion.evaluate import evaluate_perfusion

    summary = evaluate_perfusion(args.pred_dir, args.ref_dir, args.out, mask_path=args.mask,
                                 threshold_s=args.threshold)
    print("\n".join(summary.lines))
    print("\nwritten: " + ", ".join(os.path.basename(p) if i else p for i, p in enumerate(summary.paths)))
    return 0
