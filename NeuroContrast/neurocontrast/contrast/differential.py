"""Differential contrast with a conditional network (Pinetz et al. 2024, MIDL short paper and arXiv:2403.03539).

From a pre-contrast T1 ``x_PC`` and a low-dose post-contrast T1 ``x_LD`` (dose ``d_LD`` of the standard dose):

1. preprocessing (registration to the T1 and the ICBM atlas, brain extraction, [0, 1] standardisation);
2. radiometric matching and subtraction ``z̃_LD = x_LD − (a x_PC + b)``, noise σ_LD from the negative half in
   the brain, local mean/SD harmonisation with large Gaussian windows masking outliers (Pinetz eq. 1):
   ``z_LD = (z̃_LD − m_LD) / s_LD · σ_LD`` (:func:`neurocontrast.contrast.subtraction.differential_inputs`);
3. the conditional residual UNet (:class:`~neurocontrast.networks.conditional.ConditionalResidualUNet3D`) maps
   ``(z_LD, x_LD)`` and the condition ``(d_LD, B, r1(agent, B), σ_LD)`` to the standard-dose contrast signal
   ``ŷ_SD`` (trained on ``y_SD = sigmoid(w z_SD + b) ⊙ z_SD`` with ``z_SD`` harmonised to σ_LD as well);
4. outputs: the signal and the synthesised standard-dose image ``a x_PC + b + ŷ_SD``, on the native grid of
   the post-contrast input, in its intensity units.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report, scaled

log = logging.getLogger(__name__)


def model_inputs(pre: np.ndarray, low: np.ndarray, brain: np.ndarray,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Dict[str, object]:
    """Network inputs of one pre/low-dose pair on one grid (standardised [0, 1] arrays (Z, Y, X)).

    Returns ``{"x": (2, Z, Y, X) float32 [z_LD, x_LD], "sigma": σ_LD, "match": RadiometricMatch,
    "pre_matched": a·pre + b (Z, Y, X), "z": z_LD}``. Raises NeuroContrastError (from the subtraction module)
    when the noise cannot be estimated (e.g. an empty brain mask).
    """
    from neurocontrast.contrast import subtraction

    d = subtraction.differential_inputs(pre, low, brain, spacing)
    z = np.where(brain, d["z"], 0.0).astype(np.float32)
    pre_matched = (d["match"].scale * np.asarray(pre, np.float32) + d["match"].offset).astype(np.float32)
    return {"x": np.stack([z, np.asarray(low, np.float32)]).astype(np.float32), "sigma": float(d["sigma"]),
            "match": d["match"], "pre_matched": pre_matched, "z": z}


def training_target(pre: np.ndarray, full: np.ndarray, brain: np.ndarray, sigma_low: float,
                    spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Tuple[np.ndarray, np.ndarray]:
    """Target ``y_SD = p_SD ⊙ z_SD`` and the enhancement mask ``p_SD`` (Pinetz, Method), with the standard-dose
    subtraction harmonised to the low-dose noise σ_LD (eq. 1). Arrays (Z, Y, X) float32, 0 outside the brain."""
    from neurocontrast.contrast import subtraction

    d = subtraction.differential_inputs(pre, full, brain, spacing, sigma_out=sigma_low)
    return (np.where(brain, d["y"], 0.0).astype(np.float32), np.where(brain, d["p"], 0.0).astype(np.float32))


def condition_for(dose: float, field_strength_t: float, agent: str, sigma: float):
    """The (1, 4) condition tensor: dose, field strength (T), r1 of ``agent`` at that field, σ_LD.

    Raises NeuroContrastError for an unknown agent, an untabulated field strength or a dose outside (0, 1].
    """
    from neurocontrast.contrast import agents
    from neurocontrast.contrast.lowdose import check_dose
    from neurocontrast.networks.conditional import condition_vector

    dose = check_dose(dose)
    r1 = agents.relaxivity(agent, field_strength_t)
    return condition_vector(dose, float(field_strength_t), float(r1), float(sigma))


def run_differential(pre, post, dose: float, field_strength_t: float, agent: str, *,
                     model: str = "differential-demo", ensemble: Optional[int] = None, tta: Optional[int] = None,
                     device: str = "cpu", models_dir=None, skull_stripper: str = "auto",
                     registration: str = "default", preprocessed: bool = False, brain_mask=None,
                     progress: Optional[ProgressCallback] = None):
    """Differential contrast end to end (see the module docstring).

    Parameters
    ----------
    pre, post : path or SimpleITK image of the pre-contrast T1 and the low-dose post-contrast T1.
    dose : administered fraction of the standard dose, (0, 1].  field_strength_t : 1.5 or 3 (T).
    agent : agent name or brand (:func:`neurocontrast.contrast.agents.find_agent`).
    model, ensemble, tta, device, models_dir, skull_stripper, registration, preprocessed, brain_mask : as in
        :func:`neurocontrast.contrast.virtual.run_virtual`.

    Returns a :class:`~neurocontrast.contrast.virtual.ContrastResult` with ``synthesised`` (post units),
    ``signal`` (post units), ``enhancement`` (the harmonised low-dose subtraction z_LD) and ``brain_mask``,
    all on the native grid of ``post``.

    Raises NeuroContrastError for a bad dose/agent/field strength (checked before any heavy work), a model that
    is not conditional, or bad images.
    """
    from neurocontrast.contrast import inference
    from neurocontrast.contrast.virtual import ContrastResult, default_passes, prepare_same_grid, to_sequence_grid

    condition_for(dose, field_strength_t, agent, 0.0)  # validate the physics first
    t0 = time.perf_counter()
    device = inference.resolve_device(device)
    d_ens, d_tta = default_passes(device)
    ensemble = d_ens if ensemble is None else ensemble
    tta = d_tta if tta is None else tta
    inference.flip_sets(tta)
    models = inference.load_ensemble(model, ensemble, device=device, models_dir=models_dir)
    if not models[0].conditional:
        raise NeuroContrastError(f"model {models[0].info.name} is not a conditional differential-contrast model")
    images = {"t1": pre, "post": post}
    report(progress, 0.0, "preprocessing")
    if preprocessed:
        case = prepare_same_grid(images, reference="t1", brain_mask=brain_mask)
    else:
        from neurocontrast.contrast.preprocessing import preprocess

        case = preprocess(images, reference="t1", skull_stripper=skull_stripper, progress=scaled(progress, 0, 0.5),
                          registration=registration, brain_mask=brain_mask)
    t_pre = time.perf_counter() - t0
    brain = np.asarray(case.brain_mask, dtype=bool)
    spacing = tuple(case.geometry.spacing[::-1])
    report(progress, 0.5, "subtraction and harmonisation")
    prepared = model_inputs(case.images["t1"], case.images["post"], brain, spacing)
    condition = condition_for(dose, field_strength_t, agent, prepared["sigma"])
    signal = inference.predict(models, prepared["x"], tta=tta, device=device, condition=condition,
                               progress=scaled(progress, 0.55, 0.95))
    signal = np.where(brain, signal, 0.0).astype(np.float32)
    synthesised = np.where(brain, prepared["pre_matched"] + signal, 0.0).astype(np.float32)
    t_net = time.perf_counter() - t0 - t_pre
    report(progress, 0.95, "back to native space")
    if preprocessed:
        p = case.intensity["post"]
        scale = p["clip_high"] - p["clip_low"]
        native = {"synthesised": case.back(synthesised, "post"),
                  "signal": case.back(signal * scale, None),
                  "enhancement": case.back(prepared["z"] * scale, None),
                  "brain_mask": sitk.Cast(case.back(brain.astype(np.float32), None) > 0.5, sitk.sitkUInt8)}
    else:
        p = case.record.intensity["post"]
        scale = p["clip_high"] - p["clip_low"]
        native = {"synthesised": to_sequence_grid(synthesised, case, "post", intensity_of="post"),
                  "signal": to_sequence_grid(signal * scale, case, "post"),
                  "enhancement": to_sequence_grid(prepared["z"] * scale, case, "post"),
                  "brain_mask": sitk.Cast(to_sequence_grid(brain.astype(np.float32), case, "post",
                                                           interpolation="nearest") > 0.5, sitk.sitkUInt8)}
    from neurocontrast.contrast import agents

    info = {"mode": "differential", "dose": float(dose), "field_strength_t": float(field_strength_t),
            "agent": agents.find_agent(agent).name, "relaxivity_l_mmol_s": agents.relaxivity(agent, field_strength_t),
            "sigma_low": prepared["sigma"], "radiometric_match": {"scale": float(prepared["match"].scale),
                                                                  "offset": float(prepared["match"].offset)},
            "models": [m.info.name for m in models], "model_sha256": [m.info.sha256 for m in models],
            "tta": tta, "passes": len(models) * tta, "device": device, "preprocessed_input": preprocessed,
            "output_grid": "post", "timings_s": {"preprocessing": round(t_pre, 2), "network": round(t_net, 2),
                                                 "total": round(time.perf_counter() - t0, 2)},
            "note": "demonstration weights unless you trained your own: not for clinical use"}
    model_space = {"synthesised": synthesised, "signal": signal, "z_low": prepared["z"], "brain_mask": brain,
                   "input_t1": case.images["t1"], "input_post": case.images["post"]}
    report(progress, 1.0, "done")
    return ContrastResult(native, model_space, info)
