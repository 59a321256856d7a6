"""Virtual contrast (Ammari et al. 2022) and contrast amplification (Bône et al. 2022) end to end.

``run_virtual(images, mode="virtual")``: T1, T2-FLAIR (T2, ADC when the model uses them) and a low-dose T1c
→ virtual full-dose T1c. ``mode="amplify"``: the same network fed the routine full-dose T1c in place of the
low-dose input → T1c-pro ("replacing T1c-low by T1c images was expected to trigger the synthesis of
approximate quadruple-dose sequences", Bône et al.); ``repeat=k`` feeds the output back k times (the
repeated application Bône et al. suggest as future work).

Steps: :func:`neurocontrast.contrast.preprocessing.preprocess` (registration to T1 and to the ICBM 2009a
atlas, 1 mm, brain extraction, crop, [0, 1] standardisation) → ensemble × flip-TTA prediction
(:mod:`neurocontrast.contrast.inference`) → back to the native grid of the *contrast input* (the exact
inverse of the atlas affine composed with the inverse rigid co-registration of that sequence), intensities
mapped back to the contrast input's native units. Also returned: the enhancement map (output − T1 in the
standardised [0, 1] units, 0-clipped, as the papers' enhancement maps) and the brain mask, on that grid.

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
#: The network's name for the contrast channel (low-dose T1c in training).
CONTRAST_CHANNEL = "t1c_low"


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
    five folds); on CPU all folds × 2 mirrors (about a minute for the shipped two-fold demo models)."""
    return (None, 8) if str(device).startswith("cuda") else (None, 2)


# ------------------------------------------------------------------------------------------- geometry
def to_sequence_grid(array: np.ndarray, case, sequence: str, intensity_of: Optional[str] = None,
                     interpolation: str = "bspline", extend_outside_brain: bool = True) -> sitk.Image:
    """An array on the preprocessing grid back on the native grid of ``sequence`` (any preprocessed input).

    For the reference sequence this is :meth:`PreprocessedCase.to_native`; for another one the inverse
    atlas affine is composed with the inverse of that sequence's rigid co-registration (both exact matrix
    inverses of the recorded transforms). ``intensity_of``: map [0, 1] values back to that sequence's native
    units (``clip_low + v · (clip_high − clip_low)``). ``extend_outside_brain``: extend the values outside the
    case's brain mask before the interpolation and restore the outside value after it
    (:func:`neurocontrast.contrast.preprocessing.extend_outside_mask`), so the brain's edge keeps its intensity.
    Returns float32 with the sequence's exact geometry.
    """
    from neurocontrast.contrast import preprocessing as pp

    record = case.record
    mask = case.brain_mask if extend_outside_brain and interpolation != "nearest" else None
    if sequence == record.reference:
        return pp.to_native(array, record, sequence=intensity_of, interpolation=interpolation, brain_mask=mask)
    if sequence not in record.native:
        raise NeuroContrastError(f"unknown sequence {sequence!r}; preprocessed: {sorted(record.native)}")
    values = np.asarray(array, dtype=np.float32)
    if values.shape != case.geometry.shape:
        raise NeuroContrastError(f"array shape {values.shape} is not the preprocessing grid {case.geometry.shape}")
    outside = 0.0
    if intensity_of is not None:
        p = record.intensity[intensity_of]
        values = (p["clip_low"] + values * (p["clip_high"] - p["clip_low"])).astype(np.float32)
        outside = float(p["clip_low"])
    native = pp._geo_from(record.native[sequence])
    affine_inv = pp._transform_from(record.affine).GetInverse()
    rigid_inv = pp._transform_from(record.rigid[sequence]).GetInverse()
    transform = sitk.CompositeTransform([affine_inv, rigid_inv])  # rigid⁻¹ applied first, then affine⁻¹
    out = pp._resample_masked(values, case.geometry, native, transform, interpolation, mask, outside)
    return native.to_image(out.astype(np.float32))


@dataclasses.dataclass
class _SameGridCase:
    """Stand-in for PreprocessedCase when the inputs are already co-registered and skull-stripped."""

    images: Dict[str, np.ndarray]
    brain_mask: np.ndarray
    geometry: object
    intensity: Dict[str, dict]

    def back(self, array: np.ndarray, intensity_of: Optional[str]) -> sitk.Image:
        values = np.asarray(array, dtype=np.float32)
        if intensity_of is not None:
            p = self.intensity[intensity_of]
            values = (p["clip_low"] + values * (p["clip_high"] - p["clip_low"])).astype(np.float32)
        return self.geometry.to_image(values)


