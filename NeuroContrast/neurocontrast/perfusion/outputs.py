"""Writing a perfusion result: the maps as NIfTI on the DSC grid and ``report.json`` swapped into the output
folder whole (so that it holds exactly one run's outputs, and a failed write leaves nothing behind), then
``overview.png``; and :func:`perfusion_from_files`, the command line's one call (read → run → write).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.parameters import PerfusionOptions
from neurocontrast.perfusion.pipeline import PerfusionResult, _json_clean, run_perfusion
from neurocontrast.progress import ProgressCallback, report as report_progress, scaled

log = logging.getLogger(__name__)


def prepare_output_folder(out_dir: str, overwrite: bool = False) -> None:
    """Check that ``out_dir`` may receive this run's outputs (it is then replaced whole).

    Allowed: a missing or empty folder; a folder holding a previous NeuroContrast perfusion output (its
    ``report.json`` names the software), which is replaced with a log line; any other non-empty folder
    only with ``overwrite``. Raises NeuroContrastError otherwise, or when ``out_dir`` is a file.
    """
    out_dir = os.fspath(out_dir)
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise NeuroContrastError(f"output {out_dir} exists and is not a folder")
    entries = os.listdir(out_dir)
    if not entries or overwrite:
        return
    try:
        with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as fh:
            previous = str(json.load(fh).get("software", "")).startswith("neurocontrast")
    except (OSError, ValueError, AttributeError):
        previous = False
    if previous:
        log.info("output folder %s holds an earlier NeuroContrast run: it is replaced whole", out_dir)
        return
    raise NeuroContrastError(f"output folder {out_dir} is not empty ({len(entries)} entries, e.g. {sorted(entries)[0]}) "
                             "and holds no earlier NeuroContrast run; choose another --out or give --overwrite")


def write_outputs(result: PerfusionResult, out_dir: str, *, overview: bool = True,
                  title: Optional[str] = None, overwrite: bool = False,
                  extra: Optional[Callable[[str], Dict[str, str]]] = None) -> Dict[str, str]:
    """Write a :class:`PerfusionResult` into ``out_dir``, which then holds exactly this run's outputs.

    Files: ``<map>.nii.gz`` for each map (cbf, cbv, mtt, tmax, ttp, and any extra network map),
    ``hypoperfusion.nii.gz`` (uint8 Tmax > 6 s) and ``report.json`` are written into a temporary folder
    beside ``out_dir`` and swapped in whole; then ``overview.png``
    (:func:`neurocontrast.perfusion.report.overview_figure`), which a full disk may cost (a warning) but
    never the maps. ``extra(folder) -> {name: path}`` may add files to the temporary folder before the swap.
    All volumes on the DSC grid. Returns {name: path}.

    Raises NeuroContrastError: ``out_dir`` refused by :func:`prepare_output_folder`; a write error (full
    disk, permissions): nothing of this run is left behind and an earlier ``out_dir`` is kept.
    """
    import shutil
    import tempfile

    from neurocontrast.io import write_volume
    from neurocontrast.threads import thread_map

    out_dir = os.path.abspath(os.fspath(out_dir))
    prepare_output_folder(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    t0 = time.perf_counter()
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    except OSError as exc:
        raise NeuroContrastError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    names: Dict[str, str] = {}
    try:
        volumes = [(name, np.nan_to_num(arr, nan=0.0).astype(np.float32), result.geometry)
                   for name, arr in result.maps.items()]
        if result.hypoperfusion_mask is not None:
            volumes.append(("hypoperfusion", result.hypoperfusion_mask.astype(np.uint8), result.geometry))
        if result.core is not None:
            volumes.append(("core_adc", result.core.mask.astype(np.uint8), result.core_geometry))
        # SimpleITK compresses with the GIL released: the volumes are written in parallel
        written = thread_map(lambda v: write_volume(v[1], v[2], os.path.join(tmp, f"{v[0]}.nii.gz")), volumes)
        names.update({v[0]: os.path.basename(path) for v, path in zip(volumes, written)})
        if extra is not None:
            names.update({k: os.path.relpath(v, tmp) for k, v in extra(tmp).items()})
        result.report.setdefault("timings_s", {})["write_s"] = time.perf_counter() - t0
        result.report["outputs"] = dict(names, report="report.json")
        _write_json(result.report, os.path.join(tmp, "report.json"))
        _swap_in(tmp, out_dir)
    except (OSError, RuntimeError) as exc:  # SimpleITK reports a failed write as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise NeuroContrastError(f"cannot write the outputs into {out_dir}: {reason}; nothing of this run "
                                 "was kept") from None
    paths = {k: os.path.join(out_dir, v) for k, v in names.items()}
    paths["report"] = os.path.join(out_dir, "report.json")
    if overview:
        from neurocontrast.perfusion.report import overview_figure

        t1 = time.perf_counter()
        try:
            paths["overview"] = overview_figure(result, os.path.join(out_dir, "overview.png"), title=title)
        except OSError as exc:
            log.warning("overview.png not written (%s); the maps and report.json are complete", exc.strerror or exc)
        else:
            result.report["outputs"]["overview"] = "overview.png"
            result.report["timings_s"]["overview_s"] = time.perf_counter() - t1
            _write_json(result.report, paths["report"])
    return paths


def _write_json(report: Dict[str, Any], path: str) -> None:
    """Write ``report`` as JSON through a temporary file and an atomic rename (never a half file)."""
    part = path + ".part"
    with open(part, "w", encoding="utf-8") as fh:
        json.dump(_json_clean(report), fh, indent=2)
    os.replace(part, path)


def _swap_in(tmp: str, out_dir: str) -> None:
    """Replace ``out_dir`` (if any) by the folder ``tmp`` with renames on the same file system."""
    import shutil

    if os.path.isdir(out_dir):
        old = tmp + ".old"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def perfusion_from_files(dsc_path: str, out_dir: str, *, aif_mask: Optional[str] = None,
                         vof_mask: Optional[str] = None, brain_mask: Optional[str] = None,
                         core_mask: Optional[str] = None, adc: Optional[str] = None, dwi: Optional[str] = None,
                         adc_unit: Optional[str] = None, reference_mask: Optional[str] = None,
                         tr_s: Optional[float] = None, te_s: Optional[float] = None,
                         options: Optional[PerfusionOptions] = None, overwrite: bool = False,
                         progress: Optional[ProgressCallback] = None):
    """The command line's one call: read the series and masks, :func:`run_perfusion`, :func:`write_outputs`.

    Paths: ``dsc_path`` (NIfTI, NRRD/MHA, ``.seq.nrrd``, DICOM folder; :func:`neurocontrast.dsc_io.read_dsc`
    with ``tr_s``/``te_s`` in s) and masks on its grid; ``adc`` (and ``dwi`` on the ADC's grid, ``adc_unit``)
    on any grid, for the core (:class:`~neurocontrast.perfusion.lesion.DiffusionImages`). Returns ``(PerfusionResult, {name: path})``.
    The output folder is checked before the work starts (:func:`prepare_output_folder`).
    Raises NeuroContrastError on any bad input (message from the step that refused it).
    """
    from neurocontrast.dsc_io import read_dsc
    from neurocontrast.io import read_mask

    options = options or PerfusionOptions()
    prepare_output_folder(out_dir, overwrite)
    t0 = time.perf_counter()
    report_progress(progress, 0.0, "reading")
    dsc = read_dsc(dsc_path, tr_s=tr_s, te_s=te_s)
    reference = f"the DSC series ({os.path.basename(os.fspath(dsc_path).rstrip(os.sep))})"
    masks = {name: (None if not path else read_mask(path, dsc.geometry, name=label, reference_name=reference))
             for name, path, label in (("aif", aif_mask, "AIF mask"), ("vof", vof_mask, "VOF mask"),
                                       ("brain", brain_mask, "brain mask"), ("core", core_mask, "core mask"),
                                       ("reference", reference_mask, "reference mask"))}
    diffusion = _read_diffusion(adc, dwi, adc_unit)
    read_s = time.perf_counter() - t0
    result = run_perfusion(dsc, masks["aif"], masks["vof"], masks["brain"], options=options, core_mask=masks["core"],
                           diffusion=diffusion, reference_mask=masks["reference"], progress=scaled(progress, 0.1, 0.95))
    result.report["timings_s"]["read_s"] = read_s
    report_progress(progress, 0.95, "writing")
    paths = write_outputs(result, out_dir, overwrite=overwrite,
                          title=f"Perfusion: {os.path.basename(os.fspath(dsc_path).rstrip(os.sep))}")
    report_progress(progress, 1.0, "done")
    return result, paths


def _read_diffusion(adc: Optional[str], dwi: Optional[str], adc_unit: Optional[str]):
    """The ADC map (and DWI on its grid) as :class:`~neurocontrast.perfusion.lesion.DiffusionImages`, or
    None without ``adc``. Raises NeuroContrastError when the DWI is not on the ADC's grid."""
    if not adc:
        return None
    from neurocontrast.io import read_volume
    from neurocontrast.perfusion.lesion import DiffusionImages

    adc_array, adc_geometry = read_volume(adc, "ADC map")
    dwi_array = None
    if dwi:
        dwi_array, dwi_geometry = read_volume(dwi, "DWI")
        if not dwi_geometry.same_as(adc_geometry):
            raise NeuroContrastError(f"the DWI ({os.path.basename(dwi)}) is not on the grid of the ADC map "
                                     f"({os.path.basename(adc)}): DWI {dwi_geometry.describe()}, "
                                     f"ADC {adc_geometry.describe()}")
    return DiffusionImages(adc_array, adc_geometry, dwi_array, adc_unit, os.path.basename(adc))
