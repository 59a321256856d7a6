"""Re-measure every moyamoya figure that docs/perfusion.md publishes (../shared/data/dsc/moyamoya).

For each single-slice series (convexity, cerebellum; TR 2 s, TE unknown, run with TE 0.03 s): the VOF mask
derived from the data (``derive_sss_vof_mask`` of Testing/core/test_cli_perfusion.py), then
``neurocontrast perfusion --aif auto --vof-mask VOF`` with and without ``--no-vof-rescale``. Prints the VOF
voxels and their delay to the AIF peak, the automatic AIF (voxels, peak, FWHM), the VOF/AIF area factor,
and for both runs GM/WM CBF and CBV (grey matter: cortical ribbon 1–3 voxels inside the brain edge; white
matter: >= 10 voxels deep; voxels above the 95th CBV percentile excluded), median CBF/CBV in GM, median
Tmax in the brain and the Tmax > 6 s volume.

Usage:  python Testing/benchmarks/measure_moyamoya.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _derive_vof():
    spec = importlib.util.spec_from_file_location("cli_tests", os.path.join(ROOT, "Testing", "core",
                                                                             "test_cli_perfusion.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.derive_sss_vof_mask


def regions(cbf, cbv):
    from scipy import ndimage

    brain = cbf != 0
    depth = np.stack([ndimage.distance_transform_edt(b) for b in brain])
    vessel = cbv > np.percentile(cbv[brain], 95)
    return brain, (depth >= 1) & (depth <= 3) & ~vessel, (depth >= 10) & ~vessel


def measure(name: str, data: str, te: float = 0.03) -> None:
    from neurocontrast.cli import main
    from neurocontrast.dsc_io import read_dsc
    from neurocontrast.io import read_volume, write_volume

    path = os.path.join(data, "dsc", "moyamoya", f"{name}_dsc.nii.gz")
    dsc = read_dsc(path, te_s=te)
    vof = _derive_vof()(dsc, te)
    work = tempfile.mkdtemp(prefix=f"moyamoya_{name}_")
    vof_path = os.path.join(work, "vof.nii.gz")
    write_volume(vof.astype(np.uint8), dsc.geometry, vof_path)
    print(f"\n{name}: VOF voxels (y, x) = {[tuple(int(v) for v in p[1:]) for p in np.argwhere(vof)]}")
    for label, extra in (("VOF rescaling", []), ("--no-vof-rescale", ["--no-vof-rescale"])):
        out = os.path.join(work, label.strip("-").replace(" ", "_"))
        assert main(["perfusion", path, "--aif", "auto", "--vof-mask", vof_path, "--te", str(te), "--out", out,
                     "--no-progress", *extra]) == 0
        with open(os.path.join(out, "report.json")) as fh:
            rep = json.load(fh)
        cbf, _ = read_volume(os.path.join(out, "cbf.nii.gz"))
        cbv, _ = read_volume(os.path.join(out, "cbv.nii.gz"))
        tmax, _ = read_volume(os.path.join(out, "tmax.nii.gz"))
        brain, gm, wm = regions(cbf, cbv)
        aq, vq, par = rep["aif_quality"], rep["vof_quality"], rep["parameters"]
        if not extra:
            print(f"  automatic AIF: {par['aif_voxels']} voxels, peak {aq['peak']:.1f} 1/s, FWHM {aq['fwhm_s']:.1f} s, "
                  f"TTP {aq['time_to_peak_s']:.0f} s; VOF peak {vq['peak']:.1f} 1/s at {vq['time_to_peak_s']:.0f} s "
                  f"({vq['time_to_peak_s'] - aq['time_to_peak_s']:.0f} s after the AIF); "
                  f"VOF/AIF area factor {par['vof_area_ratio']:.2f}")
        print(f"  {label:17s} GM/WM CBF {np.median(cbf[gm]):.1f} / {np.median(cbf[wm]):.1f} = "
              f"{np.median(cbf[gm]) / np.median(cbf[wm]):.2f}; GM/WM CBV {np.median(cbv[gm]):.1f} / "
              f"{np.median(cbv[wm]):.1f} = {np.median(cbv[gm]) / np.median(cbv[wm]):.2f}; median Tmax "
              f"{np.median(tmax[brain]):.1f} s; Tmax > 6 s {rep['volumes_ml']['tmax_gt_6s']:.1f} mL "
              f"(GM {gm.sum()}, WM {wm.sum()} voxels)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.data, "dsc", "moyamoya")):
        ap.error(f"no moyamoya data under {args.data}")
    for name in ("convexity", "cerebellum"):
        measure(name, args.data)


if __name__ == "__main__":
    main()
