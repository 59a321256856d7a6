"""Validation of ST-Net and the Tmax net against oSVD and sSVD on held-out phantoms and real moyamoya slices.

Writes the tables of docs/validation-perfusion-networks.md (printed as Markdown; ``--out`` also saves JSON).

Held-out data (never used in training, whose data come from ``random_slice`` streams seeded [0, 0, epoch] and
[0, 1]):
- the project phantom :func:`neurocontrast.perfusion.phantom.generate_phantom` (a different anatomy and signal
  generator from the training slices) with seeds 1000+, SNR 15/20/30/50, bolus arrival 6 or 20 s, dispersion
  0 or 2 s, TR 1.0 or 1.5 s;
- the moyamoya slices (no truth: agreement with oSVD).

Usage: python Testing/benchmarks/validate_perfusion_networks.py [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def hp_metrics(pred_tmax, truth_tmax, mask, spacing_zyx, thr=6.0):
    from neurocontrast import metrics

    lab = (truth_tmax > thr) & mask
    pred = (pred_tmax > thr) & mask
    out = {"dice": metrics.dice(pred, lab), "iou": metrics.iou(pred, lab),
           "hd95": metrics.hd95(pred, lab, spacing_zyx), "auc": metrics.roc_auc(pred_tmax, lab, mask)}
    try:
        out["roc_threshold"] = metrics.youden_operating_point(pred_tmax, lab, mask)["threshold"]
    except Exception:  # one class absent
        out["roc_threshold"] = float("nan")
    return out


def map_metrics(pred, truth, mask):
    from neurocontrast import metrics

    return metrics.image_metrics(pred, truth, mask)


def run_methods(dsc, aif_mask, brain_mask, methods, aif="mask"):
    from neurocontrast.perfusion.pipeline import run_perfusion

    out, secs = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        res = run_perfusion(dsc, aif_mask=aif_mask if aif == "mask" else None, brain_mask=brain_mask, aif=aif,
                            method=m)
        secs[m] = time.perf_counter() - t0
        out[m] = res
    return out, secs


def phantom_cases(quick: bool):
    cases = []
    seed = 1000
    snrs = (15, 20, 30, 50)
    for snr in snrs:
        for arrival, disp, tr in ((6.0, 0.0, 1.5), (20.0, 2.0, 1.0)) if not quick else ((6.0, 0.0, 1.5),):
            cases.append({"seed": seed, "snr": snr, "arrival_s": arrival, "dispersion_s": disp, "tr_s": tr})
            seed += 1
    return cases


def summarise(values):
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


def main(argv=None):
    import torch
    from neurocontrast.perfusion.phantom import generate_phantom

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--shape", type=int, nargs=3, default=(4, 48, 48))
    ap.add_argument("--methods", nargs="+", default=["stnet", "tmaxnet", "osvd", "ssvd"])
    ap.add_argument("--merge", nargs="*", default=[], help="JSON results of earlier runs to merge (tables only)")
    args = ap.parse_args(argv)
    if args.merge:
        merged = {"phantoms": [], "moyamoya": []}
        for path in args.merge:
            with open(path, encoding="utf-8") as fh:
                part = json.load(fh)
            merged["phantoms"] += part["phantoms"]
            merged["moyamoya"] += part["moyamoya"]
        print(markdown(merged))
        return
    torch.set_num_threads(1)
    methods = list(args.methods)
    rows = []
    for case in phantom_cases(args.quick):
        n_frames = int(round(75.0 / case["tr_s"]))
        ph = generate_phantom(shape=tuple(args.shape), n_frames=n_frames, tr_s=case["tr_s"], te_s=0.03,
                              snr=case["snr"], seed=case["seed"], arrival_s=case["arrival_s"],
                              dispersion_s=case["dispersion_s"])
        dsc = ph.to_dsc()
        mask = ph.brain_mask & ~ph.aif_mask
        sp = ph.geometry.spacing
        spacing_zyx = (sp[2], sp[1], sp[0])
        results, secs = run_methods(dsc, ph.aif_mask, ph.brain_mask, methods)
        hp = mask & (ph.truth["tmax"] > 6.0)
        for m, res in results.items():
            row = dict(case, method=m, seconds=secs[m])
            for key in ("cbv", "cbf", "tmax"):
                if key in res.maps:
                    for k, v in map_metrics(res.maps[key], ph.truth[key], mask).items():
                        row[f"{key}_wb_{k}"] = v
                    for k, v in map_metrics(res.maps[key], ph.truth[key], hp).items():
                        row[f"{key}_hp_{k}"] = v
            for k, v in hp_metrics(res.maps["tmax"], ph.truth["tmax"], mask, spacing_zyx).items():
                row[f"seg_{k}"] = v
            rows.append(row)
            print(f"seed {case['seed']} snr {case['snr']} {m}: tmax NRMSE {row['tmax_wb_nrmse']:.3f} "
                  f"Dice {row['seg_dice']:.3f} ({secs[m]:.1f} s)", file=sys.stderr, flush=True)

    # moyamoya
    moya = []
    data = os.environ.get("NEUROCONTRAST_SHARED_DATA",
                          os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    for name in ("convexity", "cerebellum"):
        path = os.path.join(data, "dsc", "moyamoya", f"{name}_dsc.nii.gz")
        if not os.path.exists(path):
            continue
        from neurocontrast.io import read_dsc
        from neurocontrast import metrics

        dsc = read_dsc(path, tr_s=2.0, te_s=0.03)  # TE is not given by the source: assumed 30 ms
        results, secs = run_methods(dsc, None, None, sorted(set(methods) | {"osvd"}), aif="auto")
        ref = results["osvd"]
        mask = ref.brain_mask
        for m in [x for x in methods if x != "osvd"]:
            row = {"slice": name, "method": m, "seconds": secs[m]}
            for key in ("tmax", "cbf", "cbv"):
                if key in results[m].maps:
                    a, b = results[m].maps[key], ref.maps[key]
                    row[f"{key}_ssim"] = metrics.ssim(a, b, mask)
                    row[f"{key}_pearson"] = metrics.pearson(a, b, mask)
            row["tmax6_dice"] = metrics.dice(results[m].maps["tmax"] > 6, ref.maps["tmax"] > 6, mask)
            row["hp_ml"] = float(results[m].hypoperfusion.volumes_ml.get(6.0, float("nan")))
            row["osvd_hp_ml"] = float(ref.hypoperfusion.volumes_ml.get(6.0, float("nan")))
            moya.append(row)
    result = {"phantoms": rows, "moyamoya": moya}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, default=float)
    print(markdown(result))


def markdown(result) -> str:
    rows = result["phantoms"]
    lines = []
    methods = ["stnet", "tmaxnet", "osvd", "ssvd"]
    for label, sel in (("SNR ≤ 30", lambda r: r["snr"] <= 30), ("SNR > 30", lambda r: r["snr"] > 30),
                       ("all", lambda r: True)):
        sub = [r for r in rows if sel(r)]
        if not sub:
            continue
        n = len({r["seed"] for r in sub})
        lines.append(f"\n#### Table 2 analogue, {label} ({n} phantoms), whole brain (WB) and hypoperfused area (HP)\n")
        lines.append("| map | method | WB PSNR | WB SSIM | WB PCC | WB SCC | WB NRMSE | HP PSNR | HP SSIM | HP PCC | HP SCC | HP NRMSE |")
        lines.append("|---|---|" + "---|" * 10)
        for key in ("cbv", "cbf", "tmax"):
            for m in methods:
                r = [x for x in sub if x["method"] == m and f"{key}_wb_nrmse" in x]
                if not r:
                    continue
                cells = []
                for region in ("wb", "hp"):
                    for k in ("psnr", "ssim", "pearson", "spearman", "nrmse"):
                        mu, sd = summarise([x.get(f"{key}_{region}_{k}", np.nan) for x in r])
                        cells.append(f"{mu:.3f} ({sd:.3f})")
                lines.append(f"| {key.upper() if key != 'tmax' else 'Tmax'} | {m} | " + " | ".join(cells) + " |")
        lines.append(f"\n#### Table 1 analogue, {label}: hypoperfusion (Tmax > 6 s) segmentation\n")
        lines.append("| method | AUC | Dice | IoU | HD95 (mm) | ROC-optimal threshold (s) | seconds per phantom |")
        lines.append("|---|---|---|---|---|---|---|")
        for m in methods:
            r = [x for x in sub if x["method"] == m]
            cells = []
            for k in ("seg_auc", "seg_dice", "seg_iou", "seg_hd95", "seg_roc_threshold", "seconds"):
                mu, sd = summarise([x[k] for x in r])
                cells.append(f"{mu:.3f} ({sd:.3f})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if result["moyamoya"]:
        lines.append("\n#### Moyamoya slices: agreement with oSVD (automatic AIF, TE assumed 30 ms)\n")
        lines.append("| slice | method | Tmax SSIM | Tmax Pearson | Dice Tmax>6 s | CBF SSIM | CBF Pearson | CBV SSIM | CBV Pearson | HP mL (method / oSVD) | seconds |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["moyamoya"]:
            f = lambda k: f"{r[k]:.3f}" if k in r else "–"
            lines.append(f"| {r['slice']} | {r['method']} | {f('tmax_ssim')} | {f('tmax_pearson')} | {f('tmax6_dice')} | "
                         f"{f('cbf_ssim')} | {f('cbf_pearson')} | {f('cbv_ssim')} | {f('cbv_pearson')} | "
                         f"{r['hp_ml']:.1f} / {r['osvd_hp_ml']:.1f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
