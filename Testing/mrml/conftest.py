"""MRML fixtures from the ``slicer-core`` wheel (real vtkMRMLScene, no Qt, no Slicer application).

``mrml_scene`` gives a fresh scene with the module logics that the wheel provides registered
(markups, sequences, segmentations, tables, plots, colors) and sets ``slicer.mrmlScene`` to it, as the
Slicer application does, so that ``slicer.util`` helpers and our ``<Module>Lib.logic`` classes work.
"""

from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")


@pytest.fixture
def mrml_scene():
    scene = slicer.vtkMRMLScene()
    logics = []
    for name in ("vtkSlicerColorLogic", "vtkSlicerMarkupsLogic", "vtkSlicerSequencesLogic",
                 "vtkSlicerSegmentationsModuleLogic", "vtkSlicerTablesLogic", "vtkSlicerPlotsLogic",
                 "vtkSlicerVolumesLogic", "vtkSlicerSubjectHierarchyModuleLogic"):
        cls = getattr(slicer, name, None)
        if cls is None:
            continue
        logic = cls()
        try:
            logic.SetMRMLScene(scene)
        except Exception:  # some logics need an application logic; they are optional here
            continue
        logics.append(logic)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)
    if previous is None:
        del slicer.mrmlScene
    else:
        slicer.mrmlScene = previous
    del logics


@pytest.fixture
def fake_slicer_app(mrml_scene, monkeypatch, tmp_path):
    """The strict Qt / Slicer-application fakes of ``slicer_fakes`` (see there) around a real scene."""
    import slicer_fakes

    return slicer_fakes.install(monkeypatch, tmp_path,
                                fail_on_install_prompt=lambda *a, **k: pytest.fail("asked to install"))
