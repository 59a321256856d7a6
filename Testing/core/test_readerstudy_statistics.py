"""Statistics of the reader study against the published cells of Ammari et al. 2022, Table 5.

Derived inputs (the paper gives counts, not per-case data):
- SE: Table 5 prints x/n and the Clopper–Pearson interval in whole percent: reproduced from x, n alone.
- FDR: the Student-t half-width fixes Σ fp_i² (up to rounding); each per-case vector below has the
  table's numerator over 38 cases AND the table's half-width.
- McNemar (SE, low vs vir per reader; R1 vs R2 per condition): the table gives both marginals; the
  discordant pair (b, c) is derived as c − b = difference of detections, b searched under b ≤ x_A,
  c ≤ x_B, b ≤ n − x_B, c ≤ n − x_A. For every cell there is a feasible (b, c) giving the printed p.
- Wilcoxon (FDR): pairs of per-case vectors consistent with both FDR cells (sums and half-widths) that
  reproduce the printed p (found by a seeded search; listed here as the non-zero (A, B) cases).
"""

import math

import numpy as np
import pytest
from scipy import stats

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy import statistics as st

N_CASES = 38

# (x, n, published low %, published high %) — the 16 SE cells of Table 5 (R1 low, R1 vir, R2 low, R2 vir)
SE_CELLS = [
    (38, 91, 32, 53), (48, 91, 42, 63), (34, 91, 27, 48), (54, 91, 49, 70),   # all lesions
    (38, 74, 39, 63), (47, 74, 52, 74), (34, 74, 34, 58), (52, 74, 59, 80),   # >= 5 mm
    (34, 52, 51, 78), (42, 52, 67, 90), (31, 52, 45, 73), (45, 52, 74, 94),   # >= 7.5 mm
    (30, 42, 55, 84), (35, 42, 69, 93), (28, 42, 50, 80), (35, 42, 69, 93),   # >= 10 mm
]


@pytest.mark.parametrize("x,n,low,high", SE_CELLS)
def test_clopper_pearson_reproduces_every_table5_se_interval(x, n, low, high):
    lo, hi = st.clopper_pearson(x, n)
    assert (st.round_half_up(100 * lo, 0), st.round_half_up(100 * hi, 0)) == (low, high)
    assert lo < x / n < hi


# Bône et al. 2022, Table 5: reader-average SE [CI] from the two readers' counts (T1c, T1c-pro per stratum)
BONE_AVERAGE_CELLS = [
    ((106, 187), (111, 187), 51, 65), ((138, 187), (142, 187), 68, 81),     # >= 0 mm
    ((100, 145), (103, 145), 62, 77), ((124, 145), (123, 145), 78, 91),     # >= 5 mm
    ((77, 89), (79, 89), 79, 94), ((85, 89), (85, 89), 89, 99),             # >= 10 mm
]


@pytest.mark.parametrize("r1,r2,low,high", BONE_AVERAGE_CELLS)
def test_reader_average_se_interval_reproduces_bone_table5(r1, r2, low, high):
    lo, hi = st.average_clopper_pearson([r1, r2])
    assert (st.round_half_up(100 * lo, 0), st.round_half_up(100 * hi, 0)) == (low, high)


def test_reader_average_fdr_interval_consistent_with_bone_table5():
    # 0.05 [±0.04]: R1 3/79 and R2 5/79 FPs; per-case averages with two shared cases fit the half-width,
    # whereas the mean of the two readers' own half-widths (±0.05) does not
    r1 = np.zeros(79)
    r2 = np.zeros(79)
    r1[[0, 1, 2]] = 1
    r2[[0, 1, 3, 4, 5]] = 1
    mean, hw = st.fdr_interval((r1 + r2) / 2)
    assert st.round_half_up(mean, 2) == 0.05 and st.round_half_up(hw, 2) == 0.04
    assert st.round_half_up((st.fdr_interval(r1)[1] + st.fdr_interval(r2)[1]) / 2, 2) == 0.05


