"""Training data, losses and loops of the perfusion networks (issue 5)."""

import json
import shutil

import numpy as np
import pytest
import torch

from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import datasets


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def test_random_slice_is_seeded_and_physical():
    a = datasets.random_slice(np.random.default_rng(5), (32, 32))
    b = datasets.random_slice(np.random.default_rng(5), (32, 32))
    assert np.array_equal(a.signal, b.signal) and a.tr_s == b.tr_s
    c = datasets.random_slice(np.random.default_rng(6), (32, 32))
    assert c.signal.shape[0] != a.signal.shape[0] or not np.array_equal(a.signal, c.signal)
    assert a.signal.dtype == np.float32 and np.all(np.isfinite(a.signal)) and np.all(a.signal >= 0)
    assert a.aif_mask.any() and np.all(a.brain[a.aif_mask])
    for key in ("cbv", "cbf", "tmax"):
        assert a.truth[key].shape == (32, 32) and np.all(a.truth[key][~a.brain] == 0)
    perf = a.truth["cbf"] > 0
    assert 10 < np.median(a.truth["cbf"][perf]) < 100 and 1 < np.median(a.truth["cbv"][perf]) < 7


def test_cbv_integral_matches_truth_without_noise():
    """Eq. 4: 100·kH/ρ·∫ΔR2*_t/∫c_a gives back the true CBV (noise-free slice, long window)."""
    rng = np.random.default_rng(11)
    s = datasets.random_slice(rng, (32, 32), snr=1e7, tr_s=1.0, n_frames=110)
    b = datasets.stnet_batch_from_slice(s, 50, rng, max_voxels=200)
    est = b["physics_cbv"]
    tru = b["target"][:, 0]
    assert np.median(np.abs(est - tru) / tru) < 0.1


def test_lesion_sampling_ratio_and_stride():
    rng = np.random.default_rng(0)
    s = None
    for _ in range(30):
        cand = datasets.random_slice(rng, (40, 40))
        if 150 < cand.lesion.sum() < 0.5 * cand.brain.sum():
            s = cand
            break
    assert s is not None, "no slice with a large lesion in 30 draws"
    b = datasets.stnet_batch_from_slice(s, 50, rng, max_voxels=120, lesion_ratio=0.5, stride=1)
    assert b["patches"].shape == (120, 1, 7, 7, 50) and b["reference"].shape == (120, 2, 50)
    # which sampled voxels are lesion voxels (Tmax > 6 s), from their targets
    from neurocontrast.perfusion.deep import stnet_inputs
    inp = stnet_inputs(s.signal[:, None], s.tr_s, datasets.aif_signal_of(s), 50, s.brain[None])
    dt = inp["dt"]
    frac_lesion = np.mean(b["target"][:, 2] * 4.0 * dt > 6.0)
    assert 0.25 <= frac_lesion <= 0.42  # 1:2 = one third
    b3 = datasets.stnet_batch_from_slice(s, 50, np.random.default_rng(1), max_voxels=500, stride=3)
    assert len(b3["target"]) <= int(np.ceil(40 / 3) ** 2)


def test_tmaxnet_sample_and_shift_keeps_target():
    rng = np.random.default_rng(3)
    s = datasets.random_slice(rng, (32, 32))
    plain = datasets.tmaxnet_sample_from_slice(s, 32, None)
    shifted = datasets.tmaxnet_sample_from_slice(s, 32, np.random.default_rng(9))
    assert plain["voxels"].shape == (32, 32, 32) and plain["arterial"].shape == (32, 5, 5)
    assert np.array_equal(plain["target"], shifted["target"])
    assert plain["mask"].sum() == s.brain.sum()


