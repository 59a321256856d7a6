"""Benchmark: ``neurocontrast perfusion`` end to end (read, maps, write; PNG after the maps) on a whole-brain
series of 128x128x80 voxels x 50 frames (1.31 M grid voxels, about 0.6 M brain voxels).

The series is the digital phantom (8x128x128, 50 frames, TR 1.5 s, SNR 40) stacked 10 times along z, written
as .nii (uncompressed) and .nii.gz with its masks. Measured in one run, each command ``--repeats`` times
under ``nice`` (the machine is shared: the figures are the best of the repeats, and ratios matter more
than absolute seconds):

1. this checkout's CLI on the .nii and on the .nii.gz: wall time until the maps and report.json are
   written (``timings_s`` of report.json: read + compute + write) and of the whole process incl. PNG;
2. the NAIVE baseline: the same command with the code of a reference commit (default ``06097b7``, the
   pipeline before the whole-brain work: full-grid float ΔR2*, smoothing on the whole grid, a second
   nibabel read of float NIfTI files, PNG before the report), exported with ``git archive`` into a
   temporary folder and run the same way;
3. SimpleITK's own read of the .nii.gz and of the .nii, for the cost of a compressed input.

Usage:  nice -n 10 python Testing/benchmarks/bench_perfusion_cli.py [--repeats 3] [--baseline 06097b7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TILES = 10


def make_inputs(folder: str) -> dict:
    """Write the stacked phantom as dsc.nii / dsc.nii.gz (+ sidecars) and its masks. Returns the paths."""
    import SimpleITK as sitk

    from neurocontrast.perfusion.phantom import generate_phantom

    ph = generate_phantom((8, 128, 128), 50, 1.5, 0.03, 40.0, 0)
    signal = np.concatenate([ph.signal] * TILES, axis=1).astype(np.float32)
    paths = {}
    for ext in ("nii", "nii.gz"):
        img = sitk.GetImageFromArray(signal, isVector=False)
        img.SetSpacing(tuple(ph.geometry.spacing) + (1.5,))
        paths[ext] = os.path.join(folder, f"dsc_{ext.replace('.', '_')}.{ext}")
        sitk.WriteImage(img, paths[ext], useCompression=ext.endswith("gz"))
        with open(paths[ext].replace(f".{ext}", ".json"), "w") as fh:
            json.dump({"EchoTime": 0.03, "RepetitionTime": 1.5}, fh)
    for name in ("aif_mask", "vof_mask", "brain_mask"):
        mask = np.zeros(signal.shape[1:], np.uint8)
        mask[:] = np.concatenate([getattr(ph, name)] * TILES, axis=0) if name == "brain_mask" else 0
        if name != "brain_mask":  # vessels of the first tile only: one AIF and VOF, as drawn by a reader
            mask[:8] = getattr(ph, name)
        img = sitk.GetImageFromArray(mask)
        img.SetSpacing(ph.geometry.spacing)
        paths[name] = os.path.join(folder, f"{name}.nii.gz")
        sitk.WriteImage(img, paths[name])
    paths["brain_voxels"] = int(np.concatenate([ph.brain_mask] * TILES).sum())
    paths["shape"] = signal.shape
    return paths


def run_cli(pythonpath: str, dsc: str, paths: dict, out: str) -> dict:
    """One CLI run in a fresh process; returns wall time and report.json timings."""
    if os.path.exists(out):
        shutil.rmtree(out)
    env = dict(os.environ, PYTHONPATH=pythonpath)
    cmd = [sys.executable, "-m", "neurocontrast", "perfusion", dsc, "--aif-mask", paths["aif_mask"],
           "--vof-mask", paths["vof_mask"], "--brain-mask", paths["brain_mask"], "--out", out, "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(os.path.join(out, "report.json")) as fh:
        rep = json.load(fh)
    t = rep["timings_s"]
    maps_out = t.get("read_s", 0.0) + t["total_s"] + t.get("write_s", 0.0)
    return {"wall_s": wall, "maps_written_s": maps_out, "read_s": t.get("read_s"), "compute_s": t["total_s"],
            "write_s": t.get("write_s"), "tmax_gt_6s_ml": rep["volumes_ml"]["tmax_gt_6s"]}


def sitk_read(path: str) -> float:
    import SimpleITK as sitk

    t0 = time.perf_counter()
    sitk.GetArrayFromImage(sitk.ReadImage(path))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="06097b7", help="reference commit of the naive baseline")
    ap.add_argument("--keep", help="folder for the inputs (default: a temporary folder)")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="bench_perfusion_")
    os.makedirs(work, exist_ok=True)
    paths = make_inputs(work)
    base = os.path.join(work, "baseline")
    if not os.path.isdir(base):
        os.makedirs(base)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.baseline, "NeuroContrast/neurocontrast"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
    here = os.path.join(ROOT, "NeuroContrast")
    there = os.path.join(base, "NeuroContrast")
    print(f"series {paths['shape']} (t, z, y, x), {paths['brain_voxels']} brain voxels; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; best of {args.repeats}")
    rows = {}
    for label, pp, ext in (("this checkout, .nii", here, "nii"), ("this checkout, .nii.gz", here, "nii.gz"),
                           (f"baseline {args.baseline}, .nii", there, "nii"),
                           (f"baseline {args.baseline}, .nii.gz", there, "nii.gz")):
        runs = [run_cli(pp, paths[ext], paths, os.path.join(work, "out")) for _ in range(args.repeats)]
        rows[label] = {k: min(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k] for k in runs[0]}
    reads = {ext: min(sitk_read(paths[ext]) for _ in range(args.repeats)) for ext in ("nii", "nii.gz")}
    print(f"{'command':34s} {'maps written':>12s} {'whole CLI':>10s} {'read':>7s} {'compute':>8s} {'write':>7s} "
          f"{'Tmax>6s mL':>10s}")
    for label, r in rows.items():
        print(f"{label:34s} {r['maps_written_s']:11.2f}s {r['wall_s']:9.2f}s {r['read_s'] or 0:6.2f}s "
              f"{r['compute_s']:7.2f}s {r['write_s'] or 0:6.2f}s {r['tmax_gt_6s_ml']:10.1f}")
    b, h = rows[f"baseline {args.baseline}, .nii"], rows["this checkout, .nii"]
    bz, hz = rows[f"baseline {args.baseline}, .nii.gz"], rows["this checkout, .nii.gz"]
    print(f"speed-up, maps written: .nii x{b['maps_written_s'] / h['maps_written_s']:.2f}, "
          f".nii.gz x{bz['maps_written_s'] / hz['maps_written_s']:.2f}; whole CLI: .nii x{b['wall_s'] / h['wall_s']:.2f}, "
          f".nii.gz x{bz['wall_s'] / hz['wall_s']:.2f}")
    print(f"SimpleITK read: .nii {reads['nii']:.2f} s, .nii.gz {reads['nii.gz']:.2f} s (+{reads['nii.gz'] - reads['nii']:.2f} s); "
          f"our .nii.gz costs +{hz['maps_written_s'] - h['maps_written_s']:.2f} s over .nii")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
