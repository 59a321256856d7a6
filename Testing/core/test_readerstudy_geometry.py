"""Lesion-axis geometry of the reading sessions (pure NumPy, no Slicer)."""

from __future__ import annotations

import numpy as np
import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.geometry import drawing_plane, perpendicular_short_axis, slice_plane, snap_short_axis

AXIAL = ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
SAGITTAL = ((1.0, 0.0, 0.0), (4.0, 0.0, 0.0))
CORONAL = ((0.0, 1.0, 0.0), (0.0, -2.0, 0.0))


def test_short_axis_lies_in_the_given_plane_perpendicular_through_the_centre():
    s0, s1 = perpendicular_short_axis((4, -6, 10), (4, 6, 10), 6.0, plane_normal=SAGITTAL[0])
    assert np.allclose([s0[0], s1[0]], 4.0) and np.allclose(np.abs(s1 - s0), (0, 0, 6))
    assert np.allclose((s0 + s1) / 2, (4, 0, 10)) and np.isclose(np.dot(s1 - s0, (0, 12, 0)), 0)
    with pytest.raises(NeuroContrastError, match="perpendicular to the viewing plane"):
        perpendicular_short_axis((0, 0, 0), (10, 0, 0), 3.0, plane_normal=(1, 0, 0))


def test_the_drawing_view_is_the_plane_that_holds_the_line():
    planes = {"Red": AXIAL, "Yellow": SAGITTAL, "Green": CORONAL}
    assert drawing_plane([(4, -6, 10), (4, 6, 10)], planes) == "Yellow"
    assert drawing_plane([(-5, -2, 3), (5, -2, 8)], planes) == "Green"
    assert drawing_plane([(-5, 1, 0.2), (5, 3, -0.3)], planes) == "Red"
    with pytest.raises(NeuroContrastError, match="does not lie in a slice view"):
        drawing_plane([(1, 1, 5), (7, 9, 12)], planes)


def test_slice_plane_reads_the_normal_and_origin_of_slice_to_ras():
    m = np.eye(4)
    m[:3, :3] = [[0, 0, 2], [1, 0, 0], [0, 1, 0]]  # sagittal, normal along R (scaled on purpose)
    m[:3, 3] = (4, 5, 6)
    normal, origin = slice_plane(m)
    assert np.allclose(normal, (1, 0, 0)) and np.allclose(origin, (4, 5, 6))


def test_snapping_a_parallel_short_axis_uses_the_drawing_plane():
    long_points = np.array([(4, -6, 10), (4, 6, 10)], float)
    drawn = np.array([(4, -2, 10), (4, 2, 10)], float)  # drawn along the long axis: no direction to keep
    s0, s1 = snap_short_axis(long_points, drawn, plane_normal=SAGITTAL[0])
    assert np.allclose([s0[0], s1[0]], 4.0) and np.isclose(np.linalg.norm(s1 - s0), 4.0)
