"""neurocontrast.training.contrast_training: layout, patient-wise folds, checkpoints, resume, determinism."""

import json

import numpy as np
import pytest

from neurocontrast import weights
from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import contrast_training as ct


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    ct.make_synthetic_cases(root, 3, (24, 24, 24), seed=1)
    return root


def _config(**kw):
    base = dict(task="virtual", name="toy", base_channels=2, depth=2, crop=16, batch_size=1, iterations=4,
                validate_every=2, folds=3, fold=0, preprocessed=True)
    base.update(kw)
    return ct.TrainConfig(**base)


def test_layout_and_patient_wise_split(cases, tmp_path):
    found = ct.find_cases(cases)
    assert [c.name for c in found] == ["case-000", "case-001", "case-002"]
    groups = ct.split_folds(found, 3, seed=0)
    assert sorted(i for g in groups for i in g) == [0, 1, 2] and all(len(g) == 1 for g in groups)
    (tmp_path / "only").mkdir()
    with pytest.raises(NeuroContrastError, match="at least two"):
        ct.find_cases(tmp_path)
    with pytest.raises(NeuroContrastError, match="does not exist"):
        ct.find_cases(tmp_path / "absent")
    with pytest.raises(NeuroContrastError, match="multiple"):
        ct.TrainConfig(crop=20, depth=3).validate()
    with pytest.raises(NeuroContrastError, match="t1c_low"):
        ct.TrainConfig(channels=("t1", "flair")).validate()


def test_prepared_case_has_simulated_lowdose_between_pre_and_post(cases, tmp_path):
    arrays = ct.prepare_case(cases / "case-000", _config(), tmp_path / "cache")
    brain = arrays["brain"]
    assert brain.any() and arrays["t1c_low"].shape == brain.shape
    from neurocontrast.io import read_volume

    lesion = read_volume(str(cases / "case-000" / "lesion_mask.nii.gz"))[0] > 0
    enh_full = arrays["t1c"][lesion].mean() - arrays["t1"][lesion].mean()
    enh_low = arrays["t1c_low"][lesion].mean() - arrays["t1"][lesion].mean()
    assert 0 < enh_low < enh_full  # a quarter dose enhances less than the full dose
    assert list((tmp_path / "cache").glob("case-000-virtual-same-grid.npz"))
    again = ct.prepare_case(cases / "case-000", _config(), tmp_path / "cache")  # from the cache
    assert np.array_equal(again["t1c_low"], arrays["t1c_low"])


