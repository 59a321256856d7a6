"""Reading 4D DSC series: NIfTI (time units), NRRD, Slicer .seq.nrrd, DICOM folder, BIDS sidecar; errors."""

import json
import os
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import DSCSeries, read_dsc

T, Z, Y, X = 12, 3, 5, 6


def _series(seed=0):
    return np.random.default_rng(seed).uniform(100, 1000, (T, Z, Y, X)).astype(np.float32)


def _image4d(arr, tr=1.5):
    img = sitk.GetImageFromArray(arr, isVector=False)
    img.SetSpacing((1.8, 1.9, 5.0, tr))
    img.SetOrigin((10.0, -20.0, 30.0, 0.0))
    return img


def test_nifti_tr_from_header_and_properties(tmp_path):
    arr = _series()
    path = str(tmp_path / "dsc.nii.gz")
    sitk.WriteImage(_image4d(arr, 1.5), path)
    dsc = read_dsc(path)
    assert isinstance(dsc, DSCSeries)
    assert dsc.signal.shape == (T, Z, Y, X) and dsc.signal.dtype == np.float32
    np.testing.assert_allclose(dsc.signal, arr)
    assert dsc.tr_s == pytest.approx(1.5) and dsc.te_s is None and dsc.path == path
    assert dsc.n_frames == T
    np.testing.assert_allclose(dsc.times_s, np.arange(T) * 1.5)
    assert dsc.geometry.shape == (Z, Y, X)
    assert dsc.geometry.spacing == pytest.approx((1.8, 1.9, 5.0))
    # explicit arguments win
    d2 = read_dsc(path, tr_s=2.0, te_s=0.025)
    assert d2.tr_s == 2.0 and d2.te_s == 0.025


def _patch_nifti_time(path, pixdim4, xyzt_units):
    with open(path, "r+b") as fh:
        fh.seek(76 + 4 * 4)                    # pixdim[4] (float32) in the NIfTI-1 header
        fh.write(struct.pack("<f", pixdim4))
        fh.seek(123)                           # xyzt_units (char)
        fh.write(bytes([xyzt_units]))


@pytest.mark.parametrize("pixdim4, units, expected", [(1500.0, 2 | 16, 1.5), (1.5, 2 | 8, 1.5),
                                                      (1500000.0, 2 | 24, 1.5), (1.2, 2, 1.2)])
def test_nifti_time_units(tmp_path, pixdim4, units, expected):
    path = str(tmp_path / "dsc.nii")
    sitk.WriteImage(_image4d(_series(), 1.0), path)
    _patch_nifti_time(path, pixdim4, units)
    assert read_dsc(path).tr_s == pytest.approx(expected)


def test_nifti_tr_in_ms_without_unit_is_refused_unless_given(tmp_path):
    path = str(tmp_path / "dsc.nii")
    sitk.WriteImage(_image4d(_series(), 1.0), path)
    _patch_nifti_time(path, 1500.0, 2)                      # 1500 with no time unit: ms or a wrong value
    with pytest.raises(NeuroContrastError, match="implausible.*give 1.5 s"):
        read_dsc(path)
    assert read_dsc(path, tr_s=1.5).tr_s == 1.5              # an explicit TR overrides the header


def test_nifti_without_tr_needs_explicit(tmp_path):
    path = str(tmp_path / "dsc.nii")
    sitk.WriteImage(_image4d(_series(), 1.0), path)
    _patch_nifti_time(path, 0.0, 2 | 8)
    with pytest.raises(NeuroContrastError, match="TR"):
        read_dsc(path)
    assert read_dsc(path, tr_s=1.1).tr_s == 1.1


