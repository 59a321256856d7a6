"""Held-out tables of the virtual- and differential-contrast fold models, from their registry records.

Usage::

    python Testing/benchmarks/validate_contrast_heldout.py [--models-dir DIR] [--virtual virtual-demo]
        [--differential differential-demo] [--out table.md]

Training (``neurocontrast train virtual|differential``, leave-one-case-out folds) evaluates every fold on its
held-out case once training ends (:func:`neurocontrast.contrast.validation.heldout_case_metrics`: simulated
doses 0.1, 0.25, 0.5 with seeded noise; low-dose input, physics baseline and network against the real T1c;
amplification; differential signal scale) and writes the figures into the model record (``metrics``). This
script prints them as the Markdown tables of docs/virtual-gadolinium.md and docs/models/, so the documented
numbers are the recorded ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _rows(records, kind):
    lines = []
    for info in records:
        for case, fig in info.metrics.get("heldout", {}).items():
            for dose, row in fig["doses"].items():
                if kind == "virtual":
                    cells = []
                    for key in ("low", "physics", "network"):
                        r = row[key]
                        cells.append(f"{r['ssim']:.3f} / {r['psnr']:.1f} / {r['auc']:.3f} / {r['restored']:.2f}")
                    beats_low = row["network"]["ssim"] > row["low"]["ssim"] and row["network"]["psnr"] > row["low"]["psnr"]
                    beats_phys = row["network"]["ssim"] > row["physics"]["ssim"] and \
                        row["network"]["psnr"] > row["physics"]["psnr"]
                    lines.append(f"| {info.name} | {case} | {dose} | " + " | ".join(cells) +
                                 f" | {'yes' if beats_low else 'NO'} | {'yes' if beats_phys else 'no'} |")
                else:
                    lines.append(f"| {info.name} | {case} | {dose} | {row['physics_signal_ratio']:.2f} | "
                                 f"{row['differential_signal_ratio']:.2f} |")
            if kind == "virtual" and "amplification" in fig:
                a = fig["amplification"]
                lines.append(f"| {info.name} | {case} | amplify ×{a['gain_asked']:g} | enhancement ×"
                             f"{a['repeat1']['enhancement_factor']:.2f} (repeat 2: ×{a['repeat2']['enhancement_factor']:.2f})"
                             f" | normal brain {a['repeat1']['normal_brain_ratio']:.3f} (repeat 2: "
                             f"{a['repeat2']['normal_brain_ratio']:.3f}) | | | |")
    return lines


def main(argv=None) -> int:
    from neurocontrast.contrast.inference import fold_names
    from neurocontrast import weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--virtual", default="virtual-demo")
    ap.add_argument("--differential", default="differential-demo")
    ap.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    text = ["## Virtual contrast (SSIM / PSNR dB / enhancement AUC / enhancement restored, against the real T1c)", "",
            "| fold | held-out case | dose | low-dose input | physics baseline | network | beats input | beats physics |",
            "|---|---|---|---|---|---|---|---|"]
    text += _rows([weights.get_model(n, args.models_dir) for n in fold_names(args.virtual, args.models_dir)],
                  "virtual")
    try:
        names = fold_names(args.differential, args.models_dir)
    except Exception:  # noqa: BLE001 - no differential models is a valid state
        names = []
    if names:
        text += ["", "## Differential contrast (mean predicted standard-dose signal / real T1c − T1 in enhancing "
                 "voxels)", "", "| fold | held-out case | dose | physics baseline | network |", "|---|---|---|---|---|"]
        text += _rows([weights.get_model(n, args.models_dir) for n in names], "differential")
    print("\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
