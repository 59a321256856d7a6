"""Statistics of the reader studies (Ammari et al. 2022, Bône et al. 2022).

Detection: sensitivity (SE) with Clopper–Pearson intervals, false detection rate (FDR = false positives
per case) with Student-t intervals, PPV and F1; McNemar mid-p for paired SE, Wilcoxon signed-rank for
paired per-case false-positive counts, t-tests for Likert grades and reading times; the papers' p-value
formatting. Beyond the papers: the patient-clustered SE of Obuchowski (1998), quadratic-weighted kappa,
Bland–Altman limits and intraclass correlation (Shrout & Fleiss 1979).

Every function takes plain numbers or 1-D array-likes and raises
:class:`~neurocontrast.errors.NeuroContrastError` on bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from decimal import Decimal, ROUND_HALF_UP
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from neurocontrast.errors import NeuroContrastError

__all__ = [
    "clopper_pearson", "average_clopper_pearson", "mcnemar_midp", "fdr_interval", "fdr_exact_interval", "wilcoxon_signed_rank", "format_p", "format_p_label",
    "round_half_up", "detection_metrics", "DetectionMetrics", "paired_t_test", "unpaired_t_test",
    "clustered_proportion", "clustered_difference", "weighted_kappa", "bland_altman", "icc",
]


def _count(value, name: str) -> int:
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(as_float) or as_float != int(as_float) or as_float < 0:
        raise NeuroContrastError(f"{name} must be a non-negative whole number, got {value!r}")
    return int(as_float)


def _alpha(alpha: float) -> float:
    if not 0 < float(alpha) < 1:
        raise NeuroContrastError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def _vector(values, name: str, min_size: int = 1) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise NeuroContrastError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if array.size < min_size:
        raise NeuroContrastError(f"{name} needs at least {min_size} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise NeuroContrastError(f"{name} contains NaN or infinite values")
    return array


def _pair(x, y, name_x: str, name_y: str, min_size: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    a = _vector(x, name_x, min_size)
    b = _vector(y, name_y, min_size)
    if a.shape != b.shape:
        raise NeuroContrastError(f"{name_x} ({a.size} values) and {name_y} ({b.size} values) must be paired "
                                 "(same length, same case order)")
    return a, b


# ----------------------------------------------------------------------------------------------------------
# Intervals and tests of the papers


def clopper_pearson(x: int, n: int, alpha: float = 0.05) -> Tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided confidence interval of a binomial proportion x/n.

    ``low = Beta.ppf(alpha/2; x, n−x+1)`` (0 when x = 0), ``high = Beta.ppf(1−alpha/2; x+1, n−x)`` (1 when
    x = n). Returns fractions in [0, 1]. Used for SE in Ammari et al. 2022, Table 5 (Clopper & Pearson 1934).
    Raises NeuroContrastError unless 0 ≤ x ≤ n, n ≥ 1 (whole numbers) and 0 < alpha < 1.
    """
    x, n, alpha = _count(x, "x (successes)"), _count(n, "n (trials)"), _alpha(alpha)
    if n == 0 or x > n:
        raise NeuroContrastError(f"clopper_pearson needs 0 <= x <= n and n >= 1, got x={x}, n={n}")
    low = 0.0 if x == 0 else float(stats.beta.ppf(alpha / 2, x, n - x + 1))
    high = 1.0 if x == n else float(stats.beta.ppf(1 - alpha / 2, x + 1, n - x))
    return low, high


def average_clopper_pearson(counts: Sequence[Tuple[int, int]], alpha: float = 0.05) -> Tuple[float, float]:
    """Reader-average SE interval: the mean of the readers' Clopper–Pearson bounds.

    ``counts``: [(x_reader, n_reader), ...]. This reproduces all six reader-average SE intervals of Bône et
    al. 2022, Table 5 (e.g. 106/187 and 111/187 → [51; 65]); the pooled interval of Σx/Σn does not.
    Returns (low, high) fractions. Raises on an empty list or invalid counts.
    """
    if not counts:
        raise NeuroContrastError("average_clopper_pearson needs at least one (x, n) pair")
    bounds = np.array([clopper_pearson(x, n, alpha) for x, n in counts])
    return float(bounds[:, 0].mean()), float(bounds[:, 1].mean())


