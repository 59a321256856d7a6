"""neurocontrast.training.contrast_training: layout, leave-one-case-out folds, on-the-fly dose sampling,
augmentation, identity/physics start, checkpoints, resume, held-out figures in the model record."""

import json

import numpy as np
import pytest

from neurocontrast import weights
from neurocontrast.contrast.synthetic import make_synthetic_cases
from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import checkpoint
from neurocontrast.training import contrast_training as ct


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    make_synthetic_cases(root, 3, (24, 24, 24), seed=1)
    return root


def _config(**kw):
    base = dict(task="virtual", name="toy", base_channels=2, depth=2, crop=16, batch_size=1, iterations=4,
                validate_every=2, fold=0, preprocessed=True)
    base.update(kw)
    return ct.TrainConfig(**base)


def test_layout_and_leave_one_case_out_split(cases, tmp_path):
    found = ct.find_cases(cases)
    assert [c.name for c in found] == ["case-000", "case-001", "case-002"]
    assert ct.split_folds(found, 0) == [[0], [1], [2]]
    groups = ct.split_folds(found, 3, seed=0)
    assert sorted(i for g in groups for i in g) == [0, 1, 2]
    (tmp_path / "only").mkdir()
    with pytest.raises(NeuroContrastError, match="at least two"):
        ct.find_cases(tmp_path)
    with pytest.raises(NeuroContrastError, match="multiple"):
        ct.TrainConfig(crop=20, depth=3).validate()
    with pytest.raises(NeuroContrastError, match="t1c_low"):
        ct.TrainConfig(channels=("t1", "flair")).validate()
    with pytest.raises(NeuroContrastError, match="dose-range"):
        ct.TrainConfig(dose_range=(0.5, 0.1)).validate()
    with pytest.raises(NeuroContrastError, match="folds"):
        ct.TrainConfig(folds=1).validate()


def test_samples_draw_dose_noise_and_augmentation(cases, tmp_path):
    cfg = _config()
    arrays = ct.prepare_case(cases / "case-000", cfg, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("case-000-v2.npz"))
    brain = arrays["brain"]
    assert np.median(arrays["t1"][brain]) == pytest.approx(1.0, rel=0.1)  # the T1's normal brain sits at 1
    case = ct.build_case("case-000", arrays, {}, cfg)
    lesion = case.hot_coords[0]
    x1, y1, c1, w1 = ct.sample(case, cfg, np.random.default_rng(1), dose=0.1, augment=False, centre=lesion)
    x2, y2, _, _ = ct.sample(case, cfg, np.random.default_rng(2), dose=0.5, augment=False, centre=lesion)
    low = cfg.channels.index("t1c_low")
    m = x1[0] > 0
    # more dose, more enhancement; the dose channel carries it; the target does not depend on the draw
    assert (x2[low] - x1[0])[m].mean() > (x1[low] - x1[0])[m].mean()
    assert np.allclose(x1[cfg.channels.index("dose")][m], 0.1) and np.array_equal(y1, y2)
    assert c1 is None and w1.min() >= 1.0
    phys = cfg.channels.index("physics")  # the dose extrapolation is closer to the target than the low dose
    assert np.abs(x1[phys] - y1[0])[m].mean() < np.abs(x1[low] - y1[0])[m].mean()
    x3, y3, _, _ = ct.sample(case, cfg, np.random.default_rng(1), dose=0.1, augment=True, centre=lesion)
    assert not np.allclose(x3, x1)  # scale/bias/flips
    xb, yb, cb, wb = ct.sample_batch([case], _config(batch_size=3), np.random.default_rng(0))
    assert xb.shape == (3, 5, 16, 16, 16) and yb.shape == (3, 1, 16, 16, 16) and cb is None
    dcfg = _config(task="differential")
    dcase = ct.build_case("case-000", arrays, {}, dcfg)
    xd, yd, cd, wd = ct.sample_batch([dcase], _config(task="differential", batch_size=2), np.random.default_rng(0))
    assert xd.shape == (2, 2, 16, 16, 16) and cd.shape == (2, 4) and 0.1 <= cd[:, 0].min() <= cd[:, 0].max() <= 0.5