def test_training_is_resumable_and_deterministic(tmp_path):
    from neurocontrast.training.recipes import train_tmaxnet

    kw = dict(steps_per_epoch=2, batch_size=1, n_frames=16, encoding=16, val_slices=1, slice_size=24, seed=4,
              log_fn=lambda m: None)
    m_full, meta = train_tmaxnet(str(tmp_path / "a"), epochs=2, **kw)
    train_tmaxnet(str(tmp_path / "b"), epochs=1, **kw)
    m_res, meta_b = train_tmaxnet(str(tmp_path / "b"), epochs=2, resume=True, **kw)
    assert meta["epoch"] == 2 and meta_b["epoch"] == 2 and len(meta_b["history"]) == 2
    for (k, v), (_, w) in zip(m_full.state_dict().items(), m_res.state_dict().items()):
        assert torch.equal(v, w), k
    lines = (tmp_path / "a" / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    val = json.loads(lines[0])["val"]
    assert {"loss", "mae_tmax_s", "nll", "dice6"} <= set(val)
    assert val["loss"] == val["mae_tmax_s"]  # the best epoch is chosen on the Tmax MAE by default
    assert m_full.config()["curve_norm"] == "peak" and m_full.config()["align_frame"] == 12


def test_stnet_recipe_one_epoch(tmp_path):
    from neurocontrast.training.recipes import export, train_stnet
    from neurocontrast.weights import get_model

    model, meta = train_stnet(str(tmp_path / "s"), epochs=1, steps_per_epoch=1, batch_size=32, voxels_per_slice=32,
                              val_slices=1, slice_size=32, seed=1, log_fn=lambda m: None)
    rec = meta["history"][0]
    assert {"mae", "physics", "loss"} <= set(rec["train"]) and np.isfinite(rec["val"]["loss"])
    info = export(model, meta, str(tmp_path / "models"), "st_tiny", "synthetic")
    assert get_model("st_tiny", tmp_path / "models").sha256 == info.sha256
    assert info.config["n_frames"] == 50 and info.architecture == "STNet"


def test_cli_train_tmaxnet_exports_a_loadable_model(tmp_path):
    from neurocontrast.cli import main
    from neurocontrast.perfusion.deep import load_network, tmaxnet_maps
    from neurocontrast.perfusion.phantom import generate_phantom

    out = tmp_path / "run"
    code = main(["train", "tmaxnet", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-size", "1", "--encoding", "16", "--n-frames", "16", "--slice-size", "32",
                 "--export", str(tmp_path / "models"), "--name", "tiny_tmax"])
    assert code == 0
    model, info = load_network("tiny_tmax", tmp_path / "models")
    assert info.architecture == "TmaxNet" and info.config["encoding"] == 16
    ph = generate_phantom(shape=(1, 32, 32), n_frames=30, snr=30, seed=2)
    maps = tmaxnet_maps(ph.to_dsc(), brain_mask=ph.brain_mask, model=model)
    assert maps["tmax"].shape == (1, 32, 32) and np.all(maps["tmax_uncertainty"][ph.brain_mask] > 0)


def test_user_data_layout(tmp_path):
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    with pytest.raises(NeuroContrastError, match="layout"):
        datasets.UserSliceSource(str(tmp_path))
    case = tmp_path / "case01"
    ph = generate_phantom(shape=(2, 32, 32), n_frames=30, seed=7)
    paths = write_phantom(ph, str(case))
    for name in ("cbv", "cbf", "tmax"):
        shutil.copy(paths[f"truth_{name}"], case / f"{name}.nii.gz")
    src = datasets.UserSliceSource(str(tmp_path))
    slices = src.load_case(src.cases[0])
    assert len(slices) == 2
    z = 1
    assert np.allclose(slices[z].truth["tmax"], ph.truth["tmax"][z])
    assert np.array_equal(slices[z].brain, ph.brain_mask[z]) and slices[z].signal.shape == (30, 32, 32)
    assert slices[z].tr_s == pytest.approx(ph.tr_s)
    first = next(src.stream(0))
    assert isinstance(first, datasets.SliceSample)


def test_student_recipe_distils_from_a_teacher(tmp_path):
    """ST-Net-S trains on the truth plus the MAE to a teacher's outputs, and exports as STNetS."""
    from neurocontrast.networks.stnet import STNet
    from neurocontrast.training.recipes import export, train_stnet

    teacher = STNet(n_frames=50).eval()
    model, meta = train_stnet(str(tmp_path / "s"), epochs=1, steps_per_epoch=1, batch_size=32, voxels_per_slice=32,
                              val_slices=1, slice_size=32, seed=1, student=True, teacher=teacher,
                              distill_voxels=16, log_fn=lambda m: None)
    rec = meta["history"][0]["train"]
    assert rec["distill"] > 0 and np.isfinite(rec["mae"])
    info = export(model, meta, str(tmp_path / "models"), "st_s", "synthetic")
    assert info.architecture == "STNetS" and info.model_card.endswith("docs/models/stnet-s.md")


def test_varied_slices_span_the_real_acquisitions():
    """random_slice(varied=True): TR 1-2.5 s, 40-80 frames, baseline 5-20 frames (bolus arrival / TR)."""
    rng = np.random.default_rng(5)
    trs, frames = [], []
    for _ in range(12):
        s = datasets.random_slice(rng, (24, 24), varied=True)
        trs.append(s.tr_s)
        frames.append(s.signal.shape[0])
        assert np.all(np.isfinite(s.signal)) and s.truth["tmax"].max() > 0
    lo, hi = datasets.VARIED["n_frames"]
    assert min(frames) >= lo and max(frames) <= hi and max(frames) - min(frames) >= 10
    assert 1.0 <= min(trs) and max(trs) <= 2.5 and max(trs) - min(trs) > 0.5
