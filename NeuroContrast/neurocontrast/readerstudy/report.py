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
a comparison when one of its reads is not submitted (both are counted in the report).
"""

from __future__ import annotations

import csv
import html
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report as report_progress
from neurocontrast.readerstudy import statistics as st
from neurocontrast.readerstudy.design import REFERENCE_PHASE, StudyDesign
from neurocontrast.readerstudy.pairing import Lesion, pair_lesions, stratify
from neurocontrast.readerstudy.session import load_reads

log = logging.getLogger(__name__)


def _write_csv(path: Path, rows: List[Dict], columns: Optional[Sequence[str]] = None) -> Path:
    columns = list(columns or (list(rows[0]) if rows else []))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return path


def _lesions(state: Dict) -> List[Lesion]:
    return [Lesion.from_dict(item) for item in state["lesions"]]


class StudyData:
    """The submitted reads of a study arranged for analysis (reference per case, reads per reader ×
    condition × case), with excluded and incomplete cases listed."""

    def __init__(self, design: StudyDesign):
        self.design = design
        self.states = load_reads(design)
        ref = design.reference
        if ref is None:
            raise NeuroContrastError("the study design has no 'reference' read; lesion analysis needs one")
        self.reference: Dict[str, Dict] = {}
        self.reads: Dict[Tuple[str, str, str], Dict] = {}
        for state in self.states.values():
            if state["status"] != "submitted":
                continue
            if state["phase"] == REFERENCE_PHASE:
                self.reference[state["case"]] = state
            else:
                self.reads[(state["reader"], state["condition"], state["case"])] = state
        self.excluded = sorted({s["case"] for s in self.states.values() if s.get("exclude")})
        self.cases = [c for c in design.case_ids if c in self.reference and c not in self.excluded]
        self.missing_reference = [c for c in design.case_ids if c not in self.reference and c not in self.excluded]

    def cases_with(self, keys: Sequence[Tuple[str, str]]) -> List[str]:
        """Included cases where every (reader, condition) in ``keys`` has a submitted read."""
        return [c for c in self.cases if all((r, k, c) in self.reads for r, k in keys)]


def _pairings(data: StudyData) -> Dict[Tuple[str, str, str], Dict]:
    analysis = data.design.analysis
    out = {}
    for (reader, condition, case), state in data.reads.items():
        if case not in data.cases:
            continue
        reference = _lesions(data.reference[case])
        detections = _lesions(state)
        result = pair_lesions(reference, detections, threshold=analysis["threshold"],
                              assignment=analysis["assignment"], duplicates=analysis["duplicates"])
        out[(reader, condition, case)] = {"result": result, "reference": reference, "detections": detections,
                                          "strata": stratify(result, reference, detections,
                                                             analysis["size_strata_mm"])}
    return out


def _detected_flags(pairing: Dict, min_long: float) -> List[bool]:
    """Per reference lesion ≥ min_long (in reference order): detected or not."""
    paired = {r for r, _ in pairing["result"].pairs}
    return [i in paired for i, l in enumerate(pairing["reference"]) if l.long_mm >= min_long]


def _fp_count(pairing: Dict, min_long: float) -> int:
    dets = pairing["detections"]
    return sum(1 for d in pairing["result"].false_positive_detections if dets[d].long_mm >= min_long)


def _detection_rows(data: StudyData, pairings: Dict) -> List[Dict]:
    rows = []
    strata = data.design.analysis["size_strata_mm"]
    for condition in data.design.conditions:
        for t in strata:
            averages, per_case_fp = [], {}
            for reader in data.design.readers:
                cases = data.cases_with([(reader, condition)])
                if not cases:
                    continue
                tp = fn = fp = 0
                fp_case, x_case, m_case = [], [], []
                for case in cases:
                    p = pairings[(reader, condition, case)]
                    s = next(s for s in p["strata"] if s["min_long_mm"] == float(t))
                    tp, fn, fp = tp + s["tp"], fn + s["fn"], fp + s["fp"]
                    fp_case.append(s["fp"])
                    per_case_fp.setdefault(case, {})[reader] = s["fp"]
                    x_case.append(s["tp"])
                    m_case.append(s["n_reference"])
                m = st.detection_metrics(tp, fn, fp, len(cases), fp_case if len(cases) > 1 else None)
                row = {"reader": reader, "condition": condition, "min_long_mm": float(t), "n_cases": len(cases),
                       **m.as_dict()}
                try:
                    cl = st.clustered_proportion(x_case, m_case)
                    row.update(se_clustered_low=cl["low"], se_clustered_high=cl["high"],
                               design_effect=cl["design_effect"])
                except NeuroContrastError:
                    row.update(se_clustered_low=float("nan"), se_clustered_high=float("nan"),
                               design_effect=float("nan"))
                rows.append(row)
                averages.append(row)
            if len(averages) > 1:
                # Bône et al. Table 5: SE interval = mean of the readers' Clopper–Pearson bounds; FDR interval =
                # Student t on the per-case FP counts averaged over readers (cases all readers read)
                counts = [(r["tp"], r["tp"] + r["fn"]) for r in averages if r["tp"] + r["fn"] > 0]
                low, high = st.average_clopper_pearson(counts) if len(counts) == len(averages) else (
                    float("nan"), float("nan"))
                shared = [np.mean(list(v.values())) for v in per_case_fp.values() if len(v) == len(averages)]
                half = st.fdr_interval(shared)[1] if len(shared) > 1 else float("nan")
                rows.append({"reader": "average", "condition": condition, "min_long_mm": float(t),
                             "n_cases": int(np.mean([r["n_cases"] for r in averages])),
                             **{k: float(np.nanmean([r[k] for r in averages])) for k in ("se", "ppv", "f1", "fdr")},
                             "se_low": low, "se_high": high, "fdr_half_width": half,
                             "tp": sum(r["tp"] for r in averages), "fn": sum(r["fn"] for r in averages),
                             "fp": sum(r["fp"] for r in averages)})
    return rows


def _comparison(kind: str, label: str, t, a_key, b_key, data: StudyData, pairings: Dict) -> Optional[Dict]:
    cases = data.cases_with([a_key, b_key])
    if len(cases) < 2:
        return None
    da, db, fa, fb, xa, xb, m = [], [], [], [], [], [], []
    for case in cases:
        pa, pb = pairings[(*a_key, case)], pairings[(*b_key, case)]
        flags_a, flags_b = _detected_flags(pa, t), _detected_flags(pb, t)
        da += flags_a
        db += flags_b
        fa.append(_fp_count(pa, t))
        fb.append(_fp_count(pb, t))
        xa.append(sum(flags_a))
        xb.append(sum(flags_b))
        m.append(len(flags_a))
    b = sum(1 for x, y in zip(da, db) if x and not y)
    c = sum(1 for x, y in zip(da, db) if y and not x)
    row = {"kind": kind, "comparison": label, "min_long_mm": float(t), "n_cases": len(cases),
           "n_lesions": len(da), "se_a": float(np.mean(da)) if da else float("nan"),
           "se_b": float(np.mean(db)) if db else float("nan"), "b_only_a": b, "c_only_b": c,
           "p_se_mcnemar_midp": st.mcnemar_midp(b, c), "fdr_a": float(np.mean(fa)), "fdr_b": float(np.mean(fb)),
           "p_fdr_wilcoxon": st.wilcoxon_signed_rank(fa, fb)}
    try:
        row["p_se_clustered"] = st.clustered_difference(xa, xb, m)["p_value"]
    except NeuroContrastError:
        row["p_se_clustered"] = float("nan")
    return row


def _comparison_rows(data: StudyData, pairings: Dict) -> List[Dict]:
    rows = []
    design = data.design
    conds, readers = design.conditions, design.readers
    for t in design.analysis["size_strata_mm"]:
        for reader in readers:
            for i in range(len(conds)):
                for j in range(i + 1, len(conds)):
                    row = _comparison("conditions", f"{reader}: {conds[i]} vs {conds[j]}", t, (reader, conds[i]),
                                      (reader, conds[j]), data, pairings)
                    if row:
                        rows.append({**row, "reader": reader, "condition": f"{conds[i]} vs {conds[j]}"})
        for condition in conds:
            for i in range(len(readers)):
                for j in range(i + 1, len(readers)):
                    row = _comparison("readers", f"{condition}: {readers[i]} vs {readers[j]}", t,
                                      (readers[i], condition), (readers[j], condition), data, pairings)
                    if row:
                        rows.append({**row, "reader": f"{readers[i]} vs {readers[j]}", "condition": condition})
    return rows


def _paired_values(data: StudyData, a_key, b_key, field: str):
    cases = [c for c in data.design.case_ids if (*a_key, c) in data.reads and (*b_key, c) in data.reads]
    x = [data.reads[(*a_key, c)][field] for c in cases]
    y = [data.reads[(*b_key, c)][field] for c in cases]
    keep = [i for i in range(len(cases)) if x[i] is not None and y[i] is not None]
    return [x[i] for i in keep], [y[i] for i in keep]


def _grade_time_rows(data: StudyData) -> Tuple[List[Dict], List[Dict]]:
    design = data.design
    summary, tests = [], []
    keys = [(r, c) for r in design.readers for c in design.conditions]
    ref = design.reference
    ref_reads = {c: s for c, s in data.reference.items()}
    for reader, condition in keys:
        states = [data.reads[(reader, condition, c)] for c in design.case_ids if (reader, condition, c) in data.reads]
        grades = [s["grade"] for s in states if s["grade"] is not None]
        times = [s["active_seconds"] for s in states]
        summary.append({"reader": reader, "condition": condition, "n_reads": len(states),
                        "grade_mean": float(np.mean(grades)) if grades else float("nan"),
                        "grade_sd": float(np.std(grades, ddof=1)) if len(grades) > 1 else float("nan"),
                        "time_mean_s": float(np.mean(times)) if times else float("nan"),
                        "time_sd_s": float(np.std(times, ddof=1)) if len(times) > 1 else float("nan")})
    if ref is not None and ref_reads:
        grades = [s["grade"] for s in ref_reads.values() if s["grade"] is not None]
        times = [s["active_seconds"] for s in ref_reads.values()]
        summary.append({"reader": ref["reader"], "condition": ref["condition"], "n_reads": len(ref_reads),
                        "grade_mean": float(np.mean(grades)) if grades else float("nan"),
                        "grade_sd": float(np.std(grades, ddof=1)) if len(grades) > 1 else float("nan"),
                        "time_mean_s": float(np.mean(times)), "time_sd_s": float(np.std(times, ddof=1))
                        if len(times) > 1 else float("nan")})
    pairs = []
    for reader in design.readers:
        for i in range(len(design.conditions)):
            for j in range(i + 1, len(design.conditions)):
                pairs.append((f"{reader}: {design.conditions[i]} vs {design.conditions[j]}",
                              (reader, design.conditions[i]), (reader, design.conditions[j])))
    for condition in design.conditions:
        for i in range(len(design.readers)):
            for j in range(i + 1, len(design.readers)):
                pairs.append((f"{condition}: {design.readers[i]} vs {design.readers[j]}",
                              (design.readers[i], condition), (design.readers[j], condition)))
    for label, a, b in pairs:
        row = {"comparison": label}
        for field, name in (("grade", "grade"), ("active_seconds", "time")):
            x, y = _paired_values(data, a, b, field)
            row[f"n_{name}"] = len(x)
            row[f"p_{name}_paired_t"] = st.paired_t_test(x, y) if len(x) >= 2 else float("nan")
        if a[1] == b[1]:  # two readers, same condition: agreement of grades
            x, y = _paired_values(data, a, b, "grade")
            points = int(design.likert["points"])
            row["kappa_quadratic"] = st.weighted_kappa(x, y, labels=range(1, points + 1)) if len(x) >= 2 \
                else float("nan")
        tests.append(row)
    return summary, tests


def _agreement_rows(data: StudyData, pairings: Dict) -> List[Dict]:
    rows = []
    for reader in data.design.readers:
        for condition in data.design.conditions:
            det, ref = [], []
            for case in data.cases_with([(reader, condition)]):
                p = pairings[(reader, condition, case)]
                for r, d in p["result"].pairs:
                    ref.append(p["reference"][r].long_mm)
                    det.append(p["detections"][d].long_mm)
            if len(det) < 3:
                continue
            ba = st.bland_altman(det, ref)
            rows.append({"reader": reader, "condition": condition, "measure": "long_mm vs reference", **ba,
                         "icc_2_1": st.icc(np.column_stack([det, ref]), "2,1")})
    return rows


def _contrast_rows(data: StudyData, progress: Optional[ProgressCallback] = None) -> List[Dict]:
    """CNR, LBR, CEP per case × image condition (cases with ≥ 1 reference lesion)."""
    from neurocontrast.io import read_volume
    from neurocontrast.readerstudy.rois import case_contrast_metrics

    design = data.design
    pre_key = design.analysis.get("pre_contrast", "pre")
    shape = design.analysis.get("roi_shape", "rhombus")
    rows = []
    cases = [c for c in data.cases if data.reference[c]["lesions"]]
    for n, case_id in enumerate(cases):
        report_progress(progress, n / max(1, len(cases)), f"contrast metrics {case_id}")
        case = design.case(case_id)
        lesions = _lesions(data.reference[case_id])
        conditions = list(design.conditions) + [design.reference["condition"]]
        for condition in conditions:
            path = design.resolve(case["images"][condition])
            if not path.exists():
                log.warning("case %s: image %s is missing; contrast metrics skipped", case_id, path)
                continue
            image, geometry = read_volume(str(path), f"{case_id} {condition}")
            brain = None
            if case.get("healthy_brain_roi"):
                brain = _on_grid(design.resolve(case["healthy_brain_roi"]), geometry, nearest=True) > 0.5
            pre = None
            if pre_key in case.get("companions", {}):
                pre = _on_grid(design.resolve(case["companions"][pre_key]), geometry, nearest=False)
            try:
                metrics = case_contrast_metrics(image, geometry, lesions, brain, pre, shape)
            except NeuroContrastError as exc:
                log.warning("case %s %s: %s", case_id, condition, exc)
                continue
            rows.append({"case": case_id, "condition": condition, "n_lesions": len(lesions), **metrics})
    return rows


def _on_grid(path: Path, geometry, nearest: bool) -> np.ndarray:
    """Read ``path`` and resample it onto ``geometry`` in physical space (SimpleITK) when grids differ."""
    import SimpleITK as sitk

    from neurocontrast.io import Geometry, read_image

    image = read_image(str(path))
    if Geometry.from_image(image).same_as(geometry):
        return sitk.GetArrayFromImage(image).astype(np.float32)
    log.info("resampling %s onto the read image grid (%s)", path, "nearest" if nearest else "linear")
    reference = geometry.to_image(np.zeros(geometry.shape, dtype=np.float32))
    resampled = sitk.Resample(image, reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


# ------------------------------------------------------------------------------------------------------------
# Report text


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{st.round_half_up(100 * x, 0):.0f}%"


def _table5(design: StudyDesign, detection: List[Dict], comparisons: List[Dict]) -> List[List[str]]:
    """Rows of a Table-5-like grid: stratum, metric, then per reader × condition, per-reader condition
    p-values, reader-vs-reader p-values per condition, reader averages."""
    conds, readers = design.conditions, design.readers
    det = {(r["reader"], r["condition"], r["min_long_mm"]): r for r in detection}
    comp = {(r["kind"], r["reader"], r["condition"], r["min_long_mm"]): r for r in comparisons}
    header = ["Stratum", "Metric"]
    for reader in readers:
        header += [f"{reader} {c}" for c in conds]
        if len(conds) == 2:
            header.append(f"{reader} {conds[0]} vs {conds[1]}")
    if len(readers) == 2:
        header += [f"{readers[0]} vs {readers[1]} {c}" for c in conds]
    if len(readers) > 1:
        header += [f"average {c}" for c in conds]
    grid = [header]
    for t in design.analysis["size_strata_mm"]:
        t = float(t)
        stratum = "all lesions" if t == 0 else f"≥{t:g} mm"
        for metric in ("SE", "FDR", "PPV", "F1"):
            row = [stratum, metric]
            for reader in readers:
                for c in conds:
                    r = det.get((reader, c, t))
                    if r is None:
                        row.append("n/a")
                    elif metric == "SE":
                        row.append(f"{_pct(r['se'])} ({r['tp']}/{r['tp'] + r['fn']}) "
                                   f"[{_pct(r['se_low'])[:-1]}; {_pct(r['se_high'])[:-1]}]")
                    elif metric == "FDR":
                        hw = r.get("fdr_half_width", float("nan"))
                        row.append(f"{r['fdr']:.2f} ({r['fp']}/{r['n_cases']}) [±{hw:.2f}]")
                    elif metric == "PPV":
                        row.append(f"{_pct(r['ppv'])} ({r['tp']}/{r['tp'] + r['fp']})")
                    else:
                        row.append(_pct(r["f1"]))
                if len(conds) == 2:
                    k = comp.get(("conditions", reader, f"{conds[0]} vs {conds[1]}", t))
                    row.append(_p_cell(k, metric))
            if len(readers) == 2:
                for c in conds:
                    row.append(_p_cell(comp.get(("readers", f"{readers[0]} vs {readers[1]}", c, t)), metric))
            if len(readers) > 1:
                for c in conds:
                    r = det.get(("average", c, t))
                    if r is None:
                        row.append("n/a")
                    elif metric == "SE":
                        row.append(f"{_pct(r['se'])} [{_pct(r['se_low'])[:-1]}; {_pct(r['se_high'])[:-1]}]")
                    elif metric == "FDR":
                        row.append(f"{r['fdr']:.2f} [±{r['fdr_half_width']:.2f}]")
                    else:
                        row.append(_pct(r[metric.lower()]))
            grid.append(row)
    return grid


def _p_cell(row: Optional[Dict], metric: str) -> str:
    if row is None:
        return "n/a"
    if metric == "SE":
        return st.format_p_label(row["p_se_mcnemar_midp"])
    if metric == "FDR":
        return st.format_p_label(row["p_fdr_wilcoxon"])
    return ""


def _markdown_table(grid: List[List[str]]) -> str:
    lines = ["| " + " | ".join(grid[0]) + " |", "|" + "---|" * len(grid[0])]
    lines += ["| " + " | ".join(row) + " |" for row in grid[1:]]
    return "\n".join(lines)


def _html_table(grid: List[List[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in grid[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in grid[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _minsec(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "n/a"
    s = int(round(seconds))
    return f"{s // 60}'{s % 60:02d}''"


def _plots(out: Path, design: StudyDesign, detection: List[Dict], data: StudyData) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for reader in design.readers:
        for condition in design.conditions:
            rows = [r for r in detection if r["reader"] == reader and r["condition"] == condition]
            if not rows:
                continue
            t = [r["min_long_mm"] for r in rows]
            se = np.array([r["se"] for r in rows])
            lo = se - np.array([r["se_low"] for r in rows])
            hi = np.array([r["se_high"] for r in rows]) - se
            axes[0].errorbar(t, 100 * se, yerr=100 * np.vstack([lo, hi]), marker="o", capsize=3,
                             label=f"{reader} {condition}")
            fdr = [r["fdr"] for r in rows]
            hw = [r.get("fdr_half_width", 0) for r in rows]
            axes[1].errorbar(t, fdr, yerr=hw, marker="s", capsize=3, label=f"{reader} {condition}")
    axes[0].set(xlabel="minimum long axis (mm)", ylabel="SE (%) [Clopper–Pearson 95% CI]", ylim=(0, 105))
    axes[1].set(xlabel="minimum long axis (mm)", ylabel="FDR (FP per case) [t 95% CI]")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "se_fdr_by_size.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels, times, grades = [], [], []
    for reader in design.readers:
        for condition in design.conditions:
            states = [s for (r, c, _), s in data.reads.items() if r == reader and c == condition]
            if states:
                labels.append(f"{reader}\n{condition}")
                times.append([s["active_seconds"] for s in states])
                grades.append([s["grade"] for s in states if s["grade"] is not None])
    if labels:
        axes[0].boxplot(times)
        axes[0].set_xticks(range(1, len(labels) + 1), labels)
        axes[0].set(ylabel="active reading time (s)")
        points = int(design.likert["points"])
        width = 0.8 / len(labels)
        for i, (label, g) in enumerate(zip(labels, grades)):
            counts = [g.count(k) for k in range(1, points + 1)]
            axes[1].bar(np.arange(1, points + 1) + (i - len(labels) / 2 + 0.5) * width, counts, width,
                        label=label.replace("\n", " "))
        axes[1].set(xlabel="Likert grade", ylabel="reads", xticks=range(1, points + 1))
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "times_grades.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def analyze_study(design: StudyDesign, out_dir, contrast: bool = True, plots: bool = True,
                  progress: Optional[ProgressCallback] = None) -> Dict:
    """Analyse the stored reads of ``design`` and write everything to ``out_dir``.

    Writes marks.csv, reads.csv, pairs.csv, detection.csv (reader × condition × stratum with CIs),
    comparisons.csv (McNemar mid-p, Wilcoxon, clustered), grades_times.csv, grade_time_tests.csv,
    agreement.csv, contrast.csv (CNR/LBR/CEP), report.md, report.html and PNG plots.
    Returns {"paths": {name: Path}, "detection": rows, "comparisons": rows, "summary": dict}.
    Raises NeuroContrastError when the design has no reference read.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_progress(progress, 0.0, "loading reads")
    data = StudyData(design)
    paths: Dict[str, Path] = {}
    marks, reads = [], []
    for state in sorted(data.states.values(), key=lambda s: s["read_id"]):
        reads.append({"read_id": state["read_id"], "reader": state["reader"], "phase": state["phase"],
                      "case": state["case"], "label": state.get("label", ""), "condition": state["condition"],
                      "status": state["status"], "grade": state["grade"], "exclude": state["exclude"],
                      "n_lesions": len(state["lesions"]), "active_seconds": round(state["active_seconds"], 3),
                      "first_opened_at": state["first_opened_at"], "submitted_at": state["submitted_at"],
                      "n_reopened": len(state.get("reopened", [])), "comment": state.get("comment", "")})
        for item in state["lesions"]:
            l = Lesion.from_dict(item)
            c = l.center
            marks.append({"read_id": state["read_id"], "reader": state["reader"], "case": state["case"],
                          "condition": state["condition"], "lesion": item["id"], "long_mm": round(l.long_mm, 3),
                          "short_mm": round(l.short_mm, 3), "center_r": c[0], "center_a": c[1], "center_s": c[2],
                          "angle_deg": round(l.angle_deg, 2), "confidence": item.get("confidence")})
    paths["reads"] = _write_csv(out / "reads.csv", reads)
    paths["marks"] = _write_csv(out / "marks.csv", marks, ["read_id", "reader", "case", "condition", "lesion",
                                                           "long_mm", "short_mm", "center_r", "center_a",
                                                           "center_s", "angle_deg", "confidence"])
    report_progress(progress, 0.2, "pairing lesions")
    pairings = _pairings(data)
    pair_rows = []
    for (reader, condition, case), p in sorted(pairings.items()):
        res = p["result"]
        read_id = data.reads[(reader, condition, case)]["read_id"]
        base = {"read_id": read_id, "reader": reader, "condition": condition, "case": case}
        for (r, d), dist in zip(res.pairs, res.distances_mm):
            pair_rows.append({**base, "kind": "pair", "ref_index": r, "det_index": d, "distance_mm": round(dist, 3),
                              "ref_long_mm": round(p["reference"][r].long_mm, 3),
                              "det_long_mm": round(p["detections"][d].long_mm, 3)})
        for r in res.unpaired_reference:
            pair_rows.append({**base, "kind": "missed", "ref_index": r,
                              "ref_long_mm": round(p["reference"][r].long_mm, 3)})
        for r, d in res.duplicates:
            pair_rows.append({**base, "kind": "duplicate", "ref_index": r, "det_index": d,
                              "det_long_mm": round(p["detections"][d].long_mm, 3)})
        for d in res.unpaired_detections:
            pair_rows.append({**base, "kind": "false_positive", "det_index": d,
                              "det_long_mm": round(p["detections"][d].long_mm, 3)})
    paths["pairs"] = _write_csv(out / "pairs.csv", pair_rows, ["read_id", "reader", "condition", "case", "kind",
                                                               "ref_index", "det_index", "distance_mm",
                                                               "ref_long_mm", "det_long_mm"])
    report_progress(progress, 0.4, "statistics")
    detection = _detection_rows(data, pairings)
    paths["detection"] = _write_csv(out / "detection.csv", detection,
                                    ["reader", "condition", "min_long_mm", "n_cases", "tp", "fn", "fp", "se", "se_low",
                                     "se_high", "se_clustered_low", "se_clustered_high", "design_effect", "fdr",
                                     "fdr_half_width", "ppv", "f1"])
    comparisons = _comparison_rows(data, pairings)
    paths["comparisons"] = _write_csv(out / "comparisons.csv", comparisons,
                                      ["kind", "comparison", "reader", "condition", "min_long_mm", "n_cases",
                                       "n_lesions", "se_a", "se_b", "b_only_a", "c_only_b", "p_se_mcnemar_midp",
                                       "p_se_clustered", "fdr_a", "fdr_b", "p_fdr_wilcoxon"])
    summary_rows, test_rows = _grade_time_rows(data)
    paths["grades_times"] = _write_csv(out / "grades_times.csv", summary_rows)
    paths["grade_time_tests"] = _write_csv(out / "grade_time_tests.csv", test_rows,
                                           ["comparison", "n_grade", "p_grade_paired_t", "n_time",
                                            "p_time_paired_t", "kappa_quadratic"])
    agreement = _agreement_rows(data, pairings)
    paths["agreement"] = _write_csv(out / "agreement.csv", agreement,
                                    ["reader", "condition", "measure", "n", "bias", "sd", "loa_low", "loa_high",
                                     "loa_ci_half_width", "icc_2_1"])
    contrast_rows = []
    if contrast:
        report_progress(progress, 0.6, "contrast metrics")
        contrast_rows = _contrast_rows(data)
        paths["contrast"] = _write_csv(out / "contrast.csv", contrast_rows,
                                       ["case", "condition", "n_lesions", "n_roi_voxels", "cnr", "lbr", "cep"])
    if plots:
        report_progress(progress, 0.8, "plots")
        for path in _plots(out, design, detection, data):
            paths[path.stem] = path
    summary = {"n_cases": len(design.case_ids), "n_included": len(data.cases), "excluded": data.excluded,
               "missing_reference": data.missing_reference,
               "n_reference_lesions": sum(len(data.reference[c]["lesions"]) for c in data.cases),
               "n_reads_submitted": sum(1 for s in data.states.values() if s["status"] == "submitted"),
               "n_reads_in_progress": sum(1 for s in data.states.values() if s["status"] == "in_progress")}
    grid = _table5(design, detection, comparisons)
    md, body = _report_text(design, summary, grid, summary_rows, test_rows, contrast_rows, agreement)
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text(md, encoding="utf-8")
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(body, encoding="utf-8")
    report_progress(progress, 1.0, "done")
    return {"paths": paths, "detection": detection, "comparisons": comparisons, "summary": summary,
            "grades_times": summary_rows, "contrast": contrast_rows}