def test_clopper_pearson_edges_and_errors():
    assert st.clopper_pearson(0, 10)[0] == 0.0
    assert st.clopper_pearson(10, 10)[1] == 1.0
    assert st.clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** 0.1)
    for bad in [(5, 4), (1, 0), (-1, 3), (1.5, 3)]:
        with pytest.raises(NeuroContrastError):
            st.clopper_pearson(*bad)


# (tp, fp, published SE %, PPV %, F1 %) per reader x condition x stratum
COUNT_CELLS = [
    (38, 4, 91, 42, 90, 57), (48, 18, 91, 53, 73, 61), (34, 4, 91, 37, 89, 53), (54, 20, 91, 59, 73, 65),
    (38, 4, 74, 51, 90, 66), (47, 15, 74, 64, 76, 69), (34, 4, 74, 46, 89, 61), (52, 17, 74, 70, 75, 73),
    (34, 4, 52, 65, 89, 76), (42, 8, 52, 81, 84, 82), (31, 3, 52, 60, 91, 72), (45, 10, 52, 87, 82, 84),
    (30, 4, 42, 71, 88, 79), (35, 1, 42, 83, 97, 90), (28, 2, 42, 67, 93, 78), (35, 5, 42, 83, 88, 85),
]


@pytest.mark.parametrize("tp,fp,n_ref,se,ppv,f1", COUNT_CELLS)
def test_detection_metrics_se_ppv_f1_from_counts(tp, fp, n_ref, se, ppv, f1):
    m = st.detection_metrics(tp=tp, fn=n_ref - tp, fp=fp, n_cases=N_CASES)
    assert st.round_half_up(100 * m.se, 0) == se
    assert st.round_half_up(100 * m.ppv, 0) == ppv
    assert st.round_half_up(100 * m.f1, 0) == f1
    assert m.fdr == pytest.approx(fp / N_CASES)


# Bône et al. 2022, Table 5: (tp, fp, reference lesions, SE %, PPV %, F1 %) per reader x sequence x stratum
BONE_COUNT_CELLS = [
    (106, 3, 187, 57, 97, 72), (138, 7, 187, 74, 95, 83), (111, 5, 187, 59, 96, 73), (142, 15, 187, 76, 90, 83),
    (100, 2, 145, 69, 98, 81), (124, 3, 145, 86, 98, 91), (103, 5, 145, 71, 95, 81), (123, 7, 145, 85, 95, 89),
    (77, 0, 89, 87, 100, 93), (85, 1, 89, 96, 99, 97), (79, 3, 89, 89, 96, 92), (85, 2, 89, 96, 98, 97),
]


@pytest.mark.parametrize("tp,fp,n_ref,se,ppv,f1", BONE_COUNT_CELLS)
def test_detection_metrics_bone_table5(tp, fp, n_ref, se, ppv, f1):
    m = st.detection_metrics(tp=tp, fn=n_ref - tp, fp=fp, n_cases=79)
    assert [st.round_half_up(100 * v, 0) for v in (m.se, m.ppv, m.f1)] == [se, ppv, f1]


def _vector(nonzero):
    v = np.zeros(N_CASES)
    v[:len(nonzero)] = nonzero
    return v


# (FP total, published half-width, a per-case distribution consistent with both)
FDR_CELLS = [
    (4, 0.10, [1, 1, 1, 1]), (18, 0.38, [6, 3, 2, 2, 1, 1, 1, 1, 1]), (20, 0.39, [7] + [1] * 13),
    (15, 0.33, [5, 3, 2, 1, 1, 1, 1, 1]), (17, 0.36, [6, 3, 1, 1, 1, 1, 1, 1, 1, 1]),
    (8, 0.19, [3, 1, 1, 1, 1, 1]), (3, 0.09, [1, 1, 1]), (10, 0.28, [5, 1, 1, 1, 1, 1]),
    (1, 0.05, [1]), (2, 0.07, [1, 1]), (5, 0.14, [2, 1, 1, 1]),
]


