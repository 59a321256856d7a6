"""Speed of VirtualGadolinium preprocessing (T1 + FLAIR + T1c) per registration preset, and preprocessing plus
the default CPU ensemble, in one run so the ratios compare like with like.

Usage::

    python Testing/benchmarks/bench_contrast_preprocessing.py [--case ../shared/data/brain/tcga-fg-6692]
        [--threads 2] [--presets default,fast] [--dose 0.25]

For each preset: wall time of :func:`neurocontrast.contrast.preprocessing.preprocess` (rigid FLAIR → T1 and
T1c → T1, rigid/similarity/affine T1 → ICBM 2009a, resampling, brain mask, standardisation) and the Dice of
the native brain mask against the case's HD-BET mask (when the case has one). Then ``run_virtual`` with the
default preset and the default CPU passes (all shipped folds, no mirroring) on the same exam, preprocessing
included. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import SimpleITK as sitk
    import torch

    from neurocontrast.contrast.preprocessing import preprocess
    from neurocontrast.contrast.virtual import run_virtual
    from neurocontrast.metrics import dice

    here = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default=str(here.parent / "shared" / "data" / "brain" / "tcga-fg-6692"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="default,fast")
    ap.add_argument("--dose", type=float, default=0.25)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    case = Path(args.case)
    images = {n: str(case / f"{n}.nii.gz") for n in ("t1", "flair", "t1c")}
    hdbet = case / "t1c_brain_mask_hdbet.nii.gz"
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(hdbet))) > 0 if hdbet.exists() else None
    rows = []
    for preset in args.presets.split(","):
        t = time.perf_counter()
        pc = preprocess(images, reference="t1", skull_stripper="auto", registration=preset)
        seconds = time.perf_counter() - t
        d = ""
        if ref is not None:
            mask = sitk.GetArrayFromImage(pc.back(pc.brain_mask.astype(np.float32), "t1c", interpolation="nearest")) > 0.5
            d = f"{dice(mask, ref):.3f}"
        rows.append((f"preprocessing, preset `{preset}`", seconds, d, pc.record.timings_s))
    low = None
    from neurocontrast.contrast.lowdose import simulate_lowdose_files

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_contrast_low.nii.gz"
    simulate_lowdose_files(images["t1"], images["t1c"], args.dose, str(tmp), seed=0)
    low = str(tmp)
    t = time.perf_counter()
    res = run_virtual({"t1": images["t1"], "flair": images["flair"], "t1c_low": low}, dose=args.dose)
    total = time.perf_counter() - t
    rows.append((f"preprocessing + default ensemble ({res.info['passes']} passes: {', '.join(res.info['models'])})",
                 total, "", res.info["timings_s"]))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, "
          f"torch {torch.__version__}, {args.threads} threads, case {case.name}")
    print("\n| step | seconds | × first row | brain-mask Dice vs HD-BET |\n|---|---:|---:|---:|")
    for name, sec, d, _ in rows:
        print(f"| {name} | {sec:.1f} | {sec / rows[0][1]:.2f} | {d} |")
    for name, _, _, timings in rows:
        print(f"- {name}: {timings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
