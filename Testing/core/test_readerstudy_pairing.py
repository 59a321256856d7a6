"""Lesion geometry and one-to-one pairing (hand-made cases with known answers)."""

import numpy as np
import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy import Lesion, pair_lesions
from neurocontrast.readerstudy.pairing import stratify


def box(x, y=0.0, z=0.0, long=14.0, short=12.0):
    """A lesion centred at (x, y, z) with a long axis along x and a perpendicular short axis along y."""
    return Lesion(long_axis=((x - long / 2, y, z), (x + long / 2, y, z)),
                  short_axis=((x, y - short / 2, z), (x, y + short / 2, z)))


def test_lesion_geometry_and_validation():
    l = Lesion(long_axis=((0, 0, 0), (10, 0, 0)), short_axis=((5, -3, 0), (5, 3, 0)))
    assert l.long_mm == pytest.approx(10) and l.short_mm == pytest.approx(6)
    np.testing.assert_allclose(l.center, [5, 0, 0])
    assert l.radius_mm == pytest.approx(4.0)
    assert l.angle_deg == pytest.approx(90) and l.warnings() == []
    oblique = Lesion(long_axis=((0, 0, 0), (10, 0, 0)), short_axis=((3, -2, 0), (7, 2, 0)))
    assert oblique.angle_deg == pytest.approx(45) and "perpendicular" in oblique.warnings()[0]
    assert Lesion.from_dict(l.to_dict()) == l
    with pytest.raises(NeuroContrastError, match="swap"):
        Lesion(long_axis=((0, 0, 0), (3, 0, 0)), short_axis=((0, 0, 0), (0, 5, 0)))
    with pytest.raises(NeuroContrastError, match="zero length"):
        Lesion(long_axis=((1, 1, 1), (1, 1, 1)), short_axis=((1, 1, 1), (1, 1, 1)))
    with pytest.raises(NeuroContrastError, match="shape"):
        Lesion(long_axis=((0, 0), (1, 1)), short_axis=((0, 0, 0), (0, 0, 0)))


def test_greedy_loses_a_pair_that_hungarian_finds():
    # r = (14 + 12) / 4 = 6.5 mm for every lesion, so the "mean" threshold is 6.5 mm.
    reference = [box(0.0), box(10.0)]            # A at 0, B at 10
    detections = [box(6.0), box(14.5)]            # d0: 6 from A, 4 from B; d1: 4.5 from B only
    greedy = pair_lesions(reference, detections, assignment="greedy")
    assert greedy.pairs == [(1, 0)] and greedy.unpaired_reference == [0]
    assert greedy.duplicates == [(1, 1)] and greedy.tp == 1
    hungarian = pair_lesions(reference, detections)
    assert hungarian.pairs == [(0, 0), (1, 1)] and hungarian.tp == 2
    assert hungarian.fn == 0 and hungarian.fp == 0
    np.testing.assert_allclose(hungarian.distances_mm, [6.0, 4.5])


def test_hungarian_prefers_closeness_among_maximum_pairings():
    reference = [box(0.0), box(3.0)]
    detections = [box(0.5), box(3.5)]
    result = pair_lesions(reference, detections)
    assert result.pairs == [(0, 0), (1, 1)]
    assert sum(result.distances_mm) == pytest.approx(1.0)


def test_thresholds_mean_ref_max_min_sum_and_fixed():
    small_ref = box(0.0, long=4.0, short=4.0)          # r = 2
    big_det = box(5.0, long=20.0, short=16.0)          # r = 9; centre distance 5
    expect = {"mean": True, "ref": False, "max": True, "min": False, "sum": True}
    for name, paired in expect.items():
        assert (pair_lesions([small_ref], [big_det], threshold=name).tp == 1) is paired, name
    assert pair_lesions([small_ref], [big_det], threshold=5.5).tp == 1
    assert pair_lesions([small_ref], [big_det], threshold=5.0).tp == 0   # strictly closer than
    with pytest.raises(NeuroContrastError):
        pair_lesions([small_ref], [big_det], threshold="median")
    with pytest.raises(NeuroContrastError):
        pair_lesions([small_ref], [big_det], assignment="auction")


def test_duplicates_ignored_or_counted_as_fp():
    reference = [box(0.0)]
    detections = [box(0.5), box(-1.0), box(40.0)]
    result = pair_lesions(reference, detections)
    assert result.pairs == [(0, 0)] and result.duplicates == [(0, 1)]
    assert result.unpaired_detections == [2] and result.fp == 1
    as_fp = pair_lesions(reference, detections, duplicates="fp")
    assert as_fp.fp == 2 and as_fp.false_positive_detections == [1, 2]


def test_empty_sides():
    r = pair_lesions([], [box(0.0)])
    assert r.pairs == [] and r.unpaired_detections == [0] and r.fp == 1
    r = pair_lesions([box(0.0)], [])
    assert r.fn == 1 and r.tp == 0


def test_nested_size_strata():
    reference = [box(0.0, long=3.0, short=2.0), box(20.0, long=6.0, short=5.0),
                 box(40.0, long=12.0, short=8.0), box(60.0, long=8.0, short=6.0)]
    detections = [box(20.5, long=5.0, short=4.0),      # pairs ref 1 (6 mm)
                  box(40.5, long=11.0, short=9.0),     # pairs ref 2 (12 mm)
                  box(90.0, long=9.0, short=5.0),      # FP of 9 mm
                  box(120.0, long=2.0, short=1.0)]     # FP of 2 mm
    result = pair_lesions(reference, detections)
    strata = {s["min_long_mm"]: s for s in stratify(result, reference, detections)}
    assert [strata[t]["n_reference"] for t in (0, 2.5, 5, 7.5, 10)] == [4, 4, 3, 2, 1]
    assert [strata[t]["tp"] for t in (0, 2.5, 5, 7.5, 10)] == [2, 2, 2, 1, 1]
    assert [strata[t]["fn"] for t in (0, 2.5, 5, 7.5, 10)] == [2, 2, 1, 1, 0]
    assert [strata[t]["fp"] for t in (0, 2.5, 5, 7.5, 10)] == [2, 1, 1, 1, 0]
    with pytest.raises(NeuroContrastError):
        stratify(result, reference[:2], detections)


def test_reader_vs_reader_is_symmetric_in_counts():
    rng = np.random.default_rng(3)
    a = [box(float(x), float(y)) for x, y in rng.uniform(0, 100, (12, 2))]
    b = [box(float(x) + 1, float(y)) for x, y in rng.uniform(0, 100, (3, 2))] + a[:6]
    ab, ba = pair_lesions(a, b), pair_lesions(b, a)
    assert ab.tp == ba.tp
    assert sorted(ab.pairs) == sorted((r, d) for d, r in ba.pairs)
