"""NeuroContrast hub logic: dependency check/installation, settings, model registry, sample data (slicer-core)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

from NeuroContrastLib import dependencies, registry, sampledata, settings
from NeuroContrastLib.logic import NeuroContrastLogic
from NeuroContrastLib.mrml import first_frame_node, mask_from_segment, series_from_sequence_node, table_column
from neurocontrast.errors import NeuroContrastError

REQS = ["numpy>=1.24", "monai>=1.3", "tqdm>=4.60"]


def fake_versions(**installed):
    table = {k.lower(): v for k, v in installed.items()}
    return lambda name: table.get(name.lower())


class FakeBackend:
    def __init__(self, installs=None, error=None):
        self.calls = []
        self.installs = installs if installs is not None else {}
        self.error = error

    def install_torch(self, requirement):
        self.calls.append(("torch", requirement))
        if self.error:
            raise self.error
        self.installs["torch"] = "2.5.0"

    def install(self, requirements):
        self.calls.append(("pip", list(requirements)))
        if self.error:
            raise self.error
        for r in requirements:
            self.installs[r.split(">")[0].split("=")[0].lower()] = "99.0"


@pytest.fixture(autouse=True)
def _fresh_session():
    dependencies.reset_session_cache()
    yield
    dependencies.reset_session_cache()


# ----------------------------------------------------------------------------------------- dependencies

def test_check_reads_versions_without_importing():
    code = ("import sys; sys.path.insert(0, 'NeuroContrast');"
            "from NeuroContrastLib import dependencies as d;"
            "s = d.check_dependencies(['monai>=1.3', 'scipy>=1.10']);"
            "print([x.satisfied for x in s], 'monai' in sys.modules, 'scipy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(dependencies.REQUIREMENTS_PATH.parents[2])).stdout.strip()
    assert out == "[True, True, True] False False False"


def test_check_statuses_and_versions():
    statuses = dependencies.check_dependencies(REQS, version_of=fake_versions(numpy="1.23.5", tqdm="4.66.1",
                                                                                torch="2.4.1"))
    by_name = {s.name: s for s in statuses}
    assert [s.name for s in statuses] == ["torch", "numpy", "monai", "tqdm"]
    assert by_name["torch"].satisfied and by_name["torch"].provided_by_slicer
    assert not by_name["numpy"].satisfied and by_name["numpy"].installed == "1.23.5"  # too old
    assert not by_name["monai"].satisfied and by_name["monai"].installed is None
    assert by_name["tqdm"].satisfied
    assert by_name["monai"].describe() == "✗ monai missing (monai>=1.3)"
    assert "2 missing" in dependencies.dependencies_summary(statuses)


def test_ensure_installs_torch_first_then_the_rest_never_simpleitk():
    backend = FakeBackend(installs={"numpy": "2.0"})
    questions = []
    statuses = dependencies.ensure_dependencies(lambda q: questions.append(q) or True, backend=backend,
                                                requirements=REQS,
                                                version_of=lambda n: backend.installs.get(n.lower()))
    assert len(questions) == 1 and "torch" in questions[0] and "monai" in questions[0]
    assert backend.calls == [("torch", "torch>=2.3"), ("pip", ["monai>=1.3", "tqdm>=4.60"])]
    assert all(s.satisfied for s in statuses)
    # satisfied: no second question in the same session
    dependencies.ensure_dependencies(lambda q: pytest.fail("asked again"), backend=backend, requirements=REQS,
                                     version_of=lambda n: backend.installs.get(n.lower()))


def test_ensure_refuses_to_install_slicer_provided_packages():
    backend = FakeBackend(installs={"torch": "2.4"})
    with pytest.raises(NeuroContrastError, match="never installed by NeuroContrast"):
        dependencies.ensure_dependencies(lambda q: True, backend=backend, requirements=["SimpleITK>=9"],
                                         version_of=lambda n: backend.installs.get(n.lower()))
    assert backend.calls == []


def test_ensure_declined_raises_without_installing():
    backend = FakeBackend()
    with pytest.raises(NeuroContrastError, match="declined"):
        dependencies.ensure_dependencies(lambda q: False, backend=backend, requirements=REQS,
                                         version_of=lambda n: None)
    assert backend.calls == []


def test_ensure_offline_failure_explains_what_to_do():
    backend = FakeBackend(error=OSError("Temporary failure in name resolution"))
    with pytest.raises(NeuroContrastError) as info:
        dependencies.ensure_dependencies(lambda q: True, backend=backend, requirements=REQS,
                                         version_of=lambda n: None)
    message = str(info.value)
    assert "no internet connection" in message and "--no-index --find-links" in message
    assert "Temporary failure in name resolution" in message


def test_ensure_still_missing_after_install_is_an_error():
    class NoOp(FakeBackend):
        def install(self, requirements):
            self.calls.append(("pip", requirements))

    backend = NoOp(installs={"torch": "2.4", "numpy": "2.0", "tqdm": "4.66"})
    with pytest.raises(NeuroContrastError, match="still missing"):
        dependencies.ensure_dependencies(lambda q: True, backend=backend, requirements=REQS,
                                         version_of=lambda n: backend.installs.get(n.lower()))


@pytest.mark.parametrize("keyword", ["prompt_install", "prompt"])
def test_pip_ensure_does_not_ask_a_second_time(monkeypatch, keyword):
    """The user confirmed once in ensure_dependencies; Slicer's pip_ensure must not show its own dialog too."""
    calls = []

    def pip_ensure(requirements, constraints=None, skip_packages=None, requester=None, **options):
        calls.append(options)

    pip_ensure.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
         for n in ("requirements", "constraints", "skip_packages", keyword, "requester")])
    monkeypatch.setattr(dependencies.SlicerInstallBackend, "_pip_ensure", staticmethod(lambda: pip_ensure))
    dependencies.SlicerInstallBackend().install(["monai>=1.3"])
    assert calls == [{keyword: False}]


