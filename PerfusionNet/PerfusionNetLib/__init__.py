"""Logic of the PerfusionNet Slicer module (no Qt; tested with ``slicer-core`` in Testing/mrml)."""
