"""localign.eval.claims: a claim's difference, its 95 % CI and the verdict."""

from __future__ import annotations

import math

import pytest

from localign.eval.claims import compare_claim, read_claims, verdict, write_claims


def test_difference_and_ci_by_hand():
    row = compare_claim("05", "LoVT", "LoVT beats ConVIRT", "Dice", "lovt", [3.0, 5.0], "convirt", [1.0, 1.0, 1.0])
    # means 4 and 1; s_a² = 2 over n 2, s_b² = 0
    assert row["difference"] == 3.0 and row["n_a"] == 2 and row["n_b"] == 3
    assert row["ci_low"] == pytest.approx(3 - 1.96) and row["ci_high"] == pytest.approx(3 + 1.96)
    assert row["verdict"] == "holds"
    flipped = compare_claim("05", "LoVT", "ConVIRT below LoVT", "Dice", "convirt", [1.0, 1.0], "lovt", [3.0, 5.0], higher="b")
    assert flipped["difference"] == 3.0 and flipped["verdict"] == "holds"
    against = compare_claim("05", "p", "c", "m", "a", [0.0, 0.1], "b", [5.0, 5.1])
    assert against["verdict"] == "contradicted"


def test_threshold_single_values_and_nan():
    row = compare_claim("06", "LoVT", "collapse", "centroid std", "threshold", [0.05, 0.05, 0.05], "no_global", [0.01, 0.02, 0.03])
    assert row["verdict"] == "holds"
    fixed = compare_claim("06", "p", "above 0.5", "m", "a", [0.6, 0.8], "0.5", 0.5)
    assert fixed["n_b"] == 1 and fixed["ci_low"] == pytest.approx(0.2 - 1.96 * 0.1) and fixed["verdict"] == "holds"
    single = compare_claim("08", "p", "c", "m", "a", [2.0], "b", [1.0])
    assert math.isnan(single["ci_low"]) and single["verdict"] == "not shown"
    nan_dropped = compare_claim("08", "p", "c", "m", "a", [2.0, float("nan"), 2.0], "b", [1.0, 1.0])
    assert nan_dropped["n_a"] == 2 and nan_dropped["verdict"] == "holds"  # no spread, difference 1
    with pytest.raises(ValueError, match="no finite value"):
        compare_claim("08", "p", "c", "m", "a", [float("nan")], "b", [1.0])
    with pytest.raises(ValueError, match="higher"):
        compare_claim("08", "p", "c", "m", "a", [1.0], "b", [1.0], higher="c")
    assert verdict(-1.0, 1.0) == "not shown"


def test_files_round_trip_and_errors(tmp_path):
    rows = [compare_claim("05", "LoVT", "c", "m", "a", [2.0, 2.2], "b", [1.0, 1.1])]
    write_claims(rows, tmp_path / "05")
    table = read_claims([tmp_path / "05"])
    assert list(table["verdict"]) == ["holds"] and table.loc[0, "difference"] == pytest.approx(1.05)
    with pytest.raises(FileNotFoundError, match="no claims file"):
        read_claims([tmp_path / "06"])
    with pytest.raises(ValueError, match="unknown verdicts"):
        write_claims([{**rows[0], "verdict": "maybe"}], tmp_path / "x")


def test_display_puts_the_ci_in_one_cell():
    from localign.eval.claims import claims_display
    import pandas as pd

    rows = [compare_claim("05", "LoVT", "c", "Dice", "lovt", [3.0, 5.0], "convirt", [1.0, 1.0]),
            compare_claim("08", "LIMITR", "d", "CNR", "limitr", [2.0], "gloria", [1.0])]
    shown = claims_display(pd.DataFrame(rows))
    assert shown.loc[0, "difference [95 % CI]"] == "3 [1.04, 4.96]"
    assert shown.loc[0, "a"] == "lovt: 4 (n=2)" and shown.loc[1, "difference [95 % CI]"] == "1"
    assert list(shown["verdict"]) == ["holds", "not shown"]