def test_constraints_pin_slicer_packages(tmp_path):
    path = dependencies.write_constraints(tmp_path / "c.txt", version_of=fake_versions(SimpleITK="2.4.0",
                                                                                        torch="2.5.1"))
    assert path.read_text(encoding="utf-8").split() == ["SimpleITK==2.4.0", "torch==2.5.1"]


# ----------------------------------------------------------------------------------------- settings

class StringSettings(settings.DictSettingsStore):
    """Like QSettings on some platforms: every value comes back as a string."""

    def setValue(self, key, value):  # noqa: N802
        self.data[key] = str(value)


def test_settings_persist_in_the_store_and_convert_types():
    store = StringSettings()
    first = settings.NeuroContrastSettings(store, cuda_available=lambda: False)
    assert (first.compute_device, first.threads) == ("auto", 0)
    first.compute_device = "CPU"
    first.threads = 3
    first.models_folder = "/tmp/models"
    again = settings.NeuroContrastSettings(store)
    assert again.as_dict() == {"compute_device": "cpu", "threads": 3, "models_folder": "/tmp/models"}
    assert store.data["NeuroContrast/Threads"] == "3"


def test_settings_reject_bad_values_and_tolerate_garbage():
    s = settings.NeuroContrastSettings(settings.DictSettingsStore({"NeuroContrast/Threads": "many",
                                                                   "NeuroContrast/ComputeDevice": "tpu"}))
    assert s.threads == 0 and s.compute_device == "auto"
    with pytest.raises(NeuroContrastError, match="compute device"):
        s.compute_device = "tpu"
    with pytest.raises(NeuroContrastError, match=">= 0"):
        s.threads = -1


def test_device_auto_detection():
    s = settings.NeuroContrastSettings(cuda_available=lambda: True)
    assert s.resolved_device() == "cuda"
    s.compute_device = "cpu"
    assert s.resolved_device() == "cpu"
    no_gpu = settings.NeuroContrastSettings(cuda_available=lambda: False)
    assert no_gpu.resolved_device() == "cpu"
    no_gpu.compute_device = "cuda"
    with pytest.raises(NeuroContrastError, match="no CUDA"):
        no_gpu.resolved_device()


def test_apply_sets_models_dir_and_threads():
    class FakeTorch:
        threads = None

        def set_num_threads(self, n):
            self.threads = n

    torch = FakeTorch()
    environ = {"NEUROCONTRAST_MODELS_DIR": "/other"}
    s = settings.NeuroContrastSettings(cuda_available=lambda: False)
    s.models_folder, s.threads = "/mine", 2
    applied = s.apply(environ=environ, torch_module=torch)
    assert environ["NEUROCONTRAST_MODELS_DIR"].split(":") == ["/mine", "/other"]
    assert torch.threads == 2 and applied == {"models_folder": "/mine", "threads": 2, "device": "cpu"}
    s.threads = 0
    assert s.effective_threads(cpu_count=8) == 8


