"""MRMC analysis: reproduces the published Van Dyke (1993) OR-DBM analysis (Iowa OR-DBM MRMC 2.51, MRMCaov),
checks wAFROC / AFROC against hand-computed cases and a naive re-implementation, and the command contract."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy import mrmc

# Published values (see /work/shared/data/mrmc/README.md): Iowa OR-DBM MRMC 2.51 "VanDyke.txt" and MRMCaov.
VANDYKE_AUC = {"1": [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
               "2": [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169]}


def _sig(value: float, expected: float, digits: int = 4) -> bool:
    """Equal to ``digits`` significant digits."""
    return f"{value:.{digits - 1}e}" == f"{expected:.{digits - 1}e}"


@pytest.fixture
def vandyke(shared_data):
    return shared_data("mrmc/vandyke.csv")


@pytest.fixture
def dataset05(shared_data):
    return shared_data("mrmc/dataset05_froc_marks.csv"), shared_data("mrmc/dataset05_lesions.csv")


def test_vandyke_reader_aucs_to_8_digits(vandyke):
    data = mrmc.read_roc_csv(vandyke)
    theta, _ = mrmc.fom_jackknife(data, "auc")
    for i, m in enumerate(data.modalities):
        assert np.round(theta[i], 8).tolist() == VANDYKE_AUC[m]
    assert round(theta[0].mean(), 8) == 0.89703704 and round(theta[1].mean(), 8) == 0.94083736


def test_vandyke_or_analysis_reproduces_the_published_tables(vandyke):
    result, _ = mrmc.analyze_files(vandyke, params=mrmc.MRMCParams("auc", "or"))
    d = result.as_dict()
    c = d["covariances"]
    assert [round(c[k], 8) for k in ("var", "cov1", "cov2", "cov3")] == [0.00080229, 0.00034661, 0.00034407,
                                                                          0.00023903]
    assert round(d["mean_squares"]["ms_t"], 8) == 0.00479617 and round(d["mean_squares"]["ms_tr"], 8) == 0.00055103
    rrrc = d["rrrc"]
    assert _sig(rrrc["F"], 4.456319) and _sig(rrrc["ddf"], 15.25967) and _sig(rrrc["p"], 0.05166569)
    assert round(rrrc["se"], 8) == 0.02074862 and round(rrrc["estimate"], 8) == -0.04380032
    assert np.allclose(rrrc["ci"], [-0.0879594986, 0.0003588544], atol=5e-10)
    frrc = d["frrc"]
    assert _sig(frrc["chi2"], 5.475953) and frrc["df"] == 1 and _sig(frrc["p"], 0.01927984)
    assert round(frrc["se"], 5) == 0.01872 and np.allclose(frrc["ci"], [-0.08049, -0.00711], atol=5e-6)
    rrfc = d["rrfc"]
    assert _sig(rrfc["F"], 8.704) and rrfc["df"] == 4 and _sig(rrfc["p"], 0.04195875)
    assert round(rrfc["se"], 5) == 0.01485 and np.allclose(rrfc["ci"], [-0.08502, -0.00258], atol=5e-6)
    single = rrrc["modalities"]
    assert np.allclose(single["1"]["ci"], [0.82522360, 0.96885048], atol=5e-9) and round(single["1"]["df"], 2) == 12.74
    assert np.allclose(single["2"]["ci"], [0.89413783, 0.98753689], atol=5e-9) and round(single["2"]["df"], 2) == 12.71


def test_vandyke_dbm_matches_or_where_theory_says_so(vandyke):
    data = mrmc.read_roc_csv(vandyke)
    or_ = mrmc.run_mrmc(data, mrmc.MRMCParams("auc", "or")).as_dict()
    dbm = mrmc.run_mrmc(data, mrmc.MRMCParams("auc", "dbm")).as_dict()
    for key in ("F", "ddf", "p", "se"):
        assert dbm["rrrc"][key] == pytest.approx(or_["rrrc"][key], rel=1e-9)
    assert dbm["rrrc"]["modalities"]["1"]["df"] == pytest.approx(12.7446, abs=1e-4)
    assert dbm["rrfc"]["F"] == pytest.approx(8.704, rel=1e-9) and dbm["rrfc"]["df"] == 4
    # DBM fixed readers: F on (1, (t-1)(K-1) = 113) df; same statistic as OR's chi2 / (t-1) with the jackknife
    assert dbm["frrc"]["ddf"] == 113 and dbm["frrc"]["F"] == pytest.approx(or_["frrc"]["chi2"], rel=1e-9)
    assert dbm["frrc"]["p"] > or_["frrc"]["p"]  # F(1, 113) has heavier tails than chi2(1)
    # the DBM mean squares are K times the OR ones (Hillis 2008)
    assert dbm["mean_squares"]["ms_t"] == pytest.approx(114 * or_["mean_squares"]["ms_t"], rel=1e-9)


def test_auc_matches_sklearn_and_wafroc_of_roc_data_is_the_auc(vandyke):
    from sklearn.metrics import roc_auc_score

    data = mrmc.read_roc_csv(vandyke)
    theta, jk = mrmc.fom_jackknife(data, "auc")
    truth = np.r_[np.zeros(len(data.normal_cases)), np.ones(len(data.abnormal_cases))]
    scores = np.concatenate([data.fp[0, 2], data.ll[0, 2, :, 0]])
    assert theta[0, 2] == pytest.approx(roc_auc_score(truth, scores), abs=1e-15)
    assert np.allclose(mrmc.fom_jackknife(data, "wafroc")[0], theta)
    assert np.allclose(mrmc.fom_jackknife(data, "afroc")[1], jk)


def _naive_fom(fp, ll, weights, fom):
    """Loop form of Chakraborty's definitions, for one reader × modality."""
    total, norm = 0.0, 0.0
    for x in fp:
        for k2 in range(ll.shape[0]):
            for l in range(ll.shape[1]):
                w = weights[k2, l] if fom == "wafroc" else float(weights[k2, l] > 0)
                if w == 0:
                    continue
                y = ll[k2, l]
                total += w * (1.0 if y > x else 0.5 if y == x else 0.0)
    n_abnormal = ll.shape[0] if fom == "wafroc" else int((weights > 0).sum())
    return total / (len(fp) * n_abnormal)


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        w.writerows(rows)
    return path


