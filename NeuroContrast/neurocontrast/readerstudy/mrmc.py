"""Multi-reader multi-case (MRMC) analysis: ROC AUC, wAFROC and AFROC with Obuchowski–Rockette and DBM.

Figures of merit (FOM), all from the same kernel ψ(x, y) = 1 if y > x, ½ if y = x, 0 otherwise
(Chakraborty 2017, *Observer Performance Methods for Diagnostic Imaging*, ch. 13–14):

- ``auc``: empirical (trapezoidal = Wilcoxon–Mann–Whitney) ROC AUC from one rating per case;
- ``wafroc``: weighted AFROC, (1 / (K1 K2)) Σ_k1 Σ_k2 Σ_l W_k2l ψ(FP_k1, LL_k2l), FP_k1 the highest
  non-lesion (NL) rating on normal case k1 (−∞ if unmarked), LL_k2l the rating of lesion l of abnormal case
  k2 (−∞ if unmarked), lesion weights W summing to 1 per case;
- ``afroc``: the same with every lesion weighted 1 and divided by the total number of lesions L.

Variance: the jackknife over cases (each case, normal or abnormal, left out once; vectorised from the
row and column sums of the ψ matrix). Analyses, for fixed modalities (treatments) *t* and readers *r*:

- Obuchowski & Rockette (1995) with jackknife covariances Var, Cov1 (same reader, other modality),
  Cov2 (other reader, same modality), Cov3 (other reader and modality): random readers and random cases
  (RRRC) with Hillis (2007) denominator degrees of freedom
  ``F = MS(T) / (MS(T×R) + r·max(Cov2 − Cov3, 0))``, ``ddf = (MS(T×R) + r·max(Cov2 − Cov3, 0))² /
  (MS(T×R)² / ((t−1)(r−1)))``; fixed readers (FRRC) ``χ² = (t−1)·MS(T) / (Var − Cov1 + (r−1)·max(Cov2 − Cov3, 0))``
  on t−1 df; fixed cases (RRFC) ``F = MS(T) / MS(T×R)`` on (t−1, (t−1)(r−1)) df (Hillis et al. 2008,
  Acad Radiol 15:647, Table 1; Hillis 2014, Stat Med 33:330 for the single-modality intervals).
- Dorfman, Berbaum & Metz (1992) on jackknife pseudovalues Y_ijk = K θ_ij − (K−1) θ_ij(k) (centred per
  reader × modality, as RJafroc does), three-way ANOVA, RRRC with Hillis ddf, FRRC F on (t−1, (t−1)(K−1)),
  RRFC F on (t−1, (t−1)(r−1)). With the jackknife, DBM and OR give the same RRRC F, ddf and p (Hillis 2008).

Reproduces the Van Dyke et al. (1993) analysis published by the Iowa OR-DBM MRMC 2.51 program and MRMCaov
(see ``Testing/core/test_readerstudy_mrmc.py`` and docs/readerstudy.md).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)

#: figures of merit and analyses understood by :func:`run_mrmc` and ``neurocontrast reader mrmc``
FOMS = ("auc", "wafroc", "afroc")
ANALYSES = ("or", "dbm")
FOM_NAMES = {"auc": "empirical ROC AUC (Wilcoxon)", "wafroc": "wAFROC", "afroc": "AFROC"}
ROC_COLUMNS = ("reader", "modality", "case", "truth", "rating")
FROC_COLUMNS = ("modality", "reader", "case", "case_truth", "mark_type", "lesion", "weight", "rating")
LESION_COLUMNS = ("case", "lesion", "weight")
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MRMCParams:
    """Options of an MRMC analysis, from CLI to core.

    fom: one of :data:`FOMS`; analysis: one of :data:`ANALYSES`; alpha: two-sided level of the intervals
    (0.05 → 95 % CIs). Raises NeuroContrastError on an unknown name or alpha outside (0, 1).
    """

    fom: str = "auc"
    analysis: str = "or"
    alpha: float = 0.05

    def __post_init__(self):
        if self.fom not in FOMS:
            raise NeuroContrastError(f"fom must be one of {', '.join(FOMS)}, got {self.fom!r}")
        if self.analysis not in ANALYSES:
            raise NeuroContrastError(f"analysis must be one of {', '.join(ANALYSES)}, got {self.analysis!r}")
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise NeuroContrastError(f"alpha must lie in (0, 1), got {alpha!r}")

    def as_dict(self) -> Dict:
        return asdict(self)


@dataclass
class MRMCData:
    """Ratings of a fully crossed study in the FROC layout (ROC data is the special case of one "lesion"
    per abnormal case rated with the case rating).

    modalities, readers: ids (T and R of them); normal_cases (K1), abnormal_cases (K2): case ids;
    fp: (T, R, K1) float, highest NL rating per normal case (−inf: no mark); ll: (T, R, K2, L) float, lesion
    ratings (−inf: not marked; padding for cases with fewer lesions is −inf with weight 0);
    weights: (K2, L) float, lesion weights summing to 1 per case; n_lesions: (K2,) int;
    lesion_ids: (K2, L) lesion labels ("" padding); nl_marks: every NL mark as (modality, reader, case, rating)
    (kept for exports); paradigm: "ROC" or "FROC".
    """

    modalities: List[str]
    readers: List[str]
    normal_cases: List[str]
    abnormal_cases: List[str]
    fp: np.ndarray
    ll: np.ndarray
    weights: np.ndarray
    n_lesions: np.ndarray
    lesion_ids: List[List[str]]
    nl_marks: List[Tuple[str, str, str, float]] = field(default_factory=list)
    paradigm: str = "FROC"

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(T, R, K1, K2)."""
        return (len(self.modalities), len(self.readers), len(self.normal_cases), len(self.abnormal_cases))

    def check(self) -> "MRMCData":
        t, r, k1, k2 = self.shape
        if t < 2:
            raise NeuroContrastError(f"MRMC compares modalities: need at least 2, got {self.modalities}")
        if r < 2:
            raise NeuroContrastError(f"MRMC with random readers needs at least 2 readers, got {self.readers}")
        if k1 < 1 or k2 < 1:
            raise NeuroContrastError(f"need normal and abnormal cases, got {k1} normal and {k2} abnormal")
        if k1 + k2 < 3:
            raise NeuroContrastError("the jackknife needs at least 3 cases")
        if self.fp.shape != (t, r, k1) or self.ll.shape[:3] != (t, r, k2):
            raise NeuroContrastError(f"rating arrays have shapes {self.fp.shape} and {self.ll.shape}, expected "
                                     f"({t}, {r}, {k1}) and ({t}, {r}, {k2}, L)")
        if np.isnan(self.fp).any() or np.isnan(self.ll).any():
            raise NeuroContrastError("ratings contain NaN (an unmarked case or lesion is −inf, not NaN)")
        return self