def mcnemar_midp(b: int, c: int) -> float:
    """Two-sided McNemar mid-p test of paired binary outcomes (Fagerland, Lydersen & Laake 2013).

    ``b`` and ``c`` are the discordant counts (e.g. reference lesions found only in condition A, only in
    condition B). mid-p = 2·P(X ≤ min(b, c)) − P(X = min(b, c)) with X ~ Bin(b + c, ½); 1 when b = c
    (including b = c = 0). Returns a probability in [0, 1]. Raises on negative or fractional counts.
    """
    b, c = _count(b, "b (discordant count)"), _count(c, "c (discordant count)")
    if b == c:
        return 1.0
    n, k = b + c, min(b, c)
    if n <= 2000:  # exact rational arithmetic: 8/64 stays 0.125 and rounds half-up to .13
        numerator = 2 * sum(math.comb(n, i) for i in range(k + 1)) - math.comb(n, k)
        return float(min(Fraction(1), Fraction(numerator, 2 ** n)))
    p = 2.0 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5)
    return float(min(1.0, max(0.0, p)))


def fdr_interval(fp_per_case: Sequence[float], alpha: float = 0.05) -> Tuple[float, float]:
    """False detection rate (mean false positives per case) and its Student-t half-width.

    ``fp_per_case``: (n_cases,) counts. half-width = t_{1−alpha/2, n−1} · SD / √n with the sample SD
    (ddof = 1); 0 when every case has the same count. Returns (mean, half_width) in lesions per case.
    Ammari et al. 2022, Table 5 ("Student's t-distribution 95 % confidence intervals"). Raises with < 2 cases.
    """
    values = _vector(fp_per_case, "fp_per_case", min_size=2)
    if np.any(values < 0):
        raise NeuroContrastError("fp_per_case must hold non-negative false-positive counts")
    alpha = _alpha(alpha)
    n = values.size
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n))
    return float(values.mean()), half


def fdr_exact_interval(fp: int, n_cases: int, alpha: float = 0.05) -> Tuple[float, float]:
    """Exact (Garwood) Poisson confidence interval of the false detection rate fp / n_cases.

    The FDR is a rate (false positives per case, lesions/patient), so its natural range is [0, ∞): the
    interval ``[χ²_{α/2}(2·fp) / (2n), χ²_{1−α/2}(2·fp + 2) / (2n)]`` (lower bound 0 when fp = 0) never goes
    below 0, unlike the papers' Student-t interval (:func:`fdr_interval`, e.g. 0.03 ± 0.05 in Ammari et al.
    Table 5), and keeps its coverage for rare events. Garwood 1936, Biometrika 28:437; Ulm 1990.
    Returns (low, high) in lesions per case. Raises on negative counts or n_cases < 1.
    """
    fp, n = _count(fp, "fp"), _count(n_cases, "n_cases")
    if n < 1:
        raise NeuroContrastError("n_cases must be at least 1")
    alpha = _alpha(alpha)
    low = float(stats.chi2.ppf(alpha / 2, 2 * fp) / (2 * n)) if fp > 0 else 0.0
    high = float(stats.chi2.ppf(1 - alpha / 2, 2 * fp + 2) / (2 * n))
    return low, high