def test_networks_start_at_the_identity_and_at_the_physics_baseline():
    import torch

    net, arch, kwargs, names = ct.build_model(_config())
    assert kwargs["final_activation"] == "none" and names == ["t1", "flair", "t1c_low", "dose", "physics"]
    x = torch.rand(1, 5, 16, 16, 16) * 3.0  # far above 1: nothing bounds the output
    with torch.no_grad():  # output = the physics channel + a zero correction
        assert torch.allclose(net(x), x[:, 4:5], atol=1e-6)
    lnet, *_ = ct.build_model(_config(channels=("t1", "flair", "t1c_low")))
    with torch.no_grad():  # without a physics channel: the identity on the low-dose channel
        assert torch.allclose(lnet(x[:, :3]), x[:, 2:3], atol=1e-6)
    dnet, darch, _, dnames = ct.build_model(_config(task="differential"))
    assert darch == "ConditionalResidualUNet3D" and dnames == ["physics_signal", "t1c_low"]
    with torch.no_grad():
        assert float(dnet(torch.rand(1, 2, 16, 16, 16), torch.rand(1, 4)).abs().max()) == 0.0


def test_train_writes_models_checkpoints_heldout_figures_and_resumes_deterministically(cases, tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    info = ct.train(cases, out_a, _config(iterations=4))[0]
    assert info.name == "toy-fold0" and weights.verify(info)
    assert info.training["validation_cases"] == ["case-000"]
    assert not set(info.training["validation_cases"]) & set(info.training["train_cases"])
    figures = info.metrics["heldout"]["case-000"]
    assert set(figures["doses"]) == {"0.1", "0.25", "0.5"}
    row = figures["doses"]["0.25"]
    assert {"low", "physics", "network"} <= set(row) and row["low"]["restored"] == pytest.approx(0.25, abs=0.1)
    assert "repeat2" in figures["amplification"]
    meta = json.loads((out_a / "fold0" / "checkpoint.json").read_text(encoding="utf-8"))
    assert meta["iteration"] == 4 and len(meta["history"]) == 2 and "param_groups" in meta
    resumed = ct.train(cases, out_a, _config(iterations=6, evaluate_heldout=False), resume=True)[0]
    ct.train(cases, out_b, _config(iterations=6, evaluate_heldout=False))
    from safetensors.torch import load_file

    ca = load_file(str(out_a / "fold0" / "checkpoint.safetensors"))
    cb = load_file(str(out_b / "fold0" / "checkpoint.safetensors"))
    assert set(ca) == set(cb) and any(k.startswith("opt.") for k in ca)
    for key in ca:
        assert np.allclose(ca[key].numpy(), cb[key].numpy(), atol=1e-5), key
    assert resumed.training["iterations"] == 6


def test_checkpoint_format_round_trip(tmp_path):
    import torch

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    checkpoint.save_checkpoint(str(tmp_path / "ck"), net, opt, {"epoch": 3})
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    meta = checkpoint.load_checkpoint(str(tmp_path / "ck"), net2, opt2)
    assert meta == {"epoch": 3} and opt2.param_groups[0]["lr"] == 0.01
    assert torch.equal(net.weight, net2.weight)
    with pytest.raises(NeuroContrastError, match="no checkpoint"):
        checkpoint.load_checkpoint(str(tmp_path / "absent"), net2, opt2)


def test_missing_channel_policy_and_differential_training(cases, tmp_path):
    with pytest.raises(NeuroContrastError, match="t2"):
        ct.train(cases, tmp_path / "x", _config(channels=("t1", "t2", "t1c_low"), missing_channels="error"))
    info = ct.train(cases, tmp_path / "y", _config(channels=("t1", "t2", "t1c_low"), iterations=2,
                                                  evaluate_heldout=False))[0]
    assert info.input_channels == ["t1", "t2", "t1c_low"]
    dinfo = ct.train(cases, tmp_path / "d", _config(task="differential", name="dtoy", iterations=2))[0]
    ratio = dinfo.metrics["heldout"]["case-000"]["doses"]["0.25"]["differential_signal_ratio"]
    assert 0.5 < ratio < 1.5  # starts at the physics baseline: the right scale
    from neurocontrast.cli import main

    assert main(["train", "virtual", "--data", str(cases), "--out", str(tmp_path / "m"), "--preprocessed",
                 "--base-channels", "2", "--depth", "2", "--crop", "16", "--batch-size", "1", "--iterations", "2",
                 "--validate-every", "1", "--fold", "0", "--name", "wtoy", "--no-heldout-evaluation",
                 "--progress-lines"]) == 0
    assert main(["train", "virtual", "--data", str(cases), "--out", str(tmp_path / "m2"), "--preprocessed",
                 "--crop", "16", "--depth", "2", "--enhancement-weight", "-1"]) == 2
