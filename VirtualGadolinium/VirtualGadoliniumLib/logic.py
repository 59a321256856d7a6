"""VirtualGadolinium logic: MRML volume nodes ⇄ files ⇄ the ``neurocontrast contrast`` command in a subprocess.

No Qt and no ScriptedLoadableModule here (pytest imports this with the ``slicer-core`` wheel). The Widget
(``VirtualGadolinium.py``) fills a :class:`VirtualGadoliniumParameters`, calls :meth:`VirtualGadoliniumLogic.start`
and polls :meth:`VirtualGadoliniumLogic.poll` from a timer, so Slicer stays responsive while the network runs in
another process (the TotalSegmentator / MONAIAuto3DSeg pattern: crashes stay contained).

Volume nodes are written as NIfTI through SimpleITK (RAS node geometry → LPS image geometry), the command
writes its outputs on the native grid of the contrast input, and they come back as new volume nodes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple


from NeuroContrastLib.runner import (IDLE_STATUS, CommandRunner, Runner, RunnerFactory,  # noqa: F401 (re-exported)
                                     command_environment, neurocontrast_command, python_executable, start_command)

log = logging.getLogger(__name__)

MODES = ("virtual", "amplify", "differential")
#: the fields holding volume nodes (node references in the parameter node)
VOLUME_FIELDS = ("t1", "flair", "t2", "adc", "dwi_b0", "dwi_high", "contrast")
MAIN_OUTPUT = {"virtual": "virtual", "amplify": "amplified", "differential": "synthesised"}


@dataclasses.dataclass
class VirtualGadoliniumParameters:
    """Everything the Apply button needs. Volume fields hold ``vtkMRMLScalarVolumeNode`` or None.

    mode: ``virtual`` (contrast = low-dose T1c), ``amplify`` (contrast = routine T1c) or ``differential``
    (t1 = pre-contrast, contrast = low-dose post-contrast; dose, field strength and agent condition the
    network). ADC is optional; a DWI pair (b0, high b) is turned into ADC when no ADC is given.
    ensemble 0 = all fold models; tta 1, 2, 4 or 8; device ``cpu``/``cuda``/``auto``.
    """

    mode: str = "virtual"
    t1: object = None
    flair: object = None
    t2: object = None
    adc: object = None
    dwi_b0: object = None
    dwi_high: object = None
    b_value: float = 1000.0
    contrast: object = None
    dose: float = 0.25
    field_strength_t: float = 1.5
    agent: str = "gadoterate"
    repeat: int = 1
    ensemble: int = 0
    tta: int = 2
    device: str = "cpu"
    model: str = ""
    models_dir: str = ""
    preprocessed: bool = False

    def write(self, parameter_node) -> None:
        """Store in the module's parameter node (volumes as node references, saved with the scene)."""
        from NeuroContrastLib.parameternode import write_parameters

        write_parameters(self, parameter_node, VOLUME_FIELDS)

    @classmethod
    def read(cls, parameter_node) -> "VirtualGadoliniumParameters":
        """Read back what :meth:`write` stored (defaults where nothing is stored)."""
        from NeuroContrastLib.parameternode import read_parameters

        return read_parameters(cls, parameter_node, VOLUME_FIELDS)

    def isValid(self) -> Tuple[bool, str]:
        """(True, "") when Apply can run, else (False, a reason for the status line)."""
        if self.mode not in MODES:
            return False, f"unknown mode {self.mode!r}"
        if self.t1 is None:
            return False, "select the pre-contrast T1"
        if self.contrast is None:
            return False, {"virtual": "select the low-dose T1c", "amplify": "select the routine T1c",
                           "differential": "select the low-dose post-contrast T1"}[self.mode]
        if self.mode != "differential" and self.flair is None:
            return False, "select the T2-FLAIR"
        if (self.dwi_b0 is None) != (self.dwi_high is None):
            return False, "select both DWI volumes (b0 and high b) or neither"
        if self.mode in ("virtual", "differential") and not 0 < self.dose <= 1:
            return False, "the dose must be a fraction of the standard dose in (0, 1]"
        if self.tta not in (1, 2, 4, 8):
            return False, "TTA must be 1, 2, 4 or 8"
        if self.repeat < 1 or (self.repeat > 1 and self.mode != "amplify"):
            return False, "repeat > 1 is only for amplify"
        if self.ensemble < 0:
            return False, "ensemble must be ≥ 0 (0 = all folds)"
        return True, ""


# ------------------------------------------------------------------------------------------- geometry
def volume_to_image(node):
    """A SimpleITK image (LPS) of a scalar volume node where Slicer shows it: its parent transforms hardened
    (``mrml.geometry_from_volume_node(world=True)``; a non-linear or shearing transform is refused)."""
    import slicer

    from NeuroContrastLib import mrml

    return mrml.geometry_from_volume_node(node, world=True).to_image(slicer.util.arrayFromVolume(node))