def wilcoxon_signed_rank(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples, as SciPy 1.5.2 computed it for the papers.

    Differences d = x − y; zero differences are dropped ("wilcox" zero method); |d| ranked with average
    ranks for ties; T+ = sum of positive ranks; z = (T+ − n(n+1)/4) / σ with the tie-corrected
    σ² = n(n+1)(2n+1)/24 − Σ(t³ − t)/48; no continuity correction; p = 2·(1 − Φ(|z|)).
    Returns 1.0 when all differences are zero. (Wilcoxon 1945; SciPy ``wilcoxon(..., correction=False)``
    with the normal approximation, which SciPy 1.5.2 used for more than 25 pairs or when zero differences
    were present — always the case for the papers' per-case FP counts over 38 and 79 cases; for ≤ 25 pairs
    without zeros SciPy 1.5.2 would have used the exact distribution.) Raises on unpaired inputs.
    """
    a, b = _pair(x, y, "x", "y")
    d = a - b
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 1.0
    ranks = stats.rankdata(np.abs(d))
    t_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    _, tie_counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(tie_counts ** 3 - tie_counts)) / 48.0
    if var <= 0:
        return 1.0
    z = (t_plus - mean) / math.sqrt(var)
    return float(min(1.0, 2.0 * stats.norm.sf(abs(z))))


def round_half_up(value: float, decimals: int) -> float:
    """Round half away from zero on the decimal representation (0.125 → 0.13 at 2 decimals).

    The value is first rounded to 12 decimals so that floating-point noise (0.12499999999999997 for an
    exact 1/8) does not flip the half-up decision."""
    quantum = Decimal(1).scaleb(-decimals)
    cleaned = Decimal(repr(round(float(value), 12)))
    return float(cleaned.quantize(quantum, rounding=ROUND_HALF_UP))


def format_p(p: float) -> str:
    """The papers' p-value style (Radiology): ``"<.001"``, ``".008"``, ``".01"``, ``".046"``, ``">.99"``.

    Rules: p < .001 → "<.001"; 3 decimals when the 3-decimal rounding is below .01; 3 decimals when
    2-decimal rounding would move a significant p to ".05" (.045 ≤ p < .05, e.g. Ammari Table 5 "p=.046");
    otherwise 2 decimals; ".99" rounding up to 1 → ">.99". Half-up rounding, no leading zero.
    Raises NeuroContrastError outside [0, 1] or on NaN.
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"p must be a number in [0, 1], got {p!r}") from None
    if not (0.0 <= p <= 1.0):
        raise NeuroContrastError(f"p must be a number in [0, 1], got {p!r}")
    if p < 0.001:
        return "<.001"
    three = round_half_up(p, 3)
    if three < 0.01 or 0.045 <= p < 0.05:
        return f"{three:.3f}"[1:]
    two = round_half_up(p, 2)
    if two >= 1.0:
        return ">.99"
    return f"{two:.2f}"[1:]


def format_p_label(p: float) -> str:
    """``format_p`` with the operator: ``"p<.001"``, ``"p=.04"``, ``"p>.99"``."""
    text = format_p(p)
    return "p" + (text if text[0] in "<>" else "=" + text)


@dataclass(frozen=True)
class DetectionMetrics:
    """Lesion-detection figures of one reader × condition × size stratum (Ammari Table 5).

    ``se`` = tp/(tp+fn), ``ppv`` = tp/(tp+fp), ``f1`` = harmonic mean of SE and PPV, ``fdr`` = fp/n_cases;
    ``se_low``/``se_high`` Clopper–Pearson; ``fdr_low``/``fdr_high`` exact Poisson (Garwood, never below 0:
    :func:`fdr_exact_interval`); ``fdr_half_width`` the papers' Student-t half-width (NaN without per-case
    counts; kept to compare with the published tables).
    Undefined ratios are NaN.
    """

    tp: int
    fn: int
    fp: int
    n_cases: int
    se: float
    se_low: float
    se_high: float
    ppv: float
    f1: float
    fdr: float
    fdr_half_width: float
    fdr_low: float
    fdr_high: float

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def detection_metrics(tp: int, fn: int, fp: int, n_cases: int, fp_per_case: Optional[Sequence[float]] = None,
                      alpha: float = 0.05) -> DetectionMetrics:
    """SE [Clopper–Pearson], PPV, F1 and FDR [Student t] from counts (Ammari et al. 2022, Methods).

    ``tp``: reference lesions paired with a detection (= paired detections), ``fn``: unpaired reference
    lesions, ``fp``: unpaired detections, ``n_cases``: cases read; ``fp_per_case`` (n_cases,) gives the FDR
    interval and must sum to ``fp``. Raises on negative counts or an inconsistent ``fp_per_case``.
    """
    tp, fn, fp, n_cases = (_count(tp, "tp"), _count(fn, "fn"), _count(fp, "fp"), _count(n_cases, "n_cases"))
    if n_cases == 0:
        raise NeuroContrastError("n_cases must be at least 1")
    n_ref = tp + fn
    se = tp / n_ref if n_ref else float("nan")
    low, high = clopper_pearson(tp, n_ref, alpha) if n_ref else (float("nan"), float("nan"))
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * se * ppv / (se + ppv) if n_ref and tp + fp and se + ppv > 0 else (0.0 if n_ref and tp + fp else
                                                                              float("nan"))
    half = float("nan")
    if fp_per_case is not None:
        values = _vector(fp_per_case, "fp_per_case")
        if values.size != n_cases or abs(values.sum() - fp) > 1e-9:
            raise NeuroContrastError(f"fp_per_case must have n_cases={n_cases} entries summing to fp={fp}, got "
                                     f"{values.size} entries summing to {values.sum():g}")
        half = fdr_interval(values, alpha)[1] if n_cases > 1 else float("nan")
    fdr_low, fdr_high = fdr_exact_interval(fp, n_cases, alpha)
    return DetectionMetrics(tp, fn, fp, n_cases, se, low, high, ppv, f1, fp / n_cases, half, fdr_low, fdr_high)


