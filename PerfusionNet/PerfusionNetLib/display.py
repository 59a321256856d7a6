"""How the perfusion maps look in Slicer: colour tables, display ranges and voxel-value units (no Qt).

Clinical conventions: delay maps (Tmax, TTP, MTT) run from blue (short, normal) to red (long, delayed), as in
the RAPID / Olea / syngo.via perfusion displays; CBF and CBV use a perceptually uniform map (viridis: dark =
low flow/volume), so equal steps of flow look like equal steps of colour. The lowest table entry is fully
transparent, so the zero background outside the brain does not hide the image under the map (tissue whose
Tmax is exactly 0 s, i.e. no delay at all, is shown transparent as well; the Data Probe still reads 0 s).

The colour tables are created in code (``NeuroContrast <Map>`` user tables, 256 entries from matplotlib's
colormaps) when the scene lacks them: the file-based tables of the Slicer application (ColdToHotRainbow,
Viridis...) do not exist in every scene, and Slicer's procedural "Rainbow" runs red → purple, the reverse of
the clinical convention. Units are set with ``SetVoxelValueUnits`` (UCUM codes, as DICOM parametric maps do),
so the Data Probe and the volume information show them.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

#: matplotlib colormap of each map (low → high); delay maps blue → red, flow/volume perceptual
MAP_COLORMAPS = {"tmax": "turbo", "ttp": "turbo", "mtt": "turbo", "cbf": "viridis", "cbv": "viridis",
                 "tmax_uncertainty": "inferno", "rcbf": "viridis", "rcbv": "viridis", "rmtt": "turbo"}
#: voxel-value units: (UCUM code, meaning) for ``vtkMRMLVolumeNode.SetVoxelValueUnits``
MAP_UNITS: Dict[str, Tuple[str, str]] = {
    "cbf": ("mL/(100.g.min)", "milliliter per 100 gram per minute"),
    "cbv": ("mL/(100.g)", "milliliter per 100 gram"),
    "mtt": ("s", "second"), "tmax": ("s", "second"), "ttp": ("s", "second"), "tmax_uncertainty": ("s", "second"),
    # relative maps: ratio to the reference region's median (dimensionless, UCUM "1")
    "rcbf": ("1", "ratio"), "rcbv": ("1", "ratio"), "rmtt": ("1", "ratio"),
}
#: fixed display ranges (min, max) in the map's unit; other maps use the 1st–99th percentile inside the brain
FIXED_RANGES = {"tmax": (0.0, 10.0)}
TABLE_SIZE = 256


def color_table_name(map_name: str) -> str:
    return "NeuroContrast " + ("Tmax uncertainty" if map_name == "tmax_uncertainty" else
                               {"tmax": "Tmax", "ttp": "TTP", "mtt": "MTT", "cbf": "CBF", "cbv": "CBV",
                                "rcbf": "rCBF", "rcbv": "rCBV", "rmtt": "rMTT"}[map_name])


def colormap_rgba(colormap: str, n: int = TABLE_SIZE) -> np.ndarray:
    """``(n, 4)`` RGBA in [0, 1] of a matplotlib colormap, entry 0 fully transparent (the zero background)."""
    import matplotlib

    rgba = np.asarray(matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, n)), dtype=float)
    rgba[0, 3] = 0.0
    return rgba


def ensure_color_table(scene, map_name: str):
    """The ``NeuroContrast <Map>`` colour table node of ``map_name`` in ``scene``, created on first use.

    Raises KeyError for a map without a colour convention."""
    name = color_table_name(map_name)
    nodes = scene.GetNodesByClassByName("vtkMRMLColorTableNode", name)
    if nodes.GetNumberOfItems():
        return nodes.GetItemAsObject(0)
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(TABLE_SIZE)
    table.SetNamesInitialised(True)
    for index, (r, g, b, a) in enumerate(colormap_rgba(MAP_COLORMAPS[map_name])):
        table.SetColor(index, f"{index}", float(r), float(g), float(b), float(a))
    table.SetAttribute("Category", "NeuroContrast")
    return table


def display_range(map_name: str, values: np.ndarray, brain: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """Display (min, max) of a map: fixed for Tmax (0–10 s), else the 1st–99th percentile of the finite values
    inside the brain (all non-zero voxels without a brain mask); CBF/CBV/MTT start at 0."""
    if map_name in FIXED_RANGES:
        return FIXED_RANGES[map_name]
    inside = values[brain] if brain is not None and brain.shape == values.shape else values[values != 0]
    inside = inside[np.isfinite(inside)]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(inside, [1, 99])
    if map_name in ("cbf", "cbv", "mtt", "rcbf", "rcbv", "rmtt"):
        low = 0.0
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def set_voxel_units(node, map_name: str) -> None:
    """``SetVoxelValueUnits`` with the map's UCUM unit (nothing for a map without a unit)."""
    import slicer

    if map_name not in MAP_UNITS:
        return
    code, meaning = MAP_UNITS[map_name]
    units = slicer.vtkCodedEntry()
    units.SetValueSchemeMeaning(code, "UCUM", meaning)
    node.SetVoxelValueUnits(units)


def apply_map_display(node, map_name: str, values: np.ndarray, brain: Optional[np.ndarray] = None) -> None:
    """Colour table, window (fixed or percentile range) and units of a map volume node."""
    set_voxel_units(node, map_name)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if map_name in MAP_COLORMAPS:
        display.SetAndObserveColorNodeID(ensure_color_table(node.GetScene(), map_name).GetID())
    low, high = display_range(map_name, values, brain)
    inside = values[brain] if brain is not None and brain.shape == values.shape else values[values != 0]
    inside = inside[np.isfinite(inside)]
    step = (high - low) / (TABLE_SIZE - 1)
    if inside.size and low > 0 and min(low, float(inside.min())) - step > 0:
        # a percentile window that starts above 0: start it one table entry below the darkest brain voxel, so
        # that only the zero background falls on the transparent entry 0
        low = min(low, float(inside.min())) - step
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
