"""Benchmark: whole-brain ST-Net and ST-Net-S inference on this machine, against oSVD of the same voxels.

- ST-Net (the paper's network, patch-wise 7×7×T patches): timed on a block of ``--voxels`` brain voxels and
  extrapolated linearly to 500 000 voxels (its cost is per voxel);
- ST-Net-S (the fast student): timed end to end through :func:`neurocontrast.perfusion.deep.stnet_maps` on a
  synthetic 4D series of ``--brain-voxels`` (default 500 000) brain voxels × 50 frames: preprocessing (baseline,
  concentration, AIF normalisation), the slab-wise network with its box-filter patch summaries, the maps;
- the baseline: oSVD deconvolution (:func:`neurocontrast.perfusion.deconvolution.deconvolve`) of the block.

Also prints the multiply-accumulates per voxel of each network from the layer shapes, and the load average.
Usage: python Testing/benchmarks/bench_stnet.py [--voxels 8000] [--brain-voxels 500000] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def macs_per_voxel(t: int = 50, width: int = 12, hidden: int = 32) -> dict:
    """Multiply-accumulates per voxel from the layer shapes of :class:`STNet` and :class:`STNetS`."""
    spatial = (49 * 8 * 9 + 25 * 16 * 8 * 9 + 9 * 32 * 16 * 9 + 64 * 32 * 9) * t
    temporal = (66 * 64 * 3 + 3 * 64 * 64 * 3 + 64 * 32 * 3 + 3 * 64 * 64 * 3 + 64 * 32 * 3 + 2 * 64 * 64 * 3) * t
    head = 64 * t * 256 + 256 * 3
    n1 = (t - 4) // 2 + 1
    n2 = (n1 - 1) // 2 + 1
    student = 5 * width * 4 * n1 + width * 2 * width * 3 * n2 + 2 * width * n2 * hidden + hidden * 3
    return {"stnet_spatial": spatial, "stnet_temporal": temporal, "stnet_head": head,
            "stnet_total": spatial + temporal + head, "stnet_s_total": student}


def _net(name: str, cls):
    from neurocontrast.perfusion.deep import load_network

    try:
        return load_network(name)[0], name
    except Exception:  # not registered (yet): random weights, same cost
        return cls().eval(), "random"


def _series(brain_voxels: int, t: int, rng):
    """A DSC-like series (T, Z, 128, 128) with about ``brain_voxels`` brain voxels and an AIF signal."""
    from neurocontrast.io import DSCSeries, Geometry

    side = 128
    yy, xx = np.mgrid[0:side, 0:side]
    brain2d = ((yy - side / 2) / (0.48 * side)) ** 2 + ((xx - side / 2) / (0.40 * side)) ** 2 <= 1
    nz = max(1, int(np.ceil(brain_voxels / brain2d.sum())))
    mask = np.repeat(brain2d[None], nz, 0)
    mask.flat[np.flatnonzero(mask)[brain_voxels:]] = False
    tt = np.arange(t) * 1.5
    x = np.clip(tt - 12, 0, None) / 4.5
    bolus = x ** 3 * np.exp(3 - 3 * x)
    signal = np.empty((t, nz, side, side), np.float32)
    for z in range(nz):
        signal[:, z] = 1000.0 * np.exp(-0.3 * bolus)[:, None, None] + rng.normal(0, 20, (t, side, side))
    aif = (1000.0 * np.exp(-3.0 * bolus)).astype(np.float32)
    geo = Geometry(size=(side, side, nz), spacing=(1.8, 1.8, 5.0), origin=(0, 0, 0),
                   direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    return DSCSeries(signal=signal, geometry=geo, tr_s=1.5, te_s=0.03, path=None), mask, aif


def main(argv=None):
    import torch
    from neurocontrast.networks.stnet import STNet, STNetS
    from neurocontrast.perfusion.deconvolution import deconvolve
    from neurocontrast.perfusion.deep import stnet_maps, stnet_predict

    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=8000, help="brain voxels of the ST-Net / oSVD block")
    ap.add_argument("--brain-voxels", type=int, default=500_000, help="brain voxels of the ST-Net-S series")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    teacher, tw = _net("stnet", STNet)
    student, sw = _net("stnet-s", STNetS)
    t = teacher.n_frames
    load0 = os.getloadavg()

    # ST-Net on a block, extrapolated
    dsc, mask, aif = _series(args.voxels, t, rng)
    tissue = (0.1 * rng.standard_normal((t,) + mask.shape)).astype(np.float32)
    s0 = np.ones(mask.shape, np.float32)
    aif_shape = np.abs(rng.standard_normal(t)).astype(np.float32)
    n_block = int(mask.sum())
    warm = np.zeros_like(mask)
    warm.flat[np.flatnonzero(mask)[:64]] = True
    for net in (teacher, student):  # first calls allocate; not timed
        stnet_predict(net, tissue, s0, aif_shape, warm)
    t0 = time.perf_counter()
    stnet_predict(teacher, tissue, s0, aif_shape, mask)
    stnet_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stnet_predict(student, tissue, s0, aif_shape, mask)
    student_block = time.perf_counter() - t0
    # oSVD of the same voxels (block-circulant, T = 50)
    tt = np.arange(t) * 1.5
    aif_c = 100 * (np.clip(tt - 10, 0, None) / 4.5) ** 3 * np.exp(3 - np.clip(tt - 10, 0, None) / 1.5)
    t0 = time.perf_counter()
    deconvolve(np.abs(rng.standard_normal((t, n_block))).astype(np.float32), aif_c, 1.5, "osvd")
    osvd_s = time.perf_counter() - t0

    # ST-Net-S end to end on the whole-brain series
    dsc, mask, aif = _series(args.brain_voxels, t, rng)
    n_brain = int(mask.sum())
    t0 = time.perf_counter()
    stnet_maps(dsc, aif_signal=aif, brain_mask=mask, model=student)
    whole = time.perf_counter() - t0
    load1 = os.getloadavg()

    macs = macs_per_voxel(t, student.width, student.hidden)
    print(f"threads {args.threads}; weights stnet: {tw}, stnet-s: {sw}; T = {t}; load average {load0} -> {load1}")
    print(f"block of {n_block} voxels: ST-Net {stnet_s:.2f} s ({1e4 * stnet_s / n_block:.2f} s / 10 000 voxels, "
          f"500 000 voxels extrapolated {5e5 * stnet_s / n_block:.0f} s); ST-Net-S network only "
          f"{student_block:.3f} s; oSVD {osvd_s:.3f} s")
    print(f"ST-Net-S end to end (stnet_maps), {n_brain} brain voxels x {t} frames: {whole:.1f} s")
    print(f"ST-Net / oSVD {stnet_s / osvd_s:.0f}x; ST-Net / ST-Net-S (network, same block) "
          f"{stnet_s / student_block:.0f}x")
    print("MACs per voxel: " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in macs.items())
          + f"; ratio {macs['stnet_total'] / macs['stnet_s_total']:.0f}x")


if __name__ == "__main__":
    main()