def test_apply_does_not_import_torch():
    """An SVD Apply goes through the settings: it must not import torch (seconds, hundreds of MB)."""
    import subprocess
    import sys

    code = ("import sys; from NeuroContrastLib.settings import NeuroContrastSettings, DictSettingsStore; "
            "applied = NeuroContrastSettings(DictSettingsStore()).apply(environ={}); "
            "print('torch' in sys.modules, applied['device'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "auto"]


def test_models_folder_is_resolved_in_one_place(tmp_path):
    store = settings.DictSettingsStore({"NeuroContrast/ModelsFolder": str(tmp_path / "stored")})
    env = {"NEUROCONTRAST_MODELS_DIR": f"{tmp_path / 'env'}:{tmp_path / 'second'}"}
    assert settings.resolve_models_folder(str(tmp_path / "typed"), env, store) == tmp_path / "typed"
    assert settings.resolve_models_folder("", env, store) == tmp_path / "stored"
    assert settings.resolve_models_folder(None, env) == tmp_path / "env"
    assert str(settings.resolve_models_folder(None, {})) == settings.DEFAULT_MODELS_FOLDER


# ----------------------------------------------------------------------------------------- registry

@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from neurocontrast import weights

    monkeypatch.setenv("NEUROCONTRAST_MODELS_DIR", "")
    monkeypatch.setattr(weights, "PACKAGE_MODELS_DIR", tmp_path / "none")
    weights.save_model({"w": torch.ones(3, 4)}, tmp_path, "tiny", "unet3d", {"channels": 4},
                       input_channels=["T1", "T1c"], version="1.2", model_card="docs/models/tiny.md")
    return tmp_path


def test_registry_rows_and_verification(models_dir):
    rows = registry.model_rows(models_dir, verify=True)
    assert [(r.name, r.version, r.inputs, r.verified_mark) for r in rows] == [("tiny", "1.2", "T1, T1c", "✓")]
    assert rows[0].model_card.endswith("docs/models/tiny.md")
    weights_file = models_dir / "tiny.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    assert registry.model_rows(models_dir, verify=True)[0].verified_mark == "✗"
    assert registry.model_rows(models_dir, verify=False)[0].verified_mark == "?"


def test_registry_table_node(mrml_scene, models_dir):
    logic = NeuroContrastLogic(settings.DictSettingsStore({"NeuroContrast/ModelsFolder": str(models_dir)}))
    table = mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "NeuroContrast models")
    rows = logic.update_models_table(table, verify=True)
    assert len(rows) == 1
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(registry.COLUMNS)
    assert table_column(table, "Name") == ["tiny"] and table_column(table, "Verified") == ["✓"]


def test_model_row_at_reads_the_model_from_the_table_row(mrml_scene):
    """The hub's "Open model card" maps the view's selection to a table-model row (the view sorts through a proxy);
    model_row_at turns that row into the listed model by the Name and Version cells, never by position."""
    rows = [registry.ModelRow(name, version, "unet3d", "T1", 1.0, "abc", None, f"card-{name}-{version}", "w")
            for name, version in (("alpha", "1"), ("beta", "1"), ("beta", "2"))]
    table = mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "NeuroContrast models")
    registry.update_table_node(table, rows)
    assert not table.GetUseColumnTitleAsColumnHeader()  # so the model's row 0 shows the column names
    assert registry.model_row_at(rows, table, 0) is None
    assert [registry.model_row_at(rows, table, i).model_card for i in (1, 2, 3)] == [
        "card-alpha-1", "card-beta-1", "card-beta-2"]
    assert registry.model_row_at(rows, table, 4) is None and registry.model_row_at(rows, table, -1) is None
    assert registry.model_row_at(rows[::-1], table, 3) is rows[2]  # the list's order does not matter
    assert registry.model_row_at(rows[:1], table, 2) is None  # a model no longer listed
    table.SetUseColumnTitleAsColumnHeader(True)  # column names in the header: no offset
    assert registry.model_row_at(rows, table, 0) is rows[0] and registry.model_row_at(rows, table, 3) is None