def test_train_writes_models_checkpoints_and_resumes_deterministically(cases, tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    info = ct.train(cases, out_a, _config(iterations=4))[0]
    assert info.name == "toy-fold0" and weights.verify(info)
    assert info.input_channels == ["t1", "flair", "t1c_low"]
    assert info.training["validation_cases"] and not set(info.training["validation_cases"]) & set(
        info.training["train_cases"])
    state = json.loads((out_a / "fold0" / "state.json").read_text(encoding="utf-8"))
    assert state["iteration"] == 4 and len(state["history"]) == 2
    # resume to 6 iterations == training 6 iterations straight (same seed, per-iteration sampling)
    resumed = ct.train(cases, out_a, _config(iterations=6), resume=True)[0]
    straight = ct.train(cases, out_b, _config(iterations=6))[0]
    assert json.loads((out_a / "fold0" / "state.json").read_text(encoding="utf-8"))["iteration"] == 6
    from safetensors.torch import load_file

    ca = load_file(str(out_a / "fold0" / "checkpoint.safetensors"))
    cb = load_file(str(out_b / "fold0" / "checkpoint.safetensors"))
    assert set(ca) == set(cb) and any(k.startswith("optim.") for k in ca)
    for key in ca:
        assert np.allclose(ca[key].numpy(), cb[key].numpy(), atol=1e-5), key
    assert resumed.sha256 == straight.sha256 or resumed.training["best_iteration"] == straight.training["best_iteration"]


def test_missing_channel_policy(cases, tmp_path):
    cfg = _config(channels=("t1", "t2", "t1c_low"))
    with pytest.raises(NeuroContrastError, match="t2"):
        ct.train(cases, tmp_path / "x", cfg)
    cfg = _config(channels=("t1", "t2", "t1c_low"), missing_channels="zero", iterations=2)
    info = ct.train(cases, tmp_path / "y", cfg)[0]
    assert info.input_channels == ["t1", "t2", "t1c_low"]


def test_differential_training_and_batches(cases, tmp_path):
    cfg = _config(task="differential", name="dtoy", doses=(0.25, 0.5), iterations=2)
    info = ct.train(cases, tmp_path / "d", cfg)[0]
    assert info.architecture == "ConditionalResidualUNet3D" and info.input_channels == ["z_low", "t1c_low"]
    arrays = ct.prepare_case(cases / "case-001", cfg, tmp_path / "d" / "cache")
    case = ct.build_differential_case("case-001", arrays, ct.case_metadata(cases / "case-001", cfg), cfg)
    assert sorted(case.inputs) == [0.25, 0.5]
    x, y, c, w = ct.sample_batch([case], cfg, np.random.default_rng(0))
    assert x.shape == (1, 2, 16, 16, 16) and y.shape == (1, 1, 16, 16, 16) and c.shape == (1, 4)
    assert w is not None and float(w.min()) >= 0
    # the condition carries the dose
    assert {round(float(v[0]), 3) for v in case.conditions.values()} == {0.25, 0.5}


def test_enhancement_weighted_loss_and_identity_start(cases, tmp_path):
    import torch

    # weight map: 1 in non-enhancing brain, 1 + W where T1c − T1 is strongest, errors on bad input
    pre = np.full((8, 8, 8), 0.4, np.float32)
    ref = pre.copy()
    ref[2:4, 2:4, 2:4] = 0.9
    brain = np.ones(pre.shape, bool)
    w = ct.enhancement_weight_map(ref, pre, brain, 5.0)
    assert w.dtype == np.float32 and np.isclose(w[3, 3, 3], 6.0) and np.isclose(w[6, 6, 6], 1.0)
    with pytest.raises(NeuroContrastError, match="shapes differ"):
        ct.enhancement_weight_map(ref, pre[:4], brain, 5.0)
    with pytest.raises(NeuroContrastError, match="enhancement-weight"):
        _config(enhancement_weight=-1.0).validate()
    with pytest.raises(NeuroContrastError, match="--loss"):
        _config(loss="huber").validate()
    # the weighted loss counts an error on enhancing voxels W+1 times more than elsewhere
    target = torch.zeros(1, 1, 8, 8, 8)
    weight = torch.from_numpy(w)[None, None]
    miss_lesion, miss_brain = target.clone(), target.clone()
    miss_lesion[..., 3, 3, 3] = 1.0
    miss_brain[..., 6, 6, 6] = 1.0
    assert float(ct._loss(miss_lesion, target, weight, "virtual", "l1")) == pytest.approx(
        6 * float(ct._loss(miss_brain, target, weight, "virtual", "l1")))
    assert float(ct._loss(miss_lesion, target, None, "virtual", "l2")) == pytest.approx(1 / 512)
    # the residual network starts exactly as the identity on the low-dose channel
    net, *_ = ct.build_model(_config())
    x = torch.rand(1, 3, 16, 16, 16) * 0.9 + 0.05
    assert torch.allclose(net(x), x[:, 2:3], atol=1e-5)
    # the case carries the weights into the batches; the options reach the record through the command line
    arrays = ct.prepare_case(cases / "case-000", _config(), tmp_path / "cache")
    case = ct.build_virtual_case("case-000", arrays, _config(enhancement_weight=4.0))
    _, _, _, wb = ct.sample_batch([case], _config(enhancement_weight=4.0), np.random.default_rng(0))
    assert wb is not None and wb.shape == (1, 1, 16, 16, 16) and wb.min() >= 1.0 and wb.max() <= 5.0
    assert ct.build_virtual_case("case-000", arrays, _config()).weight is None
    from neurocontrast.cli import main

    assert main(["train", "virtual", "--data", str(cases), "--out", str(tmp_path / "m"), "--preprocessed",
                 "--base-channels", "2", "--depth", "2", "--crop", "16", "--batch-size", "1", "--iterations", "2",
                 "--validate-every", "1", "--folds", "3", "--fold", "0", "--name", "wtoy", "--loss", "l1",
                 "--enhancement-weight", "4", "--progress-lines"]) == 0
    info = {m.name: m for m in weights.list_models(tmp_path / "m")}["wtoy-fold0"]
    assert info.training["config"]["loss"] == "l1" and info.training["config"]["enhancement_weight"] == 4.0
    assert main(["train", "virtual", "--data", str(cases), "--out", str(tmp_path / "m2"), "--preprocessed",
                 "--crop", "16", "--depth", "2", "--enhancement-weight", "-1"]) == 2


def test_lowdose_realisations_are_independent_noise_draws(cases, tmp_path):
    """--lowdose-realisations K: K seeded simulated low doses per case, same enhancement, different noise; every
    training crop draws one of them; the target and loss weight are shared."""
    config = _config(lowdose_realisations=3, enhancement_weight=5.0)
    arrays = ct.prepare_case(cases / "case-001", config, tmp_path / "cache")
    keys = sorted(k for k in arrays if k.startswith("t1c_low@0.25"))
    assert keys == ["t1c_low@0.25", "t1c_low@0.25#1", "t1c_low@0.25#2"]
    assert list((tmp_path / "cache").glob("case-001-virtual-same-grid-r3.npz"))
    brain = arrays["brain"]
    a, b = arrays["t1c_low@0.25"][brain], arrays["t1c_low@0.25#1"][brain]
    assert not np.allclose(a, b)  # independent noise
    assert abs(a.mean() - b.mean()) < 0.02  # the same dose of enhancement on average
    case = ct.build_virtual_case("case-001", arrays, config)
    assert sorted(case.inputs) == [(0.25, 0), (0.25, 1), (0.25, 2)]
    low = list(config.channels).index("t1c_low")
    assert np.array_equal(case.inputs[(0.25, 2)][low], arrays["t1c_low@0.25#2"])
    assert np.array_equal(case.inputs[(0.25, 1)][0], case.inputs[(0.25, 0)][0])  # T1 channel shared
    assert case.targets[(0.25, 1)] is case.targets[(0.25, 0)] and case.weight[(0.25, 2)] is case.weight[(0.25, 0)]
    rng = np.random.default_rng(0)
    x, y, c, w = ct.sample_batch([case], _config(batch_size=4, lowdose_realisations=3), rng)
    assert x.shape == (4, 3, 16, 16, 16) and c is None and w.shape == y.shape
    with pytest.raises(NeuroContrastError, match="realisations"):
        ct.TrainConfig(lowdose_realisations=0).validate()
