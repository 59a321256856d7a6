"""Lesion-axis geometry of a reading session: the short-axis assistance and the plane a line was drawn in.

Pure NumPy (RAS world coordinates, mm), no Slicer. The Slicer module draws a long axis in one slice view;
the short axis must lie in *that* view's plane (axial, coronal, sagittal or oblique), perpendicular to the long
axis through its centre, as a reader measures a lesion by RECIST / RANO bidimensional rules.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError

AXIAL_NORMAL = (0.0, 0.0, 1.0)


def perpendicular_short_axis(long_p0, long_p1, length_mm: float,
                             plane_normal=AXIAL_NORMAL) -> Tuple[np.ndarray, np.ndarray]:
    """End points ``(2 × (3,))`` of a short axis of ``length_mm`` perpendicular to the long axis through its
    centre, lying in the viewing plane with normal ``plane_normal`` (RAS; axial (0, 0, 1) by default).

    Raises NeuroContrastError when the long axis is zero or parallel to the plane normal, or when
    ``length_mm`` is negative or longer than the long axis.
    """
    p0, p1 = np.asarray(long_p0, float), np.asarray(long_p1, float)
    axis = p1 - p0
    long_mm = float(np.linalg.norm(axis))
    if long_mm == 0:
        raise NeuroContrastError("the long axis has zero length")
    if not 0 <= length_mm <= long_mm + 1e-6:
        raise NeuroContrastError(f"short axis length {length_mm:.2f} mm must lie in [0, {long_mm:.2f}] mm")
    direction = np.cross(np.asarray(plane_normal, float), axis)
    norm = np.linalg.norm(direction)
    if norm < 1e-9 * long_mm:
        raise NeuroContrastError("the long axis is perpendicular to the viewing plane; draw it in the slice")
    direction /= norm
    center = 0.5 * (p0 + p1)
    return center - direction * length_mm / 2, center + direction * length_mm / 2


def snap_short_axis(long_points, short_points, plane_normal=AXIAL_NORMAL) -> Tuple[np.ndarray, np.ndarray]:
    """Assistance for a hand-drawn short axis: keep its length (clipped to the long axis), make it
    perpendicular to the long axis (Gram–Schmidt in the plane the two axes span) and centre it on the
    long axis' midpoint. When the drawn axis is parallel to the long one, it is placed in the plane with normal
    ``plane_normal`` (the view it was drawn in). Raises NeuroContrastError for a zero-length long axis."""
    long_points, short_points = np.asarray(long_points, float), np.asarray(short_points, float)
    u = long_points[1] - long_points[0]
    long_mm = float(np.linalg.norm(u))
    if long_mm == 0:
        raise NeuroContrastError("the long axis has zero length")
    u_hat = u / long_mm
    v = short_points[1] - short_points[0]
    length = min(float(np.linalg.norm(v)), long_mm)
    v_perp = v - np.dot(v, u_hat) * u_hat
    if np.linalg.norm(v_perp) < 1e-6 * max(length, 1e-9):
        return perpendicular_short_axis(long_points[0], long_points[1], length, plane_normal)
    v_hat = v_perp / np.linalg.norm(v_perp)
    center = long_points.mean(axis=0)
    return center - v_hat * length / 2, center + v_hat * length / 2


def slice_plane(slice_to_ras) -> Tuple[np.ndarray, np.ndarray]:
    """``(unit normal, origin)`` (RAS, mm) of a slice view from its 4 × 4 SliceToRAS matrix (column 2 is the
    normal, column 3 the origin, as ``vtkMRMLSliceNode.GetSliceToRAS`` gives them)."""
    m = np.asarray(slice_to_ras, float).reshape(4, 4)
    normal = m[:3, 2]
    return normal / np.linalg.norm(normal), m[:3, 3].copy()


def drawing_plane(points: Sequence, planes: Dict[str, Tuple[Sequence[float], Sequence[float]]],
                  tolerance_mm: float = 1.0) -> str:
    """The name of the plane (of ``planes``: name → (normal, origin)) that contains all ``points`` (RAS, mm):
    the slice view a line was drawn in. Points placed in a slice view lie on its plane; among the planes within
    ``tolerance_mm`` of every point the closest wins (two views may share a line, e.g. where they cross).

    Raises NeuroContrastError when no plane holds the points (drawn in 3D, or the view moved since).
    """
    points = np.atleast_2d(np.asarray(points, float))
    distances = {}
    for name, (normal, origin) in planes.items():
        normal = np.asarray(normal, float) / np.linalg.norm(normal)
        distances[name] = float(np.max(np.abs((points - np.asarray(origin, float)) @ normal)))
    inside = {name: d for name, d in distances.items() if d <= tolerance_mm}
    if not inside:
        shown = ", ".join(f"{name} {d:.1f} mm" for name, d in distances.items())
        raise NeuroContrastError(f"the line does not lie in a slice view (distances: {shown}); draw it in a slice view")
    return min(inside, key=inside.get)
