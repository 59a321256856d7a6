"""Rendering of a reader-study report: the Table-5 grid (Ammari et al. 2022) and report.md / report.html."""

from __future__ import annotations

import html
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from neurocontrast.readerstudy import statistics as st
from neurocontrast.readerstudy.design import StudyDesign


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{st.round_half_up(100 * x, 0):.0f}%"


def table5(design: StudyDesign, detection: List[Dict], comparisons: List[Dict]) -> List[List[str]]:
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
                        row.append(f"{r['fdr']:.2f} ({r['fp']}/{r['n_cases']}) "
                                   f"[{r['fdr_low']:.2f}; {r['fdr_high']:.2f}]")
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
                        row.append(f"{r['fdr']:.2f} [{r['fdr_low']:.2f}; {r['fdr_high']:.2f}]")
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



def mrmc_tables(mrmc: Dict) -> List[Tuple[str, List[List[str]]]]:
    """Report sections of the study's MRMC analyses: reader FOMs per condition, and the OR tests."""
    sections = []
    for fom, item in mrmc.get("results", {}).items():
        d = item["result"].as_dict()
        conds = d["design"]["modalities"]
        grid = [["Reader"] + conds]
        for reader in d["design"]["readers"]:
            grid.append([reader] + [f"{d['readers'][c][reader]:.3f}" for c in conds])
        grid.append(["mean [RRRC 95% CI]"] + [
            f"{d['modalities'][c]:.3f} [{_num(d['rrrc']['modalities'][c]['ci'][0])}; "
            f"{_num(d['rrrc']['modalities'][c]['ci'][1])}]" for c in conds])
        for key, name in (("rrrc", "random readers & cases"), ("frrc", "fixed readers"),
                          ("rrfc", "fixed cases")):
            b = d[key]
            stat = (f"χ²({b['df']}) = {_num(b['chi2'])}" if key == "frrc" else
                    f"F({b['ndf']}, {_num(b.get('ddf', b.get('df')), 2)}) = {_num(b['F'])}")
            grid.append([f"{b['contrast']}, {name}", f"{b['estimate']:+.3f} [{_num(b['ci'][0])}; {_num(b['ci'][1])}]",
                         b.get("note") or f"{stat}, {_fmt_p(b['p'])}"] + [""] * (len(conds) - 2))
        sections.append((f"MRMC: {d['fom_name']} by condition ({d['design']['n_normal']} normal, "
                         f"{d['design']['n_abnormal']} abnormal cases; Obuchowski–Rockette, Hillis ddf)", grid))
    return sections


def report_text(design, summary, grid, summary_rows, test_rows, contrast_rows, agreement,
                mrmc: Optional[Dict] = None) -> Tuple[str, str]:
    """report.md and report.html text from the analysis rows (see :func:`analyze_study`)."""
    a = design.analysis
    intro = (f"Study **{design.name}**: {summary['n_cases']} cases, {summary['n_included']} included "
             f"({len(summary['excluded'])} excluded: {', '.join(summary['excluded']) or 'none'}; "
             f"{len(summary['missing_reference'])} without a submitted reference read), "
             f"{summary['n_reference_lesions']} reference lesions, {summary['n_reads_submitted']} submitted reads "
             f"({summary['n_reads_in_progress']} in progress). Pairing: threshold `{a['threshold']}`, "
             f"assignment `{a['assignment']}`, duplicates `{a['duplicates']}`.")
    legend = ("SE: sensitivity (TP/reference lesions) with Clopper–Pearson 95% CI; FDR: false positives per case "
              "with exact Poisson (Garwood) 95% CI, which never goes below 0 (detection.csv also gives the papers' "
              "Student-t half-width); PPV: TP/(TP+FP); F1: harmonic mean of SE and PPV. "
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
    sections += mrmc_tables(mrmc or {})
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
    images = ["se_fdr_by_size.png", "times_grades.png"] + [f"mrmc_{fom}/reader_foms.png"
                                                          for fom in (mrmc or {}).get("results", {})]
    notes = (mrmc or {}).get("notes", [])
    if notes:
        md += ["MRMC notes: " + "; ".join(notes) + ".", ""]
        body.append(f"<p>MRMC notes: {html.escape('; '.join(notes))}.</p>")
    if summary.get("damaged"):
        text = "; ".join(f"{d['path']} ({d['reason']})" for d in summary["damaged"])
        md += [f"Damaged read files moved to quarantine: {text}.", ""]
        body.append(f"<p>Damaged read files moved to quarantine: {html.escape(text)}.</p>")
    md += ["Plots: " + ", ".join(f"`{i}`" for i in images) + ".", ""]
    body += ["<p>" + " ".join(f"<img src='{i}'>" for i in images) + "</p>", "</body></html>"]
    return "\n".join(md), "\n".join(body)


def _num(x, digits: int = 3) -> str:
    """A number from the MRMC JSON (None = undefined, "inf" = ∞)."""
    if x is None:
        return "n/a"
    x = float(x)
    return "∞" if math.isinf(x) else f"{x:.{digits}f}"


def _fmt_p(p) -> str:
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else st.format_p_label(p)
