"""A digital DSC-MRI brain phantom with known perfusion, used as ground truth and as the embedded sample.

The phantom is built forward from the indicator-dilution model that the pipeline inverts
(Cao et al., "Quantitative perfusion maps using a novelty spatiotemporal convolutional neural network",
eq. 1-8; Østergaard et al. 1996):

- **Anatomy** (``labels``): an ellipsoidal head with scalp, a CSF rim, a cortical grey-matter ribbon, deep
  grey-matter nuclei, white matter, two lateral ventricles, two middle-cerebral arteries (the AIF voxels)
  and the superior sagittal sinus (the VOF voxels). Vessel voxels carry a partial-volume fraction computed
  from the vessel's circular cross-section supersampled 5x5 per voxel.
- **Arterial input** ``c_a(t)`` (ΔR2* of whole arterial blood, 1/s): a gamma variate (Thompson et al. 1964;
  Rempp et al. 1994) plus a smaller, broader recirculation gamma variate.
- **Tissue** ``c_t(t) = F · (c_a ⊛ h ⊛ R)(t − delay)`` with the exponential residue ``R(t) = exp(−t/MTT)``
  and an optional exponential dispersion kernel ``h(t) = exp(−t/β)/β`` (Calamante et al. 2000), where
  ``F = CBF / (6000 · kH/ρ)`` 1/s so that the pipeline's eq. 4-5 (CBF = 6000·kH/ρ·max k,
  CBV = 100·kH/ρ·∫c_t/∫c_a) give back the truth exactly. ``kH/ρ`` comes from
  :class:`neurocontrast.perfusion.maps.PerfusionConstants`.
- **Veins** (VOF): the arterial curve delayed and dispersed with its area preserved (mass conservation),
  which is what the VOF rescaling of eq. 8 relies on.
- **Partial volume**: a vessel voxel's ΔR2* is ``pv · c_blood + (1 − pv) · c_tissue`` (the linear model
  that VOF rescaling corrects); AIF voxels have pv ≈ 0.4-0.8, the sinus is wide enough for pv ≈ 1.
- **Signal** (eq. 1 inverted): ``S = S0 · exp(−TE · ΔR2*)``, with an optional brighter non-steady-state
  first frame, then Rician noise ``|S + n1 + i n2|``, ``n ~ N(0, σ²)``, ``σ = S0_GM / SNR``.
- **Hypoperfused territory**: one MCA-like wedge in the left hemisphere (LPS +x) with three zones
  (``truth["territory"]``): 1 a graded rim whose delay rises from 2 s at the wedge's edge to 8 s where it
  meets zone 2 (CBF ×0.8 → ×0.52), so that true Tmax crosses 4 and 6 s inside the phantom and the Dice of
  Tmax > 6 s measures timing; 2 penumbra (delay 8.5 s, CBF ×0.45, CBV ×0.9); 3 core (delay 12 s, CBF ×0.25,
  CBV ×0.6); normal tissue has delays 0.5-1.5 s.

Ground truth: ``truth["tmax"]`` is the time of the maximum of the flow-scaled residue ``F·(h ⊛ R)(t − delay)``
(= delay without dispersion; delay + β·MTT/(MTT − β)·ln(MTT/β) with it), ``truth["ttp"]`` the time of the
maximum of the noise-free tissue ΔR2* curve on a 10x finer time grid (s from the first frame),
``truth["mtt"] = 60·CBV/CBF`` (eq. 6). All truth maps are 0 outside the brain mask.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry, write_volume

#: Label values of :attr:`Phantom.labels`.
LABELS = {"background": 0, "scalp": 1, "csf": 2, "grey_matter": 3, "white_matter": 4, "artery": 5, "sinus": 6}

#: Default tissue parameters: CBF mL/100 g/min, CBV mL/100 g, relative S0 (Knutsson et al. 2010 ranges).
TISSUE = {"grey_matter": (60.0, 4.0, 1.00), "white_matter": (22.0, 2.2, 0.85)}

#: Hypoperfused zones: (delay s, CBF factor, CBV factor) for territory values 1, 2, 3. Zone 1 is the graded
#: rim: its delay rises from ``PENUMBRA_GRADE_S[0]`` at the wedge's edge to ``PENUMBRA_GRADE_S[1]`` where it
#: meets zone 2, and its CBF factor from 0.8 to 0.8·0.65 (the value given here is the outer edge's).
TERRITORY_ZONES = {1: (2.0, 0.8, 1.0), 2: (8.5, 0.45, 0.9), 3: (12.0, 0.25, 0.6)}
#: True Tmax (s) at the outer and inner edge of the graded rim (zone 1) around the territory.
PENUMBRA_GRADE_S = (2.0, 8.0)


@dataclasses.dataclass
class Phantom:
    """A generated DSC phantom.

    Attributes
    ----------
    signal : (T, Z, Y, X) float32 MR signal (arbitrary units, S0 of grey matter = 1000).
    geometry : 3D :class:`~neurocontrast.io.Geometry` of one frame.
    tr_s, te_s : frame interval and echo time, s.
    aif_mask, vof_mask, brain_mask : (Z, Y, X) bool. The AIF mask holds artery voxels with pv ≥ 0.4, the VOF
        mask sinus voxels with pv ≥ 0.9; the brain mask is grey + white matter + arteries (no CSF, no sinus).
    labels : (Z, Y, X) uint8, see :data:`LABELS`.
    truth : dict of (Z, Y, X) float32 maps ``cbf`` (mL/100 g/min), ``cbv`` (mL/100 g), ``mtt``, ``tmax``,
        ``ttp``, ``delay_s`` (s), ``territory`` (0 normal, 1 oligaemia, 2 penumbra, 3 core), ``pv`` (vessel
        partial-volume fraction) and the (T,) curves ``aif`` (ΔR2* of arterial blood, 1/s) and ``vof``.
    params : the generation parameters (written to the sidecar JSON).
    """

    signal: np.ndarray
    geometry: Geometry
    tr_s: float
    te_s: float
    aif_mask: np.ndarray
    vof_mask: np.ndarray
    brain_mask: np.ndarray
    labels: np.ndarray
    truth: Dict[str, np.ndarray]
    params: Dict[str, object]

    @property
    def n_frames(self) -> int:
        """Number of time frames T."""
        return int(self.signal.shape[0])

    @property
    def times_s(self) -> np.ndarray:
        """(T,) float64 acquisition times of the frames, s (frame 0 at 0 s)."""
        return np.arange(self.n_frames, dtype=np.float64) * self.tr_s

    def hypoperfused_truth(self, threshold_s: float = 6.0) -> np.ndarray:
        """(Z, Y, X) bool: brain voxels whose true Tmax exceeds ``threshold_s`` seconds."""
        return self.brain_mask & (self.truth["tmax"] > threshold_s)

    def to_dsc(self):
        """The phantom as a :class:`neurocontrast.io.DSCSeries` (path None)."""
        from neurocontrast.io import DSCSeries

        return DSCSeries(signal=self.signal, geometry=self.geometry, tr_s=float(self.tr_s),
                         te_s=float(self.te_s), path=None)


def gamma_variate(t: np.ndarray, t0: float, alpha: float, beta: float) -> np.ndarray:
    """Gamma-variate bolus ``((t−t0)/(αβ))^α · exp(α − (t−t0)/β)`` (peak 1 at t0 + αβ), 0 before t0.

    t : any shape, s. t0 s, alpha (shape, dimensionless) > 0, beta s > 0. Returns float64 of t's shape.
    Thompson et al., Circ Res 1964; Rempp et al., Radiology 1994.
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.clip((t - t0) / (alpha * beta), 0.0, None)
    with np.errstate(divide="ignore"):
        out = np.exp(alpha * np.log(np.where(x > 0, x, 1.0)) + alpha * (1.0 - x))
    return np.where(x > 0, out, 0.0)


