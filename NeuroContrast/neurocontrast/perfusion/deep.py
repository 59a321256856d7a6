"""Deep-learning perfusion maps: ST-Net (Cao et al.) and the AIF-free Tmax network (Hess et al.).

The map methods plug into :data:`neurocontrast.perfusion.pipeline.MAP_METHODS`:

- :func:`stnet_maps` (``--method stnet``, the paper's network, the reference): CBV, CBF, Tmax (and
  MTT = 60·CBV/CBF, eq. 6) from the DSC signal and the AIF signal curve, calibrated with the classic pipeline's
  kH/ρ and VOF rescaling (:func:`stnet_inputs`);
- :func:`stnet_s_maps` (``--method stnet-s``): ST-Net-S, its distilled student, the fast option on a CPU;
- :func:`tmaxnet_maps` (``--method tmaxnet``): Tmax and its Laplace uncertainty from the DSC signal only.

The preprocessing here is shared with training (:mod:`neurocontrast.training.datasets`) so that a network sees
the same numbers at inference as in training:

1. baseline frames by :func:`neurocontrast.perfusion.signal.detect_baseline`; per-voxel S0 = mean signal over
   them;
2. the *relative signal drop* ``d(t) = 1 − S(t)/S0`` per voxel (0 at baseline, > 0 during the bolus; a
   per-voxel normalisation of the raw signal that makes the input independent of the scanner's intensity
   scale; voxels with S0 below 5 % of the brain's median S0, i.e. background, get d = 0);
3. (ST-Net) the concentration ``−ln(S/S0)`` normalised by the AIF's integral (:func:`stnet_inputs`);
4. the time axis resampled linearly to the network's ``n_frames`` over the acquisition window, so the
   resampled frame interval is ``Δt = (T − 1)·TR/(n_frames − 1)``; the networks' time outputs are in these
   frames and are multiplied by Δt (CBF by 60/Δt) to give seconds (mL/100 g/min).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple, Union

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report, scaled

log = logging.getLogger(__name__)

#: Minimum S0 (fraction of the brain's median S0) for a voxel to count as object rather than background.
BACKGROUND_FRACTION = 0.05


# ----------------------------------------------------------------------------------------------------
# preprocessing (shared with training)
# ----------------------------------------------------------------------------------------------------
def relative_drop(signal: np.ndarray, tr_s: Optional[float] = None, baseline: Optional[Tuple[int, int]] = None,
                  brain_mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """Per-voxel relative signal drop ``1 − S(t)/S0`` and the baseline S0.

    signal : (T, ...) raw DSC signal. tr_s : frame interval s (for the baseline search).
    baseline : (start, stop) frames, detected with :func:`~neurocontrast.perfusion.signal.detect_baseline`
    when None. brain_mask : optional (...) bool, used for the background threshold (median S0 inside it).
    Returns ``(drop (T, ...) float32, s0 (...) float32, (start, stop))``; background voxels (S0 below
    :data:`BACKGROUND_FRACTION` of the median object S0) get drop 0. Raises NeuroContrastError (baseline).
    """
    from neurocontrast.perfusion.signal import detect_baseline

    arr = np.asarray(signal, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[0] < 10:
        raise NeuroContrastError(f"DSC signal must be (T, ...) with T >= 10 frames, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NeuroContrastError("DSC signal contains NaN or infinite values")
    if baseline is None:
        baseline = detect_baseline(arr, tr_s)
    start, stop = int(baseline[0]), int(baseline[1])
    s0 = arr[start:stop].mean(axis=0)
    if brain_mask is not None and np.any(brain_mask):
        ref = float(np.median(s0[np.asarray(brain_mask, bool)]))
    else:
        positive = s0[s0 > 0]
        ref = float(np.percentile(positive, 75)) if positive.size else 1.0
    valid = s0 > BACKGROUND_FRACTION * max(ref, 1e-12)
    drop = np.where(valid[None], 1.0 - arr / np.where(valid, s0, 1.0)[None], 0.0).astype(np.float32)
    return drop, s0.astype(np.float32), (start, stop)


def resample_time(x: np.ndarray, n_out: int) -> np.ndarray:
    """Linear resampling of axis 0 from T to ``n_out`` samples over the same time window (end points kept).

    x : (T, ...) float. Returns (n_out, ...) float32. The new interval is (T − 1)/(n_out − 1) old frames.
    """
    x = np.asarray(x, dtype=np.float32)
    t = x.shape[0]
    if t == n_out:
        return x.copy()
    pos = np.linspace(0.0, t - 1.0, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, t - 2)
    frac = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    return ((1.0 - frac) * x[lo] + frac * x[lo + 1]).astype(np.float32)


def resampled_interval(n_frames_in: int, tr_s: float, n_out: int) -> float:
    """Frame interval (s) after :func:`resample_time`: (T − 1)·TR/(n_out − 1)."""
    return (n_frames_in - 1) * float(tr_s) / (n_out - 1)


def smooth_time(x: np.ndarray, sigma_frames: float = 1.0) -> np.ndarray:
    """Voxel-wise temporal Gaussian smoothing (σ in frames; Hess et al. 2.1, σ_t = 1). Axis 0 is time."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(x, dtype=np.float32), sigma_frames, axis=0, mode="nearest")


