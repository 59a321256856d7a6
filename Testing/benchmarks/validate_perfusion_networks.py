"""Validation of ST-Net, ST-Net-S and the Tmax net against oSVD and sSVD: held-out phantoms, an anatomical DRO,
the real moyamoya slices. Writes docs/validation-perfusion-networks.md (``--doc``) and a JSON of every row.

Held-out data (never used in training, whose data come from ``random_slice`` streams seeded [0, 0, epoch] and
[0, 1]):
- the project phantom :func:`neurocontrast.perfusion.phantom.generate_phantom` (a different anatomy and signal
  generator from the training slices), seeds 1000+, SNR 15/20/30/50 × {arrival 6 s, TR 1.5 s; arrival 20 s,
  TR 1.0 s, dispersion 2 s}: tissue delays 0.5-1.5 s (normal) and 2.5/8.5/12 s (territory zones);
- the anatomical DRO :func:`neurocontrast.training.dro.anatomical_dro` (ICBM 2009a GM/WM, graded territory with
  true Tmax 2-11 s), seeds 2000+, SNR 15/20/40;
- the moyamoya slices (no truth: agreement with oSVD; automatic AIF, TE assumed 30 ms).

Every method runs through the same pipeline call ``run_perfusion(dsc, aif_mask, vof_mask, brain_mask,
method=...)`` with the pipeline's defaults (VOF rescaling on where a VOF mask exists; the Tmax net gets no AIF
or VOF). Times are wall seconds of that call on this machine, under whatever load it has.

Usage: python Testing/benchmarks/validate_perfusion_networks.py [--quick] [--methods ...] [--json out.json]
       [--doc PATH]; ``--merge a.json b.json --doc PATH`` writes the report from runs of method groups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

METHODS = ("osvd", "ssvd", "stnet", "stnet-s", "tmaxnet")


def case_metrics(maps, truth, brain, spacing_zyx, gm=None, wm=None):
    """Accuracy figures of one method on one phantom: calibration, correlation, Tmax timing, Tmax > 6 s."""
    from neurocontrast import metrics

    out = {}
    true6 = brain & (truth["tmax"] > 6.0)
    for key in ("cbv", "cbf"):
        if key in maps:
            est, ref = maps[key][brain], truth[key][brain]
            ok = ref > 0
            out[f"{key}_ratio"] = float(np.median(est[ok] / ref[ok]))
            out[f"{key}_r"] = metrics.pearson(maps[key], truth[key], brain)
            out[f"{key}_nrmse"] = metrics.nrmse(maps[key], truth[key], brain)
    if gm is not None and "cbf" in maps and gm.any() and wm.any():
        out["gm_wm_cbf"] = float(np.mean(maps["cbf"][gm]) / max(np.mean(maps["cbf"][wm]), 1e-6))
    tmax = maps["tmax"]
    band = brain & (truth["tmax"] >= 2.0) & (truth["tmax"] <= 8.0)
    if band.any():
        out["tmax_band_median_error_s"] = float(np.median(tmax[band] - truth["tmax"][band]))
    out["tmax_mae_s"] = float(np.mean(np.abs(tmax[brain] - truth["tmax"][brain])))
    out["tmax_r"] = metrics.pearson(tmax, truth["tmax"], brain)
    pred6 = brain & (tmax > 6.0)
    out["dice6"] = metrics.dice(pred6, true6)
    out["auc6"] = metrics.roc_auc(tmax, true6, brain)
    out["hd95_mm"] = metrics.hd95(pred6, true6, spacing_zyx) if pred6.any() and true6.any() else float("nan")
    return out


def run_case(ph, methods, label, extra=None):
    from neurocontrast.perfusion.pipeline import run_perfusion

    brain = ph.brain_mask & ~ph.aif_mask
    sp = ph.geometry.spacing
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        if m == "tmaxnet":  # AIF-free: no AIF, no VOF
            res = run_perfusion(ph.to_dsc(), brain_mask=ph.brain_mask, method=m)
        else:
            res = run_perfusion(ph.to_dsc(), ph.aif_mask, ph.vof_mask, ph.brain_mask, method=m)
        secs = time.perf_counter() - t0
        gm = wm = None
        if extra is not None:
            gm, wm = extra
        row = dict(label, method=m, seconds=secs, voxels=int(ph.brain_mask.sum()),
                   **case_metrics(res.maps, ph.truth, brain, (sp[2], sp[1], sp[0]), gm, wm))
        rows.append(row)
        print(f"{label} {m}: Dice {row['dice6']:.3f} CBV {row.get('cbv_ratio', float('nan')):.3f} "
              f"CBF {row.get('cbf_ratio', float('nan')):.3f} r {row.get('cbf_r', float('nan')):.3f} ({secs:.1f} s)",
              file=sys.stderr, flush=True)
    return rows


def phantom_rows(methods, quick: bool):
    from neurocontrast.perfusion.phantom import generate_phantom

    rows, seed = [], 1000
    configs = ((6.0, 0.0, 1.5), (20.0, 2.0, 1.0)) if not quick else ((6.0, 0.0, 1.5),)
    for snr in (15, 20, 30, 50):
        for arrival, disp, tr in configs:
            ph = generate_phantom(shape=(4, 48, 48), n_frames=int(round(75.0 / tr)), tr_s=tr, te_s=0.03, snr=snr,
                                  seed=seed, arrival_s=arrival, dispersion_s=disp)
            rows += run_case(ph, methods, {"set": "phantom", "seed": seed, "snr": snr, "arrival_s": arrival,
                                           "tr_s": tr, "dispersion_s": disp})
            seed += 1
    return rows


def dro_rows(methods, quick: bool):
    from neurocontrast.training.dro import anatomical_dro, gm_wm_masks

    rows = []
    for i, snr in enumerate((15, 20, 40) if not quick else (20,)):
        dro = anatomical_dro(snr=snr, seed=2000 + i)
        gm, wm = gm_wm_masks(dro)
        truth = float(dro.truth["cbf"][gm].mean() / dro.truth["cbf"][wm].mean())
        rows += run_case(dro, methods, {"set": "dro", "seed": 2000 + i, "snr": snr, "truth_gm_wm": truth}, (gm, wm))
    return rows


def moyamoya_rows(methods):
    from neurocontrast import metrics
    from neurocontrast.dsc_io import read_dsc
    from neurocontrast.perfusion.pipeline import run_perfusion

    data = os.environ.get("NEUROCONTRAST_SHARED_DATA",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))
    rows = []
    for name in ("convexity", "cerebellum"):
        path = os.path.join(data, "dsc", "moyamoya", f"{name}_dsc.nii.gz")
        if not os.path.exists(path):
            print(f"moyamoya slice {path} not found: skipped", file=sys.stderr)
            continue
        dsc = read_dsc(path, tr_s=2.0, te_s=0.03)
        results, secs = {}, {}
        for m in sorted(set(methods) | {"osvd"}):
            t0 = time.perf_counter()
            results[m] = run_perfusion(dsc, method=m, aif="auto" if m != "tmaxnet" else "mask",
                                       vof_rescale=False)
            secs[m] = time.perf_counter() - t0
        ref = results["osvd"]
        mask = ref.brain_mask
        for m in methods:
            if m == "osvd":
                continue
            row = {"set": "moyamoya", "slice": name, "method": m, "seconds": secs[m]}
            a, b = results[m].maps["tmax"], ref.maps["tmax"]
            row["tmax_pearson"] = metrics.pearson(a, b, mask)
            row["tmax_median_s"] = float(np.median(a[mask]))
            row["osvd_tmax_median_s"] = float(np.median(b[mask]))
            row["tmax6_dice"] = metrics.dice(a > 6, b > 6, mask)
            for key in ("cbf", "cbv"):
                if key in results[m].maps:
                    row[f"{key}_pearson"] = metrics.pearson(results[m].maps[key], ref.maps[key], mask)
            rows.append(row)
            print(f"moyamoya {name} {m}: Tmax r {row['tmax_pearson']:.3f} ({secs[m]:.1f} s)", file=sys.stderr)
    return rows


def _ms(values, digits=3):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return "–"
    return f"{v.mean():.{digits}f}" if v.size == 1 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


COLUMNS = (("dice6", "Dice Tmax>6 s"), ("auc6", "AUC"), ("hd95_mm", "HD95 mm"),
           ("tmax_band_median_error_s", "Tmax error 2–8 s (median, s)"), ("tmax_mae_s", "Tmax MAE s"),
           ("cbv_ratio", "CBV ratio"), ("cbf_ratio", "CBF ratio"), ("cbf_r", "CBF r"), ("cbv_r", "CBV r"),
           ("gm_wm_cbf", "GM/WM CBF"), ("seconds", "seconds"))


def table(rows, title, methods, truth_gm_wm=None):
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = [f"\n#### {title}\n", "| method | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    if truth_gm_wm is not None:
        lines.append("| truth | " + " | ".join(f"{truth_gm_wm:.2f}" if c[0] == "gm_wm_cbf" else
                                               ("1" if c[0] in ("cbv_ratio", "cbf_ratio") else "")
                                               for c in cols) + " |")
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if sel:
            lines.append(f"| {m} | " + " | ".join(_ms([r.get(c[0], np.nan) for r in sel],
                                                      1 if c[0] == "seconds" else 3) for c in cols) + " |")
    return lines


def markdown(result, methods) -> str:
    rows = result["rows"]
    lines = []
    ph = [r for r in rows if r["set"] == "phantom"]
    if ph:
        for label, sel in (("SNR ≤ 20", lambda r: r["snr"] <= 20), ("SNR 30–50", lambda r: r["snr"] > 20)):
            sub = [r for r in ph if sel(r)]
            n = len({r["seed"] for r in sub})
            lines += table(sub, f"Held-out phantoms, {label} ({n} phantoms; mean ± SD over phantoms)", methods)
    dro = [r for r in rows if r["set"] == "dro"]
    for snr in sorted({r["snr"] for r in dro}):
        sub = [r for r in dro if r["snr"] == snr]
        lines += table(sub, f"Anatomical DRO (ICBM 2009a), SNR {snr}, {sub[0]['voxels']} brain voxels", methods,
                       sub[0]["truth_gm_wm"])
    moya = [r for r in rows if r["set"] == "moyamoya"]
    if moya:
        lines += ["\n#### Moyamoya slices: agreement with oSVD (automatic AIF, TE assumed 30 ms, no VOF)\n",
                  "| slice | method | Tmax Pearson | Dice Tmax>6 s | median Tmax s (method / oSVD) | CBF Pearson | "
                  "CBV Pearson | seconds |", "|---|---|---|---|---|---|---|---|"]
        for r in moya:
            f = lambda k: f"{r[k]:.3f}" if k in r and np.isfinite(r[k]) else "–"
            lines.append(f"| {r['slice']} | {r['method']} | {f('tmax_pearson')} | {f('tmax6_dice')} | "
                         f"{r['tmax_median_s']:.2f} / {r['osvd_tmax_median_s']:.2f} | {f('cbf_pearson')} | "
                         f"{f('cbv_pearson')} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one configuration per SNR, one DRO")
    ap.add_argument("--json", default=None, help="write every row here")
    ap.add_argument("--doc", default=None, help="write the Markdown tables into this file between the markers "
                                                "<!-- tables:begin --> and <!-- tables:end -->")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="JSON files of earlier runs (e.g. one per method group) to merge into one report")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = list(args.methods)
    if args.merge:
        rows = []
        for path in args.merge:
            with open(path, encoding="utf-8") as fh:
                rows += json.load(fh)["rows"]
        result = {"rows": rows, "methods": methods, "merged": list(args.merge)}
    else:
        t0 = time.perf_counter()
        rows = phantom_rows(methods, args.quick) + dro_rows(methods, args.quick) + moyamoya_rows(methods)
        result = {"rows": rows, "methods": methods, "threads": args.threads,
                  "total_seconds": time.perf_counter() - t0}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, default=float)
    text = markdown(result, methods)
    if args.doc:
        with open(args.doc, encoding="utf-8") as fh:
            doc = fh.read()
        begin, end = "<!-- tables:begin -->", "<!-- tables:end -->"
        if begin not in doc or end not in doc:
            raise SystemExit(f"{args.doc} has no {begin} ... {end} markers")
        doc = doc[:doc.index(begin) + len(begin)] + "\n" + text + "\n\n" + doc[doc.index(end):]
        with open(args.doc, "w", encoding="utf-8") as fh:
            fh.write(doc)
    print(text)


if __name__ == "__main__":
    main()