def _tiny_froc(tmp_path):
    """2 normal cases (N1 NL 2; N2 unmarked, declared by lesion 0 in the lesions file), 2 abnormal (A1 one
    lesion LL 3; A2 lesions 1 (w .25) LL 1,
    2 (w .75) unmarked, NL 4 on A2 which wAFROC ignores); 2 readers × 2 modalities (reader 2 / modality 2
    copies with other ratings so the analysis runs)."""
    lesions = _write(tmp_path / "lesions.csv", ["case", "lesion", "weight"],
                     [["N2", 0, ""], ["A1", 1, 1.0], ["A2", 1, 0.25], ["A2", 2, 0.75]])
    rows = []
    for m, r, shift in (("M1", "R1", 0), ("M1", "R2", 1), ("M2", "R1", 2), ("M2", "R2", -1)):
        rows += [[m, r, "N1", 0, "NL", 0, "", 2 + shift], [m, r, "A1", 1, "LL", 1, 1.0, 3],
                 [m, r, "A2", 1, "LL", 1, 0.25, 1 + abs(shift)], [m, r, "A2", 1, "NL", 0, "", 4]]
    marks = _write(tmp_path / "marks.csv", list(mrmc.FROC_COLUMNS), rows)
    return marks, lesions


def test_wafroc_and_afroc_by_hand(tmp_path):
    marks, lesions = _tiny_froc(tmp_path)
    data = mrmc.read_froc_csv(marks, lesions)
    assert data.normal_cases == ["N1", "N2"] and data.abnormal_cases == ["A1", "A2"]
    assert np.isneginf(data.fp[:, :, 1]).all()
    theta_w, jk = mrmc.fom_jackknife(data, "wafroc")
    theta_a, _ = mrmc.fom_jackknife(data, "afroc")
    # M1 R1: FP(N1) = 2, FP(N2) = −inf. A1 (LL 3): ψ = 1, 1. A2 lesion 1 (LL 1, w .25): ψ = 0, 1; lesion 2
    # unmarked (−inf, w .75): ψ = 0, ½ (tie with the unmarked normal case).
    # wAFROC = (2 + .25·1 + .75·.5) / (2 · 2) = 0.65625; AFROC = (2 + 1 + .5) / (2 · 3 lesions) = 0.58333
    assert theta_w[0, 0] == pytest.approx(0.65625) and theta_a[0, 0] == pytest.approx(3.5 / 6)
    # M2 R2 (shift −1): FP = 1, −inf; A1 → 2; A2 lesion 1 rated 2 → 1, 1; lesion 2 → 0, ½
    assert theta_w[1, 1] == pytest.approx((2 + 0.5 + 0.375) / 4) and theta_a[1, 1] == pytest.approx(4.5 / 6)
    # deleting N2 (the unmarked normal case) from M1 R1 leaves FP = 2 only: (1 + 0 + 0) / 2
    assert jk[0, 0, 1] == pytest.approx(0.5)


