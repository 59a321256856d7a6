"""neurocontrast.io: geometry checks, reading/writing volumes, clear errors on bad files."""

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.io import Geometry, check_same_geometry, read_mask, read_volume, write_volume


def test_write_read_roundtrip_keeps_values_and_grid(tmp_path):
    geo = Geometry.from_arrays((4, 5, 6), spacing_xyz=(0.9, 1.1, 3.0), origin_xyz=(-10.0, 20.0, 5.0))
    data = np.random.default_rng(0).normal(size=geo.shape).astype(np.float32)
    path = write_volume(data, geo, str(tmp_path / "sub" / "v.nii.gz"))
    back, geo_back = read_volume(path)
    assert geo_back.same_as(geo)
    np.testing.assert_allclose(back, data, rtol=1e-6)
    assert geo.shape == (4, 5, 6)
    assert geo.voxel_volume_ml == pytest.approx(0.9 * 1.1 * 3.0 / 1000)


def test_mask_on_other_grid_names_both_geometries(tmp_path):
    geo = Geometry.from_arrays((4, 5, 6))
    other = Geometry.from_arrays((4, 5, 6), spacing_xyz=(2.0, 1.0, 1.0))
    path = write_volume(np.ones(other.shape, bool), other, str(tmp_path / "m.nii.gz"))
    with pytest.raises(GeometryError) as err:
        read_mask(path, geo, name="AIF mask")
    message = str(err.value)
    assert "AIF mask" in message and "spacing 2x1x1" in message and "spacing 1x1x1" in message
    assert read_mask(path, other).all()
    with pytest.raises(GeometryError):
        check_same_geometry(geo, other, "T1", "FLAIR")


def test_array_that_does_not_fit_grid_is_refused():
    with pytest.raises(GeometryError, match="does not fit"):
        Geometry.from_arrays((4, 5, 6)).to_image(np.zeros((6, 5, 4)))


def test_corrupt_missing_2d_and_nan_files_give_clear_errors(tmp_path):
    with pytest.raises(NeuroContrastError, match="not found"):
        read_volume(str(tmp_path / "absent.nii.gz"))
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(NeuroContrastError, match="cannot read"):
        read_volume(str(bad))
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5), np.float32)), str(flat))
    with pytest.raises(NeuroContrastError, match="2D"):
        read_volume(str(flat), name="T1")
    nan = np.zeros((3, 3, 3), np.float32)
    nan[1, 1, 1] = np.nan
    nan_path = tmp_path / "nan.nii.gz"  # ITK reads NIfTI NaN as 0: io checks the file itself
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(nan_path))
    with pytest.raises(NeuroContrastError, match="NaN"):
        read_volume(str(nan_path))
    assert issubclass(NeuroContrastError, ValueError)


def test_nan_in_a_4d_nifti_dsc_is_refused(tmp_path):
    from neurocontrast.io import read_dsc
    signal = np.full((12, 3, 4, 5), 100.0, np.float32)
    signal[7, 1, 2, 3] = np.nan
    image = sitk.JoinSeries([sitk.GetImageFromArray(frame) for frame in signal])
    path = tmp_path / "dsc.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(NeuroContrastError, match="NaN"):
        read_dsc(str(path), tr_s=1.5, te_s=0.03)
