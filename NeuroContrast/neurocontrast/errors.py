"""Exceptions raised by the NeuroContrast core.

Every error says which input is wrong and what was expected, so that the command line can print it as a
one-line reason and the Slicer modules can show it in an error dialog.
"""


class NeuroContrastError(ValueError):
    """Bad input or an impossible request (wrong shape, units, geometry, missing metadata...).

    Subclasses ``ValueError`` so that callers catching ``ValueError`` also catch it.
    """


class GeometryError(NeuroContrastError):
    """Two images that must share a voxel grid do not (size, spacing, origin or direction differ)."""
