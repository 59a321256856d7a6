"""Held-out validation of the virtual-contrast model (issue 4, §6 "held-out case"; Ammari Table 3, Bône Table 4).

Usage::

    python Testing/benchmarks/validate_contrast_heldout.py --out /tmp/heldout \
        [--case ../shared/data/brain/brats-met-00110] [--model virtual-demo] [--ensemble N] [--tta T]

On a case that no fold saw in training:
1. simulate the 25 %-dose T1c from its T1 and T1c (``simulate_lowdose_files``, seed 0);
2. virtual T1c = model(T1, FLAIR, low-dose) through the full pipeline (preprocessing → ensemble × TTA → the
   native grid of the low-dose image);
3. ``evaluate_contrast``: SSIM, PSNR, enhancement AUC (Otsu reference, Youden point) of the low-dose and the
   virtual image against the real T1c, inside the brain mask of the pipeline, on the native grid; and the same
   on the preprocessing grid (``evaluate_arrays``), where the papers compute them;
4. amplification: T1c-pro = model(T1, FLAIR, routine T1c), once and twice (``repeat``); CNR and LBR of the
   routine T1c and the T1c-pro images on the preprocessing grid (both standardised to [0, 1], as the papers'
   images are) in (a) the lesion segmentation's label 1 as given and (b) its enhancing part (label-1 voxels
   whose subtraction T1c − matched T1 exceeds 3 σ_noise), against the healthy brain (brain minus the lesion
   dilated by 3 voxels), Bône's formulas (``neurocontrast.metrics``);
5. differential model: synthesised image (conditioned on the true dose 0.25) vs the real T1c, and the mean
   predicted signal in the enhancing voxels at conditioning doses 0.1, 0.25, 0.5 and 1 (dose consistency).
Writes ``heldout.json`` and prints a Markdown summary for docs/virtual-gadolinium.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import SimpleITK as sitk
    from scipy import ndimage

    from neurocontrast import metrics as M
    from neurocontrast.contrast import subtraction
    from neurocontrast.contrast.evaluate import evaluate_contrast
    from neurocontrast.contrast.lowdose import simulate_lowdose_files
    from neurocontrast.contrast.virtual import run_virtual

    repo = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=str(repo.parent / "shared" / "data" / "brain" / "brats-met-00110"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="virtual-demo")
    parser.add_argument("--ensemble", type=int, default=None)
    parser.add_argument("--tta", type=int, default=None)
    parser.add_argument("--lesion-label", type=int, default=1)
    parser.add_argument("--differential-model", default="differential-demo", help="'' to skip")
    parser.add_argument("--only-differential", action="store_true", help="skip the virtual and amplify runs")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only simulate the low dose and preprocess (cached in OUT/prepared.npz + record)")
    args = parser.parse_args(argv)
    case, out = Path(args.case), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t1, flair, t1c = (str(case / f"{n}.nii.gz") for n in ("t1", "flair", "t1c"))
    low = str(out / "t1c_low.nii.gz")
    if not Path(low).exists():
        simulate_lowdose_files(t1, t1c, 0.25, low, seed=0)
    results = {"case": case.name, "model": args.model}
    # one preprocessing of the exam for every run below (registration is the slow part on CPU)
    from neurocontrast.contrast.preprocessing import PreprocessedCase, PreprocessingRecord, preprocess

    cache, record_path = out / "prepared.npz", out / "prepared_record.json"
    if cache.exists() and record_path.exists():
        record = PreprocessingRecord.from_json(str(record_path))
        with np.load(cache) as data:
            arrays = {k: data[k] for k in data.files}
        brain = arrays.pop("brain_mask").astype(bool)
        prepared = PreprocessedCase(arrays, brain, record.target_geometry, record)
    else:
        prepared = preprocess({"t1": t1, "flair": flair, "t1c_low": low, "t1c": t1c}, reference="t1")
        np.savez_compressed(cache, brain_mask=prepared.brain_mask, **prepared.images)
        prepared.record.to_json(str(record_path))
    if args.prepare_only:
        return 0
    results["preprocessing"] = {"timings_s": prepared.record.timings_s,
                                "skull_strip": prepared.record.skull_strip.get("method")}
    amp, ev, virtual = {}, {"rows": []}, None
    if not args.only_differential:
        virtual = run_virtual({"t1": t1, "flair": flair, "t1c_low": low}, "virtual", model=args.model,
                              ensemble=args.ensemble, tta=args.tta, prepared=prepared)
        paths = virtual.write(out / "virtual")
        results["virtual_info"] = virtual.info
        ev = evaluate_contrast(low, paths["virtual"], t1c, brain_mask_path=paths["brain_mask"],
                               out_dir=str(out / "evaluation"), pre_path=t1)
        results["virtual_vs_lowdose"] = ev["rows"]
        # the same comparison on the preprocessing grid, where the papers compute their metrics
        from neurocontrast.contrast.evaluate import evaluate_arrays as _evaluate_arrays

        results["virtual_vs_lowdose_model_space"] = _evaluate_arrays(
            prepared.images["t1c_low"], virtual.model_space["virtual"], prepared.images["t1c"],
            prepared.brain_mask, pre=prepared.images["t1"])

        seg_path = case / "lesion_seg_predicted.nii.gz"
        if seg_path.exists():
            from neurocontrast.contrast import preprocessing as pp

            # ROIs on the preprocessing grid (the lesion segmentation lies on the T1's grid: BraTS)
            aff = pp._transform_from(prepared.record.affine)
            seg = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(seg_path)),
                                                       pp._geometry_image(prepared.geometry, sitk.sitkUInt8), aff,
                                                       sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
            brain = prepared.brain_mask
            lesion = (seg == args.lesion_label) & brain
            healthy = brain & ~ndimage.binary_dilation(seg > 0, iterations=3)
            routine = prepared.images["t1c"].astype(np.float64)
            z, _ = subtraction.subtraction(prepared.images["t1"], routine, healthy)
            sigma = subtraction.noise_sigma(z, healthy)
            enhancing = lesion & (z > 3 * sigma)
            images = {"routine T1c": routine}
            for repeat in (1, 2):
                res = run_virtual({"t1": t1, "flair": flair, "t1c": t1c}, "amplify", repeat=repeat, model=args.model,
                                  ensemble=args.ensemble, tta=args.tta, prepared=prepared)
                res.write(out / f"amplified_x{repeat}")
                images[f"T1c-pro (repeat {repeat})"] = res.model_space["amplified"].astype(np.float64)
            for roi_name, roi in (("lesion label", lesion), ("enhancing part", enhancing)):
                amp[roi_name] = {name: {"cnr": M.cnr(img, roi, healthy), "lbr": M.lbr(img, roi, healthy),
                                        "voxels": int(roi.sum())} for name, img in images.items()}
    results["amplification"] = amp

    # differential model (model space): synthesised vs real T1c, and dose consistency of the signal
    diff = {}
    if args.differential_model:
        from neurocontrast.contrast import differential, inference
        from neurocontrast.contrast.evaluate import evaluate_arrays

        dmodels = inference.load_ensemble(args.differential_model)
        brain_m = prepared.brain_mask
        inputs = differential.model_inputs(prepared.images["t1"], prepared.images["t1c_low"], brain_m)
        signals, lesion_signal = {}, []
        doses = (0.1, 0.25, 0.5, 1.0)
        for d in doses:
            cond = differential.condition_for(d, 1.5, "gadoterate", inputs["sigma"])
            signals[d] = np.where(brain_m, inference.predict(dmodels, inputs["x"], tta=args.tta or 2,
                                                             condition=cond), 0.0)
        synth = np.where(brain_m, inputs["pre_matched"] + signals[0.25], 0.0)
        rows = evaluate_arrays(prepared.images["t1c_low"], synth, prepared.images["t1c"], brain_m,
                               pre=prepared.images["t1"])
        y_true, _ = differential.training_target(prepared.images["t1"], prepared.images["t1c"], brain_m,
                                                 inputs["sigma"])
        hot = y_true > 0.5 * np.percentile(y_true[brain_m], 99.9)
        lesion_signal = [float(signals[d][hot].mean()) for d in doses]
        # matched inputs: a low dose simulated at each dose (on the preprocessing grid, then standardised like
        # an acquired image), conditioned on its true dose; all should predict the same standard-dose signal
        from neurocontrast.contrast.lowdose import simulate_lowdose
        from neurocontrast.contrast.preprocessing import standardise_intensity

        matched = []
        for d in (0.1, 0.25, 0.5):
            low_d = simulate_lowdose(prepared.images["t1"], prepared.images["t1c"], d, brain_m, seed=1).image
            low_d, _ = standardise_intensity(low_d, brain_m)
            inp = differential.model_inputs(prepared.images["t1"], low_d, brain_m)
            cond = differential.condition_for(d, 1.5, "gadoterate", inp["sigma"])
            sig = inference.predict(dmodels, inp["x"], tta=args.tta or 2, condition=cond)
            matched.append({"dose": d, "predicted_signal": float(sig[hot].mean()),
                            "input_subtraction": float(inp["z"][hot].mean())})
        diff = {"matched_inputs": matched, "rows": rows, "sigma_low": inputs["sigma"], "doses": list(doses), "signal_in_enhancing": lesion_signal,
                "target_signal_in_enhancing": float(y_true[hot].mean()),
                "lowdose_subtraction_in_enhancing": float(inputs["z"][hot].mean()),
                "dose_consistency": M.dose_consistency(doses, lesion_signal)}
    results["differential"] = diff
    name = "heldout_differential.json" if args.only_differential else "heldout.json"
    (out / name).write_text(json.dumps(results, indent=2, default=str) + "\n")

    if virtual is not None:
        print(f"\n### Held-out case {case.name}, model {args.model} "
              f"({virtual.info['passes']} passes: {', '.join(virtual.info['models'])})\n")
    print("| image vs real T1c | SSIM | PSNR (dB) | enhancement AUC | sensitivity | specificity |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in ev["rows"]:
        if row.get("image") in ("low", "virtual"):
            print(f"| {row['image']} | {row.get('ssim', float('nan')):.4f} | {row.get('psnr', float('nan')):.2f} | "
                  f"{row.get('auc', float('nan')):.4f} | {row.get('sensitivity', float('nan')):.3f} | "
                  f"{row.get('specificity', float('nan')):.3f} |")
    for row in results.get("virtual_vs_lowdose_model_space", []):
        if row.get("image") in ("low", "virtual"):
            print(f"| {row['image']} (preprocessing grid) | {row.get('ssim', float('nan')):.4f} | "
                  f"{row.get('psnr', float('nan')):.2f} | {row.get('auc', float('nan')):.4f} | "
                  f"{row.get('sensitivity', float('nan')):.3f} | {row.get('specificity', float('nan')):.3f} |")
    if amp:
        print("\n| ROI | image | CNR | LBR |")
        print("|---|---|---:|---:|")
        for roi_name, per in amp.items():
            for name, v in per.items():
                print(f"| {roi_name} ({v['voxels']} vox) | {name} | {v['cnr']:.2f} | {v['lbr']:.3f} |")
    if diff:
        print("\n| differential (model space) vs real T1c | SSIM | PSNR (dB) | enhancement AUC |")
        print("|---|---:|---:|---:|")
        for row in diff["rows"]:
            if row.get("image") in ("low", "virtual"):
                label = "low-dose" if row["image"] == "low" else "synthesised (conditioned on d = 0.25)"
                print(f"| {label} | {row.get('ssim', float('nan')):.4f} | {row.get('psnr', float('nan')):.2f} | "
                      f"{row.get('auc', float('nan')):.4f} |")
        print(f"\nmean signal in the enhancing voxels vs conditioning dose {diff['doses']}: "
              f"{[round(v, 4) for v in diff['signal_in_enhancing']]} (target {diff['target_signal_in_enhancing']:.4f}, "
              f"low-dose subtraction {diff['lowdose_subtraction_in_enhancing']:.4f}); dose consistency "
              f"{diff['dose_consistency']}")
        print("matched inputs (low dose simulated at d, conditioned on d):", diff["matched_inputs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