def find_arterial_patch(drop: np.ndarray, brain_mask: Optional[np.ndarray] = None, patch: int = 5,
                        early_quantile: float = 0.3) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """Find an arterial patch sequence automatically (no AIF input; Hess et al. 2.2 "bolus characterisation").

    drop : (T, Z, Y, X) relative signal drop (:func:`relative_drop`). Among voxels (inside ``brain_mask`` if
    given) whose time to peak drop is within the earliest ``early_quantile`` of the brain, the voxel with
    the largest peak drop (temporally smoothed, σ 1 frame) is the arterial centre. Returns the (T, P, P)
    patch sequence centred on it in its slice (zero outside the image) and its (z, y, x).
    Raises NeuroContrastError if no candidate voxel exists.
    """
    if drop.ndim != 4:
        raise NeuroContrastError(f"drop must be (T, Z, Y, X), got shape {drop.shape}")
    sm = smooth_time(drop, 1.0)
    peak = sm.max(axis=0)
    ttp = sm.argmax(axis=0)
    cand = peak > 0
    if brain_mask is not None:
        cand &= np.asarray(brain_mask, bool)
    if not cand.any():
        raise NeuroContrastError("no voxel with a signal drop: cannot find an arterial patch")
    limit = np.quantile(ttp[cand], early_quantile)
    score = np.where(cand & (ttp <= limit), peak, -np.inf)
    z, y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    h = patch // 2
    padded = np.pad(drop[:, z], ((0, 0), (h, h), (h, h)))
    return padded[:, y:y + patch, x:x + patch].astype(np.float32), (int(z), int(y), int(x))


def _check_dsc(dsc, brain_mask) -> Tuple[np.ndarray, float, np.ndarray]:
    signal = np.asarray(getattr(dsc, "signal", None) if not isinstance(dsc, np.ndarray) else dsc)
    if signal.ndim != 4:
        raise NeuroContrastError(f"DSC signal must be 4D (T, Z, Y, X), got shape {signal.shape}")
    tr_s = float(getattr(dsc, "tr_s", 0.0) or 0.0)
    if not tr_s > 0:
        raise NeuroContrastError(f"DSC series needs a positive frame interval tr_s (s), got {tr_s!r}")
    if brain_mask is None:
        mask = np.ones(signal.shape[1:], bool)
    else:
        mask = np.asarray(brain_mask, bool)
        if mask.shape != signal.shape[1:]:
            raise NeuroContrastError(f"brain_mask shape {mask.shape} differs from the DSC volume shape "
                                     f"{signal.shape[1:]}")
        if not mask.any():
            raise NeuroContrastError("brain_mask is empty")
    return signal, tr_s, mask


# ----------------------------------------------------------------------------------------------------
# model loading
# ----------------------------------------------------------------------------------------------------
def load_network(name: str = "stnet", models_dir=None):
    """Load a registered ST-Net, ST-Net-S or Tmax net (safetensors, sha256-checked) in eval mode.

    Returns ``(model, info)``. Raises NeuroContrastError if the model is missing or corrupt or its
    architecture is not ``"STNet"``/``"STNetS"``/``"TmaxNet"``.
    """
    from neurocontrast.weights import load_state_dict

    state, info = load_state_dict(name, models_dir)
    if info.architecture == "STNet":
        from neurocontrast.networks.stnet import STNet
        model = STNet(**info.config)
    elif info.architecture == "STNetS":
        from neurocontrast.networks.stnet import STNetS
        model = STNetS(**info.config)
    elif info.architecture == "TmaxNet":
        from neurocontrast.networks.tmaxnet import TmaxNet
        model = TmaxNet(**info.config)
    else:
        raise NeuroContrastError(f"model '{name}' has architecture {info.architecture!r}, expected STNet, STNetS "
                                 "or TmaxNet")
    model.load_state_dict(state)
    model.eval()
    return model, info