def test_wafroc_jackknife_matches_naive_case_deletion(dataset05):
    data = mrmc.read_froc_csv(*dataset05)
    assert data.shape == (2, 9, 45, 47) and data.n_lesions.sum() == 59
    for fom in ("wafroc", "afroc"):
        theta, jk = mrmc.fom_jackknife(data, fom)
        for i, j in ((0, 0), (1, 4)):
            fp, ll = data.fp[i, j], data.ll[i, j]
            assert theta[i, j] == pytest.approx(_naive_fom(fp, ll, data.weights, fom), abs=1e-12)
            for k in (0, 44, 45, 91):  # first/last normal, first/last abnormal
                if k < 45:
                    expected = _naive_fom(np.delete(fp, k), ll, data.weights, fom)
                else:
                    expected = _naive_fom(fp, np.delete(ll, k - 45, axis=0), np.delete(data.weights, k - 45, axis=0),
                                          fom)
                assert jk[i, j, k] == pytest.approx(expected, abs=1e-12)


def test_dataset05_wafroc_analysis_runs_and_is_consistent(dataset05):
    data = mrmc.read_froc_csv(*dataset05)
    or_ = mrmc.run_mrmc(data, mrmc.MRMCParams("wafroc", "or")).as_dict()
    dbm = mrmc.run_mrmc(data, mrmc.MRMCParams("wafroc", "dbm")).as_dict()
    assert or_["rrrc"]["F"] == pytest.approx(dbm["rrrc"]["F"], rel=1e-9)
    assert or_["rrrc"]["ddf"] == pytest.approx(dbm["rrrc"]["ddf"], rel=1e-9)
    lo, hi = or_["rrrc"]["ci"]
    assert lo < or_["rrrc"]["estimate"] < hi
    assert (or_["rrrc"]["p"] < 0.05) == (hi < 0 or lo > 0)  # the CI and the test agree
    assert all(0 < v < 1 for v in or_["modalities"].values())


@pytest.mark.parametrize("rows, message", [
    ([["1", "1", "1", "0", "2"], ["1", "1", "2", "1", "nan"]], "must be finite"),
    ([["1", "1", "1", "0", "2"], ["1", "1", "1", "1", "3"]], "truth 1 here"),
    ([["1", "1", "1", "0", "2"], ["1", "1", "2", "2", "3"]], r"0 \(normal\) or 1"),
    ([["1", "1", "1", "0", "2"], ["1", "1", "1", "0", "3"]], "a second rating"),
    ([["1", "1", "1", "0", "2"], ["1", "1", "2", "1", "3"], ["2", "1", "1", "0", "2"]], "not fully crossed"),
])
def test_bad_roc_input_is_refused(tmp_path, rows, message):
    path = _write(tmp_path / "r.csv", list(mrmc.ROC_COLUMNS), rows)
    with pytest.raises(NeuroContrastError, match=message):
        mrmc.read_roc_csv(path)


def test_bad_froc_input_is_refused(tmp_path):
    marks, lesions = _tiny_froc(tmp_path)
    bad = _write(tmp_path / "l2.csv", ["case", "lesion", "weight"], [["A1", 1, 1.0], ["A2", 1, 0.5], ["A2", 2, 0.75]])
    with pytest.raises(NeuroContrastError, match="sum to 1.25"):
        mrmc.read_froc_csv(marks, bad)
    one = _write(tmp_path / "l3.csv", ["case", "lesion", "weight"], [["A1", 1, 1.0], ["A2", 2, 1.0]])
    with pytest.raises(NeuroContrastError, match="does not list"):
        mrmc.read_froc_csv(marks, one)
    rows = list(csv.reader(open(marks, encoding="utf-8")))
    _write(tmp_path / "m2.csv", rows[0], rows[1:] + [rows[2]])
    with pytest.raises(NeuroContrastError, match="second LL mark"):
        mrmc.read_froc_csv(tmp_path / "m2.csv", lesions)
    with pytest.raises(NeuroContrastError, match="ROC data"):
        mrmc.fom_jackknife(mrmc.read_froc_csv(marks, lesions), "auc")
    with pytest.raises(NeuroContrastError, match="fom must be one of"):
        mrmc.MRMCParams(fom="roc")


