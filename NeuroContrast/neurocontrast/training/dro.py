"""An anatomical digital reference object (DRO) for validating perfusion methods: real ICBM anatomy, known truth.

Anatomy: the ICBM 2009a nonlinear symmetric grey- and white-matter probability maps that ship inside the
nilearn wheel (no download), resampled by area averaging to a DSC-like grid (``spacing_mm`` in-plane, 5 mm
slices) over ``n_slices`` axial slices through the basal ganglia and the middle-cerebral-artery territory.
Per voxel, with grey- and white-matter fractions g and w (brain = g + w ≥ 0.5):

- CBF = 70·g + 20·w mL/100 g/min and CBV = 4.5·g + 2·w mL/100 g (pure GM/WM CBF 3.5; ~2.7 in the voxels of
  fraction ≥ 0.8 at 2.5 mm, :func:`gm_wm_masks`), ±10 % smooth variation;
  exponential residue, MTT = 60·CBV/CBF; normal delays 0.3–1.2 s;
- a hypoperfused territory in the left hemisphere (LPS +x) from a smooth ellipsoid: depth 0 at its rim to 1 at
  its centre, delay 2 s + 9 s·depth (a graded penumbra with true Tmax 2–11 s), CBF × (1 − 0.7·depth),
  CBV × (1 − 0.3·depth), dispersion β = 1.5 s·depth;
- arteries: 4 voxels near each middle cerebral artery with partial volume 0.5–0.8 (the AIF mask), a sinus of
  4 full-volume voxels at the posterior vertex (the VOF mask: the arterial curve delayed 6 s and dispersed,
  area preserved), so VOF rescaling restores the arterial integral as in real data;
- signal S = S0·exp(−TE·ΔR2*) with S0 from the tissue (GM 1000, WM 850, CSF 1400), one brighter
  non-steady-state frame, Rician noise σ = 1000/SNR.

The model (Cao et al. eq. 1-8) is the one of :mod:`neurocontrast.perfusion.phantom`; what differs is the
anatomy (real cortex, partial-volume GM/WM voxels, the true shape of the ventricles and sulci) and the graded
territory, so a method tuned on the geometric phantom meets a new layout here.
"""

from __future__ import annotations

import functools
from typing import Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.training.datasets import _fft_conv, _smooth  # the same random fields and convolution

GM_FILE = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


