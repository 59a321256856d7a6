"""VirtualGadoliniumLib.logic against a real MRML scene (slicer-core): node ⇄ file geometry, command building,
the subprocess run with progress, output import, DWI → ADC, models folder management."""

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import slicer
from neurocontrast import weights
from neurocontrast.errors import NeuroContrastError
from neurocontrast.networks.unet3d import ResidualUNet3D
from neurocontrast.training.contrast_training import make_synthetic_cases
from VirtualGadoliniumLib.logic import (CommandRunner, VirtualGadoliniumLogic, VirtualGadoliniumParameters,
                                        image_to_volume, volume_to_image)

CFG = dict(in_channels=3, out_channels=1, base_channels=2, depth=2, blocks_per_level=1, final_activation="sigmoid",
           residual_channel=2)


def _oblique_image():
    arr = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.9, 1.1, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    angle = 0.3
    img.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    return img


def test_node_image_round_trip_keeps_lps_geometry(mrml_scene):
    img = _oblique_image()
    node = image_to_volume(img, "vol", scene=mrml_scene)
    assert np.allclose(node.GetOrigin(), (-10.0, 20.0, 30.0))  # RAS in the node
    back = volume_to_image(node)
    assert np.allclose(back.GetOrigin(), img.GetOrigin()) and np.allclose(back.GetSpacing(), img.GetSpacing())
    assert np.allclose(back.GetDirection(), img.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_export_hardens_the_parent_transform(mrml_scene):
    """A volume registered with an unhardened transform must reach the network where Slicer shows it (markups
    are read in world coordinates; the volumes used to be exported on their untransformed grid, silently)."""
    import vtk

    img = _oblique_image()
    node = image_to_volume(img, "moved", scene=mrml_scene)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    c, s_ = np.cos(0.2), np.sin(0.2)
    for r, row in enumerate(((c, 0, s_, 5.0), (0, 1, 0, -7.0), (-s_, 0, c, 12.0))):
        for col, value in enumerate(row):
            matrix.SetElement(r, col, value)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    exported = volume_to_image(node)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    m = np.array([[matrix.GetElement(r, col) for col in range(4)] for r in range(4)])
    for index in ((0, 0, 0), (7, 6, 5), (3, 1, 4)):  # a voxel lands where Slicer shows it (world RAS)
        world_ras = m @ np.r_[ras_to_lps @ np.asarray(img.TransformIndexToPhysicalPoint(index)), 1.0]
        assert np.allclose(exported.TransformIndexToPhysicalPoint(index), ras_to_lps @ world_ras[:3], atol=1e-6)
    assert np.allclose(exported.GetSpacing(), img.GetSpacing())
    matrix.SetElement(0, 1, 0.5)  # shear: no grid can hold it
    transform.SetMatrixTransformToParent(matrix)
    with pytest.raises(NeuroContrastError, match="shears or scales"):
        volume_to_image(node)
    warp = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(NeuroContrastError, match="non-linear transform 'warp'.*Harden"):
        volume_to_image(node)


def test_parameters_are_saved_as_node_references(mrml_scene):
    t1 = image_to_volume(_oblique_image(), "T1", scene=mrml_scene)
    flair = image_to_volume(_oblique_image(), "FLAIR", scene=mrml_scene)
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "VirtualGadolinium")
    p = VirtualGadoliniumParameters(mode="amplify", t1=t1, flair=flair, contrast=t1, repeat=2, dose=0.1,
                                    preprocessed=True, agent="gadobutrol")
    p.write(node)
    assert node.GetNodeReferenceID("t1") == t1.GetID() and node.GetParameter("t1") == ""
    assert VirtualGadoliniumParameters.read(node) == p
    mrml_scene.RemoveNode(flair)  # a removed node leaves no dangling ID behind
    assert VirtualGadoliniumParameters.read(node).flair is None


def test_parameters_validation(mrml_scene):
    node = image_to_volume(_oblique_image(), "v", scene=mrml_scene)
    p = VirtualGadoliniumParameters(mode="virtual", t1=node)
    assert p.isValid() == (False, "select the low-dose T1c")
    p.contrast = node
    assert p.isValid()[1] == "select the T2-FLAIR"
    p.flair = node
    assert p.isValid() == (True, "")
    p.repeat = 2
    assert not p.isValid()[0]
    p = VirtualGadoliniumParameters(mode="differential", t1=node, contrast=node, dose=1.5)
    assert "dose" in p.isValid()[1]
    p = VirtualGadoliniumParameters(mode="amplify", t1=node, flair=node, contrast=node, dwi_b0=node)
    assert "DWI" in p.isValid()[1]


