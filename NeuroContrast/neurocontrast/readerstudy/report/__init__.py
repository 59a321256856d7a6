"""Analysis of a reader study folder: tidy CSVs, a Markdown/HTML report laid out like Ammari Table 5, plots.

:func:`analyze_study` reads every stored read, pairs each read's marks with the reference read of the
same case (:func:`~neurocontrast.readerstudy.pairing.pair_lesions`), stratifies by reference long axis,
and computes per reader × condition × stratum SE [Clopper–Pearson], FDR [Student t], PPV, F1 and the
patient-clustered SE interval (Obuchowski 1998); comparisons between conditions (per reader) and between
readers (per condition): McNemar mid-p on per-lesion detection, Wilcoxon signed-rank on per-case false
positives, Obuchowski's clustered test; paired t-tests on Likert grades and active reading times;
quadratic-weighted kappa of grades between readers; Bland–Altman and ICC(2,1) of long axes of paired
lesions (reader vs reference); CNR, LBR, CEP per case and image (rhombus ROIs on the reference axes).

Cases are excluded from the lesion analysis when any of their reads is flagged "exclude", and left out of
a comparison when one of its reads is not submitted (both are counted in the report). With a confidence on
every mark, the MRMC analysis (Obuchowski–Rockette, Hillis ddf) of wAFROC from the per-mark FROC data and of
the ROC AUC from per-case ratings (highest mark confidence) is added (:mod:`neurocontrast.readerstudy.mrmc`).

The package: :mod:`.rows` (analysis rows), :mod:`.render` (Table 5, Markdown / HTML), :mod:`.plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report as report_progress
from neurocontrast.readerstudy.design import StudyDesign
from neurocontrast.readerstudy.report.plots import detection_plots
from neurocontrast.readerstudy.report.render import report_text, table5
from neurocontrast.readerstudy.report.rows import (MARK_COLUMNS, PAIR_COLUMNS, StudyData, _on_grid,  # noqa: F401
                                                   agreement_rows, comparison_rows, contrast_rows, detection_rows,
                                                   grade_time_rows, mark_rows, mrmc_data, pair_reads, pair_rows,
                                                   read_rows, write_csv)

log = logging.getLogger(__name__)

__all__ = ["analyze_study", "StudyData"]

DETECTION_COLUMNS = ["reader", "condition", "min_long_mm", "n_cases", "tp", "fn", "fp", "se", "se_low", "se_high",
                     "se_clustered_low", "se_clustered_high", "design_effect", "fdr", "fdr_low", "fdr_high",
                     "fdr_half_width", "ppv", "f1"]
COMPARISON_COLUMNS = ["kind", "comparison", "reader", "condition", "min_long_mm", "n_cases", "n_lesions", "se_a",
                      "se_b", "b_only_a", "c_only_b", "p_se_mcnemar_midp", "p_se_clustered", "fdr_a", "fdr_b",
                      "p_fdr_wilcoxon"]


def _mrmc(data: StudyData, pairings: Dict, out: Path, plots: bool) -> Dict:
    """wAFROC (FROC marks) and ROC AUC (per-case ratings) MRMC analyses into ``out/mrmc_<fom>/``."""
    from neurocontrast.readerstudy.mrmc import MRMCParams, run_mrmc, write_outputs

    froc, roc, notes = mrmc_data(data, pairings)
    results = {}
    for fom, dataset in (("wafroc", froc), ("auc", roc)):
        if dataset is None:
            continue
        try:
            result = run_mrmc(dataset, MRMCParams(fom=fom, analysis="or"))
        except NeuroContrastError as exc:
            notes.append(f"{fom}: {exc}")
            continue
        results[fom] = {"result": result, "paths": write_outputs(result, out / f"mrmc_{fom}", plots=plots)}
    for note in notes:
        log.info("MRMC: %s", note)
    return {"results": results, "notes": notes}


def analyze_study(design: StudyDesign, out_dir, contrast: bool = True, plots: bool = True,
                  progress: Optional[ProgressCallback] = None) -> Dict:
    """Analyse the stored reads of ``design`` and write everything to ``out_dir``.

    Writes marks.csv, reads.csv, pairs.csv, detection.csv (reader × condition × stratum with CIs),
    comparisons.csv (McNemar mid-p, Wilcoxon, clustered), grades_times.csv, grade_time_tests.csv,
    agreement.csv, contrast.csv (CNR/LBR/CEP), mrmc_wafroc/ and mrmc_auc/ (MRMC results and exports, when
    every mark has a confidence), report.md, report.html and PNG plots.
    Returns {"paths": {name: Path}, "detection": rows, "comparisons": rows, "summary": dict, "mrmc": {...}}.
    Raises NeuroContrastError when the design has no reference read.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_progress(progress, 0.0, "loading reads")
    data = StudyData(design)
    paths: Dict[str, Path] = {"reads": write_csv(out / "reads.csv", read_rows(data)),
                              "marks": write_csv(out / "marks.csv", mark_rows(data), MARK_COLUMNS)}
    report_progress(progress, 0.2, "pairing lesions")
    pairings = pair_reads(data)
    paths["pairs"] = write_csv(out / "pairs.csv", pair_rows(data, pairings), PAIR_COLUMNS)
    report_progress(progress, 0.4, "statistics")
    detection = detection_rows(data, pairings)
    paths["detection"] = write_csv(out / "detection.csv", detection, DETECTION_COLUMNS)
    comparisons = comparison_rows(data, pairings)
    paths["comparisons"] = write_csv(out / "comparisons.csv", comparisons, COMPARISON_COLUMNS)
    summary_rows, test_rows = grade_time_rows(data)
    paths["grades_times"] = write_csv(out / "grades_times.csv", summary_rows)
    paths["grade_time_tests"] = write_csv(out / "grade_time_tests.csv", test_rows,
                                          ["comparison", "n_grade", "p_grade_paired_t", "n_time", "p_time_paired_t",
                                           "kappa_quadratic"])
    agreement = agreement_rows(data, pairings)
    paths["agreement"] = write_csv(out / "agreement.csv", agreement,
                                   ["reader", "condition", "measure", "n", "bias", "sd", "loa_low", "loa_high",
                                    "loa_ci_half_width", "icc_2_1"])
    report_progress(progress, 0.5, "MRMC analysis")
    mrmc = _mrmc(data, pairings, out, plots)
    for fom, item in mrmc["results"].items():
        paths[f"mrmc_{fom}"] = item["paths"]["results_json"]
    contrast_metric_rows = []
    if contrast:
        report_progress(progress, 0.6, "contrast metrics")
        contrast_metric_rows = contrast_rows(data)
        paths["contrast"] = write_csv(out / "contrast.csv", contrast_metric_rows,
                                      ["case", "condition", "n_lesions", "n_roi_voxels", "cnr", "lbr", "cep"])
    if plots:
        report_progress(progress, 0.8, "plots")
        for path in detection_plots(out, design, detection, data):
            paths[path.stem] = path
    summary = {"n_cases": len(design.case_ids), "n_included": len(data.cases), "excluded": data.excluded,
               "missing_reference": data.missing_reference,
               "n_reference_lesions": sum(len(data.reference[c]["lesions"]) for c in data.cases),
               "n_reads_submitted": sum(1 for s in data.states.values() if s["status"] == "submitted"),
               "n_reads_in_progress": sum(1 for s in data.states.values() if s["status"] == "in_progress"),
               "damaged": data.damaged}
    grid = table5(design, detection, comparisons)
    md, body = report_text(design, summary, grid, summary_rows, test_rows, contrast_metric_rows, agreement, mrmc)
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text(md, encoding="utf-8")
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(body, encoding="utf-8")
    report_progress(progress, 1.0, "done")
    return {"paths": paths, "detection": detection, "comparisons": comparisons, "summary": summary,
            "grades_times": summary_rows, "contrast": contrast_metric_rows,
            "mrmc": {fom: item["result"].as_dict() for fom, item in mrmc["results"].items()},
            "mrmc_notes": mrmc["notes"]}
