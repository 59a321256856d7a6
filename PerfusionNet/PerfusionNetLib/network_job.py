"""PerfusionNet's networks (ST-Net, the AIF-free Tmax net) in a background process (no Qt).

A whole-brain ST-Net run takes minutes on a CPU: inside Slicer's process it would freeze the GUI with no way
to stop it. :class:`NetworkJob` writes the DSC series and the masks to a temporary folder, runs
``neurocontrast perfusion DSC --method stnet|tmaxnet ... --progress-lines`` through the
:class:`NeuroContrastLib.runner.Runner` seam (a subprocess by default; injectable), and when the command has
finished brings the maps, the Tmax > 6 s region and the volumes back as nodes, shown exactly as an in-process
run shows them (``PerfusionNetLogic`` makes the nodes). Cancel terminates the process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import types
from typing import Dict, List, Optional

import numpy as np

from neurocontrast.errors import NeuroContrastError
from NeuroContrastLib.runner import IDLE_STATUS, Runner, RunnerFactory, command_environment, neurocontrast_command, \
    start_command

#: map files the command may write (``<map>.nii.gz``)
MAP_FILES = ("cbf", "cbv", "mtt", "tmax", "ttp", "tmax_uncertainty", "rcbf", "rcbv", "rmtt")


def runs_in_background(method: str) -> bool:
    """True for the network methods (everything that is not a deconvolution): they run in a subprocess."""
    from PerfusionNetLib.logic import CLASSIC_METHODS

    return method not in CLASSIC_METHODS


class NetworkJob:
    """One background run: :meth:`start`, :meth:`poll` from a timer, then :meth:`finish` (or :meth:`cancel`)."""

    def __init__(self, logic, runner_factory: RunnerFactory = start_command):
        self.logic = logic
        self.runner_factory = runner_factory
        self.runner: Optional[Runner] = None
        self.work_dir: Optional[str] = None
        self.params = None

    def build_command(self, params, inputs: Dict[str, str], out_dir: str) -> List[str]:
        """``neurocontrast perfusion`` arguments for the exported inputs (TR/TE given, so nothing is guessed)."""
        dsc, _ = self.logic.load_dsc(params)
        command = neurocontrast_command("perfusion", inputs["dsc"], "--method", params.method, "--out", out_dir,
                                        "--tr", f"{dsc.tr_s:.6g}", "--progress-lines")
        if dsc.te_s:
            command += ["--te", f"{dsc.te_s:.6g}"]
        if params.aif_mode == "auto" or "aif" not in inputs:
            # an AIF-free method (the Tmax net) without AIF input: the command line still asks for an AIF
            # source, and "auto" is the one that needs no input from the user
            command += ["--aif", "auto"]
        for role in ("aif", "vof", "brain", "core", "reference"):
            if role in inputs and not (role == "aif" and params.aif_mode == "auto"):
                command += [f"--{role}-mask", inputs[role]]
        if params.vof_mode == "auto":
            command += ["--vof", "auto"]
        if not params.vof_rescale:
            command += ["--no-vof-rescale"]
        for role in ("adc", "dwi"):
            if role in inputs:
                command += [f"--{role}", inputs[role]]
        return command

    def export_inputs(self, params, folder: str) -> Dict[str, str]:
        """Write the series (4D NIfTI, LPS geometry of the DSC grid) and the selected masks; returns the paths."""
        import SimpleITK as sitk

        dsc, reference = self.logic.load_dsc(params)
        os.makedirs(folder, exist_ok=True)
        frames = [dsc.geometry.to_image(frame) for frame in dsc.signal]
        paths = {"dsc": os.path.join(folder, "dsc.nii.gz")}
        sitk.WriteImage(sitk.JoinSeries(frames, 0.0, float(dsc.tr_s)), paths["dsc"])
        for role, mask in self.logic.masks(params, reference).items():
            if mask is not None:
                paths[role] = os.path.join(folder, f"{role}_mask.nii.gz")
                sitk.WriteImage(dsc.geometry.to_image(mask.astype(np.uint8)), paths[role])
        diffusion = self.logic.diffusion(params)  # on the ADC's own grid, as the command line reads it
        if diffusion is not None:
            for role, image in (("adc", diffusion.adc), ("dwi", diffusion.dwi)):
                if image is not None:
                    paths[role] = os.path.join(folder, f"{role}.nii.gz")
                    sitk.WriteImage(diffusion.geometry.to_image(image), paths[role])
        return paths

    def start(self, params) -> Runner:
        """Check the parameters, export the inputs and start the command. Raises NeuroContrastError on invalid
        parameters (the same problems an in-process run refuses)."""
        problems = params.problems(self.logic.scene)
        if problems:
            raise NeuroContrastError("cannot run PerfusionNet: " + "; ".join(problems))
        self.cleanup()
        self.work_dir = tempfile.mkdtemp(prefix="PerfusionNet-")
        inputs = self.export_inputs(params, os.path.join(self.work_dir, "inputs"))
        command = self.build_command(params, inputs, os.path.join(self.work_dir, "outputs"))
        self.params = params
        self.runner = self.runner_factory(command, command_environment())
        return self.runner

    def poll(self) -> Dict:
        return dict(IDLE_STATUS) if self.runner is None else self.runner.poll()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def finish(self):
        """Import the command's outputs as the in-process run does; returns ``PerfusionNetOutputs``. Raises
        NeuroContrastError when the command failed or wrote no Tmax map. The temporary folder is removed."""
        import SimpleITK as sitk

        from PerfusionNetLib.logic import PerfusionNetOutputs

        try:
            status = self.poll()
            if status["returncode"] != 0:
                raise NeuroContrastError(f"neurocontrast perfusion failed: {status['error']}")
            out = os.path.join(self.work_dir, "outputs")
            if not os.path.exists(os.path.join(out, "tmax.nii.gz")):
                raise NeuroContrastError(f"the command wrote no tmax.nii.gz in {out}")
            params, logic = self.params, self.logic
            dsc, reference = logic.load_dsc(params)
            prefix = params.output_prefix or logic.scene.GetNodeByID(params.dsc_node_id).GetName()
            masks = logic.masks(params, reference)
            maps = {name: sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out, f"{name}.nii.gz")))
                    for name in MAP_FILES if os.path.exists(os.path.join(out, f"{name}.nii.gz"))}
            map_nodes = {name: logic._map_node(np.asarray(values, np.float32), dsc.geometry, prefix, name,
                                               masks["brain"]) for name, values in maps.items()}
            with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
                report = json.load(fh)
            hyp_path = os.path.join(out, "hypoperfusion.nii.gz")
            result = types.SimpleNamespace(report=report, hypoperfusion=None, core=None)
            core_path = os.path.join(out, "core_adc.nii.gz")
            if os.path.exists(core_path):  # on the ADC grid
                result.core = types.SimpleNamespace(mask=sitk.GetArrayFromImage(sitk.ReadImage(core_path)) > 0)
            if os.path.exists(hyp_path):
                volumes = {float(k[len("tmax_gt_"):-1]): v for k, v in (report.get("volumes_ml") or {}).items()}
                result.hypoperfusion = types.SimpleNamespace(
                    masks={6.0: sitk.GetArrayFromImage(sitk.ReadImage(hyp_path)) > 0}, volumes_ml=volumes)
            adc_node = logic.scene.GetNodeByID(params.adc_node_id) if params.adc_node_id else None
            segmentation, table = logic._hypoperfusion_nodes(result, reference, prefix, adc_node)
            return PerfusionNetOutputs(map_nodes, segmentation, table, None, result)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the temporary folder (the exported patient images and the command's outputs)."""
        if self.work_dir and os.path.isdir(self.work_dir):
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir = None
