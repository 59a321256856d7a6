"""Sample data: the digital DSC phantom of :mod:`neurocontrast.perfusion.phantom`, generated locally.

Nothing is downloaded: :func:`load_dsc_phantom` generates the phantom in memory (a second or two) and adds
it to the scene as a volume sequence (with its browser, TR in the time index and TE as an attribute) plus one
segmentation node with the segments ``AIF``, ``VOF`` and ``Brain``, ready for PerfusionNet.
:func:`register_sample_data` registers it in Slicer's SampleData module (category ``NeuroContrast``) with a
``customDownloader`` that calls :func:`load_dsc_phantom`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from NeuroContrastLib import mrml

CATEGORY = "NeuroContrast"
SAMPLE_NAME = "DSC phantom"
NODE_NAME = "DSCPhantom"
SEGMENT_COLORS = {"AIF": (0.90, 0.10, 0.10), "VOF": (0.10, 0.30, 0.95), "Brain": (0.95, 0.85, 0.55)}
ICON = Path(__file__).resolve().parents[1] / "Resources" / "Icons" / "NeuroContrast.png"


def load_dsc_phantom(scene=None, name: str = NODE_NAME, phantom=None, **phantom_options) -> Dict[str, Any]:
    """Generate the DSC phantom and add it to ``scene`` (default ``slicer.mrmlScene``).

    ``phantom_options`` go to ``generate_phantom`` (e.g. ``shape=(8, 64, 64)``, ``n_frames=60``, ``snr=40``);
    a ``phantom`` already generated is used as it is.
    Returns ``{"sequence", "browser", "segmentation", "segments": {"AIF": id, "VOF": id, "Brain": id},
    "phantom"}`` (the last is the core ``Phantom`` object with its ground truth).
    """
    from neurocontrast.perfusion.phantom import generate_phantom

    scene = mrml.scene_or_default(scene)
    phantom = phantom if phantom is not None else generate_phantom(**phantom_options)
    sequence, browser = mrml.sequence_node_from_array(phantom.signal, phantom.geometry, phantom.tr_s, name,
                                                      scene, te_s=phantom.te_s)
    reference = mrml.first_frame_node(sequence)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} masks")
    segmentation.CreateDefaultDisplayNodes()
    segments = {}
    for segment_name, mask in (("AIF", phantom.aif_mask), ("VOF", phantom.vof_mask), ("Brain", phantom.brain_mask)):
        segments[segment_name] = mrml.add_segment_from_mask(segmentation, mask, reference, segment_name,
                                                            SEGMENT_COLORS[segment_name])
    display = segmentation.GetDisplayNode()
    if display is not None:
        display.SetSegmentVisibility(segments["Brain"], False)
    return {"sequence": sequence, "browser": browser, "segmentation": segmentation, "segments": segments,
            "phantom": phantom}


def register_sample_data(sample_data_logic=None, loader=None) -> bool:
    """Register the phantom in Slicer's SampleData module. Returns False where SampleData is unavailable.

    ``sample_data_logic`` defaults to ``SampleData.SampleDataLogic`` (only inside Slicer); ``loader`` is the
    function run when the user clicks the sample (default: :func:`load_dsc_phantom` followed by showing the
    sequence in the slice views, done by the caller's loader).
    """
    if sample_data_logic is None:
        try:
            import SampleData
        except ImportError:
            return False
        sample_data_logic = SampleData.SampleDataLogic
    loader = loader or (lambda source: load_dsc_phantom())
    sample_data_logic.registerCustomSampleDataSource(
        category=CATEGORY, sampleName=SAMPLE_NAME,
        uris=["generated-locally:neurocontrast.perfusion.phantom"], fileNames=["DSCPhantom.seq.nrrd"],
        nodeNames=[NODE_NAME], thumbnailFileName=str(ICON), loadFileType="SequenceFile",
        customDownloader=loader)
    return True


def write_dsc_phantom(out_dir, **phantom_options) -> Dict[str, str]:
    """Generate the phantom and write it as files (``write_phantom``: dsc.nii.gz + dsc.json sidecar, masks,
    truth maps) for use outside Slicer. Returns the paths."""
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_phantom(generate_phantom(**phantom_options), str(out_dir))


def phantom_options_for_tests() -> Dict[str, Any]:
    """A small phantom (fast) used by the module self-tests and pytest."""
    return {"shape": (4, 48, 48), "n_frames": 40}


def describe(nodes: Optional[Dict[str, Any]]) -> str:
    """One line describing what :func:`load_dsc_phantom` added."""
    if not nodes:
        return "nothing loaded"
    sequence = nodes["sequence"]
    return (f"{sequence.GetName()}: {sequence.GetNumberOfDataNodes()} frames, segments "
            f"{', '.join(nodes['segments'])} in '{nodes['segmentation'].GetName()}'")