@functools.lru_cache(maxsize=4)
def _atlas_fractions(spacing_mm: float, slice_mm: float, n_slices: int, z_centre_mm: float):
    """GM and WM fractions (Z, Y, X) on the DSC-like grid, its origin (LPS, mm) and spacing."""
    import os

    import SimpleITK as sitk

    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a core dependency
        raise NeuroContrastError("the anatomical DRO needs the 'nilearn' package (its ICBM maps)") from exc
    folder = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    images = []
    for name in (GM_FILE, WM_FILE):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise NeuroContrastError(f"the ICBM map {path} is missing from the nilearn installation")
        img = sitk.ReadImage(path, sitk.sitkFloat32)  # stored as uint8 probabilities 0-255
        peak = float(sitk.GetArrayViewFromImage(img).max()) or 1.0
        images.append(img / peak)
    ref = images[0]
    size_mm = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
    origin = np.array(ref.GetOrigin())
    # physical centre of the atlas in x/y; z grid centred on z_centre_mm (MNI/LPS convention of the file)
    out_spacing = (spacing_mm, spacing_mm, slice_mm)
    nx = int(size_mm[0] // spacing_mm)
    ny = int(size_mm[1] // spacing_mm)
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    start = origin.copy()
    start[2] = z_centre_mm - slice_mm * (n_slices - 1) / 2.0
    out = []
    for img in images:
        # area averaging: smooth to the target resolution, then sample (linear)
        sigma = [max(0.0, (o / s) / 2.355) * s for o, s in zip(out_spacing, img.GetSpacing())]
        smooth = sitk.SmoothingRecursiveGaussian(img, sigma)
        res = sitk.Resample(smooth, [nx, ny, n_slices], sitk.Transform(), sitk.sitkLinear, tuple(start),
                            out_spacing, tuple(direction.ravel()), 0.0, sitk.sitkFloat32)
        out.append(np.clip(sitk.GetArrayFromImage(res), 0.0, 1.0))
    for a in out:
        a.setflags(write=False)
    return out[0], out[1], tuple(float(v) for v in start), out_spacing, tuple(float(v) for v in direction.ravel())


def anatomical_dro(snr: float = 40.0, seed: int = 0, *, tr_s: float = 1.5, n_frames: int = 60, te_s: float = 0.03,
                   spacing_mm: float = 2.5, n_slices: int = 6, z_centre_mm: float = 12.0, arrival_s: float = 10.0,
                   arterial_peak: float = 160.0, oversample: int = 4):
    """The anatomical DRO (see the module docstring) as a :class:`neurocontrast.perfusion.phantom.Phantom`.

    snr : baseline GM signal / Rician σ (> 0; ``np.inf`` noise-free). seed : noise and variation fields.
    tr_s s, n_frames ≥ 30, te_s s, spacing_mm in-plane mm (slices 5 mm), n_slices axial slices centred on
    ``z_centre_mm`` (atlas z, mm), arrival_s arterial bolus arrival s, arterial_peak ΔR2* 1/s.
    Returns a Phantom whose truth has ``cbf``, ``cbv``, ``mtt``, ``tmax``, ``delay_s``, ``territory`` (depth
    > 0), ``gm``, ``wm`` fractions and the curves ``aif``/``vof``. Raises NeuroContrastError on bad arguments
    or a missing atlas.
    """
    from scipy import ndimage

    from neurocontrast.io import Geometry
    from neurocontrast.perfusion.maps import PerfusionConstants
    from neurocontrast.perfusion.phantom import Phantom, arterial_curve

    if not snr > 0 or tr_s <= 0 or n_frames < 30 or te_s <= 0 or n_slices < 1:
        raise NeuroContrastError(f"anatomical_dro: invalid snr {snr}, tr_s {tr_s}, n_frames {n_frames}, "
                                 f"te_s {te_s} or n_slices {n_slices}")
    rng = np.random.default_rng(seed)
    gm, wm, origin, spacing, direction = _atlas_fractions(spacing_mm, 5.0, n_slices, z_centre_mm)
    nz, ny, nx = gm.shape
    brain = (gm + wm) >= 0.5
    head = ndimage.binary_dilation((gm + wm) > 0.05, iterations=2)
    kh = PerfusionConstants().kh_over_rho

    var = np.clip(1.0 + 0.1 * _smooth(rng, gm.shape, 2.0), 0.7, 1.3)
    cbf = (70.0 * gm + 20.0 * wm) * var
    cbv = (4.5 * gm + 2.0 * wm) * var
    delay = 0.3 + 0.9 * np.clip(0.5 + 0.5 * _smooth(rng, gm.shape, 3.0), 0, 1)
    # hypoperfused territory: smooth ellipsoid in the left hemisphere (+x in LPS is the patient's left)
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    cols = np.flatnonzero(brain.any(axis=(0, 1)))
    rows = np.flatnonzero(brain.any(axis=(0, 2)))
    x_mid = 0.5 * (cols[0] + cols[-1])
    x_c = x_mid + 0.55 * (cols[-1] - x_mid)
    y_c = 0.5 * (rows[0] + rows[-1])
    r = np.sqrt(((xx - x_c) / (0.33 * (cols[-1] - cols[0]))) ** 2 + ((yy - y_c) / (0.28 * (rows[-1] - rows[0]))) ** 2
                + ((zz - (nz - 1) / 2.0) / max(1.0, 0.8 * nz)) ** 2)
    depth = np.where(brain & (xx > x_mid), np.clip(1.0 - r, 0.0, 1.0), 0.0)
    depth = np.clip(depth / max(depth.max(), 1e-6), 0.0, 1.0)
    terr = depth > 0
    delay = np.where(terr, 2.0 + 9.0 * depth, delay)
    cbf = np.where(terr, cbf * (1.0 - 0.7 * depth), cbf)
    cbv = np.where(terr, cbv * (1.0 - 0.3 * depth), cbv)
    beta = np.where(terr, 1.5 * depth, 0.0)
    cbf, cbv = np.where(brain, cbf, 0.0), np.where(brain, cbv, 0.0)

    # vessels
    zc = nz // 2
    aif_mask = np.zeros(gm.shape, bool)
    pv = np.zeros(gm.shape)
    for side in (-1, 1):
        x_art = int(round(x_mid + side * 0.22 * (cols[-1] - cols[0])))
        y_art = int(round(y_c - 0.05 * (rows[-1] - rows[0])))
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            aif_mask[zc, y_art + dy, x_art + dx] = True
            pv[zc, y_art + dy, x_art + dx] = rng.uniform(0.5, 0.8)
    vof_mask = np.zeros(gm.shape, bool)
    y_v = int(rows[-1]) + 1 if rows[-1] + 2 < ny else int(rows[-1])
    x_v = int(round(x_mid))
    vof_mask[zc, y_v:y_v + 2, x_v:x_v + 2] = True
    pv[vof_mask] = 1.0

    # curves on a fine grid
    dt = tr_s / oversample
    t = np.arange(n_frames * oversample) * dt
    aif = arterial_curve(t, arrival_s, arterial_peak, 0.12)
    vof = _exp_conv(np.interp(t - 6.0, t, aif, left=0.0), np.array([3.0]), dt)[0]
    idx = np.flatnonzero(brain.ravel() & (cbf.ravel() > 0))
    f_v, v_v = cbf.ravel()[idx], cbv.ravel()[idx]
    mtt = 60.0 * v_v / f_v
    d_v, b_v = delay.ravel()[idx], beta.ravel()[idx]
    ts = t[None, :] - d_v[:, None]
    res = np.where(ts >= 0, np.exp(-np.clip(ts, 0, None) / mtt[:, None]), 0.0)
    disp = b_v > 0.05
    if disp.any():
        res[disp] = _exp_conv(res[disp], b_v[disp], dt)
    tmax_v = np.where(disp, t[np.argmax(res, axis=1)], d_v)
    kernel = (f_v / (6000.0 * kh))[:, None] * res
    tissue = _fft_conv(kernel, aif[None], dt)
    frames = np.arange(n_frames) * oversample
    dr2 = np.zeros((n_frames, nz * ny * nx), np.float64)
    dr2[:, idx] = tissue[:, frames].T
    dr2 = dr2.reshape(n_frames, nz, ny, nx)
    vessel = aif_mask | vof_mask
    blood = np.zeros_like(dr2)
    blood[:, aif_mask] = aif[frames][:, None]
    blood[:, vof_mask] = vof[frames][:, None]
    dr2 = np.where(vessel[None], pv[None] * blood + (1.0 - pv[None]) * dr2, dr2)

    s0 = np.where(head, 1400.0, 0.0)
    s0 = np.where(gm + wm > 0.05, 1400.0 * (1 - gm - wm) + 1000.0 * gm + 850.0 * wm, s0)
    s0[vessel] = 1000.0
    sig = s0[None] * np.exp(-te_s * dr2)
    sig[0] *= 1.3
    if np.isfinite(snr):
        sigma = 1000.0 / snr
        sig = np.sqrt((sig + rng.normal(0, sigma, sig.shape)) ** 2 + rng.normal(0, sigma, sig.shape) ** 2)
    truth_tmax = np.zeros(gm.size)
    truth_tmax[idx] = tmax_v
    truth = {"cbf": cbf.astype(np.float32), "cbv": cbv.astype(np.float32),
             "mtt": np.where(cbf > 0, 60.0 * cbv / np.maximum(cbf, 1e-6), 0.0).astype(np.float32),
             "tmax": truth_tmax.reshape(gm.shape).astype(np.float32),
             "delay_s": np.where(brain, delay, 0.0).astype(np.float32), "territory": depth.astype(np.float32),
             "gm": gm.astype(np.float32), "wm": wm.astype(np.float32),
             "aif": aif[frames].astype(np.float32), "vof": vof[frames].astype(np.float32)}
    geo = Geometry(size=(nx, ny, nz), spacing=spacing, origin=origin, direction=direction)
    labels = np.where(brain, np.where(gm >= wm, 1, 2), 0).astype(np.uint8)
    return Phantom(signal=sig.astype(np.float32), geometry=geo, tr_s=float(tr_s), te_s=float(te_s),
                   aif_mask=aif_mask, vof_mask=vof_mask, brain_mask=brain | aif_mask, labels=labels, truth=truth,
                   params={"generator": "anatomical_dro", "snr": snr, "seed": seed, "tr_s": tr_s,
                           "n_frames": n_frames, "te_s": te_s, "spacing_mm": spacing_mm, "n_slices": n_slices,
                           "arrival_s": arrival_s, "arterial_peak": arterial_peak})


def gm_wm_masks(dro, threshold: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    """(GM, WM) masks of a DRO: fraction ≥ ``threshold`` outside the hypoperfused territory."""
    normal = dro.brain_mask & (dro.truth["territory"] == 0) & ~dro.aif_mask
    return normal & (dro.truth["gm"] >= threshold), normal & (dro.truth["wm"] >= threshold)




def _exp_conv(x: np.ndarray, beta: np.ndarray, dt: float) -> np.ndarray:
    """Convolution of each row of x with exp(−t/β)/β (unit area)."""
    t = np.arange(x.shape[-1]) * dt
    h = np.exp(-t[None, :] / beta[:, None]) / beta[:, None]
    return _fft_conv(np.atleast_2d(x), h, dt)