def arterial_curve(t: np.ndarray, arrival_s: float = 12.0, peak: float = 150.0,
                   recirculation: float = 0.12) -> np.ndarray:
    """ΔR2* (1/s) of whole arterial blood at times ``t`` (s): first-pass gamma variate (α 3, β 1.5 s, peak
    ``peak`` 1/s at arrival + 4.5 s) plus a recirculation gamma variate (α 3, β 3 s) of relative height
    ``recirculation`` starting 9 s after arrival. Any shape of ``t``; float64."""
    first = gamma_variate(t, arrival_s, 3.0, 1.5)
    second = gamma_variate(t, arrival_s + 9.0, 3.0, 3.0)
    return peak * (first + recirculation * second)


def _exp_filter(x: np.ndarray, dt: float, tau: np.ndarray, normalise: bool) -> np.ndarray:
    """Convolve each row of ``x`` (N, K) sampled every ``dt`` s with exp(−t/τ) (τ (N,) s; divided by τ if
    ``normalise``) by the trapezoidal recursion y_k = a·y_{k−1} + dt/2·(x_k + a·x_{k−1}), a = exp(−dt/τ).
    Vectorised over the N rows; loops over the K time samples only."""
    tau = np.maximum(np.asarray(tau, dtype=np.float64), 1e-6)
    a = np.exp(-dt / tau)
    y = np.empty_like(x)
    y[:, 0] = 0.5 * dt * x[:, 0]
    for k in range(1, x.shape[1]):
        y[:, k] = a * y[:, k - 1] + 0.5 * dt * (x[:, k] + a * x[:, k - 1])
    if normalise:
        y /= tau[:, None]
    return y