def test_bids_sidecar(tmp_path):
    path = str(tmp_path / "sub-01_dsc.nii.gz")
    sitk.WriteImage(_image4d(_series(), 1.0), path)
    side = tmp_path / "sub-01_dsc.json"
    side.write_text(json.dumps({"EchoTime": 0.032, "RepetitionTime": 1.6}))
    dsc = read_dsc(path)
    assert dsc.te_s == pytest.approx(0.032) and dsc.tr_s == pytest.approx(1.6)
    assert read_dsc(path, te_s=0.02, tr_s=1.0).te_s == 0.02          # explicit wins
    side.write_text(json.dumps({"EchoTime": 32}))                      # ms is not BIDS
    with pytest.raises(NeuroContrastError, match="seconds"):
        read_dsc(path)
    side.write_text(json.dumps({"EchoTime": 0}))
    with pytest.raises(NeuroContrastError, match="echo time"):
        read_dsc(path)
    side.write_text("{not json", encoding="utf-8")
    with pytest.raises(NeuroContrastError, match="sidecar"):
        read_dsc(path)


def test_nrrd_4d(tmp_path):
    arr = _series(1)
    path = str(tmp_path / "dsc.nrrd")
    sitk.WriteImage(_image4d(arr, 1.25), path)
    dsc = read_dsc(path)
    np.testing.assert_allclose(dsc.signal, arr)
    assert dsc.tr_s == pytest.approx(1.25)


def _write_seq_nrrd(path, arr, step=1.5, unit="s"):
    t, z, y, x = arr.shape
    values = " ".join(f"{step * i:g}" for i in range(t))
    header = (f"NRRD0004\ntype: float\ndimension: 4\nspace: left-posterior-superior\nsizes: {t} {x} {y} {z}\n"
              "space directions: none (1.8,0,0) (0,1.9,0) (0,0,5)\nkinds: list domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (10,-20,30)\n"
              f"axis 0 index type:=numeric\naxis 0 index values:={values}\naxis 0 quantity:=time\n"
              f"axis 0 unit:={unit}\nDataNodeClassName:=vtkMRMLScalarVolumeNode\n\n")
    with open(path, "wb") as fh:
        fh.write(header.encode())
        fh.write(np.ascontiguousarray(arr.transpose(1, 2, 3, 0), dtype="<f4").tobytes())


@pytest.mark.parametrize("step, unit, expected", [(1.5, "s", 1.5), (1500, "ms", 1.5)])
def test_slicer_sequence_nrrd(tmp_path, step, unit, expected):
    arr = _series(2)
    path = str(tmp_path / "dsc.seq.nrrd")
    _write_seq_nrrd(path, arr, step, unit)
    dsc = read_dsc(path, te_s=0.03)
    assert dsc.signal.shape == (T, Z, Y, X)
    np.testing.assert_allclose(dsc.signal, arr)
    assert dsc.tr_s == pytest.approx(expected)
    assert dsc.geometry.origin == pytest.approx((10, -20, 30))


def _write_dicom_series(folder, arr, te_ms=30.0, tr_ms=1500.0, frame_s=1.5, shuffle=True):
    os.makedirs(folder, exist_ok=True)
    t, z, y, x = arr.shape
    files = []
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    rng = np.random.default_rng(0)
    for ti in range(t):
        for zi in range(z):
            sl = sitk.GetImageFromArray(arr[ti, zi].astype(np.int16))
            sl.SetSpacing((1.8, 1.9))
            acq = 10 * 3600 + ti * frame_s
            tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
                    "0020|000e": "1.2.826.0.1.3680043.2.1125.2", "0020|0037": "1\\0\\0\\0\\1\\0",
                    "0020|0032": f"10\\-20\\{30 + 5.0 * zi}", "0018|0050": "5",
                    "0020|0013": str(ti * z + zi + 1), "0020|0012": str(ti + 1),
                    "0008|0032": f"{int(acq // 3600):02d}{int(acq % 3600 // 60):02d}{acq % 60:09.6f}",
                    "0018|0081": f"{te_ms:g}", "0018|0080": f"{tr_ms:g}",
                    "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{ti}.{zi}"}
            for k, v in tags.items():
                sl.SetMetaData(k, v)
            files.append(sl)
    order = rng.permutation(len(files)) if shuffle else np.arange(len(files))
    for n, i in enumerate(order):
        writer.SetFileName(os.path.join(folder, f"IM{n:04d}.dcm"))
        writer.Execute(files[i])


