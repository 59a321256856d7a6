"""Analytic DSC curves and small 4D series for the perfusion tests (no shared data needed).

Curves are built on a 0.01 s grid and sampled at the frames, so that discretisation in the code under
test is not the same as in the truth. AIF: gamma variate (Thompson et al. 1964); residue: exponential
(well-mixed compartment) with mean transit time MTT; tissue: C_t(t) = CBF · (C_a ⊗ R)(t − delay).
"""

from __future__ import annotations

import numpy as np

FINE_DT = 0.01


def gamma_variate(t, t0=12.0, alpha=3.0, beta=1.5, peak=40.0):
    x = np.clip(np.asarray(t, dtype=np.float64) - t0, 0, None)
    y = x ** alpha * np.exp(-x / beta)
    return peak * y / (alpha * beta) ** alpha / np.exp(-alpha)


def curves(n_frames=60, tr_s=1.0, cbf=60.0, mtt=4.0, delays=(0.0,), aif_t0=12.0, aif_peak=40.0):
    """(aif (T,), tissue (T, len(delays))) in 1/s; cbf in mL/100 mL/min, mtt and delays in s."""
    fine = np.arange(0.0, n_frames * tr_s + 40.0, FINE_DT)
    aif_f = gamma_variate(fine, aif_t0, peak=aif_peak)
    k = cbf / 6000.0 * np.exp(-fine / mtt)
    ct_f = np.convolve(aif_f, k)[: fine.size] * FINE_DT
    t = np.arange(n_frames) * tr_s
    aif = np.interp(t, fine, aif_f)
    tissue = np.stack([np.interp(t - d, fine, ct_f, left=0.0) for d in delays], axis=1)
    return aif, tissue


def series(shape=(2, 12, 12), n_frames=50, tr_s=1.5, te_s=0.03, s0=1000.0, snr=None, n_nss=2,
           cbf=60.0, mtt=4.0, seed=0, bolus_t0=20.0):
    """A small 4D DSC signal (T, Z, Y, X) with one AIF voxel column and tissue elsewhere.

    Returns dict: signal, aif_mask, brain_mask, aif (ΔR2*), tissue (ΔR2*), n_nss, te_s, tr_s.
    The first ``n_nss`` frames are non-steady-state (signal raised by 40 %, 20 %, ...).
    """
    rng = np.random.default_rng(seed)
    aif, tissue = curves(n_frames, tr_s, cbf, mtt, (0.0,), aif_t0=bolus_t0)
    z, y, x = shape
    dr2 = np.broadcast_to(tissue[:, 0][:, None, None, None], (n_frames, z, y, x)).copy()
    aif_mask = np.zeros(shape, bool)
    aif_mask[:, y // 2, x // 2] = True
    dr2[:, aif_mask] = aif[:, None]
    signal = s0 * np.exp(-dr2 * te_s)
    for i in range(n_nss):
        signal[i] *= 1.0 + 0.4 / (i + 1)
    if snr:
        sigma = s0 / snr
        signal = np.sqrt((signal + sigma * rng.standard_normal(signal.shape)) ** 2
                         + (sigma * rng.standard_normal(signal.shape)) ** 2)
    return dict(signal=signal.astype(np.float32), aif_mask=aif_mask, brain_mask=np.ones(shape, bool),
                aif=aif, tissue=tissue[:, 0], n_nss=n_nss, te_s=te_s, tr_s=tr_s)