def _dispersed_residue_peak(mtt: np.ndarray, beta: float) -> np.ndarray:
    """Time (s) of the maximum of (h ⊛ R)(t) for h = exp(−t/β)/β and R = exp(−t/MTT) (0 if β = 0)."""
    if beta <= 0:
        return np.zeros_like(mtt)
    m = np.asarray(mtt, dtype=np.float64)
    close = np.abs(m - beta) < 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        tpk = beta * m / (m - beta) * np.log(m / beta)
    return np.where(close, beta, tpk)


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field (Gaussian-filtered white noise)."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox)
    sd = field.std()
    return field / sd if sd > 0 else field


def _vessel_fraction(shape_zyx, spacing_xyz, centres_mm, radius_mm: float, z_slices, super_sampling: int = 5):
    """Partial-volume fraction (Z, Y, X) of vertical circular vessels (centres (x, y) mm from the grid centre)."""
    nz, ny, nx = shape_zyx
    sx, sy = spacing_xyz[0], spacing_xyz[1]
    offs = (np.arange(super_sampling) + 0.5) / super_sampling - 0.5
    xs = ((np.arange(nx) - (nx - 1) / 2.0)[:, None] + offs[None, :]) * sx  # (nx, s)
    ys = ((np.arange(ny) - (ny - 1) / 2.0)[:, None] + offs[None, :]) * sy
    frac2d = np.zeros((ny, nx))
    for cx, cy in centres_mm:
        inside = ((xs[None, None, :, :] - cx) ** 2 + (ys[:, :, None, None] - cy) ** 2) <= radius_mm ** 2
        frac2d = np.maximum(frac2d, inside.mean(axis=(1, 3)))
    out = np.zeros(shape_zyx)
    out[list(z_slices)] = frac2d
    return out


