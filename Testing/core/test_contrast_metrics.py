"""Virtual-contrast metrics (enhancement AUC with Otsu reference, FP/FN components, dose consistency,
harmonised CNR/LBR/CEP) and the `evaluate contrast` report writer."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast import metrics as M
from neurocontrast.contrast.evaluate import evaluate_contrast
from neurocontrast.errors import GeometryError, NeuroContrastError


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _scene(seed=0, shape=(24, 48, 48)):
    rng = np.random.default_rng(seed)
    pre = 100 + rng.normal(0, 3, shape)
    lesion = _ball(shape, (12, 24, 24), 5)
    ref = pre + np.where(lesion, 60.0, 0.0) + rng.normal(0, 3, shape)
    low = pre + np.where(lesion, 15.0, 0.0) + rng.normal(0, 3, shape)
    virtual = pre + np.where(lesion, 50.0, 0.0) + rng.normal(0, 3, shape)
    return pre, low, virtual, ref, lesion


def test_enhancement_map_and_auc():
    pre, low, virtual, ref, lesion = _scene()
    assert M.enhancement_map(np.array([1.0, 5.0]), np.array([3.0, 2.0])).tolist() == [0.0, 3.0]
    perfect = M.enhancement_auc(ref, ref, pre)
    assert perfect["auc"] == pytest.approx(1.0)
    a_low = M.enhancement_auc(low, ref, pre)
    a_vir = M.enhancement_auc(virtual, ref, pre)
    assert 0.5 < a_low["auc"] < a_vir["auc"] <= 1.0
    assert a_vir["sensitivity"] > 0.9 and a_vir["specificity"] > 0.9
    rand = M.enhancement_auc(pre + np.random.default_rng(5).normal(0, 3, pre.shape), ref, pre)
    assert rand["auc"] == pytest.approx(0.5, abs=0.05)
    labels, thr = M.otsu_binarise(M.enhancement_map(ref, pre))
    assert M.dice(labels, lesion) > 0.9
    with pytest.raises(NeuroContrastError):
        M.enhancement_auc(low[:, :10], ref, pre)


def test_enhancement_components_by_size():
    shape = (40, 80, 80)
    big = _ball(shape, (20, 20, 20), 7)        # ~14 mm
    small = _ball(shape, (20, 60, 60), 1.5)    # ~3 mm
    halluc = _ball(shape, (20, 20, 60), 3.5)   # ~7 mm, not in the reference
    reference = big | small
    predicted = big | halluc
    out = M.enhancement_components(predicted, reference, spacing=(1, 1, 1), min_volume_ml=0.005)
    assert out["n_reference"] == 2 and out["n_predicted"] == 2
    assert out["true_positive"] == 1 and out["false_positive"] == 1 and out["false_negative"] == 1
    assert out["fp_by_size"] == {"<5mm": 0, "5-10mm": 1, ">=10mm": 0}
    assert out["fn_by_size"] == {"<5mm": 1, "5-10mm": 0, ">=10mm": 0}
    assert out["fp_components"][0]["centroid_zyx"] == pytest.approx([20, 20, 60], abs=0.5)
    # specks below the minimum volume are ignored; spacing scales the volumes
    out2 = M.enhancement_components(predicted, reference, spacing=(1, 1, 1), min_volume_ml=0.1)
    assert out2["false_negative"] == 0 and out2["false_positive"] == 1
    out3 = M.enhancement_components(predicted, reference, spacing=(2, 2, 2), min_volume_ml=0.005)
    assert out3["fp_by_size"]["5-10mm"] + out3["fp_by_size"][">=10mm"] == 1
    assert out3["fp_components"][0]["volume_ml"] == pytest.approx(8 * out["fp_components"][0]["volume_ml"])


def test_dose_consistency():
    good = M.dose_consistency([0.1, 0.25, 0.5, 1.0], [3.0, 7.0, 14.0, 29.0])
    assert good["monotonic"] == 1.0 and good["spearman"] == pytest.approx(1.0) and good["slope"] > 20
    bad = M.dose_consistency([0.1, 0.5, 0.25, 1.0], [3.0, 7.0, 14.0, 29.0])
    assert bad["monotonic"] == 0.0 and bad["max_decrease"] == pytest.approx(7.0)
    with pytest.raises(NeuroContrastError):
        M.dose_consistency([0.5, 0.5], [1.0, 2.0])


def test_harmonised_contrast_metrics():
    pre, _, _, ref, lesion = _scene()
    brain = ~_ball(pre.shape, (12, 24, 24), 8)
    direct = M.cep(ref, pre, lesion)
    rescaled_pre = 0.5 * pre + 10  # another scanner scale: the raw CEP is meaningless, harmonised is not
    h = M.harmonised_contrast_metrics(ref, rescaled_pre, lesion, brain)
    assert h["cep"] == pytest.approx(direct, rel=0.03)
    assert h["pre_scale"] == pytest.approx(2.0, rel=0.1)
    assert h["cnr"] == pytest.approx(M.cnr(ref, lesion, brain)) and h["lbr"] == pytest.approx(M.lbr(ref, lesion, brain))
    assert abs(M.cep(ref, rescaled_pre, lesion) - direct) > 50


def _write(arr, path, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(np.asarray(arr, np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_evaluate_contrast_writes_table_markdown_png(tmp_path):
    pre, low, virtual, ref, lesion = _scene()
    brain = np.ones(pre.shape, bool)
    brain[:, :2] = False
    p = {n: _write(a, tmp_path / f"{n}.nii.gz") for n, a in
         dict(pre=pre, low=low, virtual=virtual, ref=ref, brain=brain, lesion=lesion).items()}
    out = evaluate_contrast(p["low"], p["virtual"], p["ref"], p["brain"], p["lesion"], tmp_path / "out",
                            pre_path=p["pre"])
    rows = list(csv.DictReader(open(out["csv"])))
    assert [r["image"] for r in rows] == ["low", "virtual", "reference"]
    low_row, vir_row, ref_row = rows
    assert float(vir_row["ssim"]) > float(low_row["ssim"]) and float(vir_row["psnr"]) > float(low_row["psnr"])
    assert float(vir_row["auc"]) > float(low_row["auc"])
    assert float(ref_row["cnr"]) > float(vir_row["cnr"]) > float(low_row["cnr"])
    assert float(vir_row["cep"]) > float(low_row["cep"]) > 0
    assert out["slice_index"] == 12
    md = open(out["markdown"]).read()
    assert "| virtual |" in md and "comparison.png" in md
    assert open(out["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(out["json"]))["mask_source"].startswith("brain mask")
    # without the pre-contrast T1: image metrics only, and the report says why
    out2 = evaluate_contrast(p["low"], p["virtual"], p["ref"], out_dir=tmp_path / "out2")
    row = list(csv.DictReader(open(out2["csv"])))[1]
    assert row["auc"] == "" and float(row["ssim"]) > 0
    assert "not given" in open(out2["markdown"]).read()


def test_evaluate_contrast_bad_input(tmp_path):
    pre, low, virtual, ref, lesion = _scene(shape=(12, 24, 24))
    a = _write(low, tmp_path / "low.nii.gz")
    b = _write(ref, tmp_path / "ref.nii.gz")
    c = _write(virtual, tmp_path / "vir.nii.gz", spacing=(2.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="virtual"):
        evaluate_contrast(a, c, b, out_dir=tmp_path / "o")
    with pytest.raises(NeuroContrastError, match="not found"):
        evaluate_contrast(a, tmp_path / "nothing.nii.gz", b, out_dir=tmp_path / "o")
    empty = _write(np.zeros(low.shape), tmp_path / "empty.nii.gz")
    with pytest.raises(NeuroContrastError, match="lesion"):
        evaluate_contrast(a, a, b, lesion_mask_path=empty, out_dir=tmp_path / "o")
