"""The whole-brain speed work keeps the numbers: threaded ΔR2*/smoothing, threaded blocks of the maps, the batched
Tmax lag tables, the row-wise argmax, and a command line that loads only its command's modules."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from neurocontrast.perfusion import deconvolution as D
from neurocontrast.perfusion import maps as M
from neurocontrast.perfusion import pipeline as P
from neurocontrast.perfusion import signal as S
from neurocontrast.perfusion.lesion import remove_small_islands
from neurocontrast.perfusion.phantom import generate_phantom

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_argmax_rows_is_numpy_argmax_with_first_of_ties():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((37, 501)).astype(np.float32)
    values[[3, 9], 7] = 10.0                      # a tie: the first row wins, as with np.argmax
    values[:, 11] = 1.0                           # a flat column: row 0
    assert np.array_equal(D.argmax_rows(values), np.argmax(values, axis=0))


def _reference_dr2(signal, te, baseline, brain, spacing, fwhm, vessels):
    """The unthreaded definition: signal.delta_r2star on the brain voxels, then smooth_in_mask without vessels."""
    start, stop = baseline
    values = signal[start:, brain]
    dr2 = S.delta_r2star(values, te, (0, stop - start))
    grid = np.zeros((dr2.shape[0],) + brain.shape, np.float32)
    grid[:, brain] = dr2
    out = P.smooth_in_mask(grid, brain & ~vessels, spacing, fwhm, n_threads=1)[:, brain]
    keep = vessels[brain]
    out[:, keep] = dr2[:, keep]
    return out


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_tissue_delta_r2star_threads_match_the_definition(n_threads):
    rng = np.random.default_rng(1)
    signal = (100 + 10 * rng.random((30, 5, 24, 22))).astype(np.float32)
    signal[12, 2, 10, 12] = -1.0                 # S(t) <= 0 inside the object: evaluated at 1e-3·S0
    brain = np.zeros((5, 24, 22), bool)
    brain[1:4, 3:20, 4:18] = True
    brain[0, 0, 0] = True
    signal[:, 0, 0, 0] = 0.0                     # S0 = 0: ΔR2* 0
    vessels = np.zeros_like(brain)
    vessels[2, 8, 8] = vessels[3, 12, 10] = True
    want = _reference_dr2(signal, 0.03, (2, 8), brain, (1.8, 1.8, 5.0), 5.0, vessels)
    got = P.tissue_delta_r2star(signal, 0.03, (2, 8), brain, (1.8, 1.8, 5.0), 5.0, vessels, n_threads=n_threads)
    assert got.shape == want.shape == (28, int(brain.sum()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(got[:, 0] == 0.0)              # the S0 = 0 voxel (first in C order)
    unsmoothed = P.tissue_delta_r2star(signal, 0.03, (2, 8), brain, (1.8, 1.8, 5.0), 0.0, n_threads=n_threads)
    np.testing.assert_allclose(unsmoothed, S.delta_r2star(signal[2:, brain], 0.03, (0, 6)), rtol=1e-6, atol=1e-6)


def test_compute_maps_threads_give_the_same_maps():
    ph = generate_phantom((2, 32, 32), 50, 1.5, 0.03, 30.0, 3)
    dr2 = S.delta_r2star(ph.signal, ph.te_s, tr_s=ph.tr_s)
    aif = dr2[:, ph.aif_mask].mean(axis=1)
    one = M.compute_maps(dr2, aif, ph.tr_s, brain_mask=ph.brain_mask, chunk_size=300, n_threads=1)
    two = M.compute_maps(dr2, aif, ph.tr_s, brain_mask=ph.brain_mask, chunk_size=300, n_threads=2)
    for name in M.MAP_NAMES:
        assert np.array_equal(getattr(one, name), getattr(two, name)), name


@pytest.mark.parametrize("method", ["csvd", "ssvd", "tikhonov"])
def test_batched_lag_tables_equal_a_deconvolution_of_the_reference_curves(method):
    t = np.arange(50) * 1.5
    aif = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 1.5), 0.0)
    cuts = [0.3] if method == "tikhonov" else [0.05, 0.1, 0.2]
    tables = D.tmax_calibrations(aif, 1.5, method, cuts, (2.0, 8.0))
    for cut in cuts:
        for table, mtt in zip(tables[cut], (2.0, 8.0)):
            measured, delays, _ = table
            tissue = D._reference_tissue(aif, 1.5, delays, mtt)
            kw = {"lambda_": cut} if method == "tikhonov" else {f"{method}_threshold": cut}
            k = D.deconvolve(tissue, aif, 1.5, method, **kw)
            want = np.maximum.accumulate(D.residue_peak_s(k, 50, 1.5))
            np.testing.assert_allclose(measured, want, atol=1e-3)
    single = D.tmax_calibration(aif, 1.5, method, cuts[0], mtt_s=2.0)
    np.testing.assert_array_equal(single[0], tables[cuts[0]][0][0])


def test_small_islands_removed_on_the_bounding_box_as_on_the_grid():
    rng = np.random.default_rng(2)
    mask = np.zeros((6, 40, 40), bool)
    mask[1:5, 5:30, 8:35] = rng.random((4, 25, 27)) > 0.88   # sparse: many small components
    got = remove_small_islands(mask, 5)
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())
    want = (sizes >= 5)[labels] & mask
    assert np.array_equal(got, want) and got.any() and (got != mask).any()


def test_a_perfusion_command_line_loads_only_its_own_modules():
    code = ("import sys; from neurocontrast import cli; p = cli.build_parser(['perfusion', 'x']); "
            "import json; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('neurocontrast.', 'scipy', "
            "'matplotlib', 'torch')))))")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "NeuroContrast"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", env=env,
                         check=True).stdout
    loaded = json.loads(out)
    assert "neurocontrast.perfusion.commands" in loaded
    for absent in ("neurocontrast.readerstudy.mrmc", "neurocontrast.training.commands", "scipy.stats", "matplotlib",
                   "torch", "scipy.linalg"):
        assert not any(m == absent or m.startswith(absent + ".") for m in loaded), absent


def test_top_level_help_still_lists_every_group_and_command(capsys):
    from neurocontrast import cli

    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "perfusion" in out and "contrast" in out       # both modules registering `evaluate` are loaded


@pytest.mark.parametrize("kind", ["nifti1", "nifti2", "big-endian", "scaled"])
def test_fast_gzip_nifti_read_equals_nibabel(tmp_path, kind):
    import nibabel

    from neurocontrast.io import _read_gzip_nifti_fast

    rng = np.random.default_rng(3)
    data = rng.standard_normal((6, 5, 4, 12)).astype(">f4" if kind == "big-endian" else np.float32)
    data[1, 2, 3, 4] = np.nan                       # kept, as nibabel keeps it
    cls = nibabel.Nifti2Image if kind == "nifti2" else nibabel.Nifti1Image
    img = cls(data, np.diag([1.8, 1.8, 5.0, 1.0]))
    if kind == "scaled":
        img = nibabel.Nifti1Image(rng.integers(0, 1000, (6, 5, 4, 12)).astype(np.int16), np.eye(4))
        img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "dsc.nii.gz"
    nibabel.save(img, path)
    got = _read_gzip_nifti_fast(str(path))
    want = np.asanyarray(nibabel.load(path).dataobj)
    assert got is not None and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    raw = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EOFError):
        _read_gzip_nifti_fast(str(tmp_path / "cut.nii.gz"))
    assert _read_gzip_nifti_fast(str(tmp_path / "plain.nii")) is None


def test_scipy_blas_is_loaded_before_compute_maps_limits_the_threads():
    """Loaded inside a worker, SciPy's OpenBLAS kept its own threads after the first inner limit ended and
    the two workers thrashed (a first whole-brain call took 50 s instead of 2.6 s)."""
    code = """
import sys
import numpy as np
from neurocontrast.perfusion import maps
assert "scipy.linalg" not in sys.modules, "the maps module should not need SciPy's BLAS before a call"
seen = []
real = maps.threadpool_limits
def spy(*args, **kwargs):
    seen.append("scipy.linalg" in sys.modules)
    return real(*args, **kwargs)
maps.threadpool_limits = spy
t = np.arange(40) * 1.5
aif = np.where(t > 6, (t - 6) ** 3 * np.exp(-(t - 6) / 1.5), 0.0)
tissue = np.stack([np.convolve(aif, np.exp(-t / 4))[:40] * 0.01] * 64, axis=1)
tissue = tissue + np.random.default_rng(0).normal(0, 0.01 * tissue.max(), tissue.shape)
maps.compute_maps(tissue.reshape(40, 64, 1, 1).astype(np.float32), aif, 1.5, chunk_size=16, n_threads=2)
print(seen)
"""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "NeuroContrast"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]"