def generate_phantom(shape: Tuple[int, int, int] = (8, 64, 64), n_frames: int = 60, tr_s: float = 1.5,
                     te_s: float = 0.03, snr: float = 40.0, seed: int = 0, *,
                     spacing_mm: Tuple[float, float, float] = (3.6, 3.6, 5.0),
                     arterial_peak: float = 180.0, arrival_s: Optional[float] = None,
                     dispersion_s: float = 0.0, territory: bool = True, nonsteady_frames: int = 1,
                     parameter_variation: float = 0.1, constants=None, oversample: int = 10) -> Phantom:
    """Generate the digital DSC phantom (see the module docstring for the model).

    Parameters
    ----------
    shape : (Z, Y, X) voxels; Z ≥ 1, Y and X ≥ 32.
    n_frames : T ≥ 10 frames. tr_s : frame interval, s (> 0). te_s : echo time, s (> 0).
    snr : baseline grey-matter signal over the Rician noise σ (> 0; ``np.inf`` for noise-free).
    seed : seed of the random generator (noise and the smooth ±``parameter_variation`` CBF/CBV field).
    spacing_mm : (x, y, z) voxel size, mm. arterial_peak : peak ΔR2* of arterial blood, 1/s.
    arrival_s : bolus arrival in the arteries, s (default 8·TR, at least 6 s).
    dispersion_s : β (s) of the exponential dispersion kernel applied in the hypoperfused territory
        (0 = none); the true Tmax then includes the dispersion peak shift.
    territory : include the hypoperfused MCA wedge. nonsteady_frames : number of leading frames made
        brighter (×1.3, ×1.15, ...) as the non-steady-state frames of real series.
    constants : :class:`~neurocontrast.perfusion.maps.PerfusionConstants` (default the paper's 0.45/0.25/1.04).
    oversample : time sub-samples per frame for the convolutions.

    Returns
    -------
    :class:`Phantom`. Raises NeuroContrastError on invalid arguments. Takes well under 2 s at the defaults.

    References: Cao et al. eq. 1-8 (forward model); Calamante et al., MRM 2000 (dispersion);
    Gudbjartsson & Patz, MRM 1995 (Rician noise).
    """
    from neurocontrast.perfusion.maps import PerfusionConstants

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < 1 or shape[1] < 32 or shape[2] < 32:
        raise NeuroContrastError(f"phantom shape must be (Z, Y, X) with Z >= 1 and Y, X >= 32, got {shape}")
    if int(n_frames) < 10:
        raise NeuroContrastError(f"phantom n_frames must be >= 10, got {n_frames}")
    if not tr_s > 0 or not te_s > 0:
        raise NeuroContrastError(f"phantom tr_s and te_s must be > 0 s, got tr_s={tr_s}, te_s={te_s}")
    if not snr > 0:
        raise NeuroContrastError(f"phantom snr must be > 0, got {snr}")
    if dispersion_s < 0:
        raise NeuroContrastError(f"phantom dispersion_s must be >= 0 s, got {dispersion_s}")
    constants = constants or PerfusionConstants()
    kh_rho = float(constants.kh_over_rho)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sx, sy, sz = (float(s) for s in spacing_mm)
    n_frames = int(n_frames)
    arrival = float(arrival_s) if arrival_s is not None else max(6.0, 8.0 * tr_s)

    # ---- anatomy (coordinates in mm from the grid centre; LPS: +x left, +y posterior) ----------------
    z = (np.arange(nz) - (nz - 1) / 2.0) * sz
    y = (np.arange(ny) - (ny - 1) / 2.0) * sy
    x = (np.arange(nx) - (nx - 1) / 2.0) * sx
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    half_x, half_y = 0.5 * nx * sx, 0.5 * ny * sy
    ax, ay, az = 0.80 * half_x, 0.88 * half_y, max(0.9 * half_y, 0.75 * nz * sz)
    rho = np.sqrt((xx / ax) ** 2 + (yy / ay) ** 2 + (zz / az) ** 2)  # 1 at the head surface
    head = rho <= 1.0
    mean_r = (ax + ay) / 2.0
    depth_mm = (1.0 - rho) * mean_r  # approximate depth below the surface
    brain_outline = depth_mm >= 6.0
    csf_rim = head & (depth_mm >= 4.0) & ~brain_outline
    cortex = brain_outline & (depth_mm < 6.0 + 11.0)
    vent_x, vent_y = 0.11 * ax, 0.28 * ay
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        ventricles |= (((xx - side * 1.2 * vent_x) / vent_x) ** 2 + ((yy + 0.05 * ay) / vent_y) ** 2
                       + (zz / (0.45 * az)) ** 2) <= 1.0
    deep_gm = np.zeros(shape, dtype=bool)
    for side in (-1, 1):  # thalamus / basal ganglia blobs beside the ventricles
        deep_gm |= (((xx - side * 0.33 * ax) / (0.13 * ax)) ** 2 + ((yy - 0.0 * ay) / (0.22 * ay)) ** 2
                    + (zz / (0.4 * az)) ** 2) <= 1.0
    labels = np.zeros(shape, dtype=np.uint8)
    labels[head] = LABELS["scalp"]
    labels[csf_rim] = LABELS["csf"]
    labels[brain_outline] = LABELS["white_matter"]
    labels[cortex | (deep_gm & brain_outline)] = LABELS["grey_matter"]
    labels[ventricles & brain_outline] = LABELS["csf"]
    parenchyma = np.isin(labels, (LABELS["grey_matter"], LABELS["white_matter"]))

    # vessels: two MCAs (Sylvian fissure, middle slices) and the superior sagittal sinus (posterior midline)
    mid = [k for k in range(nz) if abs(z[k]) <= max(0.26 * nz * sz, sz / 2 + 1e-6)]
    artery_pv = _vessel_fraction(shape, (sx, sy, sz), [(-0.55 * ax, -0.12 * ay), (0.55 * ax, -0.12 * ay)],
                                 radius_mm=0.62 * min(sx, sy), z_slices=mid)
    sinus_y = ay * 0.97 - 5.0
    sinus_pv = _vessel_fraction(shape, (sx, sy, sz), [(0.0, sinus_y)], radius_mm=1.5 * max(sx, sy),
                                z_slices=range(nz))
    artery_pv[~parenchyma] = 0.0
    sinus_pv[~head] = 0.0
    aif_mask = artery_pv >= 0.4
    vof_mask = sinus_pv >= 0.9
    labels[artery_pv >= 0.4] = LABELS["artery"]
    labels[sinus_pv >= 0.5] = LABELS["sinus"]
    brain_mask = (parenchyma & (sinus_pv < 0.1)) | aif_mask
    if not aif_mask.any() or not vof_mask.any():
        raise NeuroContrastError(f"phantom shape {shape} with spacing {spacing_mm} mm is too coarse for the vessels")

    # ---- perfusion parameters -----------------------------------------------------------------------
    cbf = np.zeros(shape)
    cbv = np.zeros(shape)
    s0 = np.zeros(shape)
    for name, (f, v, s) in TISSUE.items():
        sel = (labels == LABELS[name]) | ((name == "grey_matter") & aif_mask)
        cbf[sel], cbv[sel], s0[sel] = f, v, s
    s0[labels == LABELS["scalp"]] = 0.7
    s0[labels == LABELS["csf"]] = 1.6
    s0[labels == LABELS["sinus"]] = 0.8
    if parameter_variation > 0:
        field = np.clip(1.0 + parameter_variation * _smooth_field(rng, shape, 2.0), 0.6, 1.4)
        cbf *= field
        cbv *= field
    delay = np.where(brain_mask, 1.0 + 0.5 * np.clip(_smooth_field(rng, shape, 3.0), -1.0, 1.0), 0.0)
    zone = np.zeros(shape, dtype=np.uint8)
    if territory:
        # MCA wedge in the left hemisphere (+x): apex near the midline, opening laterally
        ang = np.degrees(np.arctan2(yy + 0.05 * ay, xx - 0.05 * ax))  # 0° = pure +x (left, lateral)
        radial = np.sqrt(((xx - 0.05 * ax) / ax) ** 2 + ((yy + 0.05 * ay) / ay) ** 2)
        wedge = brain_mask & (np.abs(ang) <= 42.0) & (radial >= 0.15)
        zone[wedge] = 1
        inner = wedge & (np.abs(ang) <= 32.0) & (radial >= 0.24)
        zone[inner] = 2
        zone[wedge & (np.abs(ang) <= 16.0) & (radial >= 0.45)] = 3
        for value, (d, fcbf, fcbv) in TERRITORY_ZONES.items():
            sel = zone == value
            delay[sel] = d
            cbf[sel] *= fcbf
            cbv[sel] *= fcbv
        # graded rim (zone 1): 0 at the wedge's edge → 1 where it meets zone 2, by angle and by radius
        grade = np.minimum(np.clip((42.0 - np.abs(ang)) / 10.0, 0.0, 1.0),
                           np.clip((radial - 0.15) / 0.09, 0.0, 1.0))
        rim = zone == 1
        lo, hi = PENUMBRA_GRADE_S
        delay[rim] = lo + (hi - lo) * grade[rim]
        cbf[rim] *= 1.0 - 0.35 * grade[rim]
    mtt = np.where(cbf > 0, 60.0 * cbv / np.maximum(cbf, 1e-9), 0.0)
    beta = np.where(zone > 0, float(dispersion_s), 0.0)

    # ---- curves on a fine time grid ------------------------------------------------------------------
    oversample = max(1, int(oversample))
    dt = tr_s / oversample
    t_fine = np.arange(n_frames * oversample) * dt
    frame_idx = np.arange(n_frames) * oversample
    aif_blood = arterial_curve(t_fine, arrival, arterial_peak)
    tissue_vox = parenchyma | aif_mask | (sinus_pv > 0)
    idx = np.flatnonzero(tissue_vox.ravel())
    d_v, mtt_v, beta_v = delay.ravel()[idx], mtt.ravel()[idx], beta.ravel()[idx]
    flow_v = cbf.ravel()[idx] / (6000.0 * kh_rho)  # F in 1/s, so CBF = 6000·kH/ρ·F (eq. 5)
    # MTT and β are piecewise constant: convolve once per unique (MTT, β) on the fine grid, then shift
    # each voxel's curve by its own delay with linear interpolation (vectorised gather).
    combos, inverse = np.unique(np.stack([np.round(mtt_v, 6), beta_v], axis=1), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    base = np.repeat(aif_blood[None, :], len(combos), axis=0)
    disp = combos[:, 1] > 0
    if disp.any():
        base[disp] = _exp_filter(base[disp], dt, combos[disp, 1], normalise=True)
    kernel_conv = np.zeros_like(base)
    perf_c = combos[:, 0] > 0
    kernel_conv[perf_c] = _exp_filter(base[perf_c], dt, combos[perf_c, 0], normalise=False)
    kernel_conv = np.concatenate([kernel_conv, kernel_conv[:, -1:]], axis=1)  # one guard sample
    pos = (t_fine[frame_idx][None, :] - d_v[:, None]) / dt  # (N, T) fine-grid positions
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    valid = i0 >= 0
    i0c = np.clip(i0, 0, kernel_conv.shape[1] - 2)
    rows = inverse[:, None]
    tissue = np.where(valid, (1.0 - frac) * kernel_conv[rows, i0c] + frac * kernel_conv[rows, i0c + 1], 0.0)
    tissue *= flow_v[:, None]  # (N, T) tissue ΔR2*, 1/s
    ttp_v = np.where(mtt_v > 0, d_v + t_fine[np.argmax(kernel_conv[:, :-1], axis=1)][inverse], 0.0)
    # venous outflow: arterial curve delayed 5 s and dispersed (β 3.5 s), area preserved
    vof_blood = _exp_filter(arterial_curve(t_fine - 5.0, arrival, arterial_peak)[None, :], dt,
                            np.array([3.5]), normalise=True)[0]

    dr2 = np.zeros((n_frames,) + shape, dtype=np.float32)  # float32 throughout: large phantoms stay light
    flat = dr2.reshape(n_frames, -1)
    flat[:, idx] = tissue.T
    a_pv, v_pv = artery_pv.ravel(), sinus_pv.ravel()
    for pv, curve in ((a_pv, aif_blood), (v_pv, vof_blood)):
        sel = np.flatnonzero(pv > 0)
        flat[:, sel] = (pv[sel][None, :] * curve[frame_idx][:, None] + (1.0 - pv[sel])[None, :] * flat[:, sel])

    # ---- signal and noise (eq. 1 inverted, Rician) ---------------------------------------------------
    s0_abs = 1000.0 * s0
    dr2 *= np.float32(-te_s)
    signal = np.exp(dr2, out=dr2)  # in place: exp(−TE·ΔR2*)
    signal *= s0_abs.astype(np.float32)[None]
    for k in range(min(int(nonsteady_frames), n_frames)):
        signal[k] *= np.float32(1.0 + 0.3 / (k + 1))
    if np.isfinite(snr):
        sigma = np.float32(1000.0 / float(snr))
        noise = rng.standard_normal(signal.shape, dtype=np.float32)
        noise *= sigma
        signal += noise                      # real channel
        np.square(signal, out=signal)
        rng.standard_normal(signal.shape, dtype=np.float32, out=noise)
        noise *= sigma
        np.square(noise, out=noise)          # imaginary channel
        signal += noise
        np.sqrt(signal, out=signal)          # Rician magnitude |S + n1 + i n2|
        del noise

    # ---- truth --------------------------------------------------------------------------------------
    tmax = delay.copy()
    if dispersion_s > 0:
        tmax += np.where(zone > 0, _dispersed_residue_peak(np.maximum(mtt, 1e-3), float(dispersion_s)), 0.0)
    ttp = np.zeros(shape)
    ttp.ravel()[idx] = ttp_v
    inside = brain_mask
    truth = {
        "cbf": np.where(inside, cbf, 0.0).astype(np.float32),
        "cbv": np.where(inside, cbv, 0.0).astype(np.float32),
        "mtt": np.where(inside, mtt, 0.0).astype(np.float32),
        "tmax": np.where(inside, tmax, 0.0).astype(np.float32),
        "ttp": np.where(inside, ttp, 0.0).astype(np.float32),
        "delay_s": np.where(inside, delay, 0.0).astype(np.float32),
        "territory": zone.astype(np.float32),
        "pv": np.maximum(artery_pv, sinus_pv).astype(np.float32),
        "aif": aif_blood[frame_idx].astype(np.float32),
        "vof": vof_blood[frame_idx].astype(np.float32),
    }
    origin = (-(nx - 1) / 2.0 * sx, -(ny - 1) / 2.0 * sy, -(nz - 1) / 2.0 * sz)
    geometry = Geometry.from_arrays(shape, (sx, sy, sz), origin)
    params = {"shape_zyx": list(shape), "n_frames": n_frames, "tr_s": float(tr_s), "te_s": float(te_s),
              "snr": float(snr), "seed": int(seed), "spacing_mm_xyz": [sx, sy, sz],
              "arterial_peak_per_s": float(arterial_peak), "arrival_s": arrival, "dispersion_s": float(dispersion_s),
              "territory": bool(territory), "nonsteady_frames": int(nonsteady_frames),
              "parameter_variation": float(parameter_variation),
              "constants": {"hematocrit_large": constants.hematocrit_large,
                            "hematocrit_small": constants.hematocrit_small, "density": constants.density,
                            "kh_over_rho": kh_rho},
              "tissue": {k: {"cbf": v[0], "cbv": v[1], "s0": v[2]} for k, v in TISSUE.items()},
              "territory_zones": {str(k): {"delay_s": v[0], "cbf_factor": v[1], "cbv_factor": v[2]}
                                  for k, v in TERRITORY_ZONES.items()}}
    return Phantom(signal=signal, geometry=geometry, tr_s=float(tr_s), te_s=float(te_s),
                   aif_mask=aif_mask, vof_mask=vof_mask, brain_mask=brain_mask, labels=labels, truth=truth,
                   params=params)


def write_phantom(phantom: Phantom, out_dir: str) -> Dict[str, str]:
    """Write a phantom to ``out_dir`` (created if needed). Returns {name: path}.

    Files: ``dsc.nii.gz`` (4D, 4th spacing = TR) with the BIDS-style sidecar ``dsc.json`` (EchoTime and
    RepetitionTime in s plus the generation parameters), ``aif_mask.nii.gz``, ``vof_mask.nii.gz``,
    ``brain_mask.nii.gz``, ``labels.nii.gz``, ``truth_<map>.nii.gz`` for cbf, cbv, mtt, tmax, ttp, delay_s,
    territory, and ``truth_curves.json`` (times, arterial and venous blood ΔR2*).
    """
    import SimpleITK as sitk

    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NeuroContrastError(f"phantom output {out_dir} exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    geo = phantom.geometry
    paths: Dict[str, str] = {}
    img = sitk.GetImageFromArray(phantom.signal, isVector=False)  # (T, Z, Y, X) -> 4D image
    img.SetSpacing(tuple(geo.spacing) + (float(phantom.tr_s),))
    img.SetOrigin(tuple(geo.origin) + (0.0,))
    d3 = np.asarray(geo.direction, dtype=float).reshape(3, 3)
    d4 = np.eye(4)
    d4[:3, :3] = d3
    img.SetDirection(tuple(d4.ravel()))
    paths["dsc"] = os.path.join(out_dir, "dsc.nii.gz")
    sitk.WriteImage(img, paths["dsc"], useCompression=True)
    paths["sidecar"] = os.path.join(out_dir, "dsc.json")
    with open(paths["sidecar"], "w", encoding="utf-8") as fh:
        json.dump({"EchoTime": phantom.te_s, "RepetitionTime": phantom.tr_s,
                   "Description": "NeuroContrast digital DSC phantom", "PhantomParameters": phantom.params},
                  fh, indent=2)
    for name, mask in (("aif_mask", phantom.aif_mask), ("vof_mask", phantom.vof_mask),
                       ("brain_mask", phantom.brain_mask), ("labels", phantom.labels)):
        paths[name] = write_volume(mask.astype(np.uint8), geo, os.path.join(out_dir, f"{name}.nii.gz"))
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp", "delay_s", "territory"):
        paths[f"truth_{name}"] = write_volume(phantom.truth[name], geo, os.path.join(out_dir, f"truth_{name}.nii.gz"))
    paths["truth_curves"] = os.path.join(out_dir, "truth_curves.json")
    with open(paths["truth_curves"], "w", encoding="utf-8") as fh:
        json.dump({"times_s": phantom.times_s.tolist(), "aif_delta_r2star": phantom.truth["aif"].tolist(),
                   "vof_delta_r2star": phantom.truth["vof"].tolist()}, fh)
    return paths
