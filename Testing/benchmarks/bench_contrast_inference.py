"""Speed of VirtualGadolinium inference (issue 4, §6 "Speed"): preprocessing + one pass, and the 40-pass ensemble.

Usage::

    python Testing/benchmarks/bench_contrast_inference.py [--case ../shared/data/brain/brats-met-00110]
        [--device cpu|cuda] [--passes 40] [--model virtual-demo] [--threads N] [--skip-preprocessing]

Measured in one run (so the ratios compare like with like):
1. preprocessing of T1 + FLAIR + T1c (registration, atlas, brain extraction, standardisation);
2. one network pass (ensemble 1 × TTA 1) on the 160×192×160 volume: the baseline;
3. the papers' 40 passes (5 fold models × 8 mirrors; the shipped folds are reused cyclically when fewer than
   five exist, which costs the same), fp32 on CPU, fp16 autocast on CUDA;
4. sliding-window inference (96³ patches, overlap 0.25) for one pass, against the whole-volume pass.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    import torch

    from neurocontrast.contrast import inference
    from neurocontrast.contrast.preprocessing import preprocess

    repo = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=str(repo.parent / "shared" / "data" / "brain" / "brats-met-00110"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--model", default="virtual-demo")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-preprocessing", action="store_true", help="use random inputs of the atlas-crop size")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = inference.resolve_device(args.device)
    folds = inference.fold_names(args.model)
    rows = []
    if args.skip_preprocessing:
        rng = np.random.default_rng(0)
        x = rng.uniform(0.5, 1.5, (3, 160, 192, 160)).astype(np.float32)
    else:
        case = Path(args.case)
        images = {"t1": case / "t1.nii.gz", "flair": case / "flair.nii.gz", "t1c_low": case / "t1c.nii.gz"}
        t_pre, prepared = _timed(lambda: preprocess({k: str(v) for k, v in images.items()}, reference="t1"))
        rows.append(("preprocessing (T1, FLAIR, T1c: 2 rigid + 1 affine registration, resampling, mask)", t_pre, None))
        x = np.stack([prepared.images[c] for c in ("t1", "flair", "t1c_low")])
    models = inference.load_ensemble(folds[:1], device=device)
    if "physics" in models[0].input_channels or "dose" in models[0].input_channels:  # dose-conditioned models
        from neurocontrast.contrast.physics import dose_extrapolation

        brain = x[0] > 0
        planes = {"t1": x[0], "flair": x[1], "t1c_low": x[2], "dose": np.where(brain, 0.25, 0.0).astype(np.float32),
                  "physics": dose_extrapolation(x[0], x[2], 0.25, brain).full}
        x = np.stack([planes[c] for c in models[0].input_channels]).astype(np.float32)
    inference.predict(models, x[:, :32, :32, :32], tta=1, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t1, _ = _timed(lambda: inference.predict(models, x, tta=1, device=device), repeat=2)
    rows.append(("1 pass, whole volume (baseline)", t1, 1.0))
    if not args.skip_preprocessing:
        rows.append(("preprocessing + 1 pass", t_pre + t1, (t_pre + t1) / t1))
    tw, _ = _timed(lambda: inference.predict(models, x, tta=1, device=device, roi_size=(96, 96, 96)))
    rows.append(("1 pass, sliding window 96³ (overlap 0.25)", tw, tw / t1))
    n_models = max(1, args.passes // 8)
    names = [folds[i % len(folds)] for i in range(n_models)]
    ensemble = inference.load_ensemble(names, device=device)
    tta = 8 if args.passes >= 8 else args.passes
    tn, _ = _timed(lambda: inference.predict(ensemble, x, tta=tta, device=device))
    rows.append((f"{n_models * tta} passes ({n_models} models × {tta} mirrors)", tn, tn / t1))
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    print(f"\nmodel {args.model} ({models[0].info.config}), device {device} ({gpu}), torch {torch.__version__}, "
          f"{threads} CPU threads, {platform.processor() or platform.machine()}, Python {sys.version.split()[0]}\n")
    print("| step | seconds | × one pass |")
    print("|---|---:|---:|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.1f} | {'' if ratio is None else f'{ratio:.1f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
