"""Deep perfusion maps (neurocontrast.perfusion.deep): preprocessing, ST-Net and Tmax-net map methods,
shipped weights, pipeline integration."""

import numpy as np
import pytest
import torch

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion import deep
from neurocontrast.perfusion.phantom import generate_phantom


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(shape=(1, 40, 40), n_frames=60, tr_s=1.5, snr=30, seed=321)


def test_resample_time_keeps_linear_curves_and_window():
    t = np.linspace(0, 1, 37, dtype=np.float32)
    x = np.stack([3 * t + 1, -t], axis=1)
    r = deep.resample_time(x, 50)
    assert r.shape == (50, 2)
    assert np.allclose(r[:, 0], 3 * np.linspace(0, 1, 50) + 1, atol=1e-5)
    assert r[0, 1] == x[0, 1] and r[-1, 1] == pytest.approx(x[-1, 1])
    assert np.array_equal(deep.resample_time(x, 37), x)
    assert deep.resampled_interval(37, 2.0, 50) == pytest.approx(36 * 2.0 / 49)


def test_relative_drop_and_arterial_patch(phantom):
    drop, s0, (start, stop) = deep.relative_drop(phantom.signal, phantom.tr_s, brain_mask=phantom.brain_mask)
    assert drop.shape == phantom.signal.shape and start >= 1  # non-steady-state frame skipped
    assert abs(float(np.median(drop[start:stop][:, phantom.brain_mask]))) < 0.05
    assert np.all(drop[:, s0 <= 0] == 0)
    patch, (z, y, x) = deep.find_arterial_patch(drop, phantom.brain_mask)
    assert patch.shape == (60, 5, 5)
    near = phantom.aif_mask[z, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
    assert near.any(), "the arterial patch must sit on the MCA (AIF) voxels"


def test_input_errors(phantom):
    dsc = phantom.to_dsc()
    net = torch.nn.Module()
    with pytest.raises(NeuroContrastError, match="AIF"):
        deep.stnet_maps(dsc, aif_signal=None, brain_mask=phantom.brain_mask, model=net)
    with pytest.raises(NeuroContrastError, match="brain_mask shape"):
        deep.stnet_maps(dsc, aif_signal=np.ones(60), brain_mask=np.ones((2, 40, 40), bool), model=net)
    from neurocontrast.networks.stnet import STNet
    with pytest.raises(NeuroContrastError, match="frames"):
        deep.stnet_maps(dsc, aif_signal=np.ones(59), brain_mask=phantom.brain_mask, model=STNet())
    with pytest.raises(NeuroContrastError, match="4D"):
        deep.tmaxnet_maps(phantom.signal[:, 0], brain_mask=None)
    with pytest.raises(NeuroContrastError, match="not found"):
        deep.load_network("no_such_model")


def test_shipped_weights_are_registered_and_small():
    from neurocontrast.weights import get_model, verify

    for name, arch in (("stnet", "STNet"), ("stnet-s", "STNetS"), ("tmaxnet", "TmaxNet")):
        info = get_model(name)
        assert info.architecture == arch and verify(info)
        assert info.size_bytes < 8 * 2 ** 20
        assert info.model_card.endswith(f"docs/models/{name}.md")


def _zones(phantom):
    terr = phantom.truth["territory"][0]
    brain = phantom.brain_mask[0] & ~phantom.aif_mask[0]
    return brain & (terr == 0), brain & (terr >= 2)


@pytest.mark.parametrize("model", ["stnet", "stnet-s"])
def test_stnet_maps_on_a_held_out_phantom(phantom, model):
    """ST-Net and its student on a held-out phantom, with the pipeline's VOF factor: the delayed territory,
    lower CBF there, and CBV/CBF on the truth's scale in normal tissue (version 1 read ×1.5-1.7; the residual
    +20-40 % of the under-trained networks is documented in docs/validation-perfusion-networks.md)."""
    from neurocontrast.perfusion.pipeline import vascular_curves

    aif = phantom.signal[:, phantom.aif_mask].mean(axis=1)
    factor = vascular_curves(phantom.signal, phantom.tr_s, phantom.te_s, phantom.aif_mask, phantom.vof_mask).factor
    progress = []
    maps = deep.stnet_maps(phantom.to_dsc(), aif_signal=aif, brain_mask=phantom.brain_mask, model=model,
                           aif_scale=factor, progress=lambda f, m: progress.append((f, m)))
    assert set(maps) == {"cbv", "cbf", "tmax", "mtt"}
    assert progress[-1][0] == 1.0 and any("s left" in m for _, m in progress)
    for v in maps.values():
        assert v.shape == (1, 40, 40) and v.dtype == np.float32 and np.all(np.isfinite(v))
        assert np.all(v[~phantom.brain_mask] == 0)
    normal, severe = _zones(phantom)
    assert np.median(maps["tmax"][0][severe]) > 6.0 > np.median(maps["tmax"][0][normal])
    assert np.median(maps["cbf"][0][normal]) > 1.5 * np.median(maps["cbf"][0][severe])
    for key in ("cbv", "cbf"):
        ratio = np.median(maps[key][0][normal] / phantom.truth[key][0][normal])
        assert 0.75 < ratio < 1.4, (key, ratio)


def test_stnet_any_series_length(phantom):
    """A 45-frame series (not 50) is resampled; Tmax stays in seconds."""
    ph = generate_phantom(shape=(1, 40, 40), n_frames=45, tr_s=1.8, snr=30, seed=322)
    aif = ph.signal[:, ph.aif_mask].mean(axis=1)
    maps = deep.stnet_maps(ph.to_dsc(), aif_signal=aif, brain_mask=ph.brain_mask)
    normal, severe = _zones(ph)
    assert np.median(maps["tmax"][0][severe]) > 6.0 > np.median(maps["tmax"][0][normal])


def test_tmaxnet_maps_without_aif(phantom):
    """The shipped Tmax net runs without an AIF and recovers the delayed territory on a held-out phantom (a
    different generator from its training slices): its Tmax > 6 s region overlaps the true one, normal tissue
    stays below 6 s, and the predictions span the true range (see docs/models/tmaxnet.md)."""
    maps = deep.tmaxnet_maps(phantom.to_dsc(), brain_mask=phantom.brain_mask)
    assert set(maps) == {"tmax", "tmax_uncertainty"}
    assert np.all(maps["tmax_uncertainty"][phantom.brain_mask] > 0)
    assert np.all(maps["tmax"][~phantom.brain_mask] == 0)
    normal, severe = _zones(phantom)
    tmax = maps["tmax"][0]
    assert np.median(tmax[severe]) > 6.0 > 2.0 > np.median(tmax[normal])
    brain = normal | (phantom.brain_mask[0] & ~phantom.aif_mask[0])
    true6 = brain & (phantom.truth["tmax"][0] > 6.0)
    pred6 = brain & (tmax > 6.0)
    assert 2 * (true6 & pred6).sum() / (true6.sum() + pred6.sum()) > 0.7  # Dice of Tmax > 6 s
    assert np.percentile(tmax[brain], 99) > 8.0  # not compressed into a few seconds any more
    # a changed aif_signal is ignored (AIF-free)
    again = deep.tmaxnet_maps(phantom.to_dsc(), aif_signal=np.ones(60), brain_mask=phantom.brain_mask)
    assert np.array_equal(again["tmax"], maps["tmax"])


def test_pipeline_runs_the_networks(phantom):
    from neurocontrast.perfusion.pipeline import run_perfusion

    res = run_perfusion(phantom.to_dsc(), aif_mask=phantom.aif_mask, brain_mask=phantom.brain_mask, method="tmaxnet")
    direct = deep.tmaxnet_maps(phantom.to_dsc(), brain_mask=phantom.brain_mask)
    assert np.allclose(res.maps["tmax"], direct["tmax"])
    assert "tmax_uncertainty" in res.maps and res.hypoperfusion is not None