# ----------------------------------------------------------------------------------------- sample data

@pytest.fixture(scope="module")
def small_phantom():
    from neurocontrast.perfusion.phantom import generate_phantom

    return generate_phantom(**sampledata.phantom_options_for_tests())


def test_phantom_sample_in_the_scene(mrml_scene, small_phantom):
    nodes = sampledata.load_dsc_phantom(mrml_scene, phantom=small_phantom)
    sequence = nodes["sequence"]
    assert sequence.GetNumberOfDataNodes() == small_phantom.signal.shape[0]
    assert nodes["browser"].GetMasterSequenceNode() is sequence
    signal, geometry, tr_s, te_s = series_from_sequence_node(sequence)
    np.testing.assert_array_equal(signal, small_phantom.signal)
    assert geometry.same_as(small_phantom.geometry)
    assert tr_s == pytest.approx(small_phantom.tr_s) and te_s == pytest.approx(small_phantom.te_s)
    reference = first_frame_node(sequence)
    for name, truth in (("AIF", small_phantom.aif_mask), ("VOF", small_phantom.vof_mask),
                        ("Brain", small_phantom.brain_mask)):
        np.testing.assert_array_equal(mask_from_segment(nodes["segmentation"], name, reference), truth)
    assert "segments AIF, VOF, Brain" in sampledata.describe(nodes)


def test_phantom_registered_in_sample_data(mrml_scene, monkeypatch, small_phantom):
    class FakeSampleDataLogic:
        registered = []

        @classmethod
        def registerCustomSampleDataSource(cls, **kwargs):  # noqa: N802
            cls.registered.append(kwargs)

    assert sampledata.register_sample_data(FakeSampleDataLogic, loader=None)
    (entry,) = FakeSampleDataLogic.registered
    assert entry["category"] == "NeuroContrast" and entry["sampleName"] == "DSC phantom"
    assert all(not u.startswith("http") for u in entry["uris"])  # generated locally, nothing downloaded
    assert sampledata.ICON.is_file() and entry["thumbnailFileName"] == str(sampledata.ICON)
    monkeypatch.setattr("neurocontrast.perfusion.phantom.generate_phantom", lambda **kw: small_phantom)
    nodes = entry["customDownloader"](None)  # what the SampleData button does
    assert nodes["sequence"].GetScene() is mrml_scene
    assert sampledata.register_sample_data() is False  # no SampleData module outside Slicer


def test_write_phantom_files(tmp_path, monkeypatch, small_phantom):
    monkeypatch.setattr("neurocontrast.perfusion.phantom.generate_phantom", lambda **kw: small_phantom)
    paths = sampledata.write_dsc_phantom(tmp_path / "p")
    from neurocontrast.io import read_dsc

    dsc = read_dsc(paths["dsc"])
    assert dsc.signal.shape == small_phantom.signal.shape and dsc.te_s == pytest.approx(small_phantom.te_s)


def test_hub_logic_status_text_and_install(monkeypatch):
    installs = {"torch": "2.4.0"}
    backend = FakeBackend(installs=installs)
    logic = NeuroContrastLogic(settings.DictSettingsStore(), install_backend=backend,
                               version_of=lambda n: installs.get(n.lower()))
    text = logic.dependency_text()
    assert "✓ torch 2.4.0" in text and "✗ numpy missing" in text and "missing: press Install" in text
    progress = []
    logic.install(confirm=lambda message: True, progress=lambda f, m: progress.append((f, m)))
    assert backend.calls and backend.calls[0][0] == "pip" and "numpy>=1.24" in backend.calls[0][1]
    assert progress[-1] == (1.0, "done")
    assert logic.dependency_text().endswith("All dependencies are installed.")


def test_model_card_location_falls_back_to_the_homepage():
    from neurocontrast.weights import ModelInfo

    info = ModelInfo(name="x", architecture="a", config={}, sha256="0" * 64, size_bytes=1,
                     model_card="docs/models/not-here.md")
    assert registry.model_card_location(info) == f"{registry.HOMEPAGE}/blob/main/docs/models/not-here.md"
    info.model_card = ""
    assert registry.model_card_location(info) == ""
