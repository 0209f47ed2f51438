"""The statistics against cases worked out by hand (not by re-running scipy's formulas)."""

from __future__ import annotations

import math

import pytest

from flotorch_nb.evals._stats import estimate, paired


def test_binary_estimate_is_wilson_with_the_binomial_se() -> None:
    est = estimate([1.0] * 3 + [0.0] * 1)  # 3 of 4
    assert est.mean == 0.75 and est.se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    # Wilson, z = 1.96: centre (0.75 + 0.4802) / 1.9604 = 0.62759..., half 0.4802...: by hand
    z = 1.959963984540054
    centre = (0.75 + z * z / 8) / (1 + z * z / 4)
    half = z / (1 + z * z / 4) * math.sqrt(0.75 * 0.25 / 4 + z * z / 64)
    assert (est.ci_low, est.ci_high) == pytest.approx((centre - half, centre + half))
    assert 0.0 <= est.ci_low < est.ci_high <= 1.0


def test_all_correct_keeps_a_real_interval() -> None:
    est = estimate([1.0] * 10)
    assert est.mean == 1.0 and est.se == 0.0 and est.ci_high == 1.0
    assert est.ci_low == pytest.approx(0.7224672, abs=1e-6)  # Wilson 10/10: a known table value


def test_continuous_estimate_is_the_t_interval() -> None:
    values = [0.2, 0.4, 0.6, 0.8, 1.0]  # mean 0.6, s = sqrt(0.1) = 0.3162...
    est = estimate(values)
    se = math.sqrt(0.1) / math.sqrt(5)
    t4 = 2.7764451051977987  # the 97.5 % point of Student's t with 4 degrees of freedom
    assert est.mean == pytest.approx(0.6) and est.se == pytest.approx(se)
    assert (est.ci_low, est.ci_high) == pytest.approx((0.6 - t4 * se, 0.6 + t4 * se))
    assert "Student t" in est.method


def test_empty_and_single_values() -> None:
    assert math.isnan(estimate([]).mean) and estimate([]).n == 0
    one = estimate([0.5])
    assert one.mean == 0.5 and math.isnan(one.se)


def test_mcnemar_exact_small_case() -> None:
    # 10 samples: a right on 6, b right on 2; discordant: a only 4, b only 0 -> p = 2 * (1/2)^4 = 0.125
    a = [1.0] * 6 + [0.0] * 4
    b = [1.0] * 2 + [0.0] * 8
    d, low, high, p, method, a_only, b_only, caveat = paired(a, b)
    assert (a_only, b_only) == (4, 0) and p == pytest.approx(0.125) and d == pytest.approx(0.4)
    assert "McNemar" in method and caveat is not None and "only 10 samples" in caveat
    # Bonett-Price by hand: p1 = 5/12, p2 = 1/12, centre 4/12, SE = sqrt((6/12 - (4/12)^2) / 12).
    z, centre = 1.959963984540054, 4 / 12
    half = z * math.sqrt((6 / 12 - centre**2) / 12)
    assert (low, high) == pytest.approx((centre - half, centre + half))


def test_mcnemar_without_discordant_pairs() -> None:
    d, low, high, p, _, a_only, b_only, _ = paired([1.0] * 10, [1.0] * 10)
    assert (d, p, a_only, b_only) == (0.0, 1.0, 0, 0)
    # Not a zero-width interval (what plain Wald gives): p1 = p2 = 1/12, SE = sqrt((2/12) / 12).
    z = 1.959963984540054
    half = z * math.sqrt((2 / 12) / 12)
    assert (low, high) == pytest.approx((-half, half)) and high > 0.2


def test_wilcoxon_exact_small_case() -> None:
    # Five positive differences with distinct ranks: the exact two-sided p is 2 / 2^5 = 0.0625.
    a = [0.5, 0.6, 0.7, 0.8, 0.9]
    b = [0.4, 0.4, 0.4, 0.4, 0.4]
    d, low, high, p, method, a_only, b_only, _ = paired(a, b, binary=False)
    assert p == pytest.approx(0.0625) and d == pytest.approx(0.3)
    assert "Wilcoxon" in method and a_only is None and b_only is None
    se = math.sqrt(0.025) / math.sqrt(5)
    t4 = 2.7764451051977987
    assert (low, high) == pytest.approx((0.3 - t4 * se, 0.3 + t4 * se))


def test_no_caveat_for_large_samples_with_many_discordant_pairs() -> None:
    a = [1.0] * 40 + [0.0] * 60
    b = [0.0] * 20 + [1.0] * 20 + [0.0] * 20 + [1.0] * 20 + [0.0] * 20
    *_, caveat = paired(a, b)
    assert caveat is None


def test_unaligned_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        paired([1.0], [1.0, 0.0])