@pytest.mark.parametrize("total,half,nonzero", FDR_CELLS)
def test_fdr_half_widths_consistent_with_table5(total, half, nonzero):
    mean, hw = st.fdr_interval(_vector(nonzero))
    assert mean * N_CASES == pytest.approx(total)
    assert st.round_half_up(hw, 2) == half
    # the half-width pins down sum(fp^2): one more FP in the largest case changes it visibly
    if len(nonzero) > 1:
        worse = list(nonzero)
        worse[0] += 1
        worse[-1] -= 1
        assert st.round_half_up(st.fdr_interval(_vector(worse))[1], 2) != half


def test_fdr_interval_formula_and_errors():
    values = np.array([0, 1, 2, 0, 3, 1])
    mean, hw = st.fdr_interval(values)
    assert mean == pytest.approx(values.mean())
    assert hw == pytest.approx(stats.t.ppf(0.975, 5) * values.std(ddof=1) / math.sqrt(6))
    assert st.fdr_interval([0, 0, 0])[1] == 0.0
    with pytest.raises(NeuroContrastError):
        st.fdr_interval([1])
    with pytest.raises(NeuroContrastError):
        st.fdr_interval([1, -1, 0])


# (x_A, x_B, n, published p, derived (b, c)): low vs vir per reader, then R1 vs R2 per condition
MCNEMAR_CELLS = [
    (38, 48, 91, ".01", (3, 13)), (34, 54, 91, "<.001", (4, 24)), (38, 47, 74, ".02", (3, 12)),
    (34, 52, 74, "<.001", (3, 21)), (34, 42, 52, ".02", (2, 10)), (31, 45, 52, "<.001", (1, 15)),
    (30, 35, 42, ".07", (1, 6)), (28, 35, 42, ".02", (1, 8)),
    (38, 34, 91, ".13", (5, 1)), (48, 54, 91, ".07", (2, 8)), (38, 34, 74, ".13", (5, 1)),
    (47, 52, 74, ".11", (2, 7)), (34, 31, 52, ".22", (4, 1)), (42, 45, 52, ".22", (1, 4)),
    (30, 28, 42, ".38", (3, 1)), (35, 35, 42, ">.99", (0, 0)),
]


@pytest.mark.parametrize("xa,xb,n,published,bc", MCNEMAR_CELLS)
def test_mcnemar_midp_consistent_with_table5(xa, xb, n, published, bc):
    b, c = bc
    assert c - b == xb - xa and b <= xa and c <= xb and b <= n - xb and c <= n - xa
    assert st.format_p(st.mcnemar_midp(b, c)) == published


def test_mcnemar_midp_definition():
    assert st.mcnemar_midp(4, 4) == 1.0 and st.mcnemar_midp(0, 0) == 1.0
    assert st.mcnemar_midp(5, 1) == 0.125          # exact: 8/64, so half-up gives ".13" as printed
    for b, c in [(3, 13), (0, 7), (12, 30)]:
        n, k = b + c, min(b, c)
        expected = 2 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5)
        assert st.mcnemar_midp(b, c) == pytest.approx(expected, rel=1e-12)
        assert st.mcnemar_midp(b, c) == st.mcnemar_midp(c, b)
    # mid-p is smaller than the exact conditional McNemar p
    assert st.mcnemar_midp(3, 13) < stats.binomtest(3, 16).pvalue
    with pytest.raises(NeuroContrastError):
        st.mcnemar_midp(-1, 2)