# ----------------------------------------------------------------------------------------------------
# ST-Net and ST-Net-S
# ----------------------------------------------------------------------------------------------------
#: Scale of the AIF-shape channel: the AIF curve divided by its sum, times n_frames / AIF_SHAPE_DIVISOR.
AIF_SHAPE_DIVISOR = 10.0


def concentration(ratio: np.ndarray) -> np.ndarray:
    """TE·ΔR2* = −ln(S/S0) (dimensionless; eq. 1 of Cao et al. times TE), with S/S0 floored at 1e-3."""
    return (-np.log(np.clip(np.asarray(ratio, np.float32), 1e-3, None))).astype(np.float32)


def stnet_inputs(signal: np.ndarray, tr_s: float, aif_signal: np.ndarray, n_frames: int,
                 brain_mask: Optional[np.ndarray] = None, baseline=None, aif_scale: float = 1.0,
                 kh_over_rho: Optional[float] = None):
    """Calibrated ST-Net inputs from a raw series (same units and constants as the classic pipeline).

    signal : (T, Z, Y, X) (or (T, Y, X) for one slice) raw signal. aif_signal : (T,) raw AIF signal curve
    (mean signal of the AIF voxels). aif_scale : factor on the AIF concentration, the pipeline's VOF rescaling
    factor (1 without a VOF). kh_over_rho : (1 − H_large)/(1 − H_small)/ρ, default
    :class:`~neurocontrast.perfusion.maps.PerfusionConstants` ()'s 0.705.

    With c = TE·ΔR2* = −ln(S/S0) per voxel and c_a the AIF's (× aif_scale), both 0 before the baseline's first
    frame (non-steady-state frames) and resampled to ``n_frames``:

    - ``tissue`` (n_frames, ...) = 100·kH/ρ · c(t) / Σ_t c_a(t): mL/100 g per frame, so that Σ_t tissue is the
      indicator-dilution CBV (Cao et al. eq. 4; TE cancels);
    - ``aif`` (n_frames,) = c_a / Σ c_a × n_frames / :data:`AIF_SHAPE_DIVISOR` (the AIF's shape, peak ~1);
    - ``s0_rel`` (...) = S0 / median brain S0; ``dt`` the resampled interval, s; ``baseline`` frames;
      ``cbv_physics`` (...) = Σ_t tissue; ``aif_integral`` Σ_t c_a.

    Raises NeuroContrastError: AIF length or values invalid, AIF without a bolus (Σ c_a ≤ 0), no baseline.
    """
    from neurocontrast.perfusion.maps import PerfusionConstants

    kh = float(kh_over_rho) if kh_over_rho is not None else PerfusionConstants().kh_over_rho
    aif = np.asarray(aif_signal, dtype=np.float32).ravel()
    if aif.shape[0] != signal.shape[0]:
        raise NeuroContrastError(f"aif_signal has {aif.shape[0]} frames, the DSC series {signal.shape[0]}")
    if not np.all(np.isfinite(aif)):
        raise NeuroContrastError("aif_signal contains NaN or infinite values")
    if not (np.isfinite(aif_scale) and aif_scale > 0):
        raise NeuroContrastError(f"aif_scale must be a positive factor, got {aif_scale!r}")
    drop, s0, baseline = relative_drop(signal, tr_s, baseline, brain_mask)
    a0 = float(aif[baseline[0]:baseline[1]].mean())
    if not a0 > 0:
        raise NeuroContrastError(f"aif_signal must be a positive raw signal curve (baseline mean {a0:.3g})")
    c_a = concentration(aif / a0) * float(aif_scale)
    c_a[:baseline[0]] = 0.0  # frames before the baseline (non-steady state) carry no contrast
    c_a = resample_time(c_a, n_frames)
    total = float(c_a.sum())
    if not total > 0:
        raise NeuroContrastError("the AIF shows no bolus (its concentration integral is not positive)")
    conc = concentration(1.0 - drop)
    conc[:baseline[0]] = 0.0
    tissue = resample_time(conc, n_frames)
    del conc
    tissue *= np.float32(100.0 * kh / total)
    mask = brain_mask if brain_mask is not None and np.any(brain_mask) else s0 > 0
    ref = float(np.median(s0[np.asarray(mask, bool)])) or 1.0
    return {"tissue": tissue, "s0_rel": (s0 / ref).astype(np.float32),
            "aif": (c_a / total * n_frames / AIF_SHAPE_DIVISOR).astype(np.float32),
            "dt": resampled_interval(signal.shape[0], tr_s, n_frames), "baseline": baseline,
            "cbv_physics": tissue.sum(axis=0), "aif_integral": total}


