"""Training data for ST-Net and the Tmax net: random phantom slices generated on the fly, and user data.

Synthetic slices (:func:`random_slice`) use the signal model of :mod:`neurocontrast.perfusion.phantom`
(gamma-variate arterial input with recirculation, tissue ``c_t = F·(c_a ⊛ h ⊛ R)(t − delay)``,
``S = S0·exp(−TE·ΔR2*)``, Rician noise, partial-volume arterial voxels; Cao et al. eq. 1-8), with every
factor drawn at random per slice so that a network cannot memorise one phantom:

- anatomy: elliptical brain of random size and position, grey/white matter and CSF from thresholded smooth
  random fields, one arterial vessel (2-5 voxels, partial volume 0.4-0.9) at a random place;
- perfusion: grey/white CBF and CBV drawn per slice, ±20 % smooth variation; normal delays 0-2 s;
- 0-2 hypoperfused lesions (smooth blobs) with delays up to 2-16 s, CBF ×0.15-0.9, CBV ×0.5-1.1,
  exponential dispersion β 0-4 s;
- residue shape per slice: exponential, box (plug flow) or linear, all with ∫R = MTT;
- acquisition: TR 1.0-2.5 s, 60-110 s of frames (40-110 frames), TE 20-45 ms, SNR 8-100 (log-uniform), bolus
  arrival 6-30 s, arterial peak such that TE·peak ∈ [1.5, 7], optional non-steady-state first frame.

Ground truth per voxel: CBV, CBF, Tmax (the time of the maximum of ``F·(h ⊛ R)(t − delay)``), and the noise-free
ΔR2* curves. User data (:class:`UserSliceSource`) follow the folder layout documented in
``docs/models/stnet.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.maps import PerfusionConstants

log = logging.getLogger(__name__)

#: kH/ρ of the default physiological constants (0.705), from their one home.
KH_OVER_RHO = PerfusionConstants().kh_over_rho


@dataclasses.dataclass
class SliceSample:
    """One DSC slice with its targets.

    signal (T, Y, X) float32 raw signal; tr_s, te_s s; brain (Y, X) bool; aif_mask (Y, X) bool;
    truth: dict of (Y, X) float32 maps (``cbv`` mL/100 g, ``cbf`` mL/100 g/min, ``tmax`` s; any subset);
    lesion (Y, X) bool (hypoperfused voxels, for lesion:normal sampling);
    aif_delta_r2star (T,) arterial ΔR2* (1/s) for the physics loss (None: derived from the AIF voxels).
    """

    signal: np.ndarray
    tr_s: float
    te_s: float
    brain: np.ndarray
    aif_mask: np.ndarray
    truth: Dict[str, np.ndarray]
    lesion: np.ndarray
    aif_delta_r2star: Optional[np.ndarray] = None


def _smooth(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f / (f.std() or 1.0)


def _fft_conv(a: np.ndarray, b: np.ndarray, dt: float) -> np.ndarray:
    """Causal convolution along the last axis (same length), times dt."""
    n = a.shape[-1]
    m = 1 << int(np.ceil(np.log2(2 * n)))
    return np.fft.irfft(np.fft.rfft(a, m) * np.fft.rfft(b, m), m)[..., :n] * dt


#: The varied acquisition and bolus (``random_slice(varied=True)``): TR, frame count and baseline as real series
#: vary; bolus widths and noise from the real moyamoya slices (measured: arterial FWHM 5-6 frames of 2 s =
#: 10-12 s, temporal SNR of the brain's baseline 22-102 (10th-90th percentile), tissue peak drop 0.35-0.40);
#: recirculation up to 30 % of the first pass; T1 leakage in 30 % of the slices.
VARIED = {"tr_s": (1.0, 2.5), "n_frames": (40, 80), "baseline_frames": (5, 20), "bolus_beta_s": (0.8, 3.5),
          "recirculation": (0.0, 0.3), "leakage_probability": 0.3, "leakage_k2_per_s": (0.0, 0.02)}


def random_slice(rng: np.random.Generator, size: Tuple[int, int] = (48, 48), snr: Optional[float] = None,
                 tr_s: Optional[float] = None, n_frames: Optional[int] = None, oversample: int = 8,
                 varied: bool = False) -> SliceSample:
    """One random synthetic DSC slice with ground truth (see the module docstring for the distributions).

    rng : numpy Generator (the only source of randomness). size : (Y, X) ≥ 24. snr, tr_s, n_frames: fix
    these instead of drawing them. varied : the acquisition and bolus of :data:`VARIED` (as real series vary;
    the Tmax net's training distribution) instead of the default ones. Returns :class:`SliceSample`.
    Vectorised over voxels.
    """
    from neurocontrast.perfusion.phantom import gamma_variate

    ny, nx = size
    if ny < 24 or nx < 24:
        raise NeuroContrastError(f"random_slice size must be at least 24 x 24, got {size}")
    tr = float(tr_s) if tr_s else float(rng.uniform(*(VARIED["tr_s"] if varied else (1.0, 2.5))))
    if n_frames:
        t_frames = int(n_frames)
    elif varied:
        t_frames = int(rng.integers(VARIED["n_frames"][0], VARIED["n_frames"][1] + 1))
    else:
        t_frames = int(np.clip(round(rng.uniform(60.0, 110.0) / tr), 40, 110))
    te = float(rng.uniform(0.02, 0.045))
    snr_v = float(snr) if snr else float(np.exp(rng.uniform(np.log(8.0), np.log(100.0))))
    duration = t_frames * tr
    if varied:  # baseline of 5-20 frames, with at least 30 s of the series left after the arrival
        lo, hi = VARIED["baseline_frames"]
        arrival = tr * float(rng.uniform(lo, max(lo + 0.5, min(hi, (duration - 30.0) / tr))))
    else:
        arrival = float(rng.uniform(max(6.0, 4 * tr), max(7.0, min(30.0, duration - 45.0))))

    # anatomy
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    cy, cx = ny / 2 + rng.uniform(-3, 3), nx / 2 + rng.uniform(-3, 3)
    ay, ax = ny / 2 * rng.uniform(0.75, 0.95), nx / 2 * rng.uniform(0.75, 0.95)
    r = np.sqrt(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2)
    head = r <= 1.0
    brain = r <= rng.uniform(0.82, 0.9)
    gm = brain & ((_smooth(rng, size, 2.0) > rng.uniform(-0.5, 0.5)) | (r > 0.75))
    csf = brain & (_smooth(rng, size, 2.5) > rng.uniform(1.4, 2.2))
    parenchyma = brain & ~csf
    wm = parenchyma & ~gm
    gm = gm & parenchyma

    cbf = np.zeros(size)
    cbv = np.zeros(size)
    s0 = np.where(head, 0.7, 0.0)
    gm_f, wm_f = rng.uniform(40, 85), rng.uniform(15, 35)
    gm_v, wm_v = rng.uniform(3.0, 6.0), rng.uniform(1.5, 3.2)
    cbf[gm], cbv[gm], s0[gm] = gm_f, gm_v, 1.0
    cbf[wm], cbv[wm], s0[wm] = wm_f, wm_v, rng.uniform(0.75, 0.9)
    s0[csf] = 1.6
    var = np.clip(1.0 + 0.2 * _smooth(rng, size, 2.0), 0.6, 1.4)
    cbf *= var
    cbv *= np.clip(var + 0.1 * _smooth(rng, size, 2.0), 0.5, 1.5)
    delay = rng.uniform(0.0, 1.0) + np.clip(0.5 + 0.5 * _smooth(rng, size, 3.0), 0.0, 1.0)
    beta = np.where(parenchyma, rng.uniform(0.0, 1.0) if rng.random() < 0.3 else 0.0, 0.0)

    lesion = np.zeros(size, bool)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        field = _smooth(rng, size, rng.uniform(3.0, 6.0))
        thr = rng.uniform(0.6, 1.4)
        blob = parenchyma & (field > thr)
        if not blob.any():
            continue
        depth = np.clip((field - thr) / (field[blob].max() - thr + 1e-6), 0, 1)  # 0 rim .. 1 core
        d_lo, d_hi = rng.uniform(1.5, 6.0), rng.uniform(6.0, 16.0)
        f_hi, f_lo = rng.uniform(0.6, 0.95), rng.uniform(0.15, 0.6)
        v_f = rng.uniform(0.5, 1.1)
        b_max = rng.uniform(0.0, 4.0) if rng.random() < 0.6 else 0.0
        d_blob = d_lo + (d_hi - d_lo) * depth
        delay = np.where(blob, np.maximum(delay, d_blob), delay)
        cbf = np.where(blob, cbf * (f_hi + (f_lo - f_hi) * depth), cbf)
        cbv = np.where(blob, cbv * (1.0 + (v_f - 1.0) * depth), cbv)
        beta = np.where(blob, np.maximum(beta, b_max * (0.5 + 0.5 * depth)), beta)
        lesion |= blob

    # arterial vessel (partial volume)
    cand = np.argwhere(parenchyma & (r < 0.7))
    ay0, ax0 = cand[rng.integers(len(cand))] if len(cand) else (ny // 2, nx // 2)
    pv = np.zeros(size)
    n_art = int(rng.integers(2, 6))
    pts = [(ay0, ax0)]
    while len(pts) < n_art:
        py, px = pts[rng.integers(len(pts))]
        dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][rng.integers(4)]
        p = (int(np.clip(py + dy, 0, ny - 1)), int(np.clip(px + dx, 0, nx - 1)))
        if p not in pts:
            pts.append(p)
    for p in pts:
        pv[p] = rng.uniform(0.4, 0.9)
    aif_mask = pv > 0

    # curves on a fine grid
    dt = tr / oversample
    k_fine = t_frames * oversample
    t = np.arange(k_fine) * dt
    alpha, bscale = rng.uniform(2.0, 4.5), rng.uniform(*(VARIED["bolus_beta_s"] if varied else (0.8, 2.0)))
    peak = rng.uniform(1.5, 7.0) / te
    recirc = rng.uniform(*(VARIED["recirculation"] if varied else (0.0, 0.2)))
    aif = peak * (gamma_variate(t, arrival, alpha, bscale)
                  + recirc * gamma_variate(t, arrival + rng.uniform(7.0, 12.0), 3.0, 3.0))
    perf = parenchyma & (cbf > 0)
    idx = np.flatnonzero(perf.ravel())
    f_v = cbf.ravel()[idx]
    mtt_v = 60.0 * cbv.ravel()[idx] / f_v
    d_v = delay.ravel()[idx]
    b_v = beta.ravel()[idx]
    shape = int(rng.choice(3, p=[0.6, 0.2, 0.2]))  # exponential, box, linear
    ts = t[None, :] - d_v[:, None]
    pos = ts >= 0
    m = mtt_v[:, None]
    if shape == 0:
        res = np.where(pos, np.exp(-np.clip(ts, 0, None) / m), 0.0)
    elif shape == 1:
        res = np.where(pos & (ts < m), 1.0, 0.0)
    else:
        res = np.where(pos, np.clip(1.0 - ts / (2.0 * m), 0.0, None), 0.0)
    disp = b_v > 0.05
    if disp.any():
        h = np.exp(-t[None, :] / b_v[disp, None]) / b_v[disp, None]
        res[disp] = _fft_conv(res[disp], h, dt)
    tmax_v = np.where(disp, t[np.argmax(res, axis=1)], d_v)
    kernel = (f_v / (6000.0 * KH_OVER_RHO))[:, None] * res
    tissue = _fft_conv(kernel, aif[None, :], dt)  # (N, K) ΔR2*
    frames = np.arange(t_frames) * oversample
    dr2 = np.zeros((t_frames, ny * nx))
    dr2[:, idx] = tissue[:, frames].T
    dr2 = dr2.reshape(t_frames, ny, nx)
    if varied and rng.random() < VARIED["leakage_probability"]:
        # T1 leakage (Boxerman et al. 2006): ΔR2*_obs = ΔR2* − K2·∫ΔR2* dt, K2 > 0 raises the tail above baseline
        k2 = rng.uniform(*VARIED["leakage_k2_per_s"]) * np.clip(1.0 + _smooth(rng, size, 4.0), 0.0, 2.0)
        dr2 = dr2 - k2[None] * np.cumsum(dr2, axis=0) * tr
    dr2 = pv[None] * aif[frames][:, None, None] + (1.0 - pv[None]) * dr2

    sig = 1000.0 * s0[None] * np.exp(-te * dr2)
    if rng.random() < 0.5:
        sig[0] *= 1.3
    sigma = 1000.0 / snr_v
    sig = np.sqrt((sig + rng.normal(0, sigma, sig.shape)) ** 2 + rng.normal(0, sigma, sig.shape) ** 2)
    sig *= rng.uniform(0.3, 3.0)  # arbitrary scanner scale

    truth_tmax = np.zeros(size)
    truth_tmax.ravel()[idx] = tmax_v
    truth = {"cbv": np.where(perf, cbv, 0.0).astype(np.float32), "cbf": np.where(perf, cbf, 0.0).astype(np.float32),
             "tmax": truth_tmax.astype(np.float32)}
    hp = perf & (truth_tmax > 6.0)
    return SliceSample(signal=sig.astype(np.float32), tr_s=tr, te_s=te, brain=parenchyma | aif_mask,
                       aif_mask=aif_mask, truth=truth, lesion=hp, aif_delta_r2star=aif[frames].astype(np.float32))


def synthetic_slices(seed: int, size: Tuple[int, int] = (48, 48), **kwargs) -> Iterator[SliceSample]:
    """Endless stream of :func:`random_slice` samples from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    while True:
        yield random_slice(rng, size, **kwargs)


def phantom_slices(phantom) -> List[SliceSample]:
    """The slices of a :class:`neurocontrast.perfusion.phantom.Phantom` (with its truth) as samples."""
    out = []
    for z in range(phantom.signal.shape[1]):
        brain = phantom.brain_mask[z]
        if not brain.any() or not phantom.aif_mask.any():
            continue
        truth = {k: phantom.truth[k][z] for k in ("cbv", "cbf", "tmax")}
        out.append(SliceSample(signal=phantom.signal[:, z], tr_s=phantom.tr_s, te_s=phantom.te_s, brain=brain,
                               aif_mask=phantom.aif_mask[z] if phantom.aif_mask[z].any() else phantom.aif_mask.any(0),
                               truth=truth, lesion=brain & (truth["tmax"] > 6.0),
                               aif_delta_r2star=phantom.truth["aif"]))
    return out


# ----------------------------------------------------------------------------------------------------
# user data
# ----------------------------------------------------------------------------------------------------
USER_LAYOUT = """\
<root>/<case>/dsc.nii.gz          4D DSC series (T frames); TR/TE from the header or dsc.json (BIDS
                                  RepetitionTime / EchoTime in s)
<root>/<case>/aif_mask.nii.gz     AIF voxels (ST-Net; the AIF signal is their mean raw signal)
<root>/<case>/brain_mask.nii.gz   brain voxels (optional: all voxels with signal otherwise)
<root>/<case>/cbv.nii.gz          reference CBV, mL/100 g     } from any software (RAPID, Olea, our oSVD);
<root>/<case>/cbf.nii.gz          reference CBF, mL/100 g/min } ST-Net needs all three,
<root>/<case>/tmax.nii.gz         reference Tmax, s           } the Tmax net only tmax
<root>/<case>/lesion.nii.gz       optional hypoperfusion mask for lesion:normal sampling (default Tmax > 6 s)
"""


class UserSliceSource:
    """Slices of user cases in the folder layout :data:`USER_LAYOUT`, with reference maps as targets.

    root : folder of case folders. targets : the reference maps required. Raises NeuroContrastError if no
    case has all required files or a case's maps do not match its DSC geometry.
    """

    def __init__(self, root: str, targets: Sequence[str] = ("cbv", "cbf", "tmax"), need_aif: bool = True):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise NeuroContrastError(f"training data folder {self.root} does not exist")
        self.targets = tuple(targets)
        required = ["dsc.nii.gz"] + [f"{t}.nii.gz" for t in self.targets] + (["aif_mask.nii.gz"] if need_aif else [])
        self.cases = sorted(os.path.join(self.root, c) for c in os.listdir(self.root)
                            if all(os.path.exists(os.path.join(self.root, c, f)) for f in required))
        if not self.cases:
            raise NeuroContrastError(f"no case folder in {self.root} has all of {required}; layout:\n{USER_LAYOUT}")

    def load_case(self, case: str) -> List[SliceSample]:
        """All slices of one case as :class:`SliceSample` (targets from the reference maps)."""
        from neurocontrast.io import read_dsc, read_mask, read_volume

        dsc = read_dsc(os.path.join(case, "dsc.nii.gz"))
        geo = dsc.geometry
        maps = {t: read_volume(os.path.join(case, f"{t}.nii.gz"), t)[0] for t in self.targets}
        for name, arr in maps.items():
            if arr.shape != dsc.signal.shape[1:]:
                raise NeuroContrastError(f"{case}: {name} shape {arr.shape} differs from the DSC {dsc.signal.shape[1:]}")
        aif_path = os.path.join(case, "aif_mask.nii.gz")
        aif = read_mask(aif_path, geo, "aif_mask") if os.path.exists(aif_path) else np.zeros(dsc.signal.shape[1:], bool)
        bpath = os.path.join(case, "brain_mask.nii.gz")
        brain = read_mask(bpath, geo, "brain_mask") if os.path.exists(bpath) else dsc.signal.mean(0) > 0.1 * np.percentile(dsc.signal.mean(0), 99)
        lpath = os.path.join(case, "lesion.nii.gz")
        lesion = read_mask(lpath, geo, "lesion") if os.path.exists(lpath) else (maps.get("tmax", np.zeros_like(brain, float)) > 6.0)
        out = []
        aif_any = aif.any(axis=0)
        for z in range(dsc.signal.shape[1]):
            if not brain[z].any():
                continue
            out.append(SliceSample(signal=dsc.signal[:, z], tr_s=dsc.tr_s, te_s=dsc.te_s or 0.03, brain=brain[z],
                                   aif_mask=aif[z] if aif[z].any() else aif_any,
                                   truth={k: v[z] for k, v in maps.items()}, lesion=lesion[z] & brain[z]))
        return out

    def stream(self, seed: int) -> Iterator[SliceSample]:
        """Endless shuffled stream of slices (cases reloaded per pass; each case read once per pass)."""
        rng = np.random.default_rng(seed)
        while True:
            for i in rng.permutation(len(self.cases)):
                slices = self.load_case(self.cases[i])
                for j in rng.permutation(len(slices)):
                    yield slices[j]


# ----------------------------------------------------------------------------------------------------
# network-specific sample builders
# ----------------------------------------------------------------------------------------------------
def aif_signal_of(sample: SliceSample) -> np.ndarray:
    """Mean raw signal of the sample's AIF voxels, (T,)."""
    if not sample.aif_mask.any():
        raise NeuroContrastError("slice has no AIF voxel")
    return sample.signal[:, sample.aif_mask].mean(axis=1)


def stnet_batch_from_slice(sample: SliceSample, n_frames: int, rng: np.random.Generator, max_voxels: int = 256,
                           lesion_ratio: float = 0.5, stride: int = 1,
                           target_scale=(4.0, 1.5, 4.0)) -> Optional[Dict[str, np.ndarray]]:
    """ST-Net training samples from one slice: patches, reference channels, scaled targets, physics target.

    Inputs are the calibrated curves of :func:`neurocontrast.perfusion.deep.stnet_inputs` with the AIF rescaled
    to the true arterial integral, as the pipeline's VOF rescaling does for a partial-volume AIF (a full-volume
    vein carries the arterial integral), so training and inference share units; user data (no arterial truth)
    keep the measured AIF.
    Voxel centres lie on a grid of step ``stride`` (random phase); lesion:normal voxels are drawn in the ratio
    ``lesion_ratio`` (0.5 = 1:2, Cao et al. 2.3) where the slice has lesion voxels. Returns dict with
    ``patches`` (N, 1, 7, 7, T), ``reference`` (N, 2, T), ``target`` (N, 3) scaled (see
    :data:`neurocontrast.networks.stnet.OUTPUTS`), ``physics_cbv`` (N,) the indicator-dilution CBV of the
    inputs (eq. 4, Σ_t tissue) / target_scale[0]; None if the slice has no usable voxel or baseline.
    """
    import torch
    from neurocontrast.networks.stnet import extract_patches
    from neurocontrast.perfusion.deep import stnet_inputs

    try:
        inp = stnet_inputs(sample.signal[:, None], sample.tr_s, aif_signal_of(sample), n_frames, sample.brain[None],
                           kh_over_rho=KH_OVER_RHO)
    except NeuroContrastError as exc:
        log.debug("skipping slice: %s", exc)
        return None
    if sample.aif_delta_r2star is not None:
        # the pipeline's VOF rescaling gives a partial-volume AIF the arterial integral: do the same here
        from neurocontrast.perfusion.deep import resample_time

        true = float(resample_time(sample.te_s * np.asarray(sample.aif_delta_r2star, np.float32), n_frames).sum())
        if true > 0:
            factor = np.float32(true / inp["aif_integral"])
            inp["tissue"] /= factor
            inp["cbv_physics"] /= factor
    tissue = inp["tissue"][:, 0]
    grid = np.zeros(sample.brain.shape, bool)
    oy, ox = rng.integers(stride), rng.integers(stride)
    grid[oy::stride, ox::stride] = True
    usable = sample.brain & ~sample.aif_mask & grid & np.all([np.isfinite(v) for v in sample.truth.values()], axis=0)
    les = np.argwhere(usable & sample.lesion)
    nor = np.argwhere(usable & ~sample.lesion)
    if len(les) + len(nor) == 0:
        return None
    n_les = min(len(les), int(round(max_voxels * lesion_ratio / (1.0 + lesion_ratio)))) if len(les) else 0
    n_nor = min(len(nor), max_voxels - n_les)
    pick = [les[rng.choice(len(les), n_les, replace=False)]] if n_les else []
    if n_nor:
        pick.append(nor[rng.choice(len(nor), n_nor, replace=False)])
    centres = np.concatenate(pick)
    dt = inp["dt"]
    s = np.asarray(target_scale, np.float64)
    cbv = sample.truth["cbv"][centres[:, 0], centres[:, 1]]
    cbf = sample.truth["cbf"][centres[:, 0], centres[:, 1]]
    tmax = sample.truth["tmax"][centres[:, 0], centres[:, 1]]
    target = np.stack([cbv / s[0], cbf * dt / 60.0 / s[1], tmax / dt / s[2]], axis=1).astype(np.float32)
    phys = inp["cbv_physics"][0][centres[:, 0], centres[:, 1]]
    sl = torch.from_numpy(np.ascontiguousarray(tissue))
    patches = extract_patches(sl, torch.from_numpy(centres.astype(np.int64))).numpy()
    ref = np.stack([np.broadcast_to(inp["aif"], (len(centres), n_frames)),
                    np.repeat(inp["s0_rel"][0][centres[:, 0], centres[:, 1]][:, None], n_frames, 1)], axis=1)
    return {"patches": patches, "reference": ref.astype(np.float32), "target": target,
            "physics_cbv": (np.nan_to_num(phys) / s[0]).astype(np.float32)}


def tmaxnet_sample_from_slice(sample: SliceSample, n_frames: int, rng: Optional[np.random.Generator] = None,
                              shift_range: Tuple[int, int] = (-4, 20), target_scale: float = 4.0,
                              patch: int = 5) -> Optional[Dict[str, np.ndarray]]:
    """Tmax-net training sample from one slice, with the temporal-shift augmentation of Hess et al. 2.1.

    The preprocessed series (n_frames) and arterial patch are shifted together by a random number of frames in
    ``shift_range`` (negative: frames removed at the start; positive: added; padding by reflection), limited so
    that the arterial bolus peak stays inside the first 60 % of the window; Tmax is unchanged by the shift.
    ``rng`` None: no shift (validation). Returns dict ``voxels`` (T, Y, X), ``arterial`` (T, P, P), ``target``
    (Y, X) Tmax in frames / target_scale, ``mask`` (Y, X) bool, ``dt`` s; None if preprocessing fails.
    """
    from neurocontrast.perfusion.deep import tmaxnet_inputs

    try:
        inp = tmaxnet_inputs(sample.signal[:, None], sample.tr_s, n_frames, sample.brain[None], patch=patch)
    except NeuroContrastError as exc:
        log.debug("skipping slice: %s", exc)
        return None
    vox, art = inp["voxels"][:, 0], inp["arterial"]
    if rng is not None:
        peak = int(np.argmax(art[:, patch // 2, patch // 2]))
        hi = min(shift_range[1], max(0, int(0.6 * n_frames) - peak))
        lo = max(shift_range[0], -max(0, int(inp["baseline"][1] * (n_frames - 1) / (sample.signal.shape[0] - 1)) - 1))
        shift = int(rng.integers(lo, hi + 1)) if hi >= lo else 0
        if shift:
            vox, art = _shift(vox, shift), _shift(art, shift)
    target = (sample.truth["tmax"] / inp["dt"] / target_scale).astype(np.float32)
    mask = sample.brain & np.isfinite(target)
    return {"voxels": vox.astype(np.float32), "arterial": art.astype(np.float32),
            "target": np.nan_to_num(target), "mask": mask, "dt": np.float32(inp["dt"])}


def crop_sample(sample: Dict[str, np.ndarray], lesion: np.ndarray, size: int, rng: np.random.Generator,
                lesion_fraction: float = 0.5) -> Dict[str, np.ndarray]:
    """A size × size window of a Tmax-net sample (voxels, target, mask; the arterial patch is kept). With
    probability ``lesion_fraction`` (and if ``lesion`` has voxels) the window is centred on a random lesion
    voxel, otherwise on a random brain voxel; windows are clipped to the slice."""
    ny, nx = sample["target"].shape
    size = min(size, ny, nx)
    pool = np.argwhere(lesion) if lesion.any() and rng.random() < lesion_fraction else np.argwhere(sample["mask"])
    cy, cx = pool[rng.integers(len(pool))] if len(pool) else (ny // 2, nx // 2)
    y0 = int(np.clip(cy - size // 2, 0, ny - size))
    x0 = int(np.clip(cx - size // 2, 0, nx - size))
    out = dict(sample)
    out["voxels"] = sample["voxels"][:, y0:y0 + size, x0:x0 + size]
    out["target"] = sample["target"][y0:y0 + size, x0:x0 + size]
    out["mask"] = sample["mask"][y0:y0 + size, x0:x0 + size]
    return out


def _shift(x: np.ndarray, shift: int) -> np.ndarray:
    """Shift axis 0 by ``shift`` frames keeping the length; the gap is filled by reflection."""
    n = x.shape[0]
    if shift > 0:
        pad = np.concatenate([x[1:shift + 1][::-1], x], axis=0)
        return pad[:n]
    pad = np.concatenate([x, x[-1 + shift:-1][::-1]], axis=0)
    return pad[-shift:-shift + n]
