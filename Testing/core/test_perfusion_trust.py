"""The perfusion command line gives no confident wrong answer: implausible TR, constant or zero-filled frames,
negative samples, a series without bolus, a missing TE, a reused or foreign --out, a full disk; and its
parameter objects reach the core whole (cSVD threshold, --no-vof-rescale, options in report.json)."""

import errno
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast.cli import main


@pytest.fixture(scope="module")
def ph(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", str(out), "--shape", "2", "48", "48", "--seed", "3"]) == 0
    return out


def _masks(ph, vof=True):
    args = ["--aif-mask", str(ph / "aif_mask.nii.gz"), "--brain-mask", str(ph / "brain_mask.nii.gz")]
    return args + (["--vof-mask", str(ph / "vof_mask.nii.gz")] if vof else [])


def _run(ph, out, *extra, dsc=None):
    return main(["perfusion", str(dsc or ph / "dsc.nii.gz"), *_masks(ph), "--out", str(out), "--no-progress", *extra])


def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurocontrast: error:"), err
    return err[0]


def _series(ph):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(ph / "dsc.nii.gz")))


def _write_like(ph, array, path):
    """``array`` (T, Z, Y, X) on the phantom's grid and frame interval (a series of T frames)."""
    ref = sitk.ReadImage(str(ph / "dsc.nii.gz"))
    img = sitk.GetImageFromArray(array, isVector=False)
    spacing, origin = list(ref.GetSpacing()), list(ref.GetOrigin())
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(ref.GetDirection())
    sitk.WriteImage(img, str(path))
    return path


def _report(out):
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_tr_in_milliseconds_on_the_command_line_is_refused(ph, tmp_path, capsys):
    assert _run(ph, tmp_path / "o", "--tr", "1500") == 2
    assert "implausible" in _error(capsys) and not (tmp_path / "o").exists()


def test_zero_filled_frames_and_negative_voxel_are_refused(ph, tmp_path, capsys):
    signal = _series(ph).astype(np.float32)
    signal[-6:] = 0                                   # a truncated acquisition, zero-filled
    signal[10, 0, 20, 20] = -5.0
    assert _run(ph, tmp_path / "o", "--te", "0.03", dsc=_write_like(ph, signal, tmp_path / "zero.nii.gz")) == 2
    line = _error(capsys)
    assert "constant value (0)" in line and "truncated" in line


def test_negative_samples_are_reported(ph, tmp_path, capsys):
    signal = _series(ph).astype(np.float32)
    signal[10, 0, 2, 2] = -5.0                        # background voxel, outside the brain
    out = tmp_path / "o"
    assert _run(ph, out, "--te", "0.03", dsc=_write_like(ph, signal, tmp_path / "neg.nii.gz")) == 0
    assert "1 negative signal sample" in capsys.readouterr().err
    assert any("negative" in w for w in _report(out)["warnings"])


def test_constant_series_says_there_is_no_bolus(ph, tmp_path, capsys):
    signal = np.repeat(_series(ph)[:1].astype(np.float32), 40, axis=0)
    assert _run(ph, tmp_path / "o", "--te", "0.03", dsc=_write_like(ph, signal, tmp_path / "flat.nii.gz")) == 2
    line = _error(capsys)
    assert "no contrast bolus" in line and "frame 0" not in line


def test_missing_te_explains_that_the_maps_do_not_depend_on_it(ph, tmp_path, capsys):
    no_sidecar = _write_like(ph, _series(ph).astype(np.float32), tmp_path / "nosidecar.nii.gz")
    assert _run(ph, tmp_path / "o", dsc=no_sidecar) == 2
    line = _error(capsys)
    assert "--te" in line and "do not depend on its value" in line