def paired_t_test(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (scipy.stats.ttest_rel), e.g. Likert grades or reading times of one
    reader in two conditions over the same cases (Ammari Tables 4, 6). 1.0 when all differences are zero.
    Raises on unpaired inputs or fewer than 2 pairs."""
    a, b = _pair(x, y, "x", "y", min_size=2)
    d = a - b
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def unpaired_t_test(x: Sequence[float], y: Sequence[float], equal_var: bool = True) -> float:
    """Two-sided independent-samples t-test p-value (scipy.stats.ttest_ind; Welch when equal_var=False).
    Raises with fewer than 2 values per sample."""
    a = _vector(x, "x", 2)
    b = _vector(y, "y", 2)
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=equal_var).pvalue)


# ----------------------------------------------------------------------------------------------------------
# Patient-clustered proportions (Obuchowski 1998)


def _clusters(successes, totals, name: str) -> Tuple[np.ndarray, np.ndarray]:
    x, m = _pair(successes, totals, f"{name} successes", f"{name} totals", min_size=2)
    if np.any(x < 0) or np.any(x > m) or np.any(m < 0):
        raise NeuroContrastError(f"{name}: every cluster needs 0 <= successes <= totals")
    keep = m > 0
    if keep.sum() < 2:
        raise NeuroContrastError(f"{name}: need at least 2 clusters (patients) with lesions, got {keep.sum()}")
    return x[keep], m[keep]


def clustered_proportion(successes: Sequence[int], totals: Sequence[int],
                         alpha: float = 0.05) -> Dict[str, float]:
    """Proportion of clustered binary outcomes (lesions within patients) with Obuchowski's (1998) SE.

    ``successes[i]``, ``totals[i]``: detected and reference lesions of patient i (patients with no lesion
    are ignored). p = Σx/Σm; var = Σ(x_i − p·m_i)² / (I(I−1) m̄²), I clusters, m̄ = mean m_i (Obuchowski,
    Biometrics 1998;54:764-771, eq. 2; the ratio estimator of Rao & Scott). Returns dict p, se, low, high
    (normal interval clipped to [0, 1]), design_effect (var / binomial var), n_clusters.
    """
    x, m = _clusters(successes, totals, "clustered_proportion")
    alpha = _alpha(alpha)
    n_clusters = x.size
    p = x.sum() / m.sum()
    m_bar = m.mean()
    var = float(np.sum((x - p * m) ** 2) / (n_clusters * (n_clusters - 1) * m_bar ** 2))
    se = math.sqrt(var)
    z = stats.norm.ppf(1 - alpha / 2)
    binomial_var = p * (1 - p) / m.sum()
    return {"p": float(p), "se": se, "low": max(0.0, p - z * se), "high": min(1.0, p + z * se),
            "design_effect": var / binomial_var if binomial_var > 0 else float("nan"),
            "n_clusters": int(n_clusters)}


def clustered_difference(successes_a: Sequence[int], successes_b: Sequence[int],
                         totals: Sequence[int]) -> Dict[str, float]:
    """Compare two clustered proportions measured on the same lesions (Obuchowski 1998, eq. 4–5).

    ``successes_a/b[i]``: lesions of patient i detected in conditions A and B; ``totals[i]`` its reference
    lesions. X² = (p_A − p_B)² / (var_A + var_B − 2 cov) with cov = Σ(x_Ai − p_A m_i)(x_Bi − p_B m_i) /
    (I(I−1) m̄²); p from χ²(1). Returns dict p_a, p_b, difference, se, chi2, p_value. Reduces to a
    McNemar-like test when every patient has one lesion.
    """
    xa, m = _clusters(successes_a, totals, "clustered_difference A")
    xb_all, m_all = _pair(successes_b, totals, "successes_b", "totals", min_size=2)
    if np.any(xb_all < 0) or np.any(xb_all > m_all):
        raise NeuroContrastError("clustered_difference B: every cluster needs 0 <= successes <= totals")
    xb = xb_all[m_all > 0]
    n_clusters, m_bar = xa.size, m.mean()
    pa, pb = xa.sum() / m.sum(), xb.sum() / m.sum()
    ra, rb = xa - pa * m, xb - pb * m
    scale = n_clusters * (n_clusters - 1) * m_bar ** 2
    var = float((np.sum(ra ** 2) + np.sum(rb ** 2) - 2 * np.sum(ra * rb)) / scale)
    diff = float(pa - pb)
    if var <= 0:
        p_value = 1.0 if diff == 0 else 0.0
        chi2 = 0.0 if diff == 0 else float("inf")
    else:
        chi2 = diff ** 2 / var
        p_value = float(stats.chi2.sf(chi2, 1))
    return {"p_a": float(pa), "p_b": float(pb), "difference": diff, "se": math.sqrt(max(var, 0.0)),
            "chi2": float(chi2), "p_value": p_value}


# ----------------------------------------------------------------------------------------------------------
# Agreement


def weighted_kappa(grades_a: Sequence[int], grades_b: Sequence[int], labels: Optional[Sequence[int]] = None,
                   weights: str = "quadratic") -> float:
    """Quadratic-weighted Cohen's kappa between two readers' Likert grades of the same cases
    (sklearn.metrics.cohen_kappa_score; Cohen 1968). ``labels``: the scale's points (e.g. 1..5) so that
    unused grades still count. Returns NaN when both readers give one identical grade throughout."""
    from sklearn.metrics import cohen_kappa_score

    a, b = _pair(grades_a, grades_b, "grades_a", "grades_b", min_size=2)
    if weights not in ("quadratic", "linear", None):
        raise NeuroContrastError(f"weights must be 'quadratic', 'linear' or None, got {weights!r}")
    if len(np.unique(np.concatenate([a, b]))) == 1:
        return float("nan")
    return float(cohen_kappa_score(a.astype(int), b.astype(int), labels=None if labels is None else list(labels),
                                   weights=weights))


def bland_altman(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> Dict[str, float]:
    """Bland–Altman agreement of paired measurements (e.g. long axes in mm of paired lesions).

    Returns bias = mean(x − y), sd of the differences (ddof=1), limits of agreement bias ± z·sd
    (z = 1.96 for alpha = .05), their approximate CI half-width z·sd·√(3/n), and n (Bland & Altman 1986).
    """
    a, b = _pair(x, y, "x", "y", min_size=2)
    alpha = _alpha(alpha)
    d = a - b
    bias, sd = float(d.mean()), float(np.std(d, ddof=1))
    z = float(stats.norm.ppf(1 - alpha / 2))
    return {"bias": bias, "sd": sd, "loa_low": bias - z * sd, "loa_high": bias + z * sd,
            "loa_ci_half_width": z * sd * math.sqrt(3.0 / d.size), "n": int(d.size)}


def icc(ratings, form: str = "2,1") -> float:
    """Intraclass correlation of ``ratings`` (n_targets, k_raters) (Shrout & Fleiss 1979).

    ``form``: "1,1" one-way random; "2,1" two-way random, absolute agreement (default, for lengths
    measured by different readers); "3,1" two-way mixed, consistency. Uses the ANOVA mean squares
    BMS, WMS, JMS, EMS. Raises unless ratings is 2-D with ≥ 2 targets and ≥ 2 raters and finite.
    """
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise NeuroContrastError(f"ratings must be (n_targets >= 2, k_raters >= 2), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise NeuroContrastError("ratings contain NaN or infinite values")
    n, k = r.shape
    grand = r.mean()
    ss_rows = k * np.sum((r.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((r.mean(axis=0) - grand) ** 2)
    ss_total = np.sum((r - grand) ** 2)
    ss_error = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    wms = (ss_total - ss_rows) / (n * (k - 1))
    jms = ss_cols / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    if form == "1,1":
        den = bms + (k - 1) * wms
        return float((bms - wms) / den) if den else float("nan")
    if form == "2,1":
        den = bms + (k - 1) * ems + k * (jms - ems) / n
        return float((bms - ems) / den) if den else float("nan")
    if form == "3,1":
        den = bms + (k - 1) * ems
        return float((bms - ems) / den) if den else float("nan")
    raise NeuroContrastError(f"form must be '1,1', '2,1' or '3,1', got {form!r}")