def _report_text(design, summary, grid, summary_rows, test_rows, contrast_rows, agreement) -> Tuple[str, str]:
    a = design.analysis
    intro = (f"Study **{design.name}**: {summary['n_cases']} cases, {summary['n_included']} included "
             f"({len(summary['excluded'])} excluded: {', '.join(summary['excluded']) or 'none'}; "
             f"{len(summary['missing_reference'])} without a submitted reference read), "
             f"{summary['n_reference_lesions']} reference lesions, {summary['n_reads_submitted']} submitted reads "
             f"({summary['n_reads_in_progress']} in progress). Pairing: threshold `{a['threshold']}`, "
             f"assignment `{a['assignment']}`, duplicates `{a['duplicates']}`.")
    legend = ("SE: sensitivity (TP/reference lesions) with Clopper–Pearson 95% CI; FDR: false positives per case "
              "with Student-t 95% half-width; PPV: TP/(TP+FP); F1: harmonic mean of SE and PPV. "
              "p: McNemar mid-p (SE) and Wilcoxon signed-rank (FDR), two-tailed (Ammari et al. 2022, Table 5).")
    gt = [["Reader", "Condition", "Reads", "Grade (±SD)", "Active time (±SD)"]]
    for r in summary_rows:
        gt.append([r["reader"], r["condition"], str(r["n_reads"]),
                   f"{r['grade_mean']:.1f} (±{r['grade_sd']:.1f})" if not math.isnan(r["grade_mean"]) else "n/a",
                   f"{_minsec(r['time_mean_s'])} (±{_minsec(r['time_sd_s'])})"])
    tt = [["Comparison", "Grades (paired t)", "Times (paired t)", "Grade κ (quadratic)"]]
    for r in test_rows:
        kappa = r.get("kappa_quadratic")
        tt.append([r["comparison"], _fmt_p(r["p_grade_paired_t"]), _fmt_p(r["p_time_paired_t"]),
                   "" if kappa is None else ("n/a" if math.isnan(kappa) else f"{kappa:.2f}")])
    sections = [("Lesion detection", grid), ("Image quality and reading time", gt), ("Tests", tt)]
    if contrast_rows:
        ct = [["Condition", "Cases", "CNR (±SD)", "LBR (±SD)", "CEP % (±SD)"]]
        for condition in sorted({r["condition"] for r in contrast_rows}):
            rows = [r for r in contrast_rows if r["condition"] == condition]
            cells = [condition, str(len(rows))]
            for key, fmt in (("cnr", "{:.1f}"), ("lbr", "{:.2f}"), ("cep", "{:.1f}")):
                v = np.array([r[key] for r in rows], dtype=float)
                v = v[np.isfinite(v)]
                cells.append(f"{fmt.format(v.mean())} (±{fmt.format(v.std(ddof=1) if v.size > 1 else 0)})"
                             if v.size else "n/a")
            ct.append(cells)
        sections.append(("Contrast (rhombus ROIs on the reference axes; Bône et al. 2022)", ct))
    if agreement:
        at = [["Reader", "Condition", "Pairs", "Bias (mm)", "LoA (mm)", "ICC(2,1)"]]
        for r in agreement:
            at.append([r["reader"], r["condition"], str(r["n"]), f"{r['bias']:.2f}",
                       f"[{r['loa_low']:.2f}; {r['loa_high']:.2f}]", f"{r['icc_2_1']:.3f}"])
        sections.append(("Long-axis agreement with the reference (Bland–Altman, ICC)", at))
    md = [f"# Reader study report: {design.name}", "", intro, ""]
    body = [f"<html><head><meta charset='utf-8'><title>{html.escape(design.name)}</title>"
            "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #999;"
            "padding:3px 6px}</style></head><body>", f"<h1>Reader study report: {html.escape(design.name)}</h1>",
            f"<p>{html.escape(intro.replace('**', '').replace('`', ''))}</p>"]
    for title, table in sections:
        md += [f"## {title}", "", _markdown_table(table), ""]
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(table)]
        if title == "Lesion detection":
            md += [legend, ""]
            body.append(f"<p>{html.escape(legend)}</p>")
    md += ["Plots: `se_fdr_by_size.png`, `times_grades.png`.", ""]
    body += ["<p><img src='se_fdr_by_size.png'> <img src='times_grades.png'></p>", "</body></html>"]
    return "\n".join(md), "\n".join(body)


def _fmt_p(p) -> str:
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else st.format_p_label(p)
