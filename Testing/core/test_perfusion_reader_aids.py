"""What a stroke reader no longer does by hand: automatic VOF, relative maps, ADC core and mismatch,
and a usable Tikhonov (one λ by generalised cross-validation)."""

import json

import numpy as np
import pytest

from neurocontrast import metrics
from neurocontrast.cli import main
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry, read_volume, write_volume
from neurocontrast.perfusion import aif as aif_mod
from neurocontrast.perfusion import signal as signal_mod
from neurocontrast.perfusion.lesion import adc_core, adc_unit, mismatch_volumes
from neurocontrast.perfusion.maps import contralateral_white_matter, relative_maps
from neurocontrast.perfusion.phantom import LABELS, generate_phantom, write_phantom
from neurocontrast.perfusion.pipeline import run_perfusion


@pytest.fixture(scope="module")
def small():
    return generate_phantom(shape=(2, 64, 64), snr=40.0, seed=2)


@pytest.fixture(scope="module")
def small_result(small):
    return run_perfusion(small.to_dsc(), small.aif_mask, None, small.brain_mask, vof="auto")


# ------------------------------------------------------------------------------------------------ VOF
@pytest.mark.parametrize("snr", [20.0, 40.0])
def test_suggest_vof_finds_the_sinus(snr):
    ph = generate_phantom(shape=(4, 64, 64), snr=snr, seed=5)
    start, stop = signal_mod.detect_baseline(ph.signal, ph.tr_s)
    dr2 = signal_mod.delta_r2star(ph.signal[start:], ph.te_s, (0, stop - start))
    region = aif_mod.posterior_midline_region(ph.brain_mask, ph.geometry)
    assert ph.vof_mask[region].sum() == ph.vof_mask.sum()          # the sinus lies in the search region
    assert not (region & (ph.truth["territory"] > 0)).any()        # the lateral MCA territory does not
    found = aif_mod.suggest_vof(dr2, ph.tr_s, region & ~ph.aif_mask,
                                baseline_signal=ph.signal[start:stop].mean(axis=0))
    assert found.sum() == 4
    assert np.all(ph.truth["pv"][found] >= 0.9)                    # full-volume sinus voxels, not tissue


def test_suggest_vof_refuses_without_a_venous_bolus():
    flat = np.zeros((40, 2, 8, 8))
    flat[10:14] = 5.0                                             # an early bolus that ends: nothing late
    with pytest.raises(NeuroContrastError, match="no venous curve"):
        aif_mod.suggest_vof(flat, 1.5, np.ones((2, 8, 8), bool), arterial_ttp_s=20.0)
    with pytest.raises(NeuroContrastError, match="empty"):
        aif_mod.suggest_vof(flat, 1.5, np.zeros((2, 8, 8), bool))


def test_pipeline_vof_auto_matches_the_drawn_vof(small, small_result):
    auto = small_result
    assert auto.report["parameters"]["vof"] == "auto" and len(auto.report["vof_points_zyx"]) == 4
    assert np.all(small.truth["pv"][auto.vof_mask] >= 0.9)
    drawn = run_perfusion(small.to_dsc(), small.aif_mask, small.vof_mask, small.brain_mask)
    f_auto = auto.report["parameters"]["vof_rescaling_factor"]
    f_drawn = drawn.report["parameters"]["vof_rescaling_factor"]
    assert f_auto == pytest.approx(f_drawn, rel=0.1)
    with pytest.raises(NeuroContrastError, match="not both"):
        run_perfusion(small.to_dsc(), small.aif_mask, small.vof_mask, small.brain_mask, vof="auto")