def prepare_same_grid(images: Mapping[str, Union[str, sitk.Image]], reference: str = "t1",
                      brain_mask=None) -> _SameGridCase:
    """Standardise inputs that are already co-registered and skull-stripped on one grid.

    Brain mask: ``brain_mask`` if given, else voxels non-zero in every input. Raises GeometryError if the
    grids differ, NeuroContrastError on 2D/NaN/constant inputs or an empty mask.
    """
    from neurocontrast.contrast.preprocessing import standardise_intensity, validate_inputs
    from neurocontrast.io import Geometry, check_same_geometry

    loaded = validate_inputs(images, reference)
    geo = Geometry.from_image(loaded[reference])
    arrays = {}
    for name, img in loaded.items():
        check_same_geometry(geo, Geometry.from_image(img), reference, name)
        arrays[name] = sitk.GetArrayFromImage(img).astype(np.float32)
    if brain_mask is not None:
        mask_img = brain_mask if isinstance(brain_mask, sitk.Image) else sitk.ReadImage(str(brain_mask))
        check_same_geometry(geo, Geometry.from_image(mask_img), reference, "brain mask")
        mask = sitk.GetArrayFromImage(mask_img) > 0
    else:
        mask = np.logical_and.reduce([a != 0 for a in arrays.values()])
    if not mask.any():
        raise NeuroContrastError("the brain mask (non-zero in every input) is empty: are the inputs skull-stripped "
                                 "and co-registered? Run without --preprocessed otherwise")
    out, intensity = {}, {}
    for name, arr in arrays.items():
        out[name], intensity[name] = standardise_intensity(arr, mask)
    return _SameGridCase(out, mask, geo, intensity)


