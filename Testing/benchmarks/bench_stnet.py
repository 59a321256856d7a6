"""Benchmark: ST-Net whole-brain inference time on this machine (issue 5).

Measures ST-Net inference (fully convolutional path and the paper's patch-wise path, same weights, same
voxels) and oSVD deconvolution of the same voxels as the baseline, on a block of slices with T = 50 frames,
and extrapolates linearly in the number of brain voxels to a whole brain of 500 000 voxels (inference cost is
per voxel: the spatial encoder per slice row band, the temporal network per voxel). Also prints the
multiply-accumulate count per voxel of each part, from the layer shapes.

Usage: python Testing/benchmarks/bench_stnet.py [--voxels 8000] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def macs_per_voxel(t: int = 50) -> dict:
    """Multiply-accumulates per voxel (layer shapes of :class:`STNet`)."""
    patch_spatial = (49 * 8 * 9 + 25 * 16 * 8 * 9 + 9 * 32 * 16 * 9 + 64 * 32 * 9) * t
    fc_spatial = (9 * 8 * 9 + (9 + 32) * 16 * 8 + (9 + 32) * 32 * 16 + 9 * 64 * 32) * t
    temporal = (66 * 64 * 3 + 3 * 64 * 64 * 3 + 64 * 32 * 3 + 3 * 64 * 64 * 3 + 64 * 32 * 3 + 2 * 64 * 64 * 3) * t
    head = 64 * t * 256 + 256 * 3
    return {"spatial_patchwise": patch_spatial, "spatial_fc": fc_spatial, "temporal": temporal, "head_fc": head}


def main(argv=None):
    import torch
    from neurocontrast.networks.stnet import STNet
    from neurocontrast.perfusion.deep import stnet_predict

    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=8000, help="brain voxels in the timed block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="stnet", help="registered model (random weights if absent)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from neurocontrast.perfusion.deep import load_network
        net = load_network(args.model)[0]
        weights = args.model
    except Exception:
        net = STNet().eval()
        weights = "random"
    rng = np.random.default_rng(0)
    t = net.n_frames
    side = 128
    nz = max(1, int(np.ceil(args.voxels / (0.6 * side * side))))
    yy, xx = np.mgrid[0:side, 0:side]
    brain2d = ((yy - side / 2) / (0.48 * side)) ** 2 + ((xx - side / 2) / (0.40 * side)) ** 2 <= 1
    mask = np.repeat(brain2d[None], nz, 0)
    flat = np.flatnonzero(mask)
    mask.flat[flat[args.voxels:]] = False
    n_vox = int(mask.sum())
    drop = (0.1 * rng.standard_normal((t, nz, side, side))).astype(np.float32)
    s0 = np.ones((nz, side, side), np.float32)
    aif = np.abs(rng.standard_normal(t)).astype(np.float32)

    import os
    load0 = os.getloadavg()
    res = {}
    for mode in ("patch", "fc", "patch", "fc"):  # interleaved, best of two (the machine is shared)
        t0 = time.perf_counter()
        stnet_predict(net, drop, s0, aif, mask, mode=mode)
        res[mode] = min(res.get(mode, np.inf), time.perf_counter() - t0)

    # the spatial encoder alone (what the fully convolutional path changes), one 16-row band of the block
    from neurocontrast.networks.stnet import extract_patches
    band = mask[0, 40:56]
    cols = np.flatnonzero(band.any(0))
    sl = torch.from_numpy(drop[:, 0])
    padded = torch.nn.functional.pad(sl, (3, 3, 3, 3)).permute(1, 2, 0)
    enc = {}
    with torch.no_grad():
        for _ in range(2):
            t0 = time.perf_counter()
            net.encode_slice(padded[40:62, cols[0]:cols[-1] + 7].contiguous())
            enc["fc"] = min(enc.get("fc", np.inf), time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = torch.from_numpy(np.argwhere(band) + np.array([40, 0]))
            net.encode_patches(extract_patches(sl[:, :, :], c))
            enc["patch"] = min(enc.get("patch", np.inf), time.perf_counter() - t0)
    n_band = int(band.sum())

    # baseline: oSVD deconvolution of the same number of voxels (block-circulant, T = 50)
    from neurocontrast.perfusion.deconvolution import deconvolve
    tt = np.arange(t) * 1.5
    aif_c = 100 * (np.clip(tt - 10, 0, None) / 4.5) ** 3 * np.exp(3 - np.clip(tt - 10, 0, None) / 1.5)
    tissue = np.abs(rng.standard_normal((t, n_vox))).astype(np.float32)
    for _ in range(2):
        t0 = time.perf_counter()
        deconvolve(tissue, aif_c, 1.5, "osvd")
        res["osvd"] = min(res.get("osvd", np.inf), time.perf_counter() - t0)
    import os
    print(f"load average before/after: {load0} / {os.getloadavg()}")

    macs = macs_per_voxel(t)
    per = {k: v / n_vox for k, v in res.items()}
    print(f"weights: {weights}; threads {args.threads}; block {nz}x{side}x{side}, {n_vox} brain voxels, T = {t}")
    for k in ("fc", "patch", "osvd"):
        print(f"{k:6s}: {res[k]:8.2f} s  = {1e4 * per[k]:7.3f} s / 10 000 voxels  -> 500 000 voxels: "
              f"{5e5 * per[k]:8.1f} s (extrapolated)")
    print(f"fc speed-up over patch-wise: {res['patch'] / res['fc']:.2f}x; fc / oSVD: {res['fc'] / res['osvd']:.1f}x")
    print(f"spatial encoder only, {n_band} voxels of one 16-row band: fc {enc['fc']:.3f} s, patch-wise "
          f"{enc['patch']:.3f} s ({enc['patch'] / enc['fc']:.2f}x)")
    total_fc = macs["spatial_fc"] + macs["temporal"] + macs["head_fc"]
    total_patch = macs["spatial_patchwise"] + macs["temporal"] + macs["head_fc"]
    print("MACs per voxel: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in macs.items())
          + f"; total fc {total_fc / 1e6:.2f} M, patch-wise {total_patch / 1e6:.2f} M")
    print(f"achieved: fc {total_fc * n_vox / res['fc'] / 1e9:.1f} GMAC/s, patch {total_patch * n_vox / res['patch'] / 1e9:.1f} GMAC/s")


if __name__ == "__main__":
    main()
