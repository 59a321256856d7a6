"""The perfusion networks from the command line: the Tmax net AIF-free end to end (no AIF/VOF options, an
overview without a curve panel, ``evaluate perfusion`` on a Tmax-only run), ST-Net and ST-Net-S asking for their
AIF/VOF with a one-line reason, and the calibration of ST-Net's inputs (same kH/ρ and VOF rescaling as oSVD)."""

import csv
import json

import numpy as np
import pytest
import torch

from neurocontrast.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", str(out), "--shape", "1", "48", "48", "--seed", "7", "--snr", "30"]) == 0
    return out


def test_tmaxnet_runs_without_aif_and_evaluates(phantom_dir, tmp_path, capsys):
    out = tmp_path / "tmaxnet"
    assert main(["perfusion", str(phantom_dir / "dsc.nii.gz"), "--brain-mask", str(phantom_dir / "brain_mask.nii.gz"),
                 "--method", "tmaxnet", "--out", str(out), "--no-progress"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"tmax.nii.gz", "tmax_uncertainty.nii.gz", "report.json", "overview.png"} <= files
    assert "cbf.nii.gz" not in files and "cbv.nii.gz" not in files
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["method"] == "tmaxnet" and rep["parameters"]["aif_voxels"] == 0
    ev = tmp_path / "eval"
    assert main(["evaluate", "perfusion", str(out), str(phantom_dir), "--out", str(ev)]) == 0
    rows = list(csv.DictReader(open(ev / "metrics.csv")))
    assert {r["map"] for r in rows} == {"tmax"}
    seg = list(csv.DictReader(open(ev / "segmentation.csv")))[0]
    assert float(seg["dice"]) > 0.6 and float(seg["auc"]) > 0.9


def test_overview_of_an_aif_free_run_shows_the_tmax_distribution(phantom_dir, tmp_path, monkeypatch):
    from neurocontrast.perfusion import report as report_mod

    calls = []
    real = report_mod._tmax_histogram_panel
    monkeypatch.setattr(report_mod, "_tmax_histogram_panel", lambda *a: calls.append(1) or real(*a))
    curve_calls = []
    monkeypatch.setattr(report_mod, "_curve_panel", lambda *a: curve_calls.append(1))
    out = tmp_path / "t"
    assert main(["perfusion", str(phantom_dir / "dsc.nii.gz"), "--brain-mask", str(phantom_dir / "brain_mask.nii.gz"),
                 "--method", "tmaxnet", "--out", str(out), "--no-progress"]) == 0
    assert calls == [1] and curve_calls == []


@pytest.mark.parametrize("method", ["stnet", "stnet-s"])
def test_stnet_needs_aif_and_vof(phantom_dir, tmp_path, capsys, method):
    dsc = str(phantom_dir / "dsc.nii.gz")
    assert main(["perfusion", dsc, "--method", method, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "needs an AIF" in err and "tmaxnet needs neither" in err and len(err.strip().splitlines()) == 1
    assert main(["perfusion", dsc, "--method", method, "--aif-mask", str(phantom_dir / "aif_mask.nii.gz"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "--vof-mask (or --vof auto) is required" in capsys.readouterr().err


def test_stnet_inputs_follow_the_classic_constants():
    """The indicator-dilution CBV of ST-Net's inputs equals the truth on a noise-free phantom once the AIF gets
    the pipeline's VOF factor, and scales with kH/ρ and the AIF factor exactly as the deconvolution's does."""
    from neurocontrast.perfusion.deep import stnet_inputs
    from neurocontrast.perfusion.pipeline import vascular_curves
    from neurocontrast.perfusion.phantom import generate_phantom

    ph = generate_phantom(shape=(1, 48, 48), n_frames=60, snr=np.inf, seed=3)
    curves = vascular_curves(ph.signal, ph.tr_s, ph.te_s, ph.aif_mask, ph.vof_mask)
    aif = ph.signal[:, ph.aif_mask].mean(axis=1)
    normal = ph.brain_mask & ~ph.aif_mask & (ph.truth["territory"] == 0)
    inp = stnet_inputs(ph.signal, ph.tr_s, aif, 50, ph.brain_mask, aif_scale=curves.factor)
    ratio = inp["cbv_physics"][normal] / ph.truth["cbv"][normal]
    assert abs(np.median(ratio) - 1.0) < 0.08, np.median(ratio)
    from neurocontrast.perfusion.maps import PerfusionConstants

    half = stnet_inputs(ph.signal, ph.tr_s, aif, 50, ph.brain_mask, aif_scale=2 * curves.factor,
                        kh_over_rho=PerfusionConstants().kh_over_rho / 2)
    assert np.allclose(half["cbv_physics"], inp["cbv_physics"] / 4, rtol=1e-4, atol=1e-6)
    assert np.allclose(half["aif"], inp["aif"])  # the AIF channel is its shape only
    with pytest.raises(Exception, match="aif_scale"):
        stnet_inputs(ph.signal, ph.tr_s, aif, 50, ph.brain_mask, aif_scale=0.0)
