"""Tmax hypoperfusion masks, island removal, volumes in mL and the DEFUSE-3 mismatch (issue 2 §2)."""

import numpy as np
import pytest

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.io import Geometry
from neurocontrast.perfusion.lesion import hypoperfusion, mismatch, remove_small_islands

GEO = Geometry.from_arrays((10, 40, 40), spacing_xyz=(2.0, 2.0, 5.0))    # 0.02 mL per voxel


def _tmax():
    tmax = np.full(GEO.shape, 1.0, np.float32)
    tmax[2:8, 5:25, 5:25] = 7.0          # 6 x 20 x 20 = 2400 voxels = 48 mL with Tmax 7 s
    tmax[3:7, 10:20, 10:20] = 11.0       # core of the territory: 400 voxels = 8 mL above 10 s
    tmax[5, 35, 35] = 12.0               # a lone noisy voxel (0.02 mL) far away
    tmax[0:2, 30:33, 30:33] = 9.0        # an 18-voxel (0.36 mL) island
    return tmax


def test_volumes_and_thresholds():
    assert GEO.voxel_volume_ml == pytest.approx(0.02)
    res = hypoperfusion(_tmax(), GEO)
    assert sorted(res.masks) == [4.0, 6.0, 8.0, 10.0]
    assert res.volumes_ml[6.0] == pytest.approx(48.0)
    assert res.volumes_ml[4.0] == pytest.approx(48.0)
    assert res.volumes_ml[8.0] == pytest.approx(8.0)
    assert res.volumes_ml[10.0] == pytest.approx(8.0)
    assert all(m.dtype == bool and m.shape == GEO.shape for m in res.masks.values())
    assert not res.masks[6.0][5, 35, 35] and not res.masks[6.0][0, 31, 31]    # islands < 1 mL removed
    assert res.as_dict()["tmax_gt_6s_ml"] == pytest.approx(48.0)
    # no island removal keeps the noise: +1 voxel and +18 voxels
    raw = hypoperfusion(_tmax(), GEO, min_island_ml=0.0)
    assert raw.volumes_ml[6.0] == pytest.approx(48.0 + 19 * 0.02)
    # a smaller island limit keeps the 0.36 mL island but not the single voxel
    mid = hypoperfusion(_tmax(), GEO, min_island_ml=0.1)
    assert mid.volumes_ml[6.0] == pytest.approx(48.0 + 18 * 0.02)


def test_brain_mask_limits_the_lesion():
    brain = np.zeros(GEO.shape, bool)
    brain[:, :, :15] = True
    res = hypoperfusion(_tmax(), GEO, brain_mask=brain, thresholds=(6,))
    assert res.volumes_ml[6.0] == pytest.approx(6 * 20 * 10 * 0.02)
    assert not res.masks[6.0][:, :, 15:].any()


def test_remove_small_islands_uses_26_connectivity():
    m = np.zeros((3, 3, 3), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True             # diagonal chain: one 26-connected component
    assert remove_small_islands(m, 3).sum() == 3
    assert remove_small_islands(m, 4).sum() == 0


def test_mismatch_defuse3():
    hypo = np.zeros(GEO.shape, bool)
    hypo[2:8, 5:25, 5:25] = True                              # 48 mL
    core = np.zeros(GEO.shape, bool)
    core[3:7, 10:20, 10:20] = True                            # 8 mL
    m = mismatch(hypo, core, GEO)
    assert m["core_ml"] == pytest.approx(8.0) and m["hypoperfused_ml"] == pytest.approx(48.0)
    assert m["mismatch_ml"] == pytest.approx(40.0) and m["ratio"] == pytest.approx(6.0)
    assert m["target_mismatch"] is True
    # ratio below 1.8 → no target mismatch
    big_core = np.zeros(GEO.shape, bool)
    big_core[2:8, 5:25, 5:17] = True                          # 28.8 mL, ratio 1.67
    assert mismatch(hypo, big_core, GEO)["target_mismatch"] is False
    # mismatch volume below 15 mL → no target mismatch although the ratio is high
    small = np.zeros(GEO.shape, bool)
    small[2:4, 5:15, 5:25] = True                             # 8 mL, core 0 → ratio inf, mismatch 8 mL
    m0 = mismatch(small, np.zeros(GEO.shape, bool), GEO)
    assert m0["ratio"] == float("inf") and m0["target_mismatch"] is False
    assert np.isnan(mismatch(np.zeros(GEO.shape, bool), np.zeros(GEO.shape, bool), GEO)["ratio"])
    # core >= 70 mL → no target mismatch
    huge = np.ones(GEO.shape, bool)                          # 320 mL hypoperfused
    core75 = np.zeros(GEO.shape, bool)
    core75.reshape(-1)[:3750] = True                          # 75 mL
    assert mismatch(huge, core75, GEO)["target_mismatch"] is False


def test_bad_input():
    with pytest.raises(GeometryError, match="tmax"):
        hypoperfusion(np.zeros((10, 40, 39)), GEO)
    with pytest.raises(GeometryError, match="brain_mask"):
        hypoperfusion(_tmax(), GEO, brain_mask=np.ones((9, 40, 40), bool))
    with pytest.raises(NeuroContrastError, match="empty"):
        hypoperfusion(_tmax(), GEO, brain_mask=np.zeros(GEO.shape, bool))
    with pytest.raises(NeuroContrastError, match="thresholds"):
        hypoperfusion(_tmax(), GEO, thresholds=(0, 6))
    with pytest.raises(NeuroContrastError, match="min_island_ml"):
        hypoperfusion(_tmax(), GEO, min_island_ml=-1)
    nan = _tmax()
    nan[4, 4, 4] = np.nan
    with pytest.raises(NeuroContrastError, match="NaN"):
        hypoperfusion(nan, GEO)
    with pytest.raises(GeometryError, match="core_mask"):
        mismatch(np.zeros(GEO.shape, bool), np.zeros((1, 2, 3), bool), GEO)
