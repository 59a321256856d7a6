"""Differential contrast with a conditional network (Pinetz et al. 2024, MIDL short paper and arXiv:2403.03539).

From a pre-contrast T1 ``x_PC`` and a low-dose post-contrast T1 ``x_LD`` (dose ``d_LD`` of the standard dose):

1. preprocessing (registration to the T1 and the ICBM atlas, brain extraction; the post image matched
   radiometrically to the T1's scale, :mod:`neurocontrast.contrast.preprocessing.intensity`) and the
   same-patient check;
2. the physics baseline (:func:`neurocontrast.contrast.physics.dose_extrapolation`): subtraction
   ``z_LD = x_LD − (a x_PC + b)``, noise σ_LD from its negative half, soft enhancement mask p_LD and the
   dose-scaled signal ``p_LD ⊙ z_LD / d_LD``;
3. the conditional residual UNet (:class:`~neurocontrast.networks.conditional.ConditionalResidualUNet3D`) maps
   ``(p_LD ⊙ z_LD / d_LD, x_LD)`` and the condition ``(d_LD, B, r1(agent, B), σ_LD)`` to a *correction* of that
   signal: ``ŷ_SD = p_LD ⊙ z_LD / d_LD + network(...)``, trained on the real standard-dose signal
   ``p_SD ⊙ z_SD`` (:mod:`neurocontrast.training.contrast_training`). Starting from the physics baseline keeps
   the signal at the standard-dose scale (the earlier design predicted the signal from scratch and came out
   3× too weak in vessels); the network removes noise and corrects what linear extrapolation gets wrong;
4. outputs: the signal and the synthesised standard-dose image ``a x_PC + b + ŷ_SD``, on the native grid of
   the post-contrast input, in its intensity units.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report, scaled

log = logging.getLogger(__name__)


def model_inputs(pre: np.ndarray, low: np.ndarray, brain: np.ndarray, dose: float) -> Dict[str, object]:
    """Network inputs of one pre/low-dose pair on one grid (standardised arrays (Z, Y, X)).

    Returns ``{"x": (2, Z, Y, X) float32 [physics signal, x_LD], "physics": the
    :class:`~neurocontrast.contrast.physics.DoseExtrapolation`, "sigma": σ_LD}``. Raises NeuroContrastError
    (physics/subtraction modules) on a bad dose or when the noise cannot be estimated.
    """
    from neurocontrast.contrast.physics import dose_extrapolation

    phys = dose_extrapolation(pre, low, dose, brain)
    x = np.stack([phys.signal, np.where(brain, low, 0.0)]).astype(np.float32)
    return {"x": x, "physics": phys, "sigma": phys.sigma}


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
                     force: bool = False, progress: Optional[ProgressCallback] = None):
    """Differential contrast end to end (see the module docstring).

    Parameters
    ----------
    pre, post : path or SimpleITK image of the pre-contrast T1 and the low-dose post-contrast T1.
    dose : administered fraction of the standard dose, (0, 1].  field_strength_t : 1.5 or 3 (T).
    agent : agent name or brand (:func:`neurocontrast.contrast.agents.find_agent`).
    model, ensemble, tta, device, models_dir, skull_stripper, registration, preprocessed, brain_mask, force :
        as in :func:`neurocontrast.contrast.virtual.run_virtual`.

    Returns a :class:`~neurocontrast.contrast.virtual.ContrastResult` with ``synthesised`` (post units),
    ``signal`` (post units), ``enhancement`` (the low-dose subtraction z_LD, post units) and ``brain_mask``,
    all on the native grid of ``post``; ``info["validation"]`` the models' held-out figures.

    Raises NeuroContrastError for a bad dose/agent/field strength or a missing file (checked before any heavy
    work), a model that is not conditional, images of different patients, or bad images.
    """
    from neurocontrast.contrast import agents, inference
    from neurocontrast.contrast.inputs import check_files
    from neurocontrast.contrast.virtual import ContrastResult, prepare_case, validation_summary

    condition_for(dose, field_strength_t, agent, 0.0)  # validate the physics first
    check_files({"pre": pre, "post": post})
    t0 = time.perf_counter()
    models, device, tta = inference.load_task_models("differential", model, ensemble, tta, device, models_dir)
    report(progress, 0.0, "preprocessing")
    case, same_patient = prepare_case({"t1": pre, "post": post}, preprocessed=preprocessed,
                                      skull_stripper=skull_stripper, registration=registration,
                                      brain_mask=brain_mask, force=force, progress=scaled(progress, 0, 0.5))
    t_pre = time.perf_counter() - t0
    brain = np.asarray(case.brain_mask, dtype=bool)
    report(progress, 0.5, "subtraction and physics baseline")
    prepared = model_inputs(case.images["t1"], case.images["post"], brain, dose)
    phys = prepared["physics"]
    condition = condition_for(dose, field_strength_t, agent, prepared["sigma"])
    correction = inference.predict(models, prepared["x"], tta=tta, device=device, condition=condition,
                                   progress=scaled(progress, 0.55, 0.95))
    signal = np.where(brain, phys.signal + correction, 0.0).astype(np.float32)
    synthesised = np.where(brain, phys.pre_matched + signal, 0.0).astype(np.float32)
    z_low = np.where(brain, case.images["post"] - phys.pre_matched, 0.0).astype(np.float32)
    t_net = time.perf_counter() - t0 - t_pre
    report(progress, 0.95, "back to native space")
    native = {"synthesised": case.back(synthesised, "post", "post"),
              "signal": case.back(signal, "post", "post", difference=True),
              "enhancement": case.back(z_low, "post", "post", difference=True),
              "brain_mask": sitk.Cast(case.back(brain.astype(np.float32), "post", interpolation="nearest") > 0.5,
                                      sitk.sitkUInt8)}
    info = {"mode": "differential", "dose": float(dose), "field_strength_t": float(field_strength_t),
            "agent": agents.find_agent(agent).name, "relaxivity_l_mmol_s": agents.relaxivity(agent, field_strength_t),
            "sigma_low": prepared["sigma"], "physics": phys.parameters(), "same_patient_r": same_patient,
            "models": [m.info.name for m in models], "model_sha256": [m.info.sha256 for m in models],
            "tta": tta, "passes": len(models) * tta, "device": device, "preprocessed_input": preprocessed,
            "output_grid": "post", "timings_s": {"preprocessing": round(t_pre, 2), "network": round(t_net, 2),
                                                 "total": round(time.perf_counter() - t0, 2)},
            "preprocessing": case.summary(), "validation": validation_summary(models),
            "note": "demonstration weights trained on a few public cases on a CPU: not for clinical use; see "
                    "info['validation'] and the model card for their held-out figures"}
    model_space = {"synthesised": synthesised, "signal": signal, "z_low": z_low, "brain_mask": brain,
                   "input_t1": case.images["t1"], "input_post": case.images["post"]}
    report(progress, 1.0, "done")
    return ContrastResult(native, model_space, info)