def stnet_to_physical(outputs: np.ndarray, target_scale, dt: float) -> Dict[str, np.ndarray]:
    """Scaled ST-Net outputs (..., 3) → ``cbv`` mL/100 g, ``cbf`` mL/100 g/min, ``tmax`` s (see
    :data:`neurocontrast.networks.stnet.OUTPUTS`)."""
    s = np.asarray(target_scale, dtype=np.float64)
    return {"cbv": (outputs[..., 0] * s[0]).astype(np.float32),
            "cbf": (outputs[..., 1] * s[1] * 60.0 / dt).astype(np.float32),
            "tmax": (outputs[..., 2] * s[2] * dt).astype(np.float32)}


class _Eta:
    """Progress with a time estimate: fraction done → "…, ~N s left" from the elapsed time."""

    def __init__(self, progress: Optional[ProgressCallback], label: str):
        import time

        self.progress, self.label, self.t0, self._time = progress, label, time.perf_counter(), time.perf_counter

    def __call__(self, fraction: float, what: str) -> None:
        if self.progress is None:
            return
        elapsed = self._time() - self.t0
        left = elapsed * (1.0 - fraction) / fraction if fraction > 0 else float("nan")
        eta = f", ~{left:.0f} s left" if np.isfinite(left) else ""
        report(self.progress, fraction, f"{self.label} {what}{eta}")


