"""Throughput of ``neurocontrast batch perfusion`` (cases per minute) for 1 and 2 local Dask workers.

Usage::

    python Testing/benchmarks/bench_batch_throughput.py [--cases 8] [--workers 1 2] [--shape 8 64 64] [--frames 60]

Generates ``--cases`` digital phantoms (different seeds) in a temporary folder, writes their manifest, and
runs the batch command once per worker count in the same run (so the ratio compares like with like). Prints
wall time including the cluster start, cases per minute, and the mean seconds per case inside the workers,
as a Markdown table for docs/cohorts.md. The machine may be shared: report its load average with the figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shape", type=int, nargs=3, default=(8, 64, 64))
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    from neurocontrast.cli import main as cli
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = ["case_id,dsc,aif_mask,vof_mask,brain_mask,te_s,tr_s"]
        for i in range(args.cases):
            write_phantom(generate_phantom(tuple(args.shape), args.frames, 1.5, 0.03, 40.0, i), str(root / f"p{i:03d}"))
            lines.append(f"p{i:03d},p{i:03d}/dsc.nii.gz,p{i:03d}/aif_mask.nii.gz,p{i:03d}/vof_mask.nii.gz,"
                         f"p{i:03d}/brain_mask.nii.gz,,")
        (root / "manifest.csv").write_text("\n".join(lines) + "\n")
        rows = []
        for n in args.workers:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            code = cli(["batch", "perfusion", str(root / "manifest.csv"), "--out", str(root / f"out{n}"),
                        "--workers", str(n), "--no-progress"])
            wall = time.perf_counter() - t0
            with open(root / f"out{n}" / "summary.csv", newline="") as fh:
                summary = list(csv.DictReader(fh))
            ok = [r for r in summary if r["status"] == "ok"]
            per_case = sum(float(r["seconds"]) for r in ok) / max(len(ok), 1)
            rows.append((n, len(ok), wall, 60.0 * len(ok) / wall, per_case, load, code))
    print(f"\nphantom {tuple(args.shape)} x {args.frames} frames, oSVD, {args.cases} cases; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores\n")
    print("| workers | cases ok | wall s (with cluster start) | cases / min | s per case in worker | load avg at start |")
    print("|---|---|---|---|---|---|")
    for n, ok, wall, cpm, per_case, load, _ in rows:
        print(f"| {n} | {ok} | {wall:.1f} | {cpm:.1f} | {per_case:.1f} | {load:.1f} |")
    if len(rows) > 1:
        print(f"\nspeed-up {rows[-1][0]} vs {rows[0][0]} workers: {rows[-1][3] / rows[0][3]:.2f}x")
    return 0 if all(r[6] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