# (published p, non-zero (A, B) case pairs) for the 16 Wilcoxon cells, same order as the table
WILCOXON_CELLS = [
    (".04", [(1, 6), (1, 0), (1, 0), (1, 0), (0, 2), (0, 1), (0, 1), (0, 2), (0, 1), (0, 1), (0, 3), (0, 1)]),
    (".02", [(1, 0)] * 4 + [(0, 1)] * 7 + [(0, 7)] + [(0, 1)] * 6),
    (">.99", [(1, 0)] * 4 + [(0, 1)] * 4),
    (".68", [(6, 0), (3, 0), (2, 0), (2, 0), (1, 0), (1, 0), (1, 7), (1, 0), (1, 0)] + [(0, 1)] * 13),
    (".07", [(1, 0), (1, 0), (1, 5), (1, 0), (0, 1), (0, 1), (0, 3), (0, 2), (0, 1), (0, 1), (0, 1)]),
    (".04", [(1, 0), (1, 0), (1, 0), (1, 6), (0, 1), (0, 3)] + [(0, 1)] * 7),
    (">.99", [(1, 0)] * 4 + [(0, 1)] * 4),
    (".78", [(5, 0), (3, 3), (2, 1), (1, 0), (1, 0), (1, 1), (1, 1), (1, 0), (0, 6)] + [(0, 1)] * 5),
    (".23", [(1, 2), (1, 0), (1, 0), (1, 1), (0, 2), (0, 1), (0, 2)]),
    (".13", [(1, 0), (1, 0), (1, 5)] + [(0, 1)] * 5),
    (".56", [(1, 1), (1, 0), (1, 1), (1, 0), (0, 1)]),
    (".76", [(3, 0), (1, 0), (1, 0), (1, 0), (1, 1), (1, 5)] + [(0, 1)] * 4),
    (".08", [(1, 1), (1, 0), (1, 0), (1, 0)]),
    (".18", [(1, 0), (1, 2), (0, 1), (0, 1), (0, 1)]),
    (".16", [(1, 1), (1, 0), (1, 0), (1, 1)]),
    (".046", [(1, 2), (0, 1), (0, 1), (0, 1)]),
]
# the FDR cells (total, half-width) each side of the 16 comparisons
WILCOXON_MARGINS = [
    ((4, .10), (18, .38)), ((4, .10), (20, .39)), ((4, .10), (4, .10)), ((18, .38), (20, .39)),
    ((4, .10), (15, .33)), ((4, .10), (17, .36)), ((4, .10), (4, .10)), ((15, .33), (17, .36)),
    ((4, .10), (8, .19)), ((3, .09), (10, .28)), ((4, .10), (3, .09)), ((8, .19), (10, .28)),
    ((4, .10), (1, .05)), ((2, .07), (5, .14)), ((4, .10), (2, .07)), ((1, .05), (5, .14)),
]


@pytest.mark.parametrize("cell,margins", list(zip(WILCOXON_CELLS, WILCOXON_MARGINS)))
def test_wilcoxon_consistent_with_table5(cell, margins):
    published, pairs = cell
    a = _vector([p[0] for p in pairs])
    b = _vector([p[1] for p in pairs])
    for values, (total, half) in zip((a, b), margins):
        mean, hw = st.fdr_interval(values)
        assert mean * N_CASES == pytest.approx(total) and st.round_half_up(hw, 2) == half
    assert st.format_p(st.wilcoxon_signed_rank(a, b)) == published


def test_wilcoxon_matches_scipy_normal_approximation():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.poisson(0.6, 38)
        y = rng.poisson(0.9, 38)
        ref = stats.wilcoxon(x, y, zero_method="wilcox", correction=False, method="approx").pvalue
        assert st.wilcoxon_signed_rank(x, y) == pytest.approx(ref, rel=1e-9)
    assert st.wilcoxon_signed_rank([1, 2], [1, 2]) == 1.0
    with pytest.raises(NeuroContrastError):
        st.wilcoxon_signed_rank([1, 2, 3], [1, 2])


@pytest.mark.parametrize("p,text", [
    (0.0004, "<.001"), (0.001, ".001"), (0.0084, ".008"), (0.0094, ".009"),
    (0.0097, ".01"), (0.0125, ".01"), (0.015, ".02"), (0.125, ".13"), (0.046, ".046"), (0.0449, ".04"),
    (0.05, ".05"), (0.994, ".99"), (0.995, ">.99"), (1.0, ">.99"), (0.5, ".50"), (0.675, ".68")])
def test_format_p_rules(p, text):
    assert st.format_p(p) == text


def test_format_p_label_and_errors():
    assert st.format_p_label(0.0001) == "p<.001"
    assert st.format_p_label(0.04) == "p=.04"
    assert st.format_p_label(1.0) == "p>.99"
    for bad in (-0.1, 1.2, float("nan"), "x"):
        with pytest.raises(NeuroContrastError):
            st.format_p(bad)


