"""Analysis rows of a reader study: the submitted reads arranged per reader × condition × case, lesion
pairing, detection metrics per size stratum, comparisons, grades and times, agreement, contrast metrics,
and the per-case ratings / per-mark FROC data for the MRMC analysis. Every function returns plain dict rows
(one CSV line each)."""

from __future__ import annotations

import csv
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


def write_csv(path: Path, rows: List[Dict], columns: Optional[Sequence[str]] = None) -> Path:
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
    condition × case), with excluded and incomplete cases listed; ``damaged`` lists read files that were
    quarantined on loading (see :func:`~neurocontrast.readerstudy.session.load_reads`)."""

    def __init__(self, design: StudyDesign):
        self.design = design
        self.damaged: List[Dict] = []
        self.states = load_reads(design, damaged=self.damaged)
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


def pair_reads(data: StudyData) -> Dict[Tuple[str, str, str], Dict]:
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


def detection_rows(data: StudyData, pairings: Dict) -> List[Dict]:
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
                # exact Poisson interval of the pooled rate: all readers' false positives over all their reads
                fdr_low, fdr_high = st.fdr_exact_interval(sum(r["fp"] for r in averages),
                                                          sum(r["n_cases"] for r in averages))
                rows.append({"reader": "average", "condition": condition, "min_long_mm": float(t),
                             "fdr_low": fdr_low, "fdr_high": fdr_high,
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


def comparison_rows(data: StudyData, pairings: Dict) -> List[Dict]:
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


def grade_time_rows(data: StudyData) -> Tuple[List[Dict], List[Dict]]:
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


def agreement_rows(data: StudyData, pairings: Dict) -> List[Dict]:
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


def contrast_rows(data: StudyData, progress: Optional[ProgressCallback] = None) -> List[Dict]:
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



def read_rows(data: StudyData) -> List[Dict]:
    """One row per stored read (submitted or in progress)."""
    out = []
    for state in sorted(data.states.values(), key=lambda s: s["read_id"]):
        out.append({"read_id": state["read_id"], "reader": state["reader"], "phase": state["phase"],
                    "case": state["case"], "label": state.get("label", ""), "condition": state["condition"],
                    "status": state["status"], "grade": state.get("grade"), "exclude": state.get("exclude", False),
                    "n_lesions": len(state["lesions"]), "active_seconds": round(state["active_seconds"], 3),
                    "first_opened_at": state.get("first_opened_at"), "submitted_at": state.get("submitted_at"),
                    "n_reopened": len(state.get("reopened", [])), "comment": state.get("comment", "")})
    return out


MARK_COLUMNS = ["read_id", "reader", "case", "condition", "lesion", "long_mm", "short_mm", "center_r", "center_a",
                "center_s", "angle_deg", "confidence"]


def mark_rows(data: StudyData) -> List[Dict]:
    """One row per stored mark with its axes (mm, RAS) and confidence."""
    out = []
    for state in sorted(data.states.values(), key=lambda s: s["read_id"]):
        for item in state["lesions"]:
            l = Lesion.from_dict(item)
            c = l.center
            out.append({"read_id": state["read_id"], "reader": state["reader"], "case": state["case"],
                        "condition": state["condition"], "lesion": item["id"], "long_mm": round(l.long_mm, 3),
                        "short_mm": round(l.short_mm, 3), "center_r": c[0], "center_a": c[1], "center_s": c[2],
                        "angle_deg": round(l.angle_deg, 2), "confidence": item.get("confidence")})
    return out


PAIR_COLUMNS = ["read_id", "reader", "condition", "case", "kind", "ref_index", "det_index", "distance_mm",
                "ref_long_mm", "det_long_mm"]


def pair_rows(data: StudyData, pairings: Dict) -> List[Dict]:
    """One row per pair, missed reference lesion, duplicate and false positive of every paired read."""
    out = []
    for (reader, condition, case), p in sorted(pairings.items()):
        res = p["result"]
        base = {"read_id": data.reads[(reader, condition, case)]["read_id"], "reader": reader,
                "condition": condition, "case": case}
        for (r, d), dist in zip(res.pairs, res.distances_mm):
            out.append({**base, "kind": "pair", "ref_index": r, "det_index": d, "distance_mm": round(dist, 3),
                        "ref_long_mm": round(p["reference"][r].long_mm, 3),
                        "det_long_mm": round(p["detections"][d].long_mm, 3)})
        for r in res.unpaired_reference:
            out.append({**base, "kind": "missed", "ref_index": r, "ref_long_mm": round(p["reference"][r].long_mm, 3)})
        for r, d in res.duplicates:
            out.append({**base, "kind": "duplicate", "ref_index": r, "det_index": d,
                        "det_long_mm": round(p["detections"][d].long_mm, 3)})
        for d in res.unpaired_detections:
            out.append({**base, "kind": "false_positive", "det_index": d,
                        "det_long_mm": round(p["detections"][d].long_mm, 3)})
    return out


def mrmc_data(data: StudyData, pairings: Dict):
    """Per-mark FROC data and per-case ROC ratings of the study for the MRMC analysis.

    Modalities = the design's conditions, readers = its readers, cases = included cases that every
    reader × condition read (MRMC needs a fully crossed design). A case is abnormal when its reference read
    has a lesion; lesion weights are equal (1 / lesions of the case). A mark paired with reference lesion r
    is its lesion localisation (LL) rated with the mark's stored confidence; unpaired marks and duplicates
    are non-lesion localisations (NL). The ROC rating of a case is its highest mark confidence (−inf when
    unmarked: Chakraborty's highest-rating inferred ROC).
    Returns ``(froc, roc, notes)``: two :class:`~neurocontrast.readerstudy.mrmc.MRMCData` or None, and the
    reasons when the analysis cannot run (a mark without confidence, fewer than 2 readers or conditions,
    fewer than 2 normal or abnormal cases).
    """
    from neurocontrast.readerstudy.mrmc import MRMCData

    design = data.design
    keys = [(r, c) for r in design.readers for c in design.conditions]
    cases = data.cases_with(keys)
    notes = []
    dropped = len(data.cases) - len(cases)
    if dropped:
        notes.append(f"{dropped} included case(s) lack a submitted read of some reader × condition and are left "
                     "out of the MRMC analysis")
    if len(design.readers) < 2 or len(design.conditions) < 2:
        return None, None, notes + ["MRMC needs at least 2 readers and 2 conditions"]
    no_conf = sum(1 for (r, c, case), p in pairings.items() if case in cases
                  for d in p["detections"] if d.confidence is None)
    if no_conf:
        return None, None, notes + [f"{no_conf} mark(s) have no confidence rating; MRMC (ROC/wAFROC) needs one "
                                    "per mark"]
    normal = [c for c in cases if not data.reference[c]["lesions"]]
    abnormal = [c for c in cases if data.reference[c]["lesions"]]
    if len(normal) < 2 or len(abnormal) < 2:
        return None, None, notes + [f"MRMC needs at least 2 normal and 2 abnormal cases, got {len(normal)} and "
                                    f"{len(abnormal)}"]
    t, r_n = len(design.conditions), len(design.readers)
    n_les = [len(data.reference[c]["lesions"]) for c in abnormal]
    l_max = max(n_les)
    weights = np.zeros((len(abnormal), l_max))
    for k, n in enumerate(n_les):
        weights[k, :n] = 1.0 / n
    fp = np.full((t, r_n, len(normal)), -np.inf)
    ll = np.full((t, r_n, len(abnormal), l_max), -np.inf)
    roc_fp = np.full_like(fp, -np.inf)
    roc_ll = np.full((t, r_n, len(abnormal), 1), -np.inf)
    nl_marks = []
    for i, condition in enumerate(design.conditions):
        for j, reader in enumerate(design.readers):
            for k, case in enumerate(normal):
                p = pairings[(reader, condition, case)]
                conf = [d.confidence for d in p["detections"]]
                nl_marks += [(condition, reader, case, float(c)) for c in conf]
                if conf:
                    fp[i, j, k] = roc_fp[i, j, k] = max(conf)
            for k, case in enumerate(abnormal):
                p = pairings[(reader, condition, case)]
                paired = dict((d, r) for r, d in p["result"].pairs)
                for d, det in enumerate(p["detections"]):
                    if d in paired:
                        ll[i, j, k, paired[d]] = det.confidence
                    else:
                        nl_marks.append((condition, reader, case, float(det.confidence)))
                conf = [d.confidence for d in p["detections"]]
                if conf:
                    roc_ll[i, j, k, 0] = max(conf)
    ids = [[str(n + 1) for n in range(m)] + [""] * (l_max - m) for m in n_les]
    froc = MRMCData(list(design.conditions), list(design.readers), normal, abnormal, fp, ll, weights,
                    np.array(n_les), ids, nl_marks=nl_marks, paradigm="FROC")
    roc = MRMCData(list(design.conditions), list(design.readers), normal, abnormal, roc_fp, roc_ll,
                   np.ones((len(abnormal), 1)), np.ones(len(abnormal), dtype=int), [["1"] for _ in abnormal],
                   paradigm="ROC")
    return froc, roc, notes