def test_run_in_subprocess_and_import_outputs(mrml_scene, tmp_path, monkeypatch):
    case = make_synthetic_cases(tmp_path / "data", 1, (16, 20, 24), seed=2)[0]
    torch.manual_seed(0)
    models = tmp_path / "models"
    weights.save_model(ResidualUNet3D(**CFG).state_dict(), models, "tiny-fold0", "ResidualUNet3D", CFG,
                       input_channels=["t1", "flair", "t1c_low"])
    nodes = {n: image_to_volume(sitk.ReadImage(str(case / f"{n}.nii.gz")), n, scene=mrml_scene)
             for n in ("t1", "flair", "t1c")}
    # DWI pair instead of ADC: exported as adc.nii.gz, ignored by a model without an ADC channel
    b0 = image_to_volume(sitk.ReadImage(str(case / "t1.nii.gz")), "b0", scene=mrml_scene)
    logic = VirtualGadoliniumLogic(scene=mrml_scene)
    p = VirtualGadoliniumParameters(mode="amplify", t1=nodes["t1"], flair=nodes["flair"], contrast=nodes["t1c"],
                                    dwi_b0=b0, dwi_high=b0, tta=2, models_dir=str(models), model="tiny",
                                    preprocessed=True, repeat=2)
    inputs = logic.export_inputs(p, str(tmp_path / "inputs"))
    assert sorted(inputs) == ["adc", "flair", "t1", "t1c"]
    adc = sitk.GetArrayFromImage(sitk.ReadImage(inputs["adc"]))
    assert np.allclose(adc, 0.0)  # identical b0 and high-b → no diffusion
    command = logic.build_command(p, inputs, str(tmp_path / "out"))
    assert command[:5] == [sys.executable, "-m", "neurocontrast", "contrast", "amplify"]
    assert "--progress-lines" in command and command[command.index("--repeat") + 1] == "2"
    assert command[command.index("--models-dir") + 1] == str(models)
    seen = []
    monkeypatch.setenv("NEUROCONTRAST_PYTHON", sys.executable)
    out = logic.run(p, progress=lambda f, m: seen.append(f), timeout=300)
    assert set(out) >= {"amplified", "enhancement", "brain_mask"}
    assert not os.path.exists(logic.work_dir), "the temporary work folder is removed once the outputs are nodes"
    assert max(seen) == pytest.approx(1.0)
    result = out["amplified"]
    assert result.GetImageData().GetDimensions() == nodes["t1c"].GetImageData().GetDimensions()
    assert np.allclose(result.GetOrigin(), nodes["t1c"].GetOrigin())
    assert slicer.util.arrayFromVolume(result).max() > 0
    assert result.GetName() == "t1c amplified"
    assert result.GetDisplayNode() is not None, "a volume without a display node shows nothing in Slicer's views"


def test_command_finds_the_package_without_slicer_sys_path(tmp_path):
    # inside Slicer `neurocontrast` is importable only through the module folder on sys.path; the subprocess
    # (python -S: no site-packages, so no editable install either) must find it through PYTHONPATH
    from VirtualGadoliniumLib.logic import command_environment

    env = command_environment({"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep)[1:] == ["/elsewhere"]
    code = "import neurocontrast, sys; print(neurocontrast.__file__)"
    bare = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": env["PATH"]})
    assert bare.returncode != 0  # the situation of PythonSlicer inside Slicer
    found = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert found.returncode == 0, found.stderr


def test_failed_command_reports_its_error(mrml_scene, tmp_path):
    node = image_to_volume(_oblique_image(), "v", scene=mrml_scene)
    logic = VirtualGadoliniumLogic(scene=mrml_scene)
    p = VirtualGadoliniumParameters(mode="virtual", t1=node, flair=node, contrast=node, model="absent-model",
                                    models_dir=str(tmp_path), preprocessed=True)
    with pytest.raises(NeuroContrastError, match="absent-model"):
        logic.run(p, timeout=120)
    runner = CommandRunner([sys.executable, "-c", "print('PROGRESS 0.5 half'); import sys; sys.exit(3)"])
    status = runner.wait(timeout=60)
    assert status["returncode"] == 3 and status["fraction"] == 0.5 and status["message"] == "half"


def test_models_folder_browse_and_clear(tmp_path):
    folder = tmp_path / "user-models"
    weights.save_model({"w": torch.zeros(2)}, folder, "mine", "ResidualUNet3D", {})
    listed = {m["name"]: m for m in VirtualGadoliniumLogic.available_models(folder)}
    assert not listed["mine"]["shipped"] and listed["virtual-demo-fold1"]["shipped"]
    assert VirtualGadoliniumLogic.models_folder(VirtualGadoliniumParameters(models_dir=str(folder))) == folder
    assert VirtualGadoliniumLogic.clear_models_folder(folder) == 2
    assert not list(folder.iterdir())
    with pytest.raises(NeuroContrastError, match="shipped"):
        VirtualGadoliniumLogic.clear_models_folder(weights.PACKAGE_MODELS_DIR)