# ------------------------------------------------------------------------------------------------------------
# Reading the two input layouts


def _natural_sort(values) -> List[str]:
    values = sorted(set(values))
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def _read_rows(path, required: Sequence[str], what: str) -> List[Dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise NeuroContrastError(f"{what} file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise NeuroContrastError(f"{path}: missing column(s) {', '.join(missing)}; {what} needs "
                                     f"{', '.join(required)}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise NeuroContrastError(f"{path} holds no rows")
    return rows


def _number(text: str, path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise NeuroContrastError(f"{path} line {line}: {column} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise NeuroContrastError(f"{path} line {line}: {column} must be finite, got {text!r}")
    return value


def _truth(text: str, path, line: int, column: str) -> int:
    if text not in ("0", "1", "0.0", "1.0"):
        raise NeuroContrastError(f"{path} line {line}: {column} must be 0 (normal) or 1 (abnormal), got {text!r}")
    return int(float(text))


def read_roc_csv(path) -> MRMCData:
    """Read ROC ratings: columns ``reader, modality, case, truth, rating``, one row per reader × modality ×
    case (fully crossed); higher rating = more confident the case is abnormal.

    Returns :class:`MRMCData` (paradigm "ROC"). Raises NeuroContrastError naming the file and line for a
    missing column, a non-numeric or non-finite rating, truth not 0/1, a case with two truths, a duplicate
    row or a reader × modality that did not rate every case.
    """
    rows = _read_rows(path, ROC_COLUMNS, "ROC ratings")
    truth: Dict[str, int] = {}
    ratings: Dict[Tuple[str, str, str], float] = {}
    for line, row in enumerate(rows, start=2):
        case = row["case"]
        if not case or not row["reader"] or not row["modality"]:
            raise NeuroContrastError(f"{path} line {line}: reader, modality and case must not be empty")
        value = _truth(row["truth"], path, line, "truth")
        if truth.setdefault(case, value) != value:
            raise NeuroContrastError(f"{path} line {line}: case {case} has truth {value} here and "
                                     f"{truth[case]} elsewhere")
        key = (row["modality"], row["reader"], case)
        if key in ratings:
            raise NeuroContrastError(f"{path} line {line}: a second rating for reader {key[1]}, modality "
                                     f"{key[0]}, case {case}")
        ratings[key] = _number(row["rating"], path, line, "rating")
    modalities = _natural_sort(k[0] for k in ratings)
    readers = _natural_sort(k[1] for k in ratings)
    normal = _natural_sort(c for c, v in truth.items() if v == 0)
    abnormal = _natural_sort(c for c, v in truth.items() if v == 1)
    missing = [(m, r, c) for m in modalities for r in readers for c in normal + abnormal if (m, r, c) not in ratings]
    if missing:
        m, r, c = missing[0]
        raise NeuroContrastError(f"{path}: the design is not fully crossed: {len(missing)} reader × modality × "
                                 f"case ratings missing, e.g. reader {r}, modality {m}, case {c}")
    fp = np.array([[[ratings[(m, r, c)] for c in normal] for r in readers] for m in modalities], dtype=float)
    ll = np.array([[[[ratings[(m, r, c)]] for c in abnormal] for r in readers] for m in modalities], dtype=float)
    ll = ll.reshape(len(modalities), len(readers), len(abnormal), 1)
    return MRMCData(modalities, readers, normal, abnormal, fp, ll, np.ones((len(abnormal), 1)),
                    np.ones(len(abnormal), dtype=int), [["1"] for _ in abnormal], paradigm="ROC").check()


def read_froc_csv(marks_path, lesions_path) -> MRMCData:
    """Read FROC marks and the lesion truth.

    ``marks_path``: one row per mark, columns ``modality, reader, case, case_truth, mark_type, lesion,
    weight, rating``; mark_type "NL" (non-lesion localisation; lesion column 0 or empty) or "LL" (lesion
    localisation of ``lesion``). ``lesions_path``: ``case, lesion, weight``, one row per lesion of each
    abnormal case (a row with lesion 0 declares a normal case, as in RJafroc's Truth sheet); weights must be
    positive and sum to 1 per case (an all-empty weight column means equal weights, logged).
    Normal cases are those declared so in either file. Readers and modalities are those with marks.
    Raises NeuroContrastError naming file and line for a mark on an unknown lesion, two LL marks on one
    lesion, a case that is normal in one place and abnormal in another, or bad numbers.
    """
    lesion_rows = _read_rows(lesions_path, LESION_COLUMNS, "FROC lesions")
    lesions: Dict[str, Dict[str, Optional[float]]] = {}
    normal_declared = set()
    for line, row in enumerate(lesion_rows, start=2):
        case, lesion = row["case"], row["lesion"]
        if not case or not lesion:
            raise NeuroContrastError(f"{lesions_path} line {line}: case and lesion must not be empty")
        if lesion in ("0", "0.0"):
            normal_declared.add(case)
            continue
        weight = _number(row["weight"], lesions_path, line, "weight") if row["weight"] else None
        if weight is not None and weight <= 0:
            raise NeuroContrastError(f"{lesions_path} line {line}: lesion weight must be > 0, got {weight}")
        if lesion in lesions.setdefault(case, {}):
            raise NeuroContrastError(f"{lesions_path} line {line}: lesion {lesion} of case {case} listed twice")
        lesions[case][lesion] = weight
    both = normal_declared & set(lesions)
    if both:
        raise NeuroContrastError(f"{lesions_path}: case {sorted(both)[0]} is listed as normal and with lesions")
    weights_given = [w for case in lesions.values() for w in case.values()]
    if all(w is None for w in weights_given):
        log.info("%s: no lesion weights given; using equal weights (1 / lesions per case)", lesions_path)
        lesions = {c: {l: 1.0 / len(v) for l in v} for c, v in lesions.items()}
    elif any(w is None for w in weights_given):
        raise NeuroContrastError(f"{lesions_path}: some lesions have a weight and others not")
    for case, items in lesions.items():
        total = sum(items.values())
        if abs(total - 1.0) > _WEIGHT_TOLERANCE:
            raise NeuroContrastError(f"{lesions_path}: lesion weights of case {case} sum to {total:g}, not 1")

    marks = _read_rows(marks_path, FROC_COLUMNS, "FROC marks")
    normal = set(normal_declared)
    ll_ratings: Dict[Tuple[str, str, str, str], float] = {}
    nl_marks: List[Tuple[str, str, str, float]] = []
    for line, row in enumerate(marks, start=2):
        m, r, case = row["modality"], row["reader"], row["case"]
        if not m or not r or not case:
            raise NeuroContrastError(f"{marks_path} line {line}: modality, reader and case must not be empty")
        truth = _truth(row["case_truth"], marks_path, line, "case_truth")
        if truth == 1 and case not in lesions:
            raise NeuroContrastError(f"{marks_path} line {line}: case {case} is abnormal here but has no lesion "
                                     f"in {lesions_path}")
        if truth == 0:
            if case in lesions:
                raise NeuroContrastError(f"{marks_path} line {line}: case {case} is normal here but has lesions "
                                         f"in {lesions_path}")
            normal.add(case)
        rating = _number(row["rating"], marks_path, line, "rating")
        kind = row["mark_type"].upper()
        if kind == "NL":
            nl_marks.append((m, r, case, rating))
        elif kind == "LL":
            lesion = row["lesion"]
            if truth == 0 or lesion not in lesions.get(case, {}):
                raise NeuroContrastError(f"{marks_path} line {line}: LL mark on lesion {lesion!r} of case {case}, "
                                         f"which {lesions_path} does not list")
            key = (m, r, case, lesion)
            if key in ll_ratings:
                raise NeuroContrastError(f"{marks_path} line {line}: a second LL mark on lesion {lesion} of case "
                                         f"{case} by reader {r} in modality {m} (one lesion, one LL)")
            ll_ratings[key] = rating
        else:
            raise NeuroContrastError(f"{marks_path} line {line}: mark_type must be NL or LL, got {row['mark_type']!r}")
    modalities = _natural_sort([k[0] for k in ll_ratings] + [k[0] for k in nl_marks])
    readers = _natural_sort([k[1] for k in ll_ratings] + [k[1] for k in nl_marks])
    normal_cases = _natural_sort(normal)
    abnormal_cases = _natural_sort(lesions)
    t, r_n, k1, k2 = len(modalities), len(readers), len(normal_cases), len(abnormal_cases)
    l_max = max(len(v) for v in lesions.values()) if lesions else 1
    m_idx = {m: i for i, m in enumerate(modalities)}
    r_idx = {r: i for i, r in enumerate(readers)}
    n_idx = {c: i for i, c in enumerate(normal_cases)}
    a_idx = {c: i for i, c in enumerate(abnormal_cases)}
    lesion_ids = [_natural_sort(lesions[c]) for c in abnormal_cases]
    l_idx = [{l: j for j, l in enumerate(ids)} for ids in lesion_ids]
    weights = np.zeros((k2, l_max))
    for i, case in enumerate(abnormal_cases):
        for lesion, j in l_idx[i].items():
            weights[i, j] = lesions[case][lesion]
    fp = np.full((t, r_n, k1), -np.inf)
    for m, r, case, rating in nl_marks:
        if case in n_idx:
            cell = (m_idx[m], r_idx[r], n_idx[case])
            fp[cell] = max(fp[cell], rating)
    ll = np.full((t, r_n, k2, l_max), -np.inf)
    for (m, r, case, lesion), rating in ll_ratings.items():
        ll[m_idx[m], r_idx[r], a_idx[case], l_idx[a_idx[case]][lesion]] = rating
    return MRMCData(modalities, readers, normal_cases, abnormal_cases, fp, ll, weights,
                    np.array([len(ids) for ids in lesion_ids]), [[*ids, *[""] * (l_max - len(ids))]
                                                                 for ids in lesion_ids],
                    nl_marks=nl_marks, paradigm="FROC").check()


# ------------------------------------------------------------------------------------------------------------
# Figures of merit and their jackknife


def _psi(fp: np.ndarray, ll: np.ndarray) -> np.ndarray:
    """ψ(FP, LL) for every normal × abnormal × lesion triple: (T, R, K1, K2, L) in {0, ½, 1}."""
    x = fp[:, :, :, None, None]
    y = ll[:, :, None, :, :]
    return (y > x) + 0.5 * (y == x)


def _case_matrix(data: MRMCData, fom: str) -> Tuple[np.ndarray, np.ndarray]:
    """A (T, R, K1, K2) lesion-weighted ψ matrix and the (K2,) weight of each abnormal case in the denominator."""
    if fom in ("wafroc", "auc"):
        w = data.weights
    else:  # afroc: every lesion counts 1
        w = (data.weights > 0).astype(float)
    a = np.einsum("trikl,kl->trik", _psi(data.fp, data.ll), w)
    return a, w.sum(axis=1)


def fom_jackknife(data: MRMCData, fom: str = "auc") -> Tuple[np.ndarray, np.ndarray]:
    """Figure of merit per modality × reader and its case-deleted (jackknife) values.

    Returns ``theta`` (T, R) and ``theta_jk`` (T, R, K) float with K = K1 + K2 (normal cases first, then
    abnormal, in ``data``'s order). ``auc`` needs ROC data (one rating per case); ``wafroc``/``afroc`` use
    the lesion layout (on ROC data they equal the AUC). Vectorised: deleting case k subtracts its row (normal)
    or column (abnormal) sum of the ψ matrix. Raises NeuroContrastError for ``auc`` on FROC data.
    Chakraborty 2017, eq. 13.7 (wAFROC), 13.6 (AFROC); Hanley & McNeil 1982 (Wilcoxon AUC).
    """
    if fom not in FOMS:
        raise NeuroContrastError(f"fom must be one of {', '.join(FOMS)}, got {fom!r}")
    if fom == "auc" and data.paradigm != "ROC":
        raise NeuroContrastError("fom 'auc' needs one rating per case (ROC data); for FROC marks use wafroc or "
                                 "afroc")
    a, d = _case_matrix(data, fom)
    _, _, k1, _ = data.shape
    total = a.sum(axis=(2, 3))
    denominator = d.sum()
    theta = total / (k1 * denominator)
    drop_normal = (total[..., None] - a.sum(axis=3)) / ((k1 - 1) * denominator) if k1 > 1 else \
        np.full(a.shape[:3], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop_abnormal = (total[..., None] - a.sum(axis=2)) / (k1 * (denominator - d))
    theta_jk = np.concatenate([drop_normal, drop_abnormal], axis=2)
    if not np.isfinite(theta_jk).all():
        raise NeuroContrastError("the jackknife needs at least 2 normal and 2 abnormal cases")
    return theta, theta_jk


def jackknife_covariance(theta_jk: np.ndarray) -> np.ndarray:
    """(T·R, T·R) jackknife covariance of the FOMs: (K−1)/K Σ_k (θ_(k) − θ̄)(θ_(k) − θ̄)ᵀ, index t·R + r."""
    t, r, k = theta_jk.shape
    flat = theta_jk.reshape(t * r, k)
    dev = flat - flat.mean(axis=1, keepdims=True)
    return (k - 1) / k * dev @ dev.T


def or_covariances(cov: np.ndarray, t: int, r: int) -> Dict[str, float]:
    """Obuchowski–Rockette Var, Cov1, Cov2, Cov3 (averages of the covariance matrix's entries by pairing).

    ``cov``: (T·R, T·R) from :func:`jackknife_covariance`. Cov1 same reader, other modality; Cov2 other
    reader, same modality; Cov3 other reader and modality (Obuchowski & Rockette 1995)."""
    mod = np.repeat(np.arange(t), r)
    rdr = np.tile(np.arange(r), t)
    same_m = mod[:, None] == mod[None, :]
    same_r = rdr[:, None] == rdr[None, :]
    out = {"var": float(np.mean(np.diag(cov))),
           "cov1": float(cov[~same_m & same_r].mean()),
           "cov2": float(cov[same_m & ~same_r].mean()),
           "cov3": float(cov[~same_m & ~same_r].mean())}
    return out


def _p_f(f: float, ndf: float, ddf: float) -> float:
    if not math.isfinite(f):
        return 0.0 if f > 0 else float("nan")
    return float(stats.f.sf(f, ndf, ddf)) if math.isfinite(ddf) else float(stats.chi2.sf(f * ndf, ndf))


def _t_quantile(alpha: float, df: float) -> float:
    return float(stats.t.ppf(1 - alpha / 2, df)) if math.isfinite(df) else float(stats.norm.ppf(1 - alpha / 2))


def _hillis_ddf(denominator: float, ms: float, df: float) -> float:
    return float("inf") if ms <= 0 else float(denominator ** 2 / (ms ** 2 / df))


def _interval(estimate: float, se: float, df: float, alpha: float) -> Dict:
    q = _t_quantile(alpha, df)
    if not se > 0:  # no variance left to estimate (e.g. identical readers): no interval, not a zero-width one
        return {"estimate": float(estimate), "se": float(se), "df": float(df), "ci": [float("nan"), float("nan")]}
    return {"estimate": float(estimate), "se": float(se), "df": float(df),
            "ci": [float(estimate - q * se), float(estimate + q * se)]}


def _ms(theta: np.ndarray) -> Dict[str, float]:
    t, r = theta.shape
    grand = theta.mean()
    m_t = theta.mean(axis=1)
    m_r = theta.mean(axis=0)
    resid = theta - m_t[:, None] - m_r[None, :] + grand
    return {"ms_t": float(r * np.sum((m_t - grand) ** 2) / (t - 1)),
            "ms_r": float(t * np.sum((m_r - grand) ** 2) / (r - 1)),
            "ms_tr": float(np.sum(resid ** 2) / ((t - 1) * (r - 1)))}


def _zero_roundoff(ms: Dict[str, float]) -> Dict[str, float]:
    """Set mean squares that are zero up to floating-point round-off (below 1e-12 of the largest) to 0:
    e.g. two readers whose modality differences are identical give MS(T×R) = 1e-34, not a real variance."""
    scale = max(abs(v) for v in ms.values()) or 1.0
    return {k: (0.0 if abs(v) <= 1e-12 * scale else v) for k, v in ms.items()}


_RRFC_UNDEFINED = ("MS(T×R) = 0: every reader shows the same modality difference, so the fixed-case test and "
                   "interval are undefined")


def _pairs(modalities: Sequence[str]) -> List[Tuple[int, int]]:
    return list(combinations(range(len(modalities)), 2))


def or_analysis(theta: np.ndarray, theta_jk: np.ndarray, modalities: Sequence[str],
                alpha: float = 0.05) -> Dict:
    """Obuchowski–Rockette analysis with jackknife covariances (Hillis 2007 ddf for RRRC).

    theta (T, R), theta_jk (T, R, K). Returns {"covariances", "mean_squares", "rrrc", "frrc", "rrfc"}; each
    test dict has the statistic, its df, p, and for each pair of modalities the difference (first minus
    second) with SE and (1 − alpha) CI; "ci"/"estimate"/"contrast" name the first pair; "modalities" gives
    each modality's mean FOM with its CI. Formulas: Hillis et al. 2008 Table 1, Hillis 2014.
    """
    t, r = theta.shape
    cov = jackknife_covariance(theta_jk)
    c = or_covariances(cov, t, r)
    ms = _zero_roundoff(_ms(theta))
    means = theta.mean(axis=1)
    pairs = _pairs(modalities)
    # per-modality covariances (Var_i, Cov2_i) and reader mean square MS(R_i)
    single = []
    for i in range(t):
        block = cov[i * r:(i + 1) * r, i * r:(i + 1) * r]
        var_i = float(np.mean(np.diag(block)))
        cov2_i = float(block[~np.eye(r, dtype=bool)].mean())
        ms_r_i = float(np.sum((theta[i] - means[i]) ** 2) / (r - 1))
        single.append((var_i, cov2_i, 0.0 if ms_r_i <= 1e-12 * max(ms.values()) else ms_r_i))

    def block(stat_name, stat, ndf, ddf, p, se_diff, df_diff, single_rows):
        diffs = []
        for a, b in pairs:
            d = _interval(means[a] - means[b], se_diff, df_diff, alpha)
            diffs.append({"contrast": f"{modalities[a]} - {modalities[b]}", **d})
        out = {stat_name: float(stat), "p": p, "differences": diffs, "contrast": diffs[0]["contrast"],
               "estimate": diffs[0]["estimate"], "se": diffs[0]["se"], "ci": diffs[0]["ci"],
               "modalities": {m: row for m, row in zip(modalities, single_rows)}}
        out.update(ndf)
        if ddf is not None:
            out.update(ddf)
        return out

    # random readers, random cases
    den = ms["ms_tr"] + r * max(c["cov2"] - c["cov3"], 0.0)
    f = ms["ms_t"] / den if den > 0 else float("inf")
    ddf = _hillis_ddf(den, ms["ms_tr"], (t - 1) * (r - 1))
    rrrc_single = []
    for i in range(t):
        _, cov2_i, ms_r_i = single[i]
        d_i = ms_r_i + r * max(cov2_i, 0.0)
        rrrc_single.append(_interval(means[i], math.sqrt(d_i / r), _hillis_ddf(d_i, ms_r_i, r - 1), alpha))
    rrrc = block("F", f, {"ndf": t - 1}, {"ddf": ddf}, _p_f(f, t - 1, ddf), math.sqrt(2 * den / r), ddf,
                 rrrc_single)
    # fixed readers, random cases
    den_fr = c["var"] - c["cov1"] + (r - 1) * max(c["cov2"] - c["cov3"], 0.0)
    chi2 = (t - 1) * ms["ms_t"] / den_fr if den_fr > 0 else float("inf")
    frrc_single = [_interval(means[i], math.sqrt((single[i][0] + (r - 1) * max(single[i][1], 0.0)) / r),
                             float("inf"), alpha) for i in range(t)]
    frrc = block("chi2", chi2, {"df": t - 1}, None, float(stats.chi2.sf(chi2, t - 1)),
                 math.sqrt(2 * den_fr / r), float("inf"), frrc_single)
    # random readers, fixed cases
    f_rf = ms["ms_t"] / ms["ms_tr"] if ms["ms_tr"] > 0 else float("nan")
    df_rf = (t - 1) * (r - 1)
    rrfc_single = [_interval(means[i], math.sqrt(single[i][2] / r), r - 1, alpha) for i in range(t)]
    rrfc = block("F", f_rf, {"ndf": t - 1}, {"df": df_rf}, _p_f(f_rf, t - 1, df_rf) if ms["ms_tr"] > 0 else
                 float("nan"), math.sqrt(2 * ms["ms_tr"] / r) if ms["ms_tr"] > 0 else float("nan"), df_rf,
                 rrfc_single)
    if ms["ms_tr"] == 0:
        rrfc["note"] = _RRFC_UNDEFINED
    return {"covariances": c, "mean_squares": ms, "rrrc": rrrc, "frrc": frrc, "rrfc": rrfc}


def pseudovalues(theta: np.ndarray, theta_jk: np.ndarray) -> np.ndarray:
    """DBM jackknife pseudovalues (T, R, K): K θ − (K−1) θ_(k), centred so that their case mean is θ
    (Dorfman, Berbaum & Metz 1992; the centring of RJafroc leaves every case-interaction term unchanged)."""
    k = theta_jk.shape[2]
    y = k * theta[..., None] - (k - 1) * theta_jk
    return y + (theta - y.mean(axis=2))[..., None]


def dbm_mean_squares(y: np.ndarray) -> Dict[str, float]:
    """Three-way (modality × reader × case) ANOVA mean squares of pseudovalues ``y`` (T, R, K)."""
    t, r, k = y.shape
    g = y.mean()
    m_t, m_r, m_c = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    m_tr, m_tc, m_rc = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    tr = m_tr - m_t[:, None] - m_r[None, :] + g
    tc = m_tc - m_t[:, None] - m_c[None, :] + g
    rc = m_rc - m_r[:, None] - m_c[None, :] + g
    trc = (y - m_tr[..., None] - m_tc[:, None, :] - m_rc[None] + m_t[:, None, None] + m_r[None, :, None]
           + m_c[None, None, :] - g)
    return {"ms_t": float(r * k * np.sum((m_t - g) ** 2) / (t - 1)),
            "ms_r": float(t * k * np.sum((m_r - g) ** 2) / (r - 1)),
            "ms_c": float(t * r * np.sum((m_c - g) ** 2) / (k - 1)),
            "ms_tr": float(k * np.sum(tr ** 2) / ((t - 1) * (r - 1))),
            "ms_tc": float(r * np.sum(tc ** 2) / ((t - 1) * (k - 1))),
            "ms_rc": float(t * np.sum(rc ** 2) / ((r - 1) * (k - 1))),
            "ms_trc": float(np.sum(trc ** 2) / ((t - 1) * (r - 1) * (k - 1)))}


def dbm_analysis(theta: np.ndarray, theta_jk: np.ndarray, modalities: Sequence[str],
                 alpha: float = 0.05) -> Dict:
    """Dorfman–Berbaum–Metz analysis of jackknife pseudovalues (Hillis 2007 ddf for RRRC).

    Same return layout as :func:`or_analysis`; "frrc" holds F on (t−1, (t−1)(K−1)) df with p from that F
    (``chi2`` = (t−1)·F is the large-sample form). Hillis et al. 2008, Table 1.
    """
    t, r, k = theta_jk.shape
    y = pseudovalues(theta, theta_jk)
    ms = _zero_roundoff(dbm_mean_squares(y))
    means = y.mean(axis=(1, 2))
    pairs = _pairs(modalities)
    single = []
    for i in range(t):
        yi = y[i]
        g = yi.mean()
        mr, mc = yi.mean(axis=1), yi.mean(axis=0)
        ms_r = float(k * np.sum((mr - g) ** 2) / (r - 1))
        ms_r = 0.0 if ms_r <= 1e-12 * max(ms.values()) else ms_r
        ms_c = float(r * np.sum((mc - g) ** 2) / (k - 1))
        ms_rc = float(np.sum((yi - mr[:, None] - mc[None, :] + g) ** 2) / ((r - 1) * (k - 1)))
        single.append((ms_r, ms_c, ms_rc))

    def block(stat, ndf, ddf_name, ddf, p, se_diff, single_rows, extra=None):
        diffs = [{"contrast": f"{modalities[a]} - {modalities[b]}",
                  **_interval(means[a] - means[b], se_diff, ddf, alpha)} for a, b in pairs]
        out = {"F": float(stat), "ndf": ndf, ddf_name: float(ddf), "p": p, "differences": diffs,
               "contrast": diffs[0]["contrast"], "estimate": diffs[0]["estimate"], "se": diffs[0]["se"],
               "ci": diffs[0]["ci"], "modalities": {m: row for m, row in zip(modalities, single_rows)}}
        out.update(extra or {})
        return out

    den = ms["ms_tr"] + max(ms["ms_tc"] - ms["ms_trc"], 0.0)
    f = ms["ms_t"] / den if den > 0 else float("inf")
    ddf = _hillis_ddf(den, ms["ms_tr"], (t - 1) * (r - 1))
    rrrc_single = []
    for i in range(t):
        ms_r, ms_c, ms_rc = single[i]
        d_i = ms_r + max(ms_c - ms_rc, 0.0)
        rrrc_single.append(_interval(means[i], math.sqrt(d_i / (r * k)), _hillis_ddf(d_i, ms_r, r - 1), alpha))
    rrrc = block(f, t - 1, "ddf", ddf, _p_f(f, t - 1, ddf), math.sqrt(2 * den / (r * k)), rrrc_single)
    f_fr = ms["ms_t"] / ms["ms_tc"] if ms["ms_tc"] > 0 else float("inf")
    ddf_fr = (t - 1) * (k - 1)
    frrc_single = [_interval(means[i], math.sqrt(single[i][1] / (r * k)), k - 1, alpha) for i in range(t)]
    frrc = block(f_fr, t - 1, "ddf", ddf_fr, _p_f(f_fr, t - 1, ddf_fr), math.sqrt(2 * ms["ms_tc"] / (r * k)),
                 frrc_single, {"chi2": float((t - 1) * f_fr), "df": t - 1})
    f_rf = ms["ms_t"] / ms["ms_tr"] if ms["ms_tr"] > 0 else float("nan")
    df_rf = (t - 1) * (r - 1)
    rrfc_single = [_interval(means[i], math.sqrt(single[i][0] / (r * k)), r - 1, alpha) for i in range(t)]
    rrfc = block(f_rf, t - 1, "df", df_rf, _p_f(f_rf, t - 1, df_rf) if ms["ms_tr"] > 0 else float("nan"),
                 math.sqrt(2 * ms["ms_tr"] / (r * k)) if ms["ms_tr"] > 0 else float("nan"), rrfc_single)
    if ms["ms_tr"] == 0:
        rrfc["note"] = _RRFC_UNDEFINED
    return {"mean_squares": ms, "rrrc": rrrc, "frrc": frrc, "rrfc": rrfc}


# ------------------------------------------------------------------------------------------------------------
# The whole analysis


@dataclass
class MRMCResult:
    """Outcome of :func:`run_mrmc`: the params, the data's ids, FOMs (T, R) and the analysis dict."""

    params: MRMCParams
    data: MRMCData
    theta: np.ndarray
    theta_jk: np.ndarray
    analysis: Dict

    def as_dict(self) -> Dict:
        """JSON-ready: ``modalities`` {modality: mean FOM}, ``readers`` {modality: {reader: FOM}},
        ``rrrc`` {F, ddf, p, ci...}, ``frrc`` {chi2, df, p, ci...}, ``rrfc`` {F, df, p, ci...}, and the
        design, covariances / mean squares and params."""
        d = self.data
        t, r, k1, k2 = d.shape
        out = {"fom": self.params.fom, "fom_name": FOM_NAMES[self.params.fom], "analysis": self.params.analysis,
               "alpha": self.params.alpha, "paradigm": d.paradigm,
               "design": {"modalities": d.modalities, "readers": d.readers, "n_normal": k1, "n_abnormal": k2,
                          "n_lesions": int(d.n_lesions.sum())},
               "modalities": {m: float(self.theta[i].mean()) for i, m in enumerate(d.modalities)},
               "readers": {m: {rd: float(self.theta[i, j]) for j, rd in enumerate(d.readers)}
                           for i, m in enumerate(d.modalities)}}
        for key in ("rrrc", "frrc", "rrfc"):
            out[key] = self.analysis[key]
        for key in ("covariances", "mean_squares"):
            if key in self.analysis:
                out[key] = self.analysis[key]
        return _jsonable(out)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_mrmc(data: MRMCData, params: MRMCParams = MRMCParams()) -> MRMCResult:
    """FOMs, jackknife and the OR or DBM analysis of ``data`` with ``params``. Raises NeuroContrastError
    (from :func:`fom_jackknife`) when the FOM does not fit the data."""
    data.check()
    theta, theta_jk = fom_jackknife(data, params.fom)
    if np.allclose(theta_jk, theta_jk.mean(axis=2, keepdims=True)) and np.ptp(theta) == 0:
        raise NeuroContrastError("every reader and modality has the same FOM and no case changes it: the "
                                 "ratings carry no information to compare")
    fn = or_analysis if params.analysis == "or" else dbm_analysis
    return MRMCResult(params, data, theta, theta_jk, fn(theta, theta_jk, data.modalities, params.alpha))


# ------------------------------------------------------------------------------------------------------------
# Outputs: results.json / results.md, plot, exports


def _f(x, digits: int = 4) -> str:
    if isinstance(x, str):
        x = float(x)
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def results_markdown(result: MRMCResult, title: str = "MRMC analysis") -> str:
    """The results as Markdown: reader FOM table, per-modality CIs, the three tests and differences."""
    d = result.as_dict()
    level = f"{100 * (1 - result.params.alpha):g} %"
    method = ("Obuchowski–Rockette (jackknife covariances)" if d["analysis"] == "or" else
              "Dorfman–Berbaum–Metz (jackknife pseudovalues)")
    mods = d["design"]["modalities"]
    lines = [f"# {title}", "", f"{d['fom_name']}, {method}, Hillis (2007) ddf; {d['design']['n_normal']} normal "
             f"and {d['design']['n_abnormal']} abnormal cases, {len(d['design']['readers'])} readers, "
             f"{len(mods)} modalities.", ""]
    lines += ["| Reader | " + " | ".join(mods) + " |", "|---|" + "---|" * len(mods)]
    for reader in d["design"]["readers"]:
        lines.append(f"| {reader} | " + " | ".join(f"{d['readers'][m][reader]:.4f}" for m in mods) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{d['modalities'][m]:.4f}**" for m in mods) + " |")
    lines.append("")
    names = {"rrrc": "Random readers, random cases", "frrc": "Fixed readers, random cases",
             "rrfc": "Random readers, fixed cases"}
    lines += [f"| Analysis | Test | p | Difference | SE | {level} CI |", "|---|---|---|---|---|---|"]
    for key, name in names.items():
        b = d[key]
        if "chi2" in b and d["analysis"] == "or":
            test = f"χ²({b['df']}) = {_f(b['chi2'])}"
        else:
            ddf = b.get("ddf", b.get("df"))
            test = f"F({b['ndf']}, {_f(ddf if not isinstance(ddf, str) else float(ddf))}) = {_f(b['F'])}"
        for diff in b["differences"]:
            lines.append(f"| {name} | {test} | {_f(b['p'])} | {diff['contrast']}: {diff['estimate']:.5f} | "
                         f"{_f(diff['se'])} | [{_f(diff['ci'][0])}; {_f(diff['ci'][1])}] |")
        if b.get("note"):
            lines.append(f"| {name} | {b['note']} | | | | |")
    lines += ["", f"| Modality | Analysis | Mean FOM | SE | df | {level} CI |", "|---|---|---|---|---|---|"]
    for m in d["design"]["modalities"]:
        for key, name in names.items():
            s = d[key]["modalities"][m]
            df = s["df"] if not isinstance(s["df"], str) else float(s["df"])
            lines.append(f"| {m} | {key.upper()} | {s['estimate']:.5f} | {_f(s['se'])} | {_f(df)} | "
                         f"[{_f(s['ci'][0])}; {_f(s['ci'][1])}] |")
    lines.append("")
    return "\n".join(lines)


def plot_reader_foms(result: MRMCResult, path) -> Path:
    """A PNG of each reader's FOM per modality (lines join a reader's modalities) with the modality means and
    their RRRC CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result.data
    x = np.arange(len(d.modalities))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(x), 4))
    for j, reader in enumerate(d.readers):
        ax.plot(x, result.theta[:, j], marker="o", alpha=0.6, label=f"reader {reader}")
    rr = result.analysis["rrrc"]["modalities"]
    means = np.array([rr[m]["estimate"] for m in d.modalities])
    err = np.nan_to_num(np.array([[means[i] - rr[m]["ci"][0], rr[m]["ci"][1] - means[i]]
                                  for i, m in enumerate(d.modalities)]).T)
    ax.errorbar(x + 0.08, means, yerr=err, fmt="ks", capsize=5, label="mean [RRRC 95% CI]")
    ax.set_xticks(x, d.modalities)
    ax.set(xlabel="modality", ylabel=FOM_NAMES[result.params.fom], xlim=(-0.5, len(x) - 0.5))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def export_tidy_csv(data: MRMCData, path) -> Path:
    """Tidy CSV, one row per modality × reader × case × lesion slot: ``modality, reader, case, truth,
    lesion, weight, rating`` (normal cases: lesion 0, the highest NL rating; ratings −inf are left empty)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["modality", "reader", "case", "truth", "lesion", "weight", "rating"])
        for i, m in enumerate(data.modalities):
            for j, r in enumerate(data.readers):
                for k, case in enumerate(data.normal_cases):
                    v = data.fp[i, j, k]
                    writer.writerow([m, r, case, 0, 0, 0, "" if np.isinf(v) else repr(float(v))])
                for k, case in enumerate(data.abnormal_cases):
                    for l in range(int(data.n_lesions[k])):
                        v = data.ll[i, j, k, l]
                        writer.writerow([m, r, case, 1, data.lesion_ids[k][l], repr(float(data.weights[k, l])),
                                         "" if np.isinf(v) else repr(float(v))])
    return path


def export_foms_csv(result: MRMCResult, path) -> Path:
    """Tidy CSV of the FOMs: ``modality, reader, fom`` (one row per modality × reader)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["modality", "reader", "fom"])
        for i, m in enumerate(result.data.modalities):
            for j, r in enumerate(result.data.readers):
                writer.writerow([m, r, repr(float(result.theta[i, j]))])
    return path


def export_jafroc_xlsx(data: MRMCData, path) -> Path:
    """RJafroc's JAFROC Excel layout (``DfReadDataFile(path, format = "JAFROC")``): sheets ``Truth``
    (CaseID, LesionID, Weight; normal cases LesionID 0, Weight 0), ``NL`` (ReaderID, ModalityID, CaseID,
    NL_Rating) and ``LL`` (ReaderID, ModalityID, CaseID, LesionID, LL_Rating). ROC data: the normal cases'
    ratings go to NL and the abnormal cases' to LL with LesionID 1 (RJafroc's ROC convention). Numeric ids
    are written as numbers; RJafroc's reader expects integer case and lesion ids, so renumber text ids first."""
    from openpyxl import Workbook

    wb = Workbook()
    truth = wb.active
    truth.title = "Truth"
    truth.append(["CaseID", "LesionID", "Weight"])
    for case in data.normal_cases:
        truth.append([_cell(case), 0, 0])
    for k, case in enumerate(data.abnormal_cases):
        for l in range(int(data.n_lesions[k])):
            truth.append([_cell(case), _cell(data.lesion_ids[k][l]), float(data.weights[k, l])])
    nl = wb.create_sheet("NL")
    nl.append(["ReaderID", "ModalityID", "CaseID", "NL_Rating"])
    if data.paradigm == "ROC":
        for i, m in enumerate(data.modalities):
            for j, r in enumerate(data.readers):
                for k, case in enumerate(data.normal_cases):
                    nl.append([_cell(r), _cell(m), _cell(case), float(data.fp[i, j, k])])
    else:
        for m, r, case, rating in data.nl_marks:
            nl.append([_cell(r), _cell(m), _cell(case), float(rating)])
    ll = wb.create_sheet("LL")
    ll.append(["ReaderID", "ModalityID", "CaseID", "LesionID", "LL_Rating"])
    for i, m in enumerate(data.modalities):
        for j, r in enumerate(data.readers):
            for k, case in enumerate(data.abnormal_cases):
                for l in range(int(data.n_lesions[k])):
                    v = data.ll[i, j, k, l]
                    if np.isfinite(v):
                        ll.append([_cell(r), _cell(m), _cell(case), _cell(data.lesion_ids[k][l]), float(v)])
    path = Path(path)
    wb.save(path)
    return path


def _cell(text: str):
    """Numeric ids as numbers (RJafroc expects numeric case and lesion ids), others as text."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() else value


def export_imrmc(data: MRMCData, path) -> Path:
    """iMRMC input (FDA iMRMC 4): header NR/N0/N1/NM, ``BEGIN DATA:``, truth rows ``-1, case, 0, truth`` and
    score rows ``reader, case, modality, rating``. ROC data only (iMRMC analyses one score per case);
    raises NeuroContrastError for FROC data."""
    if data.paradigm != "ROC":
        raise NeuroContrastError("iMRMC takes one score per case (ROC data); FROC marks are exported to the "
                                 "JAFROC workbook and the tidy CSV")
    t, r, k1, k2 = data.shape
    lines = ["iMRMC input written by neurocontrast reader mrmc", f"NR: {r}", f"N0: {k1}", f"N1: {k2}", f"NM: {t}",
             "BEGIN DATA:"]
    lines += [f"-1,{c},0,0" for c in data.normal_cases] + [f"-1,{c},0,1" for c in data.abnormal_cases]
    for i, m in enumerate(data.modalities):
        for j, rd in enumerate(data.readers):
            lines += [f"{rd},{c},{m},{data.fp[i, j, k]!r}" for k, c in enumerate(data.normal_cases)]
            lines += [f"{rd},{c},{m},{data.ll[i, j, k, 0]!r}" for k, c in enumerate(data.abnormal_cases)]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_outputs(result: MRMCResult, out_dir, plots: bool = True) -> Dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``foms.csv``, ``ratings_tidy.csv``, ``rjafroc.xlsx``,
    ``imrmc.txt`` (ROC data) and ``reader_foms.png`` to ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results_json": out / "results.json", "results_md": out / "results.md"}
    paths["results_json"].write_text(json.dumps({**result.as_dict(), "params": result.params.as_dict()},
                                                indent=1), encoding="utf-8")
    paths["results_md"].write_text(results_markdown(result), encoding="utf-8")
    paths["foms"] = export_foms_csv(result, out / "foms.csv")
    paths["tidy"] = export_tidy_csv(result.data, out / "ratings_tidy.csv")
    paths["jafroc"] = export_jafroc_xlsx(result.data, out / "rjafroc.xlsx")
    if result.data.paradigm == "ROC":
        paths["imrmc"] = export_imrmc(result.data, out / "imrmc.txt")
    if plots:
        paths["plot"] = plot_reader_foms(result, out / "reader_foms.png")
    return paths


def analyze_files(ratings_csv, lesions_csv=None, params: MRMCParams = MRMCParams(), out_dir=None,
                  plots: bool = True) -> Tuple[MRMCResult, Dict[str, Path]]:
    """Read ROC ratings (no ``lesions_csv``) or FROC marks + lesions, run :func:`run_mrmc` and write the
    outputs to ``out_dir``. Raises NeuroContrastError when ``fom`` needs the other layout."""
    if lesions_csv is None:
        if params.fom != "auc":
            raise NeuroContrastError(f"fom {params.fom} needs FROC marks and --lesions LESIONS.csv")
        data = read_roc_csv(ratings_csv)
    else:
        if params.fom == "auc":
            raise NeuroContrastError("fom auc takes ROC ratings (reader, modality, case, truth, rating) without "
                                     "--lesions; for FROC marks use wafroc or afroc")
        data = read_froc_csv(ratings_csv, lesions_csv)
    result = run_mrmc(data, params)
    paths = write_outputs(result, out_dir, plots=plots) if out_dir is not None else {}
    return result, paths
