"""``neurocontrast reader init | status | analyze``.

- ``reader init STUDY``: write ``STUDY/study.json`` from ``STUDY/cases/<case>/<condition>.nii.gz`` (other
  images in a case folder become companions; ``brain_roi.*`` the healthy-brain ROI), or with
  ``--synthetic N`` first generate a synthetic study of N cases with known truth.
- ``reader status STUDY``: per reader, reads submitted / in progress / pending / locked; missing files.
- ``reader analyze STUDY --out DIR``: tidy CSVs, report.md/html (Table 5 layout), MRMC and plots.
- ``reader mrmc RATINGS.csv [--lesions LESIONS.csv] --fom auc|wafroc|afroc --analysis or|dbm --out DIR``:
  Obuchowski–Rockette / DBM MRMC analysis of ratings from any source (results.json, results.md, exports).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def register(groups) -> None:
    sub = groups["reader"]
    p = sub.add_parser("init", help="create a study design (study.json) in a study folder",
                       description="Create STUDY/study.json from STUDY/cases/<case>/<condition>.nii.gz, or a "
                                   "synthetic demo study with --synthetic N.")
    p.add_argument("study", help="study folder")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate a synthetic study of N cases first")
    p.add_argument("--readers", nargs="+", default=["R1", "R2"])
    p.add_argument("--conditions", nargs="+", default=["low", "vir"], help="conditions read in the phases")
    p.add_argument("--reference-reader", help="reader of the reference read (default: the first reader)")
    p.add_argument("--reference-condition", default="ref", help="image condition of the reference read")
    p.add_argument("--allocation", choices=("crossover", "sequential"), default="crossover")
    p.add_argument("--washout-days", type=float, default=14.0)
    p.add_argument("--likert-points", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing study.json")
    p.set_defaults(func=_init)
    p = sub.add_parser("status", help="progress of every reader", description="Reads per reader and state.")
    p.add_argument("study", help="study folder")
    p.set_defaults(func=_status)
    p = sub.add_parser("analyze", help="analyse the reads: CSVs, Table-5 report, plots",
                       description="Pair lesions, compute SE/FDR/PPV/F1 with CIs and tests, write CSVs, "
                                   "report.md/html and PNG plots to --out.")
    p.add_argument("study", help="study folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-contrast", action="store_true", help="skip CNR/LBR/CEP (no image reading)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_analyze)
    from neurocontrast.readerstudy.mrmc import ANALYSES, FOMS

    p = sub.add_parser("mrmc", help="MRMC analysis (OR / DBM) of ROC ratings or FROC marks",
                       description="Obuchowski-Rockette (jackknife covariances) or DBM analysis with Hillis ddf "
                                   "of ROC ratings (reader, modality, case, truth, rating) or, with --lesions, "
                                   "FROC marks (modality, reader, case, case_truth, mark_type, lesion, weight, "
                                   "rating). Writes results.json, results.md, foms.csv, ratings_tidy.csv, "
                                   "rjafroc.xlsx, imrmc.txt (ROC) and reader_foms.png to --out.")
    p.add_argument("ratings", help="ROC ratings CSV, or FROC marks CSV with --lesions")
    p.add_argument("--lesions", help="FROC lesions CSV (case, lesion, weight)")
    p.add_argument("--fom", choices=FOMS, default="auc", help="figure of merit (default auc)")
    p.add_argument("--analysis", choices=ANALYSES, default="or", help="or (Obuchowski-Rockette) or dbm")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided level of the CIs (default 0.05)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=_mrmc)


def _image_stem(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _init(args: argparse.Namespace) -> int:
    from neurocontrast.errors import NeuroContrastError
    from neurocontrast.readerstudy.design import DESIGN_FILE, StudyDesign, crossover_design

    folder = Path(args.study)
    if (folder / DESIGN_FILE).exists() and not args.force:
        raise NeuroContrastError(f"{folder / DESIGN_FILE} exists; use --force to overwrite it")
    if args.synthetic:
        from neurocontrast.readerstudy.synthetic import make_synthetic_study

        made = make_synthetic_study(folder, n_cases=args.synthetic, readers=args.readers, seed=args.seed,
                                    washout_days=args.washout_days)
        design = made["design"]
    else:
        cases_dir = folder / "cases"
        if not cases_dir.is_dir():
            raise FileNotFoundError(f"no {cases_dir}: put one folder per case with <condition>.nii.gz images")
        reference_condition = args.reference_condition
        needed = list(args.conditions) + ([reference_condition] if reference_condition else [])
        images, companions, rois, case_ids = {}, {}, {}, []
        for case_dir in sorted(p for p in cases_dir.iterdir() if p.is_dir()):
            files = {_image_stem(p): p for p in case_dir.iterdir() if _image_stem(p)}
            missing = [c for c in needed if c not in files]
            if missing:
                raise NeuroContrastError(f"case folder {case_dir} lacks images for {missing}")
            rel = {k: str(v.relative_to(folder)) for k, v in files.items()}
            case_ids.append(case_dir.name)
            images[case_dir.name] = {c: rel[c] for c in needed}
            extra = {k: v for k, v in rel.items() if k not in needed and k != "brain_roi"}
            if extra:
                companions[case_dir.name] = extra
            if "brain_roi" in rel:
                rois[case_dir.name] = rel["brain_roi"]
        if not case_ids:
            raise NeuroContrastError(f"{cases_dir} holds no case folders")
        reference = {"reader": args.reference_reader or args.readers[0], "condition": reference_condition}
        anchors = {"1": "poor", str(args.likert_points): "excellent"}
        data = crossover_design(case_ids, args.readers, args.conditions, images, reference=reference,
                                seed=args.seed, name=folder.resolve().name, allocation=args.allocation,
                                washout_days=args.washout_days, companions=companions, healthy_brain_rois=rois,
                                likert={"points": args.likert_points, "anchors": anchors})
        design = StudyDesign.from_dict(data, folder)
        design.save()
    print(f"study {design.name}: {len(design.case_ids)} cases, readers {', '.join(design.readers)}, "
          f"conditions {', '.join(design.conditions)}, {len(design.phases())} phases, washout "
          f"{design.washout_days:g} days -> {design.folder / 'study.json'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from neurocontrast.readerstudy.design import StudyDesign
    from neurocontrast.readerstudy.session import load_reads

    design = StudyDesign.load(args.study)
    missing = design.missing_files()
    damaged = []
    states = load_reads(design, damaged=damaged)
    now = time.time()
    print(f"study {design.name}: {len(design.case_ids)} cases, {len(design.readers)} readers")
    for reader in design.readers:
        submitted = {rid: s["submitted_at"] for rid, s in states.items()
                     if s["reader"] == reader and s["status"] == "submitted"}
        parts = []
        for phase in design.phases(reader):
            reads = design.worklist(reader, phase)
            n_sub = sum(1 for r in reads if r.read_id in submitted)
            n_prog = sum(1 for r in reads if r.read_id in states and states[r.read_id]["status"] == "in_progress")
            unlock = design.phase_unlock_time(reader, phase, submitted)
            state = "open" if unlock is not None and unlock <= now else (
                "locked" if unlock is None else "locked until " + time.strftime("%Y-%m-%d", time.gmtime(unlock)))
            parts.append(f"{phase} {n_sub}/{len(reads)} submitted, {n_prog} in progress ({state})")
        print(f"  {reader}: " + "; ".join(parts))
    if missing:
        print(f"  {len(missing)} image files missing, e.g. {missing[0]}")
    _print_damaged(damaged)
    return 0


def _print_damaged(damaged) -> None:
    """Study-administrator output: which damaged read files were quarantined, and why."""
    for item in damaged:
        print(f"  damaged read file {item['path']} ({item['reason']}) moved to quarantine: {item['quarantined_to']}")


def _analyze(args: argparse.Namespace) -> int:
    from neurocontrast.progress import tqdm_progress
    from neurocontrast.readerstudy.design import StudyDesign
    from neurocontrast.readerstudy.report import analyze_study

    design = StudyDesign.load(args.study)
    with tqdm_progress("reader analyze") as progress:
        result = analyze_study(design, args.out, contrast=not args.no_contrast, plots=not args.no_plots,
                               progress=progress)
    s = result["summary"]
    print(f"{s['n_included']}/{s['n_cases']} cases included, {s['n_reference_lesions']} reference lesions, "
          f"{s['n_reads_submitted']} submitted reads")
    for row in result["detection"]:
        if row["min_long_mm"] == 0 and row["reader"] != "average":
            print(f"  {row['reader']} {row['condition']}: SE {100 * row['se']:.0f}% ({row['tp']}/"
                  f"{row['tp'] + row['fn']}), FDR {row['fdr']:.2f}, PPV {100 * row['ppv']:.0f}%")
    for fom, d in result["mrmc"].items():
        r = d["rrrc"]
        print(f"  MRMC {d['fom_name']}: " + ", ".join(f"{m} {v:.3f}" for m, v in d["modalities"].items())
              + f"; {r['contrast']} {r['estimate']:+.3f} [{r['ci'][0]:.3f}; {r['ci'][1]:.3f}], RRRC p = {r['p']:.3g}")
    for note in result["mrmc_notes"]:
        print(f"  MRMC: {note}")
    _print_damaged(s["damaged"])
    print(f"report: {result['paths']['report_md']}")
    return 0


def _mrmc(args: argparse.Namespace) -> int:
    from neurocontrast.readerstudy.mrmc import MRMCParams, analyze_files

    params = MRMCParams(fom=args.fom, analysis=args.analysis, alpha=args.alpha)
    result, paths = analyze_files(args.ratings, args.lesions, params, args.out, plots=not args.no_plots)
    d = result.as_dict()
    print(f"{d['fom_name']} ({args.analysis.upper()}): " + ", ".join(
        f"modality {m} {v:.4f}" for m, v in d["modalities"].items()))
    r, f, c = d["rrrc"], d["frrc"], d["rrfc"]
    print(f"  RRRC F = {r['F']:.4g}, ddf = {r['ddf']:.4g}, p = {r['p']:.4g}, {r['contrast']} "
          f"{r['estimate']:.4f} [{r['ci'][0]:.4f}; {r['ci'][1]:.4f}]")
    stat = f"chi2 = {f['chi2']:.4g} ({f['df']} df)" if args.analysis == "or" else \
        f"F = {f['F']:.4g} ({f['ndf']}, {f['ddf']:g} df)"
    print(f"  FRRC {stat}, p = {f['p']:.4g}; RRFC F = {c['F']:.4g} ({c['ndf']}, {c['df']:g} df), p = {c['p']:.4g}")
    print(f"results: {paths['results_json']}")
    return 0
