"""Virtual contrast (Ammari et al. 2022) and contrast amplification (Bône et al. 2022) end to end.

``run_virtual(images, mode="virtual")``: T1, T2-FLAIR (T2, ADC when the model uses them) and a low-dose T1c
→ virtual full-dose T1c. ``mode="amplify"``: the same network fed the routine full-dose T1c in place of the
low-dose input → T1c-pro ("replacing T1c-low by T1c images was expected to trigger the synthesis of
approximate quadruple-dose sequences", Bône et al.); ``repeat=k`` feeds the output back k times (the
repeated application Bône et al. suggest as future work).

Steps: input files checked → :func:`neurocontrast.contrast.preprocessing.preprocess` (registration to T1
and to the ICBM 2009a atlas, 1 mm, brain extraction, crop; intensities on the pre-contrast T1's scale after
radiometric matching, :mod:`neurocontrast.contrast.preprocessing.intensity`) → same-patient check
(:func:`neurocontrast.contrast.inputs.same_patient_check`) → ensemble × flip-TTA prediction of the residual
network (input + predicted enhancement, unbounded; :mod:`neurocontrast.contrast.inference`), or with
``method="physics"`` the dose extrapolation of :mod:`neurocontrast.contrast.physics` → back to the native
grid of the *contrast input* (exact inverse transforms and the exact linear intensity inverse). Also
returned: the signed enhancement map (output − T1, both on the T1's scale, with the noise floor removed:
values within 3 σ of zero, σ from the negative half of output − T1 in the brain, are set to 0) in the
contrast input's units, and the brain mask, on that grid.

With ``preprocessed=True`` the inputs must already be co-registered, skull-stripped and on one grid
(e.g. BraTS): only the intensity standardisation is done and outputs stay on that grid.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report, scaled

log = logging.getLogger(__name__)

MODES = ("virtual", "amplify")
#: ``network`` (the trained ensemble) or ``physics`` (dose extrapolation, :mod:`neurocontrast.contrast.physics`)
METHODS = ("network", "physics")
#: noise floor of the enhancement map, in σ of its negative half
ENHANCEMENT_FLOOR_SIGMA = 3.0
#: The network's name for the contrast channel (low-dose T1c in training).
CONTRAST_CHANNEL = "t1c_low"
#: input channels that are not images (``dose``: the dose fraction as a constant inside the brain; ``physics``:
#: the dose extrapolation of the contrast input, :func:`neurocontrast.contrast.physics.dose_extrapolation`)
PSEUDO_CHANNELS = ("dose", "physics")


@dataclasses.dataclass
class ContrastResult:
    """Outputs of :func:`run_virtual` / :func:`neurocontrast.contrast.differential.run_differential`.

    images: {name: SimpleITK image on the native grid of the contrast input} (``virtual`` or ``amplified``
    or ``synthesised`` + ``signal``, ``enhancement``, ``brain_mask``). model_space: the same as (Z, Y, X)
    float32 arrays on the preprocessing grid (plus the inputs). info: models, passes, timings (JSON-able).
    """

    images: Dict[str, sitk.Image]
    model_space: Dict[str, np.ndarray]
    info: Dict

    def write(self, out_dir, extension: str = ".nii.gz") -> Dict[str, str]:
        """Write every image to ``out_dir/<name><extension>`` and ``info.json``; returns {name: path}."""
        import json
        from pathlib import Path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, img in self.images.items():
            path = out / f"{name}{extension}"
            sitk.WriteImage(img, str(path), useCompression=True)
            paths[name] = str(path)
        (out / "info.json").write_text(json.dumps(self.info, indent=2, default=str) + "\n", encoding="utf-8")
        paths["info"] = str(out / "info.json")
        return paths


def adc_from_dwi(b0: np.ndarray, b_high: np.ndarray, b_value: float = 1000.0) -> np.ndarray:
    """Apparent diffusion coefficient from two diffusion-weighted images: ``ln(S0 / Sb) / b``.

    b0, b_high: (Z, Y, X) signal at b = 0 and b = ``b_value`` s/mm², same grid. Returns float32 in
    10⁻⁶ mm²/s (the unit scanners store ADC maps in), 0 where either signal is ≤ 0, clipped to [0, 5000].
    Raises NeuroContrastError on a shape mismatch or b_value ≤ 0. (Stejskal-Tanner mono-exponential model.)
    """
    b0 = np.asarray(b0, dtype=np.float64)
    b_high = np.asarray(b_high, dtype=np.float64)
    if b0.shape != b_high.shape:
        raise NeuroContrastError(f"DWI b0 shape {b0.shape} differs from b{b_value:g} shape {b_high.shape}")
    if not b_value > 0:
        raise NeuroContrastError(f"b value must be > 0 s/mm², got {b_value}")
    valid = (b0 > 0) & (b_high > 0)
    adc = np.zeros(b0.shape, dtype=np.float64)
    adc[valid] = np.log(b0[valid] / b_high[valid]) / b_value * 1e6
    return np.clip(adc, 0.0, 5000.0).astype(np.float32)


def default_passes(device: str) -> Tuple[Optional[int], int]:
    """Default ``(ensemble, tta)`` for a device: all folds × 8 mirrors on CUDA (the papers' 40 passes with
    five folds); on CPU all folds without mirroring (4 passes for the four shipped folds, so that
    preprocessing + the default ensemble stay within 90 s on a 2-core CPU, docs/benchmarks.md)."""
    return (None, 8) if str(device).startswith("cuda") else (None, 1)


# ------------------------------------------------------------------------------------------- geometry
def to_sequence_grid(array: np.ndarray, case, sequence: str, intensity_of: Optional[str] = None,
                     interpolation: str = "bspline", difference: bool = False) -> sitk.Image:
    """``case.back(array, sequence, intensity_of, interpolation, difference)``: an array on the preprocessing
    grid back on the native grid of ``sequence`` (see :meth:`PreprocessedCase.back`)."""
    return case.back(array, sequence, intensity_of, interpolation, difference)


def prepare_same_grid(images, reference: str = "t1", brain_mask=None):
    """See :func:`neurocontrast.contrast.preprocessing.prepare_same_grid` (kept importable from here)."""
    from neurocontrast.contrast.preprocessing import prepare_same_grid as _prepare

    return _prepare(images, reference=reference, brain_mask=brain_mask)


def prepare_case(images: Mapping[str, Union[str, sitk.Image]], *, prepared=None, preprocessed: bool = False,
                 skull_stripper: str = "auto", registration: str = "default", brain_mask=None, force: bool = False,
                 progress: Optional[ProgressCallback] = None):
    """The case a contrast run works on: ``prepared`` if given (must hold every sequence of ``images``), else
    the same-grid standardisation (``preprocessed``) or the full preprocessing; then the same-patient check
    (:func:`neurocontrast.contrast.inputs.same_patient_check`, ``force`` overrides). Returns (case, r scores).
    Raises NeuroContrastError on missing sequences or sequences of different patients."""
    from neurocontrast.contrast.inputs import same_patient_check

    if prepared is not None:
        absent = [s for s in images if s not in prepared.images]
        if absent:
            raise NeuroContrastError(f"the prepared case lacks {absent}; it has {sorted(prepared.images)}")
        case = prepared
    elif preprocessed:
        case = prepare_same_grid(images, reference="t1", brain_mask=brain_mask)
    else:
        from neurocontrast.contrast.preprocessing import preprocess

        case = preprocess(images, reference="t1", skull_stripper=skull_stripper, progress=progress,
                          registration=registration, brain_mask=brain_mask)
    scores = same_patient_check({k: case.images[k] for k in images}, case.brain_mask, "t1", force=force,
                                spacing_mm=tuple(case.geometry.spacing[::-1]))
    return case, scores


def signed_enhancement(image: np.ndarray, t1: np.ndarray, brain: np.ndarray,
                       floor_sigma: float = ENHANCEMENT_FLOOR_SIGMA) -> Tuple[np.ndarray, float]:
    """Signed enhancement ``image − t1`` (both on the T1's standardised scale) with the noise floor removed.

    σ from the negative half inside the brain (contrast only raises the signal, so the negative half is noise,
    Pinetz et al.), robustly: median(|negative values|) / 0.6745 (the half-normal median), so that real
    darkening does not inflate it. Values with |image − t1| ≤ floor_sigma · σ become 0; the rest keep their
    sign (negative = darker than the T1). Returns ((Z, Y, X) float32, σ). 0 outside the brain.
    """
    e = np.where(brain, np.asarray(image, np.float32) - np.asarray(t1, np.float32), 0.0).astype(np.float32)
    negative = e[brain & (e < 0)]
    sigma = float(np.median(-negative) / 0.6745) if negative.size else 0.0
    e[np.abs(e) <= floor_sigma * sigma] = 0.0
    return e, float(sigma)


def validation_summary(models) -> Dict:
    """The held-out validation figures recorded with each model (``metrics`` of its registry record)."""
    return {m.info.name: (m.info.metrics or "no validation figures recorded") for m in models}


# ------------------------------------------------------------------------------------------- main
def run_virtual(images: Mapping[str, Union[str, sitk.Image]], mode: str = "virtual", *, repeat: int = 1,
                method: str = "network", dose: Optional[float] = None, gain: Optional[float] = None,
                model: str = "virtual-demo", ensemble: Optional[int] = None, tta: Optional[int] = None,
                device: str = "cpu", models_dir=None, skull_stripper: str = "auto",
                registration: str = "default", preprocessed: bool = False, brain_mask=None, force: bool = False,
                roi_size: Optional[Sequence[int]] = None, prepared=None,
                progress: Optional[ProgressCallback] = None) -> ContrastResult:
    """Virtual full-dose T1c (``mode="virtual"``) or amplified T1c-pro (``mode="amplify"``).

    Parameters
    ----------
    images : {name: path or SimpleITK image}: ``t1`` and ``flair`` (and ``t2``/``adc`` when the model uses
        them) plus ``t1c_low`` (virtual) or ``t1c`` (amplify). Inputs the model does not use are reported
        (log warning, ``info["unused_inputs"]``).
    repeat : amplification passes (≥ 1; only ``mode="amplify"`` may repeat).
    method : ``"network"`` (the ensemble) or ``"physics"`` (dose extrapolation; virtual mode, needs ``dose``
        and only ``t1`` + ``t1c_low``).  dose : the low dose as a fraction of the standard dose (needed by the
        physics baseline and by models with a ``dose`` channel).
    gain : amplification asked of a model with a ``dose`` or ``physics`` channel (the input is treated as the
        dose 1 / gain of the output; default :data:`neurocontrast.contrast.validation.AMPLIFY_GAIN`); each
        repeat applies it again, so ``repeat=k`` asks for gain^k.
    model : model name or fold prefix in the registry (:func:`neurocontrast.weights.list_models`).
    ensemble, tta : fold models and mirror configurations (defaults: :func:`default_passes`).
    device : ``"cpu"``, ``"cuda"`` or ``"auto"``.  preprocessed : inputs already on one skull-stripped grid.
    skull_stripper, registration : passed to :func:`~neurocontrast.contrast.preprocessing.preprocess`.
    force : run even if the sequences do not look like one patient's.
    prepared : an existing case holding the needed sequences (saves re-registering).

    Returns a :class:`ContrastResult` with ``virtual`` (or ``amplified``), ``enhancement`` (signed, noise floor
    removed, contrast input's units) and ``brain_mask`` on the native grid of the contrast input.
    ``info["validation"]`` carries the models' recorded held-out figures.

    Raises NeuroContrastError for an unknown mode/method, repeat < 1, a missing file or sequence (before any
    preprocessing), sequences of different patients, or bad images (2D, NaN, mismatched).
    """
    from neurocontrast.contrast import inference
    from neurocontrast.contrast.inputs import check_files, unused_inputs

    if mode not in MODES:
        raise NeuroContrastError(f"mode must be one of {MODES}, got {mode!r}")
    if method not in METHODS:
        raise NeuroContrastError(f"method must be one of {METHODS}, got {method!r}")
    if repeat < 1 or (repeat > 1 and mode != "amplify"):
        raise NeuroContrastError(f"--repeat must be ≥ 1 and is only for amplify mode, got {repeat} ({mode})")
    if not isinstance(images, Mapping):
        raise NeuroContrastError("images must be a dict of sequence name → path or image")
    contrast_name = "t1c_low" if mode == "virtual" else "t1c"
    if method == "physics":
        from neurocontrast.contrast.lowdose import check_dose

        if mode != "virtual":
            raise NeuroContrastError("--method physics extrapolates a low dose: use it with `contrast virtual`")
        if dose is None:
            raise NeuroContrastError("--method physics needs --dose (the low dose as a fraction of the standard dose)")
        check_dose(dose)
    check_files(images)
    t0 = time.perf_counter()
    models, dose_channel = [], None
    device = inference.resolve_device(device)
    if method == "network":
        models, device, tta = inference.load_task_models("virtual", model, ensemble, tta, device, models_dir)
        channels = models[0].input_channels
    else:
        channels = ["t1", CONTRAST_CHANNEL]
    needed = {ch: (contrast_name if ch == CONTRAST_CHANNEL else ch) for ch in channels if ch not in PSEUDO_CHANNELS}
    dose_channel = None
    if "dose" in channels or "physics" in channels:
        from neurocontrast.contrast.lowdose import check_dose
        from neurocontrast.contrast.validation import AMPLIFY_GAIN

        if mode == "virtual":
            if dose is None:
                raise NeuroContrastError(f"model {models[0].info.name} is conditioned on the dose: give --dose (the low "
                                         "dose as a fraction of the standard dose, e.g. 0.25)")
            dose_channel = check_dose(dose)
        else:
            gain = AMPLIFY_GAIN if gain is None else float(gain)
            if not 1.0 < gain <= 10.0:
                raise NeuroContrastError(f"--gain must be in (1, 10], got {gain}")
            dose_channel = 1.0 / gain
    missing = [src for src in needed.values() if images.get(src) is None]
    if missing:
        flags = ", ".join(f"--{m.replace('_', '-')}" for m in missing)
        who = f"model {models[0].info.name} was trained on {channels}" if models else "the physics baseline needs them"
        raise NeuroContrastError(f"missing input sequence(s) {missing} ({flags}): {who}")
    ignored = unused_inputs(images, needed.values())
    if ignored:
        log.warning("inputs not used by %s: %s", models[0].info.name if models else "the physics baseline",
                    ", ".join(f"--{k.replace('_', '-')}" for k in ignored))
    selected = {src: images[src] for src in needed.values()}
    report(progress, 0.0, "preprocessing")
    case, same_patient = prepare_case(selected, prepared=prepared, preprocessed=preprocessed,
                                      skull_stripper=skull_stripper, registration=registration,
                                      brain_mask=brain_mask, force=force, progress=scaled(progress, 0.0, 0.5))
    t_pre = time.perf_counter() - t0
    brain = np.asarray(case.brain_mask, dtype=bool)
    extra = {}
    if method == "physics":
        from neurocontrast.contrast.physics import dose_extrapolation

        report(progress, 0.5, "dose extrapolation")
        result = dose_extrapolation(case.images["t1"], case.images[contrast_name], dose, brain)
        out = np.where(brain, result.full, 0.0).astype(np.float32)
        extra["physics"] = result.parameters()
    else:
        from neurocontrast.contrast.physics import dose_extrapolation

        planes = {ch: case.images[needed[ch]] for ch in needed}
        if dose_channel is not None:
            planes["dose"] = np.where(brain, dose_channel, 0.0).astype(np.float32)
        out = None
        for k in range(repeat):
            if out is not None:
                planes[CONTRAST_CHANNEL] = out
            if "physics" in channels:
                planes["physics"] = dose_extrapolation(case.images["t1"], planes[CONTRAST_CHANNEL], dose_channel,
                                                       brain).full
            x = np.stack([planes[ch] for ch in channels]).astype(np.float32)
            pred_progress = scaled(progress, 0.5 + 0.45 * k / repeat, 0.5 + 0.45 * (k + 1) / repeat)
            out = inference.predict(models, x, tta=tta, device=device, roi_size=roi_size, progress=pred_progress)
            out = np.where(brain, out, 0.0).astype(np.float32)
    t_net = time.perf_counter() - t0 - t_pre
    enhancement, sigma_e = signed_enhancement(out, case.images["t1"], brain)
    name = "virtual" if mode == "virtual" else "amplified"
    report(progress, 0.95, "back to native space")
    native = {name: case.back(out, contrast_name, contrast_name),
              "enhancement": case.back(enhancement, contrast_name, contrast_name, difference=True),
              "brain_mask": sitk.Cast(case.back(brain.astype(np.float32), contrast_name, interpolation="nearest")
                                      > 0.5, sitk.sitkUInt8)}
    model_space = {name: out, "enhancement": enhancement, "brain_mask": brain,
                   **{f"input_{k}": v for k, v in case.images.items()}}
    info = {"mode": mode, "method": method, "repeat": repeat, "dose": dose,
            "gain": gain if mode == "amplify" and dose_channel is not None else None,
            "models": [m.info.name for m in models], "model_sha256": [m.info.sha256 for m in models],
            "input_channels": channels, "inputs": needed,
            "unused_inputs": ignored, "same_patient_r": same_patient,
            "tta": tta if models else None, "passes": len(models) * (tta or 1) * repeat,
            "device": device, "preprocessed_input": preprocessed, "output_grid": contrast_name,
            "enhancement": {"noise_sigma_standardised": sigma_e, "floor_sigma": ENHANCEMENT_FLOOR_SIGMA,
                            "positive_fraction_of_brain": float((enhancement[brain] > 0).mean()),
                            "negative_fraction_of_brain": float((enhancement[brain] < 0).mean())},
            "timings_s": {"preprocessing": round(t_pre, 2), "network": round(t_net, 2),
                          "total": round(time.perf_counter() - t0, 2)},
            "preprocessing": case.summary(), **extra}
    if models:
        info["validation"] = validation_summary(models)
        info["note"] = ("demonstration weights trained on a few public cases on a CPU: not for clinical use; "
                        "see info['validation'] and the model card for their held-out figures")
    else:
        info["note"] = "physics baseline (linear dose extrapolation), no network"
    report(progress, 1.0, "done")
    return ContrastResult(native, model_space, info)