# ------------------------------------------------------------------------------------------- main
def run_virtual(images: Mapping[str, Union[str, sitk.Image]], mode: str = "virtual", *, repeat: int = 1,
                model: str = "virtual-demo", ensemble: Optional[int] = None, tta: Optional[int] = None,
                device: str = "cpu", models_dir=None, skull_stripper: str = "auto",
                registration: str = "default", preprocessed: bool = False, brain_mask=None,
                roi_size: Optional[Sequence[int]] = None, prepared=None,
                progress: Optional[ProgressCallback] = None) -> ContrastResult:
    """Virtual full-dose T1c (``mode="virtual"``) or amplified T1c-pro (``mode="amplify"``).

    Parameters
    ----------
    images : {name: path or SimpleITK image}: ``t1`` and ``flair`` (and ``t2``/``adc`` when the model uses
        them) plus ``t1c_low`` (virtual) or ``t1c`` (amplify). Inputs the model does not use are ignored.
    repeat : amplification passes (≥ 1; only ``mode="amplify"`` may repeat).
    model : model name or fold prefix in the registry (:func:`neurocontrast.weights.list_models`).
    ensemble, tta : fold models and mirror configurations (defaults: :func:`default_passes`).
    device : ``"cpu"``, ``"cuda"`` or ``"auto"``.  preprocessed : inputs already on one skull-stripped grid.
    skull_stripper, registration : passed to :func:`~neurocontrast.contrast.preprocessing.preprocess`.
    prepared : an existing :class:`PreprocessedCase` holding the needed sequences (then ``images`` only names
        them; saves re-registering when several modes run on one exam).

    Returns a :class:`ContrastResult` with ``virtual`` (or ``amplified``), ``enhancement`` and ``brain_mask``
    on the native grid of the contrast input; intensities of the main output in the contrast input's units.

    Raises NeuroContrastError for an unknown mode, repeat < 1, a missing sequence the model needs, or bad
    images (2D, NaN, mismatched), with the name of the input.
    """
    from neurocontrast.contrast import inference

    if mode not in MODES:
        raise NeuroContrastError(f"mode must be one of {MODES}, got {mode!r}")
    if repeat < 1 or (repeat > 1 and mode != "amplify"):
        raise NeuroContrastError(f"--repeat must be ≥ 1 and is only for amplify mode, got {repeat} ({mode})")
    if not isinstance(images, Mapping):
        raise NeuroContrastError("images must be a dict of sequence name → path or image")
    contrast_name = "t1c_low" if mode == "virtual" else "t1c"
    t0 = time.perf_counter()
    device = inference.resolve_device(device)
    d_ens, d_tta = default_passes(device)
    ensemble = d_ens if ensemble is None else ensemble
    tta = d_tta if tta is None else tta
    inference.flip_sets(tta)  # validate early
    models = inference.load_ensemble(model, ensemble, device=device, models_dir=models_dir)
    channels = models[0].input_channels
    if CONTRAST_CHANNEL not in channels:
        raise NeuroContrastError(f"model {model!r} has no '{CONTRAST_CHANNEL}' input channel ({channels}); it is "
                                 "not a virtual-contrast model")
    needed = {ch: (contrast_name if ch == CONTRAST_CHANNEL else ch) for ch in channels}
    missing = [src for src in needed.values() if images.get(src) is None]
    if missing:
        flags = ", ".join(f"--{m.replace('_', '-')}" for m in missing)
        raise NeuroContrastError(f"missing input sequence(s) {missing} ({flags}): model {models[0].info.name} was "
                                 f"trained on {channels}")
    ignored = sorted(set(k for k, v in images.items() if v is not None) - set(needed.values()))
    if ignored:
        log.info("inputs not used by model %s: %s", models[0].info.name, ignored)
    selected = {src: images[src] for src in needed.values()}
    report(progress, 0.0, "preprocessing")
    sub = scaled(progress, 0.0, 0.5)
    if prepared is not None:
        absent = [s for s in selected if s not in prepared.images]
        if absent:
            raise NeuroContrastError(f"the prepared case lacks {absent}; it has {sorted(prepared.images)}")
        case = prepared
    elif preprocessed:
        case = prepare_same_grid(selected, reference="t1", brain_mask=brain_mask)
    else:
        from neurocontrast.contrast.preprocessing import preprocess

        case = preprocess(selected, reference="t1", skull_stripper=skull_stripper, progress=sub,
                          registration=registration, brain_mask=brain_mask)
    t_pre = time.perf_counter() - t0
    x = np.stack([case.images[needed[ch]] for ch in channels]).astype(np.float32)
    brain = np.asarray(case.brain_mask, dtype=bool)
    c_index = channels.index(CONTRAST_CHANNEL)
    out = None
    for k in range(repeat):
        if out is not None:
            x[c_index] = out
        pred_progress = scaled(progress, 0.5 + 0.45 * k / repeat, 0.5 + 0.45 * (k + 1) / repeat)
        out = inference.predict(models, x, tta=tta, device=device, roi_size=roi_size, progress=pred_progress)
        out = np.where(brain, np.clip(out, 0.0, 1.0), 0.0).astype(np.float32)
    t_net = time.perf_counter() - t0 - t_pre
    enhancement = np.where(brain, np.clip(out - case.images["t1"], 0.0, None), 0.0).astype(np.float32)
    name = "virtual" if mode == "virtual" else "amplified"
    report(progress, 0.95, "back to native space")
    if not hasattr(case, "record"):
        native = {name: case.back(out, contrast_name), "enhancement": case.back(enhancement, None),
                  "brain_mask": sitk.Cast(case.back(brain.astype(np.float32), None) > 0.5, sitk.sitkUInt8)}
    else:
        native = {name: to_sequence_grid(out, case, contrast_name, intensity_of=contrast_name),
                  "enhancement": to_sequence_grid(enhancement, case, contrast_name),
                  "brain_mask": sitk.Cast(to_sequence_grid(brain.astype(np.float32), case, contrast_name,
                                                           interpolation="nearest") > 0.5, sitk.sitkUInt8)}
    model_space = {name: out, "enhancement": enhancement, "brain_mask": brain,
                   **{f"input_{k}": v for k, v in case.images.items()}}
    info = {"mode": mode, "repeat": repeat, "models": [m.info.name for m in models],
            "model_sha256": [m.info.sha256 for m in models], "input_channels": channels,
            "inputs": {ch: needed[ch] for ch in channels}, "tta": tta, "passes": len(models) * tta * repeat,
            "device": device, "preprocessed_input": preprocessed, "output_grid": contrast_name,
            "timings_s": {"preprocessing": round(t_pre, 2), "network": round(t_net, 2),
                          "total": round(time.perf_counter() - t0, 2)},
            "note": "demonstration weights unless you trained your own: not for clinical use"}
    if not preprocessed and hasattr(case, "record"):
        info["preprocessing"] = {"skull_strip": case.record.skull_strip.get("method"),
                                 "timings_s": case.record.timings_s}
    report(progress, 1.0, "done")
    return ContrastResult(native, model_space, info)