def image_to_volume(image, name: str, node=None, scene=None):
    """Put a SimpleITK image into a (new or given) ``vtkMRMLScalarVolumeNode`` with a display node."""
    import SimpleITK as sitk

    from NeuroContrastLib import mrml
    from neurocontrast.io import Geometry

    node = mrml.volume_node_from_array(sitk.GetArrayFromImage(image), Geometry.from_image(image), name,
                                       scene=scene, node=node)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()  # without a display node the volume shows nothing in the slice views
    return node


# ------------------------------------------------------------------------------------------- logic
class VirtualGadoliniumLogic:
    """Export inputs, build and run the command, import outputs; models folder management."""

    def __init__(self, scene=None, runner_factory: RunnerFactory = start_command):
        self._scene = scene
        self.runner_factory = runner_factory
        self.runner: Optional[Runner] = None
        self.work_dir: Optional[str] = None
        self.parameters: Optional[VirtualGadoliniumParameters] = None

    @property
    def scene(self):
        import slicer

        return self._scene or slicer.mrmlScene

    # --- models folder
    @staticmethod
    def models_folder(parameters: Optional[VirtualGadoliniumParameters] = None) -> Path:
        """The user models folder (``settings.resolve_models_folder``: the parameters' folder, else the
        NeuroContrast setting as put in effect, else the default); not created."""
        from NeuroContrastLib.settings import resolve_models_folder

        return resolve_models_folder(parameters.models_dir if parameters is not None else None)

    @staticmethod
    def available_models(folder: Optional[Path] = None) -> List[Dict]:
        """Models visible to the command (user folder first, then the shipped ones): name, size, folder, sha ok."""
        from neurocontrast import weights

        return [{"name": m.name, "size_mb": round(m.size_bytes / 2 ** 20, 2), "folder": m.directory,
                 "shipped": Path(m.directory).resolve() == weights.PACKAGE_MODELS_DIR.resolve(),
                 "description": m.description} for m in weights.list_models(folder)]

    @staticmethod
    def clear_models_folder(folder: Path) -> int:
        """Delete the model files (``*.safetensors`` and their ``*.json`` records) in a user models folder.

        Returns the number of files removed. Refuses (NeuroContrastError) to touch the package's shipped models.
        """
        from neurocontrast import weights
        from neurocontrast.errors import NeuroContrastError

        folder = Path(folder)
        if not folder.is_dir():
            return 0
        if folder.resolve() == weights.PACKAGE_MODELS_DIR.resolve():
            raise NeuroContrastError("the shipped demonstration models cannot be cleared from Slicer")
        removed = 0
        for path in list(folder.glob("*.safetensors")) + list(folder.glob("*.json")):
            path.unlink()
            removed += 1
        return removed

    # --- inputs and command
    def export_inputs(self, p: VirtualGadoliniumParameters, folder: str) -> Dict[str, str]:
        """Write the selected volumes as NIfTI in ``folder``; DWI b0/high-b → ``adc.nii.gz`` when no ADC.

        Returns {sequence name: path}. Raises NeuroContrastError if the parameters are invalid.
        """
        import SimpleITK as sitk

        from neurocontrast.contrast.virtual import adc_from_dwi
        from neurocontrast.errors import NeuroContrastError
        from neurocontrast.io import Geometry, check_same_geometry

        ok, why = p.isValid()
        if not ok:
            raise NeuroContrastError(why)
        os.makedirs(folder, exist_ok=True)
        contrast_name = {"virtual": "t1c_low", "amplify": "t1c", "differential": "post"}[p.mode]
        selected = {"t1": p.t1, contrast_name: p.contrast}
        if p.mode != "differential":
            selected.update({"flair": p.flair, "t2": p.t2, "adc": p.adc})
        paths = {}
        for name, node in selected.items():
            if node is None:
                continue
            path = os.path.join(folder, f"{name}.nii.gz")
            sitk.WriteImage(volume_to_image(node), path, useCompression=True)
            paths[name] = path
        if p.mode != "differential" and p.adc is None and p.dwi_b0 is not None:
            b0, bh = volume_to_image(p.dwi_b0), volume_to_image(p.dwi_high)
            check_same_geometry(Geometry.from_image(b0), Geometry.from_image(bh), "DWI b0", "DWI high b")
            adc = sitk.GetImageFromArray(adc_from_dwi(sitk.GetArrayFromImage(b0), sitk.GetArrayFromImage(bh),
                                                      p.b_value))
            adc.CopyInformation(b0)
            paths["adc"] = os.path.join(folder, "adc.nii.gz")
            sitk.WriteImage(adc, paths["adc"], useCompression=True)
        return paths

    def build_command(self, p: VirtualGadoliniumParameters, inputs: Dict[str, str], out_dir: str) -> List[str]:
        """The ``neurocontrast contrast <mode> ...`` argument list (see the command line contract)."""
        cmd = neurocontrast_command("contrast", p.mode)
        if p.mode == "differential":
            cmd += ["--pre", inputs["t1"], "--post", inputs["post"], "--dose", f"{p.dose:g}",
                    "--field-strength", f"{p.field_strength_t:g}", "--agent", p.agent]
        else:
            cmd += ["--t1", inputs["t1"], "--flair", inputs["flair"]]
            if "t2" in inputs and p.mode == "virtual":
                cmd += ["--t2", inputs["t2"]]
            if "adc" in inputs:
                cmd += ["--adc", inputs["adc"]]
            if p.mode == "virtual":  # the shipped virtual model is dose-conditioned: it needs the low dose
                cmd += ["--t1c-low", inputs["t1c_low"], "--dose", f"{p.dose:g}"]
            else:
                cmd += ["--t1c", inputs["t1c"], "--repeat", str(int(p.repeat))]
        cmd += ["--out", out_dir, "--tta", str(int(p.tta)), "--device", p.device, "--progress-lines"]
        if p.ensemble > 0:
            cmd += ["--ensemble", str(int(p.ensemble))]
        if p.model:
            cmd += ["--model", p.model]
        folder = self.models_folder(p)
        if folder.is_dir():
            cmd += ["--models-dir", str(folder)]
        if p.preprocessed:
            cmd += ["--preprocessed"]
        return cmd

    def start(self, p: VirtualGadoliniumParameters, work_dir: Optional[str] = None) -> Runner:
        """Export inputs and start the command in a subprocess; poll with :meth:`poll`."""
        self.cleanup()
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="VirtualGadolinium-")
        inputs = self.export_inputs(p, os.path.join(self.work_dir, "inputs"))
        command = self.build_command(p, inputs, os.path.join(self.work_dir, "outputs"))
        env = command_environment()
        self.parameters = p
        self.runner = self.runner_factory(command, env)
        return self.runner

    def cleanup(self) -> None:
        """Remove the temporary work folder of the last run (inputs exported from the scene and the command's
        outputs, already imported as nodes). A folder given by the caller is left alone."""
        import shutil

        if getattr(self, "_owns_work_dir", False) and self.work_dir and os.path.isdir(self.work_dir):
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self._owns_work_dir = False

    def poll(self) -> Dict:
        """Status of the running command (see :meth:`CommandRunner.poll`)."""
        if self.runner is None:
            return dict(IDLE_STATUS)
        return self.runner.poll()

    def import_outputs(self, p: Optional[VirtualGadoliniumParameters] = None,
                       out_dir: Optional[str] = None) -> Dict[str, object]:
        """Load the command's outputs as new volume nodes named after the contrast input.

        Returns {output name: node} (main output, ``enhancement``/``signal``, ``brain_mask`` as a volume).
        Raises NeuroContrastError if the main output is missing.
        """
        import SimpleITK as sitk

        from neurocontrast.errors import NeuroContrastError

        p = p or self.parameters
        out = Path(out_dir or os.path.join(self.work_dir or "", "outputs"))
        main = MAIN_OUTPUT[p.mode]
        if not (out / f"{main}.nii.gz").exists():
            raise NeuroContrastError(f"the command wrote no {main}.nii.gz in {out}")
        base = p.contrast.GetName() if p.contrast is not None else "T1c"
        nodes = {}
        for name in (main, "enhancement", "signal", "brain_mask"):
            path = out / f"{name}.nii.gz"
            if path.exists():
                nodes[name] = image_to_volume(sitk.ReadImage(str(path)), f"{base} {name}", scene=self.scene)
        return nodes

    def run(self, p: VirtualGadoliniumParameters, progress=None, timeout: Optional[float] = None) -> Dict[str, object]:
        """Blocking run (scripts, self-test, tests): start, wait, import. Raises NeuroContrastError with the
        command's last error line on failure."""
        import time

        from neurocontrast.errors import NeuroContrastError

        runner = self.start(p)
        start = time.monotonic()
        while True:
            status = runner.poll()
            if progress is not None:
                progress(status["fraction"], status["message"])
            if not status["running"]:
                break
            if timeout is not None and time.monotonic() - start > timeout:
                runner.cancel()
                raise NeuroContrastError(f"the command did not finish within {timeout} s")
            time.sleep(0.2)
        status = runner.wait()
        try:
            if status["returncode"] != 0:
                raise NeuroContrastError(f"neurocontrast failed: {status['error']}")
            return self.import_outputs(p)
        finally:
            self.cleanup()