def test_dicom_folder(tmp_path):
    arr = np.rint(_series(3))
    folder = str(tmp_path / "dicom")
    _write_dicom_series(folder, arr, te_ms=32.0, tr_ms=1400.0, frame_s=1.6)
    dsc = read_dsc(folder)
    assert dsc.signal.shape == (T, Z, Y, X)
    np.testing.assert_allclose(dsc.signal, arr)             # time and slice order restored
    assert dsc.te_s == pytest.approx(0.032)                 # EchoTime ms → s
    assert dsc.tr_s == pytest.approx(1.6, abs=1e-4)         # from acquisition-time steps
    assert dsc.geometry.spacing == pytest.approx((1.8, 1.9, 5.0))
    assert read_dsc(folder, te_s=0.02, tr_s=1.0).tr_s == 1.0


def test_dicom_3d_folder_is_rejected(tmp_path):
    folder = str(tmp_path / "dicom3d")
    _write_dicom_series(folder, np.rint(_series(4))[:1])
    with pytest.raises(NeuroContrastError, match="3D"):
        read_dsc(folder)


def test_errors(tmp_path):
    with pytest.raises(NeuroContrastError, match="not found"):
        read_dsc(str(tmp_path / "missing.nii.gz"))
    vol = str(tmp_path / "t1.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(_series()[0]), vol)
    with pytest.raises(NeuroContrastError, match="3D"):
        read_dsc(vol)
    short = str(tmp_path / "short.nii.gz")
    sitk.WriteImage(_image4d(_series()[:9]), short)
    with pytest.raises(NeuroContrastError, match="9 frames"):
        read_dsc(short)
    nan = _series()
    nan[3, 1, 1, 1] = np.nan
    bad = str(tmp_path / "nan.nrrd")                         # (the NIfTI writer turns NaN into 0)
    sitk.WriteImage(_image4d(nan), bad)
    with pytest.raises(NeuroContrastError, match="NaN"):
        read_dsc(bad)
    good = str(tmp_path / "good.nii.gz")
    sitk.WriteImage(_image4d(_series()), good)
    for te in (0.0, -0.03):
        with pytest.raises(NeuroContrastError, match="te_s"):
            read_dsc(good, te_s=te)
    with pytest.raises(NeuroContrastError, match="te_s"):
        read_dsc(good, te_s=30.0)                            # ms given as s
    with pytest.raises(NeuroContrastError, match="tr_s"):
        read_dsc(good, tr_s=0.0)
    vec = str(tmp_path / "rgb.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True), vec)
    with pytest.raises(NeuroContrastError, match="vector"):
        read_dsc(vec)


def test_real_moyamoya(shared_data):
    dsc = read_dsc(shared_data("dsc/moyamoya/convexity_dsc.nii.gz"))
    assert dsc.signal.shape == (50, 1, 128, 128)
    assert dsc.tr_s == pytest.approx(2.0)
    assert dsc.te_s is None


# ------------------------------------------------------------------ no confident wrong answer


def test_tr_in_milliseconds_is_refused_or_converted(tmp_path):
    arr = _series(5)
    good = str(tmp_path / "dsc.nii.gz")
    sitk.WriteImage(_image4d(arr, 1.5), good)
    with pytest.raises(NeuroContrastError, match="implausible.*give 1.5 s"):
        read_dsc(good, tr_s=1500)                                    # --tr 1500
    side = str(tmp_path / "sub_dsc.nii.gz")
    sitk.WriteImage(_image4d(arr, 1.5), side)
    (tmp_path / "sub_dsc.json").write_text(json.dumps({"RepetitionTime": 1500}))
    with pytest.raises(NeuroContrastError, match="RepetitionTime.*implausible"):
        read_dsc(side)
    for ext in ("nrrd", "mha"):                                      # t-spacing 1500: no unit of its own
        path = str(tmp_path / f"dsc.{ext}")
        sitk.WriteImage(_image4d(arr, 1500.0), path)
        with pytest.raises(NeuroContrastError, match="4th spacing.*implausible"):
            read_dsc(path)
        assert read_dsc(path, tr_s=1.5).tr_s == 1.5
    seq = str(tmp_path / "dsc.seq.nrrd")
    _write_seq_nrrd(seq, arr, 1500, "")                              # index values in ms, no unit
    with pytest.raises(NeuroContrastError, match="sequence index.*implausible"):
        read_dsc(seq)
    with pytest.raises(NeuroContrastError, match="implausible"):
        read_dsc(good, tr_s=0.05)                                    # too fast for a DSC frame


def test_nrrd_converted_from_nifti_reads_tr_from_space_directions(tmp_path):
    nii = str(tmp_path / "dsc.nii.gz")
    sitk.WriteImage(_image4d(_series(6), 1.6), nii)
    img = sitk.ReadImage(nii)                                        # carries the NIfTI's pixdim[4] key
    assert img.HasMetaDataKey("pixdim[4]")
    nrrd = str(tmp_path / "dsc.nrrd")
    sitk.WriteImage(img, nrrd)
    assert read_dsc(nrrd).tr_s == pytest.approx(1.6)


def _truncate(path, keep_fraction):
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: int(len(data) * keep_fraction)])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_truncated_nifti_is_refused(tmp_path, dtype):
    arr = np.rint(_series(7)).astype(dtype)
    path = str(tmp_path / "dsc.nii")
    sitk.WriteImage(_image4d(arr), path)
    _truncate(path, 0.7)
    with pytest.raises(NeuroContrastError, match="truncated"):
        read_dsc(path)
    gz = str(tmp_path / "dsc.nii.gz")
    sitk.WriteImage(_image4d(arr), gz)
    _truncate(gz, 0.7)
    with pytest.raises(NeuroContrastError, match="truncated|cannot read"):
        read_dsc(gz)