def test_reused_out_holds_exactly_this_run(ph, tmp_path, capsys):
    out = tmp_path / "o"
    assert _run(ph, out) == 0
    (out / "tmax_uncertainty.nii.gz").write_bytes(b"left from an earlier run")
    assert _run(ph, out, "--method", "ssvd") == 0      # an earlier NeuroContrast output: replaced whole
    assert not (out / "tmax_uncertainty.nii.gz").exists()
    assert _report(out)["method"] == "ssvd"
    assert sorted(os.listdir(out)) == sorted(list(_report(out)["outputs"].values()))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert _run(ph, foreign) == 2
    assert "not empty" in _error(capsys) and (foreign / "notes.txt").exists()
    assert _run(ph, foreign, "--overwrite") == 0
    assert not (foreign / "notes.txt").exists() and (foreign / "cbf.nii.gz").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []   # no temporary folder left


def test_full_disk_leaves_no_half_written_maps(ph, tmp_path, capsys, monkeypatch):
    import neurocontrast.io as nio

    real, calls = nio.write_volume, []

    def full_disk(array, geometry, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(array, geometry, path)

    monkeypatch.setattr(nio, "write_volume", full_disk)
    out = tmp_path / "o"
    assert _run(ph, out) == 2
    line = _error(capsys)
    assert "No space left on device" in line and "nothing of this run" in line
    assert not out.exists() and os.listdir(tmp_path) == []
    # an earlier output survives a failed rerun
    monkeypatch.setattr(nio, "write_volume", real)
    assert _run(ph, out) == 0
    before = sorted(os.listdir(out))
    calls.clear()
    monkeypatch.setattr(nio, "write_volume", full_disk)
    assert _run(ph, out, "--method", "ssvd") == 2
    capsys.readouterr()
    assert sorted(os.listdir(out)) == before and _report(out)["method"] == "osvd"


def test_csvd_threshold_reaches_the_core_and_the_report(ph, tmp_path):
    lo, hi = tmp_path / "lo", tmp_path / "hi"
    assert _run(ph, lo, "--method", "csvd", "--csvd-threshold", "0.05") == 0
    assert _run(ph, hi, "--method", "csvd", "--csvd-threshold", "0.4") == 0
    rep = _report(hi)
    assert rep["options"]["svd"]["csvd_threshold"] == 0.4
    assert set(rep["options"]["svd"]) == {"ssvd_threshold", "csvd_threshold", "osvd_oi", "osvd_thresholds"}
    assert set(rep["options"]) >= {"method", "aif", "smoothing_fwhm_mm", "vof_rescale", "svd", "tikhonov", "constants"}
    # a stronger truncation flattens the residue: lower CBF peak
    assert rep["map_summary_in_brain"]["cbf"]["median"] < _report(lo)["map_summary_in_brain"]["cbf"]["median"]


def test_no_vof_rescale_uses_the_measured_aif(ph, tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    assert _run(ph, on) == 0
    assert _run(ph, off, "--no-vof-rescale") == 0
    r_on, r_off = _report(on), _report(off)
    factor = r_on["parameters"]["vof_rescaling_factor"]
    assert factor > 1.1 and r_off["parameters"]["vof_rescaling_factor"] is None
    assert r_off["parameters"]["vof_area_ratio"] == pytest.approx(factor)
    assert r_off["options"]["vof_rescale"] is False
    # CBF and CBV scale with 1/AIF: without the rescaling they are larger by the factor
    ratio = r_off["map_summary_in_brain"]["cbv"]["median"] / r_on["map_summary_in_brain"]["cbv"]["median"]
    assert ratio == pytest.approx(factor, rel=1e-3)


def test_invalid_parameter_names_the_option(ph, tmp_path, capsys):
    assert _run(ph, tmp_path / "o", "--csvd-threshold", "1.5") == 2
    assert "--csvd-threshold must be a fraction" in _error(capsys)


def test_progress_bar_in_a_terminal(ph, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["perfusion", str(ph / "dsc.nii.gz"), *_masks(ph), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    for stage in ("reading", "osvd", "writing"):
        assert stage in err, stage
    assert "%|" in err                                 # the tqdm bar itself
