"""Brain MRI preprocessing for virtual contrast: co-registration, atlas space, brain extraction, intensity
standardisation, and the exact way back to native space.

Modules: :mod:`.atlas` (ICBM 2009a target and crop), :mod:`.registration` (Mattes-MI registration,
transforms, resampling), :mod:`.record` (:class:`PreprocessingRecord`, :class:`PreprocessedCase`),
:mod:`.skullstrip` (detection and strippers), :mod:`.intensity` (standardisation and its inverse),
:mod:`.pipeline` (:func:`preprocess`, :func:`to_native`). Every name stays importable from this package.

Public API
----------
``preprocess(images, reference="t1", skull_stripper="auto", progress=None, *, registration="default",
spacing_mm=1.0, brain_mask=None) -> PreprocessedCase``
    ``images``: dict sequence name → ``SimpleITK.Image`` or path (NIfTI/NRRD/DICOM folder). Names are free
    (``t1``, ``t1c``, ``t1c_low``, ``flair``, ``t2``, ``adc``...); ``reference`` must be one of them.
``PreprocessedCase``: ``.images`` {name: (160, 192, 160) float32, standardised}, ``.brain_mask`` bool,
    ``.geometry``, ``.record``, ``.to_native(array, sequence=None)``, ``.image(name)``, ``.back(...)``.
``to_native(array_atlas, record, sequence=None, interpolation="bspline") -> SimpleITK.Image``
``standardise_exam(arrays, mask, reference="t1") -> (arrays, params)`` and ``to_native_units``.
``standardise_intensity(array, mask, percentiles=(1, 99), clip_z=None)`` (the papers' [0, 1] recipe, kept
    for comparison; the pipeline no longer uses it, see :mod:`.intensity`).

Pipeline (Ammari et al. 2022, Invest Radiol 57:99, "Preprocessing"; Bône et al., "Preprocessing")
------------------------------------------------------------------------------------------------
1. every non-reference sequence is co-registered rigidly to the reference (6 dof Euler, Mattes mutual
   information, multi-resolution, random sampling with a fixed seed);
2. the reference goes to the ICBM 2009a nonlinear symmetric atlas (the T1 shipped in the nilearn wheel) by
   rigid, similarity then 12-dof affine registration (Mattes MI); inputs with a skull are matched to the
   atlas surrounded by a synthetic skull + scalp shell (the shipped atlas is brain-only);
3. each sequence is resampled ONCE (composite transform) onto the 160×192×160 crop of the atlas grid at
   ``spacing_mm`` with a B-spline interpolator, then clamped to the input's intensity range; masks use
   nearest neighbour;
4. brain extraction on the atlas-space reference (pluggable); already-stripped inputs keep their foreground;
5. intensities (:func:`standardise_exam`): the pre-contrast T1 is divided by the median of its
   normal-appearing brain; every other T1-weighted sequence (T1c, low-dose T1c) is first matched
   radiometrically to the T1 (robust linear fit that drops enhancing voxels) and then scaled the same way,
   so enhancement keeps its size and sign; FLAIR/T2/ADC are divided by their own brain median. No clipping:
   the inverse (native = offset + scale · v) is exact.
Every transform, setting and intensity parameter is kept in the JSON serialisable
:class:`PreprocessingRecord`, from which :func:`to_native` rebuilds the inverse exactly.
"""

# the package's public names (and the helpers other modules use) stay importable from here

from neurocontrast.contrast.preprocessing.atlas import (ATLAS_FILE, ATLAS_NAME, CROP_SIZE_XYZ, _atlas,  # noqa: F401
                                                        _atlas_with_head_shell, _geo_dict, _geo_from, _geometry_image,
                                                        atlas_crop_geometry, atlas_path)
from neurocontrast.contrast.preprocessing.intensity import (difference_to_native_units, is_t1_weighted,  # noqa: F401
                                                            normal_brain_median, standardise_exam,
                                                            standardise_intensity, to_native_units)
from neurocontrast.contrast.preprocessing.pipeline import (ImageInput, _as_image, _inverse_affine,  # noqa: F401
                                                           _physical_box, _resample_masked, extend_outside_mask, prepare_same_grid,
                                                           native_brain_mask, preprocess, to_native, validate_inputs)
from neurocontrast.contrast.preprocessing.record import (RECORD_VERSION, PreprocessedCase,  # noqa: F401
                                                         PreprocessingRecord, SameGridCase)
from neurocontrast.contrast.preprocessing.registration import (REGISTRATION_PRESETS, RegistrationSettings,  # noqa: F401
                                                               _register, _resample, _settings, _transform_dict,
                                                               _transform_from)
from neurocontrast.contrast.preprocessing.skullstrip import (SKULL_STRIPPERS, _choose_stripper, _strip_atlas,  # noqa: F401
                                                             _strip_deepbet, _strip_hdbet_minimal,
                                                             available_skull_strippers, detect_skull_stripped)