def test_header_only_nifti_is_refused(tmp_path):
    path = str(tmp_path / "dsc.nii")
    sitk.WriteImage(_image4d(_series(8)), path)
    _truncate(path, 352 / os.path.getsize(path))
    with pytest.raises(NeuroContrastError, match="truncated|cannot read"):
        read_dsc(path)


def test_zero_filled_and_constant_frames_are_refused(tmp_path):
    arr = np.rint(_series(9)).astype(np.int16)
    arr[-3:] = 0                                                     # what ITK makes of a truncated file
    path = str(tmp_path / "dsc.nii.gz")
    sitk.WriteImage(_image4d(arr), path)
    with pytest.raises(NeuroContrastError, match="frames 9-11 of 12.*truncated"):
        read_dsc(path)
    arr = np.rint(_series(9)).astype(np.int16)
    arr[4] = 7                                                       # a dropped frame in the middle
    sitk.WriteImage(_image4d(arr), path)
    with pytest.raises(NeuroContrastError, match="frame 4 of 12.*dropped"):
        read_dsc(path)


def test_single_slice_dicom_keeps_its_thickness(tmp_path):
    arr = np.rint(_series(10))[:, :1]
    folder = str(tmp_path / "dicom1")
    _write_dicom_series(folder, arr)
    dsc = read_dsc(folder)
    assert dsc.signal.shape == (T, 1, Y, X)
    assert dsc.geometry.spacing == pytest.approx((1.8, 1.9, 5.0))    # SliceThickness, not ITK's 1 mm
    assert dsc.geometry.voxel_volume_ml == pytest.approx(1.8 * 1.9 * 5.0 / 1000)
