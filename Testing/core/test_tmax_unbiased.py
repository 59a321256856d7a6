"""Tmax without the one-frame lag: noise-free delays on and off the frame grid, through the command line.

The series holds one voxel per (delay, MTT): delays 0-10.5 s in steps of 0.75 s (TR 1.5 s: every other
delay is half-way between frames), MTT 3-6 s, the AIF in its own voxels and a VOF whose area equals the
AIF's. Truth: Tmax = delay (exponential residue starting at the delay).
"""

import json
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, os.path.dirname(__file__))
import perfusion_synthetic as synth  # noqa: E402

from neurocontrast.cli import main

TR = 1.5
TE = 0.03
DELAYS = np.arange(0.0, 10.51, 0.75)
MTTS = (3.0, 4.0, 5.0, 6.0)


def _write(array, path, spacing):
    img = sitk.GetImageFromArray(np.asarray(array), isVector=False)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def delay_series(tmp_path_factory):
    """(folder, files, delay (Y, X), tissue mask (Y, X)) of a 1-slice series: rows = MTT, columns = delay."""
    d = tmp_path_factory.mktemp("delays")
    n_frames, ny, nx = 60, len(MTTS) + 2, len(DELAYS)
    dr2 = np.zeros((n_frames, 1, ny, nx))
    delay = np.zeros((ny, nx))
    for row, mtt in enumerate(MTTS):
        aif, tissue = synth.curves(n_frames=n_frames, tr_s=TR, cbf=50.0, mtt=mtt, delays=DELAYS, aif_t0=10.0)
        dr2[:, 0, row, :] = tissue
        delay[row] = DELAYS
    dr2[:, 0, ny - 2, :] = aif[:, None]                       # AIF voxels
    vof = np.interp(np.arange(n_frames) * TR - 4.0, np.arange(n_frames) * TR, aif, left=0.0)
    dr2[:, 0, ny - 1, :] = vof[:, None]                       # VOF voxels: the AIF 4 s later, same area
    s0 = 900.0 + 200.0 * np.random.default_rng(0).random((1, ny, nx))     # S0 varies: no constant frame
    signal = (s0[None] * np.exp(-TE * dr2)).astype(np.float32)
    tissue_mask = np.zeros((1, ny, nx), np.uint8)
    tissue_mask[0, :len(MTTS)] = 1
    aif_mask = np.zeros_like(tissue_mask)
    aif_mask[0, ny - 2] = 1
    vof_mask = np.zeros_like(tissue_mask)
    vof_mask[0, ny - 1] = 1
    spacing = (2.0, 2.0, 5.0)
    files = {"dsc": _write(signal, d / "dsc.nii.gz", spacing + (TR,)),
             "aif": _write(aif_mask, d / "aif.nii.gz", spacing),
             "vof": _write(vof_mask, d / "vof.nii.gz", spacing),
             "brain": _write(tissue_mask | aif_mask, d / "brain.nii.gz", spacing)}
    return d, files, delay, tissue_mask[0].astype(bool)


@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd"])
def test_tmax_equals_the_delay_through_the_cli(delay_series, method, tmp_path, capsys):
    d, files, delay, tissue = delay_series
    out = tmp_path / method
    code = main(["perfusion", files["dsc"], "--aif-mask", files["aif"], "--vof-mask", files["vof"],
                 "--brain-mask", files["brain"], "--te", str(TE), "--method", method, "--smoothing-fwhm", "0",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    tmax = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tmax.nii.gz")))[0]
    read, truth = tmax[tissue], delay[tissue]
    per_delay = np.array([read[truth == x].mean() - x for x in DELAYS])
    assert np.all(np.abs(per_delay) <= 0.5), dict(zip(DELAYS, np.round(per_delay, 2)))
    # no tissue that truly sits at or below 4.5 s crosses the 6 s threshold
    assert read[truth <= 4.5].max() <= 6.0, read[truth <= 4.5].max()
    # sub-frame: delays half-way between frames read half-way between frames (not quantised to TR)
    off_grid = (DELAYS / TR) % 1 != 0
    assert np.all(np.abs(np.array([read[truth == x].mean() for x in DELAYS[off_grid]]) / TR % 1 - 0.5) < 0.35)
    report = json.loads((out / "report.json").read_text())
    assert "lag-corrected" in report["maps_details"]["tmax"]


def test_the_uncorrected_peak_is_late(delay_series):
    """Without the correction the residue's maximum frame reads late (the lag the correction removes)."""
    from neurocontrast.perfusion.maps import compute_maps

    aif, tissue = synth.curves(n_frames=60, tr_s=TR, cbf=50.0, mtt=4.0, delays=DELAYS, aif_t0=10.0)
    data = tissue.reshape(60, 1, 1, -1)
    for method, lag in (("ssvd", 1.5), ("csvd", 1.5), ("osvd", 0.75)):
        raw = compute_maps(data, aif, TR, method=method, tmax_correction=False).tmax.ravel()
        fixed = compute_maps(data, aif, TR, method=method).tmax.ravel()
        assert np.mean(raw - DELAYS) >= lag, (method, np.mean(raw - DELAYS))
        assert abs(np.mean(fixed - DELAYS)) < 0.3, (method, np.mean(fixed - DELAYS))
