"""Regenerate docs/figures/perfusionnet-maps.png: what PerfusionNet shows on the DSC phantom.

Runs the module's logic on a real MRML scene (slicer-core), then draws every map the way its display node
says (the module's colour table node, its window, the transparent entry over the bolus-peak frame), plus the
AIF/VOF curves the module plots. Usage: ``PYTHONPATH=NeuroContrast:PerfusionNet python docs/figures/perfusionnet_maps.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import slicer  # noqa: E402

OUT = Path(__file__).resolve().parent / "perfusionnet-maps.png"


def lut_rgba(display, values):
    """RGBA of ``values`` through a scalar volume display node's colour table and window, as a slice view maps
    them (values at or below the window minimum take entry 0)."""
    table = display.GetColorNode()
    lut = table.GetLookupTable()
    n = table.GetNumberOfColors()
    colors = np.array([lut.GetTableValue(i) for i in range(n)])
    low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    index = np.clip(np.round((values - low) / (high - low) * (n - 1)), 0, n - 1).astype(int)
    return colors[index]


def main():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logics = [getattr(slicer, name)() for name in ("vtkSlicerColorLogic", "vtkSlicerMarkupsLogic",
                                                   "vtkSlicerSequencesLogic", "vtkSlicerSegmentationsModuleLogic",
                                                   "vtkSlicerTablesLogic", "vtkSlicerPlotsLogic")]
    for logic in logics:
        logic.SetMRMLScene(scene)
    from NeuroContrastLib.sampledata import load_dsc_phantom
    from PerfusionNetLib.delineation import bolus_images
    from PerfusionNetLib.logic import PerfusionNetLogic, PerfusionNetParameters

    nodes = load_dsc_phantom(scene, shape=(8, 64, 64))
    seg, ids = nodes["segmentation"], nodes["segments"]
    params = PerfusionNetParameters(dsc_node_id=nodes["sequence"].GetID(), aif_node_id=seg.GetID(),
                                    aif_segment=ids["AIF"], vof_node_id=seg.GetID(), vof_segment=ids["VOF"],
                                    brain_node_id=seg.GetID(), brain_segment=ids["Brain"])
    logic = PerfusionNetLogic(scene)
    outputs = logic.run(params)
    dsc, _ = logic.load_dsc(params)
    _, peak_frame, _ = bolus_images(dsc.signal)
    z = dsc.signal.shape[1] // 2
    underlay = peak_frame[z] / np.percentile(peak_frame, 99)
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
    for ax, name in zip(axes, ("cbf", "cbv", "mtt", "tmax", "ttp")):
        node = outputs.map_nodes[name]
        display = node.GetDisplayNode()
        rgba = lut_rgba(display, slicer.util.arrayFromVolume(node)[z])
        ax.imshow(np.clip(underlay, 0, 1), cmap="gray", origin="lower")
        ax.imshow(rgba, origin="lower")
        unit = node.GetVoxelValueUnits().GetCodeValue()
        ax.set_title(f"{name.upper()} [{unit}]\n{display.GetWindowLevelMin():.3g}–{display.GetWindowLevelMax():.3g}",
                     fontsize=9)
        ax.axis("off")
    curves = logic.compute_curves(params)
    axes[5].plot(curves.times_s, curves.aif, color=(0.9, 0.1, 0.1), label="AIF")
    axes[5].plot(curves.times_s, curves.vof, color=(0.1, 0.3, 0.95), label="VOF")
    axes[5].set_xlabel("time (s)")
    axes[5].set_ylabel("ΔR2* (1/s)")
    axes[5].legend(fontsize=8)
    axes[5].set_title("live AIF / VOF curves", fontsize=9)
    fig.suptitle("PerfusionNet on the DSC phantom (oSVD): maps over the bolus-peak frame, transparent background",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