@pytest.mark.parametrize("name", ["convexity", "cerebellum"])
def test_vof_auto_on_real_moyamoya_slices(name, shared_data, tmp_path):
    """The automatic VOF lands on the posterior midline vein found by hand (test_cli_perfusion's
    derive_sss_vof_mask), peaks after the AIF and carries at least as much tracer (less partial volume)."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from test_cli_perfusion import derive_sss_vof_mask

    from neurocontrast.dsc_io import read_dsc

    path = str(shared_data(f"dsc/moyamoya/{name}_dsc.nii.gz"))
    dsc = read_dsc(path, te_s=0.03)
    hand_mask = derive_sss_vof_mask(dsc, 0.03)
    out = tmp_path / "out"
    assert main(["perfusion", path, "--aif", "auto", "--vof", "auto", "--te", "0.03", "--out", str(out),
                 "--no-progress"]) == 0
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    auto = np.array(rep["vof_points_zyx"])
    hand = np.argwhere(hand_mask)
    distance = np.linalg.norm(auto[:, None, :] - hand[None, :, :], axis=2).min(axis=1)
    assert len(auto) == 4 and np.all(distance <= 6.0), (auto, hand)          # <= 11 mm: the same vein
    assert rep["vof_quality"]["time_to_peak_s"] > rep["aif_quality"]["time_to_peak_s"]
    drawn = run_perfusion(dsc, None, hand_mask, None, aif="auto")
    assert rep["parameters"]["vof_area_ratio"] >= drawn.report["parameters"]["vof_area_ratio"] - 0.02


# ------------------------------------------------------------------------------------------------ relative maps
def test_contralateral_white_matter_and_relative_maps(small, small_result):
    res = small_result
    ref, info = contralateral_white_matter(res.maps, res.brain_mask, small.geometry,
                                           hypoperfused_mask=res.hypoperfusion_mask, baseline_signal=res.baseline_signal,
                                           exclude=res.aif_mask | res.vof_mask)
    assert info["side"] == "right"                                  # the territory is in the left hemisphere
    assert (small.labels[ref] == LABELS["white_matter"]).mean() > 0.95
    assert not (ref & (small.truth["territory"] > 0)).any()
    assert res.report["relative_maps"]["voxels"] == int(ref.sum())
    normal = small.brain_mask & (small.truth["territory"] == 0) & (small.truth["pv"] == 0)
    gm, wm = normal & (small.labels == LABELS["grey_matter"]), normal & (small.labels == LABELS["white_matter"])
    rcbf = res.maps["rcbf"]
    assert np.median(rcbf[ref]) == pytest.approx(1.0, abs=0.02)
    assert 0.85 < np.median(rcbf[wm]) < 1.2 and np.median(rcbf[gm]) > 2.0     # truth GM/WM 60/22 = 2.7
    assert np.median(rcbf[small.truth["territory"] == 3]) < 0.5              # core CBF x 0.25
    assert np.median(res.maps["rmtt"][small.truth["territory"] == 3]) > 1.5
    # a given reference mask: its median becomes 1
    given = normal & (small.labels == LABELS["grey_matter"])
    rel, medians = relative_maps(res.maps, given)
    assert np.median(rel["rcbv"][given]) == pytest.approx(1.0, abs=1e-3)
    assert medians["cbv"] == pytest.approx(float(np.median(res.maps["cbv"][given])))
    with pytest.raises(NeuroContrastError, match="no brain voxel"):
        run_perfusion(small.to_dsc(), small.aif_mask, small.vof_mask, small.brain_mask,
                      reference_mask=~small.brain_mask)


# ------------------------------------------------------------------------------------------------ ADC core
def _stroke(shared_data):
    base = "stroke/isles22-strokecase0001/"
    adc, geo = read_volume(str(shared_data(base + "adc.nii.gz")))
    lesion, _ = read_volume(str(shared_data(base + "lesion_mask.nii.gz")))
    dwi, _ = read_volume(str(shared_data(base + "dwi.nii.gz")))
    return adc, dwi, lesion > 0, geo


def test_adc_core_on_the_isles_case(shared_data):
    """README: a bare ADC < 0.62e-3 threshold marks ~57 mL where the expert infarct is 6.7 mL."""
    adc, dwi, lesion, geo = _stroke(shared_data)
    bare = (adc > 0) & (adc < 0.62)
    bare_ml = bare.sum() * geo.voxel_volume_ml
    assert 50 < bare_ml < 65
    core = adc_core(adc, geo)
    assert core.unit == "1e-3 mm2/s" and core.steps_ml["threshold"] == pytest.approx(bare_ml)
    assert 1.0 < core.volume_ml < 8.0, core.steps_ml                  # near the 6.7 mL infarct, not 57 mL
    precision = (core.mask & lesion).sum() / core.mask.sum()
    bare_precision = (bare & lesion).sum() / bare.sum()
    assert precision > 4 * bare_precision
    assert metrics.dice(core.mask, lesion) > 2 * metrics.dice(bare, lesion)
    with_dwi = adc_core(adc, geo, dwi=dwi)
    assert with_dwi.volume_ml <= core.volume_ml
    assert (with_dwi.mask & lesion).sum() / with_dwi.mask.sum() > precision      # DWI-bright: fewer artefacts
    # the same map in mm²/s or µm²/s gives the same core (unit inferred from the brain median)
    np.testing.assert_array_equal(adc_core(adc * 1e-3, geo).mask, core.mask)
    np.testing.assert_array_equal(adc_core(adc * 1e3, geo).mask, core.mask)
    with pytest.raises(NeuroContrastError, match="fits no ADC unit"):
        adc_core(dwi, geo)                                             # a DWI given as ADC


def test_adc_core_rules_on_a_synthetic_map():
    geo = Geometry.from_arrays((12, 30, 30), spacing_xyz=(2.0, 2.0, 2.0))   # 0.008 mL per voxel
    adc = np.zeros(geo.shape, np.float32)
    adc[1:11, 2:28, 2:28] = 0.8e-3                                     # brain
    adc[4:8, 10:16, 10:16] = 0.4e-3                                    # infarct: 144 voxels = 1.15 mL
    adc[5, 22:26, 22:26] = 3.0e-3                                      # CSF pocket ...
    adc[5, 21, 22:26] = 0.5e-3                                         # ... with a low-ADC rim beside it
    adc[9, 5, 5] = 0.3e-3                                              # one noisy voxel
    core = adc_core(adc, geo, unit="mm2/s")
    assert core.volume_ml == pytest.approx(144 * 0.008)
    assert core.mask[4:8, 10:16, 10:16].all() and core.mask.sum() == 144
    assert core.steps_ml["threshold"] > core.steps_ml["without_csf_border"] > core.volume_ml
    with pytest.raises(NeuroContrastError, match="unknown ADC unit"):
        adc_core(adc, geo, unit="s/mm2")
    with pytest.raises(NeuroContrastError, match="NaN"):
        adc_core(np.where(adc > 0, adc, np.nan), geo)
    assert adc_unit(adc * 1e6, adc > 0)[0] == "1e-6 mm2/s"


def test_mismatch_from_volumes():
    m = mismatch_volumes(120.0, 20.0)
    assert m["mismatch_ml"] == 100.0 and m["ratio"] == 6.0 and m["target_mismatch"]
    assert not mismatch_volumes(100.0, 80.0)["target_mismatch"]                 # core >= 70 mL
    assert mismatch_volumes(0.0, 0.0)["ratio"] != mismatch_volumes(0.0, 0.0)["ratio"]   # nan
    with pytest.raises(NeuroContrastError):
        mismatch_volumes(-1.0, 2.0)


def test_cli_adc_core_and_mismatch_on_the_dsc_grid(small, tmp_path, capsys):
    """An ADC map on the DSC grid: core, voxel-wise mismatch, core_adc.nii.gz, relative maps, --vof auto."""
    paths = write_phantom(small, str(tmp_path / "ph"))
    adc = np.where(small.brain_mask, 0.8, 0.0).astype(np.float32)          # 1e-3 mm²/s
    adc[small.truth["territory"] == 3] = 0.45                               # the core of the territory
    adc_path = write_volume(adc, small.geometry, str(tmp_path / "adc.nii.gz"))
    out = tmp_path / "out"
    code = main(["perfusion", paths["dsc"], "--aif-mask", paths["aif_mask"], "--vof", "auto",
                 "--brain-mask", paths["brain_mask"], "--adc", adc_path, "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "core" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    true_core = (small.truth["territory"] == 3) & small.brain_mask
    core_ml = rep["core_from_adc"]["core_ml"]
    assert 0.7 * true_core.sum() * small.geometry.voxel_volume_ml < core_ml <= true_core.sum() * small.geometry.voxel_volume_ml
    mism = rep["mismatch"]
    assert mism["core_ml"] == pytest.approx(core_ml) and "grid" not in mism
    assert mism["mismatch_ml"] == pytest.approx(mism["hypoperfused_ml"] - core_ml)
    for name in ("rcbf", "rcbv", "rmtt", "core_adc"):
        assert (out / f"{name}.nii.gz").exists() and name in rep["outputs"]
    assert rep["relative_maps"]["side"] == "right" and rep["options"]["vof"] == "auto"
    assert rep["units"]["rcbf"].startswith("ratio")
    # --dwi without --adc, and --core-mask with --adc, are refused
    assert main(["perfusion", paths["dsc"], "--aif-mask", paths["aif_mask"], "--vof", "auto", "--dwi", adc_path,
                 "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "--dwi needs --adc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["perfusion", paths["dsc"], "--aif-mask", paths["aif_mask"], "--vof", "auto", "--adc", adc_path,
              "--core-mask", adc_path, "--out", str(tmp_path / "o3")])


# ------------------------------------------------------------------------------------------------ Tikhonov
def test_tikhonov_gcv_tracks_cbf_like_osvd(small):
    """The per-voxel L-curve gave CBF Pearson r -0.10 at SNR 40 (docs/perfusion.md); one λ by GCV: r ~0.9."""
    region = small.brain_mask & (small.labels != LABELS["artery"])
    truth = small.truth["cbf"][region]
    r = {}
    for method in ("tikhonov", "osvd"):
        res = run_perfusion(small.to_dsc(), small.aif_mask, small.vof_mask, small.brain_mask, method=method)
        r[method] = np.corrcoef(res.maps["cbf"][region], truth)[0, 1]
        if method == "tikhonov":
            lam = res.report["maps_details"]["tikhonov_lambda"]
            assert 0.01 < lam < 0.5 and res.report["options"]["tikhonov"]["rule"] == "gcv"
    assert r["tikhonov"] > 0.8 and r["tikhonov"] > r["osvd"] - 0.08, r
