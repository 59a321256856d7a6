"""Plots of a reader-study report: SE and FDR by lesion size, reading times and grades."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from neurocontrast.readerstudy.design import StudyDesign
from neurocontrast.readerstudy.report.rows import StudyData


def detection_plots(out: Path, design: StudyDesign, detection: List[Dict], data: StudyData) -> List[Path]:
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
            fdr = np.array([r["fdr"] for r in rows])
            err = np.vstack([fdr - np.array([r["fdr_low"] for r in rows]),
                             np.array([r["fdr_high"] for r in rows]) - fdr])
            axes[1].errorbar(t, fdr, yerr=err, marker="s", capsize=3, label=f"{reader} {condition}")
    axes[0].set(xlabel="minimum long axis (mm)", ylabel="SE (%) [Clopper–Pearson 95% CI]", ylim=(0, 105))
    axes[1].set(xlabel="minimum long axis (mm)", ylabel="FDR (FP per case) [exact Poisson 95% CI]")
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

