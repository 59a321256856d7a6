"""NeuroContrast core: contrast-agent brain MRI research without Slicer.

Sub-packages
------------
- :mod:`neurocontrast.io` -- 3D/4D image reading/writing and geometry checks (SimpleITK).
- :mod:`neurocontrast.perfusion` -- DSC-MRI: ΔR2*, AIF/VOF, deconvolution, maps, hypoperfusion, phantom.
- :mod:`neurocontrast.contrast` -- virtual gadolinium: preprocessing, low-dose simulation, inference.
- :mod:`neurocontrast.networks` -- torch ``nn.Module`` definitions only.
- :mod:`neurocontrast.training` -- training loops driven by ``neurocontrast train``.
- :mod:`neurocontrast.readerstudy` -- blinded reader studies, lesion pairing and statistics.
- :mod:`neurocontrast.metrics` -- image and segmentation metrics shared by all modules.
- :mod:`neurocontrast.weights` -- the model registry (safetensors, sha256, model cards).

This package never imports ``slicer``, ``qt`` or ``vtk``.
"""

from neurocontrast.errors import GeometryError, NeuroContrastError

__version__ = "0.1.0"
__all__ = ["NeuroContrastError", "GeometryError", "__version__"]