def test_t_tests():
    x = np.array([2, 3, 2, 1, 2, 3, 2, 2.0])
    y = np.array([3, 4, 3, 3, 3, 4, 4, 3.0])
    assert st.paired_t_test(x, y) == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert st.paired_t_test(x, x) == 1.0
    assert st.unpaired_t_test(x, y) == pytest.approx(stats.ttest_ind(x, y).pvalue)
    with pytest.raises(NeuroContrastError):
        st.paired_t_test(x, y[:-1])


def test_obuchowski_clustered_proportion():
    # one lesion per patient: the clustered variance reduces to p(1-p)/(I-1)
    x = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1])
    res = st.clustered_proportion(x, np.ones(10))
    assert res["p"] == pytest.approx(0.7)
    assert res["se"] ** 2 == pytest.approx(0.7 * 0.3 / 9)
    # strongly clustered detections (all or nothing per patient) inflate the variance (design effect > 1)
    totals = np.array([4, 4, 4, 4, 4, 4])
    clustered = st.clustered_proportion([4, 0, 4, 0, 4, 0], totals)
    spread = st.clustered_proportion([2, 2, 2, 2, 2, 2], totals)
    assert clustered["design_effect"] > 2 and spread["se"] == 0.0
    # hand computation: p = 6/10, m_bar = 2.5, I = 4
    res = st.clustered_proportion([1, 2, 3, 0], [2, 3, 4, 1])
    resid = np.array([1, 2, 3, 0]) - 0.6 * np.array([2, 3, 4, 1])
    assert res["se"] ** 2 == pytest.approx(np.sum(resid ** 2) / (4 * 3 * 2.5 ** 2))
    diff = st.clustered_difference([4, 3, 2, 4, 1], [2, 1, 2, 3, 0], [4, 4, 3, 5, 2])
    assert diff["difference"] == pytest.approx(14 / 18 - 8 / 18) and 0 < diff["p_value"] < 0.05
    with pytest.raises(NeuroContrastError):
        st.clustered_proportion([3, 1], [2, 2])


def test_agreement_kappa_bland_altman_icc():
    from sklearn.metrics import cohen_kappa_score
    a = [1, 2, 3, 4, 5, 3, 2, 4]
    b = [1, 2, 4, 4, 5, 2, 2, 5]
    assert st.weighted_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert st.weighted_kappa(a, a) == pytest.approx(1.0)
    ba = st.bland_altman([10, 12, 14, 9], [9, 12, 15, 7])
    assert ba["bias"] == pytest.approx(0.5)
    sd = np.std([1, 0, -1, 2], ddof=1)
    assert ba["loa_high"] == pytest.approx(0.5 + 1.959964 * sd, rel=1e-5)
    # Shrout & Fleiss (1979), Table 2: ICC(1,1)=.17, ICC(2,1)=.29, ICC(3,1)=.71
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert round(st.icc(ratings, "1,1"), 2) == 0.17
    assert round(st.icc(ratings, "2,1"), 2) == 0.29
    assert round(st.icc(ratings, "3,1"), 2) == 0.71
    with pytest.raises(NeuroContrastError):
        st.icc([[1, 2]], "2,1")


def test_fdr_exact_interval_is_garwood_and_respects_zero():
    # Garwood exact Poisson limits for 1 event: [0.02532, 5.5716] (standard tables); over 38 cases
    low, high = st.fdr_exact_interval(1, 38)
    assert low == pytest.approx(0.025318 / 38, rel=1e-4) and high == pytest.approx(5.571643 / 38, rel=1e-5)
    assert st.fdr_exact_interval(0, 38) == (0.0, pytest.approx(3.688879 / 38, rel=1e-5))
    # 0.03 (1/38): the papers' t interval is 0.03 ± 0.05, below 0; the exact one is not
    assert low > 0
    m = st.detection_metrics(5, 5, 1, 38, [1] + [0] * 37)
    assert m.fdr_low == low and m.fdr - m.fdr_half_width < 0
    with pytest.raises(NeuroContrastError):
        st.fdr_exact_interval(-1, 10)
    with pytest.raises(NeuroContrastError):
        st.fdr_exact_interval(1, 0)