def stnet_predict(model, tissue: np.ndarray, s0_rel: np.ndarray, aif: np.ndarray, mask: np.ndarray,
                  batch_size: int = 2048, progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """Run ST-Net or ST-Net-S on every voxel of ``mask``, slab by slab; returns scaled outputs (Z, Y, X, 3).

    tissue : (T, Z, Y, X) calibrated curves (:func:`stnet_inputs`, T = model.n_frames). s0_rel : (Z, Y, X).
    aif : (T,). mask : (Z, Y, X) bool. ST-Net sees a 7×7×T patch per voxel (Cao et al.); for ST-Net-S the
    patch summaries (centre, 3×3 and 7×7 means, zero outside the slice) are box filters of the whole slab,
    equal to those of the patches. Progress reports the fraction of voxels done and a time estimate.
    Uses torch.no_grad; the model is put in eval mode. 0 outside the mask.
    """
    import torch
    from neurocontrast.networks.stnet import STNetS, extract_patches

    t, nz, ny, nx = tissue.shape
    if t != model.n_frames:
        raise NeuroContrastError(f"tissue curves have {t} frames, the network expects {model.n_frames}")
    model.eval()
    student = isinstance(model, STNetS)
    out = np.zeros((nz, ny, nx, 3), np.float32)
    aif_t = torch.from_numpy(np.ascontiguousarray(aif, dtype=np.float32))
    total = max(1, int(mask.sum()))
    done = 0
    eta = _Eta(progress, "ST-Net-S" if student else "ST-Net")
    with torch.no_grad():
        for z in range(nz):
            if not mask[z].any():
                continue
            idx = np.argwhere(mask[z])
            if student:
                feats = _student_channels(tissue[:, z], idx)  # (N, 3, T)
            else:
                sl = torch.from_numpy(np.ascontiguousarray(tissue[:, z]))
            for start in range(0, len(idx), batch_size):
                c = idx[start:start + batch_size]
                ref = _reference(aif_t, s0_rel[z][c[:, 0], c[:, 1]], t)
                if student:
                    res = model.forward_features(torch.cat([torch.from_numpy(feats[start:start + batch_size]), ref],
                                                           dim=1))
                else:
                    res = model(extract_patches(sl, torch.from_numpy(c.astype(np.int64))), ref)
                out[z, c[:, 0], c[:, 1]] = res.numpy()
                done += len(c)
                eta(done / total, f"slice {z + 1}/{nz}, {done}/{total} voxels")
    return out


def _student_channels(tissue_slice: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(T, Y, X) slice and (N, 2) voxel indices → (N, 3, T): centre, 3×3 mean, 7×7 mean (zero padding)."""
    from scipy.ndimage import uniform_filter

    m3 = uniform_filter(tissue_slice, size=(1, 3, 3), mode="constant", cval=0.0)
    m7 = uniform_filter(tissue_slice, size=(1, 7, 7), mode="constant", cval=0.0)
    y, x = idx[:, 0], idx[:, 1]
    return np.ascontiguousarray(np.stack([tissue_slice[:, y, x], m3[:, y, x], m7[:, y, x]], axis=0).transpose(2, 0, 1))


def _reference(aif_t, s0_values, t: int):
    import torch
    n = len(s0_values)
    base = torch.from_numpy(np.asarray(s0_values, np.float32)).view(n, 1).expand(n, t)
    return torch.stack([aif_t.view(1, t).expand(n, t), base], dim=1).contiguous()


def stnet_maps(dsc, *, aif_signal: Optional[np.ndarray], brain_mask: Optional[np.ndarray] = None,
               progress: Optional[ProgressCallback] = None, model: Union[str, object] = "stnet",
               aif_scale: float = 1.0, constants=None, models_dir=None) -> Dict[str, np.ndarray]:
    """ST-Net perfusion maps (Cao et al.) for a DSC series; ``model="stnet-s"`` gives the fast student.

    Parameters
    ----------
    dsc : :class:`neurocontrast.io.DSCSeries` (``signal`` (T, Z, Y, X) raw, ``tr_s`` s).
    aif_signal : (T,) raw signal of the AIF (the mean signal inside the AIF mask). Required.
    brain_mask : (Z, Y, X) bool; voxels outside are 0 (default: every voxel).
    model : registered model name (``"stnet"``, the reference; ``"stnet-s"``, the fast student) or an
        :class:`STNet`/:class:`STNetS` instance.
    aif_scale : the AIF's VOF rescaling factor (the pipeline passes the one its deconvolution uses; 1 = none).
    constants : :class:`~neurocontrast.perfusion.maps.PerfusionConstants` (kH/ρ; default 0.45/0.25/1.04).

    Returns
    -------
    dict of (Z, Y, X) float32: ``cbv`` mL/100 g, ``cbf`` mL/100 g/min, ``tmax`` s, ``mtt`` s (60·CBV/CBF,
    eq. 6; 0 where CBF ≤ 0). Negative CBV/CBF predictions are set to 0 (logged). Series of any length T are
    resampled to the network's ``n_frames`` (see module docstring).

    Raises
    ------
    NeuroContrastError : missing/invalid AIF, bad shapes, missing or corrupt weights, no baseline.
    """
    signal, tr_s, mask = _check_dsc(dsc, brain_mask)
    if aif_signal is None:
        raise NeuroContrastError("ST-Net needs the AIF signal curve (aif_signal); use --method tmaxnet for an "
                                 "AIF-free Tmax map")
    net = load_network(model, models_dir)[0] if isinstance(model, str) else model
    net.eval()
    report(progress, 0.0, "ST-Net: preprocessing")
    kh = constants.kh_over_rho if constants is not None else None
    inp = stnet_inputs(signal, tr_s, aif_signal, net.n_frames, mask, aif_scale=aif_scale, kh_over_rho=kh)
    raw = stnet_predict(net, inp["tissue"], inp["s0_rel"], inp["aif"], mask, progress=scaled(progress, 0.05, 1.0))
    maps = stnet_to_physical(raw, net.target_scale, inp["dt"])
    for key in ("cbv", "cbf"):
        neg = (maps[key] < 0) & mask
        if neg.any():
            log.info("ST-Net: %d negative %s value(s) set to 0", int(neg.sum()), key)
        maps[key] = np.where(mask, np.maximum(maps[key], 0.0), 0.0).astype(np.float32)
    maps["tmax"] = np.where(mask, maps["tmax"], 0.0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        maps["mtt"] = np.where(maps["cbf"] > 0, 60.0 * maps["cbv"] / np.maximum(maps["cbf"], 1e-6),
                               0.0).astype(np.float32)
    report(progress, 1.0, "ST-Net: done")
    return maps


def stnet_s_maps(dsc, *, aif_signal: Optional[np.ndarray], brain_mask: Optional[np.ndarray] = None,
                 progress: Optional[ProgressCallback] = None, aif_scale: float = 1.0, constants=None,
                 models_dir=None) -> Dict[str, np.ndarray]:
    """ST-Net-S, the fast distilled student of ST-Net (``--method stnet-s``): :func:`stnet_maps` with the
    registered ``"stnet-s"`` weights (same inputs, outputs, units and errors)."""
    return stnet_maps(dsc, aif_signal=aif_signal, brain_mask=brain_mask, progress=progress, model="stnet-s",
                      aif_scale=aif_scale, constants=constants, models_dir=models_dir)


# ----------------------------------------------------------------------------------------------------
# Tmax net
# ----------------------------------------------------------------------------------------------------
def tmaxnet_inputs(signal: np.ndarray, tr_s: float, n_frames: int, brain_mask: Optional[np.ndarray] = None,
                   baseline=None, patch: int = 5):
    """Tmax-net inputs: relative drop, smoothed (σ 1 frame), resampled to ``n_frames``; the arterial patch
    sequence found by :func:`find_arterial_patch`. signal (T, Z, Y, X). Returns dict ``voxels``
    (n_frames, Z, Y, X), ``arterial`` (n_frames, P, P), ``dt`` s, ``arterial_voxel`` (z, y, x)."""
    drop, _, baseline = relative_drop(signal, tr_s, baseline, brain_mask)
    sm = smooth_time(drop, 1.0)
    arterial, where = find_arterial_patch(drop, brain_mask, patch)
    return {"voxels": resample_time(sm, n_frames), "arterial": resample_time(smooth_time(arterial, 1.0), n_frames),
            "dt": resampled_interval(signal.shape[0], tr_s, n_frames), "arterial_voxel": where,
            "baseline": baseline}


def tmaxnet_maps(dsc, *, aif_signal: Optional[np.ndarray] = None, brain_mask: Optional[np.ndarray] = None,
                 progress: Optional[ProgressCallback] = None, model: Union[str, object] = "tmaxnet",
                 aif_scale: float = 1.0, constants=None, models_dir=None) -> Dict[str, np.ndarray]:
    """AIF-free Tmax map with per-voxel uncertainty (Hess et al.) for a DSC series.

    Parameters
    ----------
    dsc : :class:`neurocontrast.io.DSCSeries` (``signal`` (T, Z, Y, X) raw, ``tr_s`` s).
    aif_signal, aif_scale, constants : ignored (accepted for the MAP_METHODS signature; the network finds its
        own arterial patch and needs no AIF, VOF or kH/ρ).
    brain_mask : (Z, Y, X) bool; outside it the maps are 0.
    model : registered model name (default the shipped ``"tmaxnet"``) or a :class:`TmaxNet` instance.

    Returns
    -------
    dict of (Z, Y, X) float32: ``tmax`` s and ``tmax_uncertainty`` s (the Laplace scale b; the SD is √2·b).

    Raises
    ------
    NeuroContrastError : bad shapes, no baseline, no arterial candidate, missing or corrupt weights.
    """
    import torch

    signal, tr_s, mask = _check_dsc(dsc, brain_mask)
    if aif_signal is not None:
        log.info("tmaxnet: aif_signal ignored (the network characterises the bolus itself)")
    net = load_network(model, models_dir)[0] if isinstance(model, str) else model
    net.eval()
    report(progress, 0.0, "Tmax net: preprocessing")
    inp = tmaxnet_inputs(signal, tr_s, net.n_frames, mask, patch=net.patch)
    nz = signal.shape[1]
    tmax = np.zeros(signal.shape[1:], np.float32)
    unc = np.zeros(signal.shape[1:], np.float32)
    arterial = torch.from_numpy(inp["arterial"])[None]
    with torch.no_grad():
        for z in range(nz):
            if not mask[z].any():
                continue
            vox = torch.from_numpy(np.ascontiguousarray(inp["voxels"][:, z]))[None]
            res = net(vox, arterial)[0].numpy()
            tmax[z] = res[0] * net.target_scale * inp["dt"]
            unc[z] = res[1] * net.target_scale * inp["dt"]
            report(progress, (z + 1) / nz, f"Tmax net slice {z + 1}/{nz}")
    return {"tmax": np.where(mask, tmax, 0.0).astype(np.float32),
            "tmax_uncertainty": np.where(mask, unc, 0.0).astype(np.float32)}
