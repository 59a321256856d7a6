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
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

MODES = ("virtual", "amplify", "differential")
MAIN_OUTPUT = {"virtual": "virtual", "amplify": "amplified", "differential": "synthesised"}
_LPS = np.diag([-1.0, -1.0, 1.0])


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
        if self.mode == "differential" and not 0 < self.dose <= 1:
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
    """A SimpleITK image (LPS) of a scalar volume node (array, spacing, origin, IJK→RAS directions)."""
    import SimpleITK as sitk
    import slicer
    import vtk

    array = slicer.util.arrayFromVolume(node)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in node.GetSpacing()))
    ras_origin = np.asarray(node.GetOrigin(), dtype=float)
    image.SetOrigin(tuple(_LPS @ ras_origin))
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(m)
    ras_dir = np.array([[m.GetElement(r, c) for c in range(3)] for r in range(3)])
    image.SetDirection(tuple((_LPS @ ras_dir).ravel()))
    return image


def image_to_volume(image, name: str, node=None, scene=None):
    """Put a SimpleITK image into a (new or given) ``vtkMRMLScalarVolumeNode``; returns the node."""
    import SimpleITK as sitk
    import slicer
    import vtk

    scene = scene or slicer.mrmlScene
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    node.SetSpacing(image.GetSpacing())
    node.SetOrigin(tuple(_LPS @ np.asarray(image.GetOrigin(), dtype=float)))
    ras_dir = _LPS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, float(ras_dir[r, c]))
    node.SetIJKToRASDirectionMatrix(m)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()  # without a display node the volume shows nothing in the slice views
    return node


# ------------------------------------------------------------------------------------------- runner
class CommandRunner:
    """Run a command in a subprocess and collect its ``PROGRESS <fraction> <message>`` lines on a thread.

    ``poll()`` never blocks: it returns ``{"running", "returncode", "fraction", "message", "error", "output"}``.
    """

    def __init__(self, command: List[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None):
        self.command = list(command)
        self._lines: "queue.Queue[str]" = queue.Queue()
        self.output: List[str] = []
        self.fraction, self.message = 0.0, "starting"
        creation = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        bufsize=1, env=env, cwd=cwd, creationflags=creation)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self.process.stdout.close()

    def poll(self) -> Dict:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line.startswith("PROGRESS "):
                parts = line.split(" ", 2)
                try:
                    self.fraction = float(parts[1])
                except ValueError:
                    pass
                self.message = parts[2] if len(parts) > 2 else ""
            else:
                self.output.append(line)
        code = self.process.poll()
        if code is not None and self._thread.is_alive():
            self._thread.join(timeout=1.0)
            return self.poll() if self._lines.qsize() else self._status(code)
        return self._status(code)

    def _status(self, code) -> Dict:
        error = ""
        if code not in (None, 0):
            lines = [l for l in self.output if l.strip()]
            errors = [l for l in lines if "error" in l.lower()]
            error = (errors or lines or [f"exit code {code}"])[-1].strip()
        return {"running": code is None, "returncode": code, "fraction": self.fraction, "message": self.message,
                "error": error, "output": "\n".join(self.output)}

    def wait(self, timeout: Optional[float] = None) -> Dict:
        self.process.wait(timeout=timeout)
        self._thread.join(timeout=5.0)
        return self.poll()

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()


def python_executable() -> str:
    """The Python that runs the command: ``NEUROCONTRAST_PYTHON``, else Slicer's ``PythonSlicer``, else this one."""
    override = os.environ.get("NEUROCONTRAST_PYTHON")
    if override:
        return override
    slicer_python = shutil.which("PythonSlicer")
    return slicer_python or sys.executable


def command_environment(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of the command: ``environ`` (default ``os.environ``) with the folder that holds the
    ``neurocontrast`` package first on ``PYTHONPATH``. Inside Slicer the package is importable only because its
    module folder is on Slicer's ``sys.path``; a ``PythonSlicer -m neurocontrast`` subprocess does not inherit that."""
    import neurocontrast

    env = dict(os.environ if environ is None else environ)
    package_parent = str(Path(neurocontrast.__file__).resolve().parents[1])
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e and e != package_parent]
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + entries)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ------------------------------------------------------------------------------------------- logic
class VirtualGadoliniumLogic:
    """Export inputs, build and run the command, import outputs; models folder management."""

    def __init__(self, scene=None):
        self._scene = scene
        self.runner: Optional[CommandRunner] = None
        self.work_dir: Optional[str] = None
        self.parameters: Optional[VirtualGadoliniumParameters] = None

    @property
    def scene(self):
        import slicer

        return self._scene or slicer.mrmlScene

    # --- models folder
    @staticmethod
    def models_folder(parameters: Optional[VirtualGadoliniumParameters] = None) -> Path:
        """The user models folder: the parameters' folder, else the first ``NEUROCONTRAST_MODELS_DIR`` entry,
        else ``~/.neurocontrast/models`` (created on demand)."""
        if parameters is not None and parameters.models_dir:
            return Path(parameters.models_dir)
        env = [e for e in os.environ.get("NEUROCONTRAST_MODELS_DIR", "").split(os.pathsep) if e.strip()]
        return Path(env[0]) if env else Path.home() / ".neurocontrast" / "models"

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
        cmd = [python_executable(), "-m", "neurocontrast", "contrast", p.mode]
        if p.mode == "differential":
            cmd += ["--pre", inputs["t1"], "--post", inputs["post"], "--dose", f"{p.dose:g}",
                    "--field-strength", f"{p.field_strength_t:g}", "--agent", p.agent]
        else:
            cmd += ["--t1", inputs["t1"], "--flair", inputs["flair"]]
            if "t2" in inputs and p.mode == "virtual":
                cmd += ["--t2", inputs["t2"]]
            if "adc" in inputs:
                cmd += ["--adc", inputs["adc"]]
            if p.mode == "virtual":
                cmd += ["--t1c-low", inputs["t1c_low"]]
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

    def start(self, p: VirtualGadoliniumParameters, work_dir: Optional[str] = None) -> CommandRunner:
        """Export inputs and start the command in a subprocess; poll with :meth:`poll`."""
        self.cleanup()
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="VirtualGadolinium-")
        inputs = self.export_inputs(p, os.path.join(self.work_dir, "inputs"))
        command = self.build_command(p, inputs, os.path.join(self.work_dir, "outputs"))
        env = command_environment()
        self.parameters = p
        self.runner = CommandRunner(command, env=env)
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
            return {"running": False, "returncode": None, "fraction": 0.0, "message": "idle", "error": "",
                    "output": ""}
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