def test_identical_ratings_are_refused(tmp_path):
    rows = [[r, m, c, int(c > 2), 1] for r in (1, 2) for m in (1, 2) for c in (1, 2, 3, 4)]
    path = _write(tmp_path / "flat.csv", list(mrmc.ROC_COLUMNS), rows)
    with pytest.raises(NeuroContrastError, match="no information"):
        mrmc.run_mrmc(mrmc.read_roc_csv(path))


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "neurocontrast", "reader", "mrmc", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_contract_and_exports(vandyke, tmp_path):
    out = tmp_path / "out"
    proc = _cli(vandyke, "--fom", "auc", "--analysis", "or", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "F = 4.456, ddf = 15.26, p = 0.05167" in proc.stdout
    d = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(d["modalities"]) == {"1", "2"} and d["readers"]["2"]["4"] == pytest.approx(0.99935588, abs=5e-9)
    assert {"F", "ddf", "p", "ci"} <= set(d["rrrc"]) and {"chi2", "df", "p", "ci"} <= set(d["frrc"])
    assert {"F", "df", "p", "ci"} <= set(d["rrfc"])
    assert "| 4 | 0.9731 | 0.9994 |" in (out / "results.md").read_text(encoding="utf-8")
    from openpyxl import load_workbook

    wb = load_workbook(out / "rjafroc.xlsx")
    assert wb.sheetnames == ["Truth", "NL", "LL"]
    assert wb["Truth"].max_row == 1 + 114 and wb["NL"].max_row == 1 + 2 * 5 * 69 and wb["LL"].max_row == 1 + 2 * 5 * 45
    imrmc = (out / "imrmc.txt").read_text(encoding="utf-8").splitlines()
    assert "BEGIN DATA:" in imrmc and len(imrmc) - imrmc.index("BEGIN DATA:") - 1 == 114 + 2 * 5 * 114
    tidy = list(csv.DictReader(open(out / "ratings_tidy.csv", encoding="utf-8")))
    assert len(tidy) == 1140
    assert (out / "reader_foms.png").stat().st_size > 5000


def test_cli_froc_and_refusals(dataset05, vandyke, tmp_path):
    marks, lesions = dataset05
    proc = _cli(marks, "--lesions", lesions, "--fom", "wafroc", "--analysis", "dbm", "--out", tmp_path / "f",
                "--no-plots", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = json.loads((tmp_path / "f" / "results.json").read_text(encoding="utf-8"))
    assert d["paradigm"] == "FROC" and d["design"]["n_lesions"] == 59 and math.isfinite(d["rrrc"]["F"])
    assert not (tmp_path / "f" / "imrmc.txt").exists()
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "f" / "rjafroc.xlsx")            # every mark of the input, in RJafroc's layout
    n_nl = sum(1 for r in csv.DictReader(open(marks, encoding="utf-8")) if r["mark_type"] == "NL")
    assert wb["NL"].max_row - 1 == n_nl and wb["LL"].max_row - 1 == 1581 - n_nl
    assert wb["Truth"].max_row - 1 == 45 + 59
    proc = _cli(vandyke, "--fom", "wafroc", "--out", tmp_path / "g", cwd=tmp_path)
    assert proc.returncode != 0 and "needs FROC marks" in proc.stderr
    assert not (tmp_path / "g" / "results.json").exists()


def test_identical_reader_differences_leave_the_fixed_case_test_undefined(tmp_path):
    """Two readers whose modality differences are equal: MS(T×R) is 0 (not 1e-34 round-off), the RRFC F is
    undefined rather than astronomically large, and RRRC falls back to ddf = ∞ (Hillis's limit)."""
    rng = np.random.default_rng(3)
    truth = np.r_[np.zeros(6, int), np.ones(6, int)]
    base = rng.permutation(12).astype(float)
    rows = []
    for r in ("A", "B"):
        for m, shift in (("1", 0.0), ("2", 0.0)):
            ratings = base.copy()
            if m == "2":
                ratings[truth == 1] += 3.5      # the same better separation for both readers
            for c in range(12):
                rows.append([r, m, c, truth[c], ratings[c]])
    path = _write(tmp_path / "same.csv", list(mrmc.ROC_COLUMNS), rows)
    for analysis in ("or", "dbm"):
        d = mrmc.run_mrmc(mrmc.read_roc_csv(path), mrmc.MRMCParams("auc", analysis)).as_dict()
        assert d["mean_squares"]["ms_tr"] == 0.0
        assert d["rrfc"]["F"] is None and d["rrfc"]["p"] is None and "undefined" in d["rrfc"]["note"]
        assert d["rrrc"]["ddf"] == "inf" and 0 < d["rrrc"]["p"] < 1
    text = mrmc.results_markdown(mrmc.run_mrmc(mrmc.read_roc_csv(path)))
    assert "undefined" in text and "e+" not in text
