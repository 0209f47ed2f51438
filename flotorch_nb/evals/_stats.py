"""Pure: the statistics of an evaluation, from scipy (never hand-rolled), each method stated.

One model x one scorer (``estimate``): the mean of the per-sample scores with

- binary scores (every value 0 or 1): SE = sqrt(p(1 - p) / n), and the **Wilson score interval**
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``), which stays inside [0, 1] and
  keeps its coverage at small n and at p near 0 or 1, where the normal (Wald) interval fails;
- other scores (a judge's 0..N, fractions over epochs): SE = s / sqrt(n) (sample standard deviation)
  and the **Student t interval** mean ± t(n-1) · SE (``scipy.stats.t``).

Two models on the same samples (``paired``): the test is **paired**, since both answered the very
same questions and the per-question difficulty cancels out:

- binary: the **exact McNemar test** — only the discordant pairs (one model right, the other wrong)
  carry information; under "no difference" each is equally likely to go either way, so the p-value is
  the two-sided binomial test of ``a_only`` successes in ``a_only + b_only`` trials at 1/2
  (``scipy.stats.binomtest``). The difference d = (a_only - b_only) / n gets the **Bonett-Price
  adjusted Wald interval** (Bonett & Price 2012): with p1 = (a_only + 1) / (n + 2) and
  p2 = (b_only + 1) / (n + 2), (p1 - p2) ± z · sqrt((p1 + p2 - (p1 - p2)²) / (n + 2)). The plain Wald
  interval collapses to zero width when there are no discordant pairs and undercovers when there are
  few; the adjusted one does neither;
- continuous: the **Wilcoxon signed-rank test** on the per-sample differences
  (``scipy.stats.wilcoxon``; all differences zero -> p = 1) and the t interval of their mean.

With fewer than ``SMALL_N`` samples (or, for McNemar, fewer than ``FEW_DISCORDANT`` discordant
pairs) the result carries a caveat: the interval is wide and a "no significant difference" says
little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CONFIDENCE", "Estimate", "Paired", "estimate", "is_binary", "paired"]

CONFIDENCE = 0.95
SMALL_N = 30
FEW_DISCORDANT = 10

WILSON = "Wilson score interval; SE = sqrt(p(1-p)/n)"
STUDENT = "Student t interval; SE = s/sqrt(n)"
MCNEMAR = (
    "exact McNemar test (two-sided binomial test on the discordant pairs); "
    "Bonett-Price adjusted Wald interval of the paired difference"
)
WILCOXON = "Wilcoxon signed-rank test on the paired differences; t interval of their mean"


def is_binary(values: Sequence[float]) -> bool:
    """Whether every value is 0 or 1 (an empty list counts as binary)."""
    return all(v in (0.0, 1.0) for v in values)


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and confidence interval, over ``n`` values."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    method: str


def estimate(
    values: Sequence[float], *, binary: bool | None = None, confidence: float = CONFIDENCE
) -> Estimate:
    """The mean of ``values`` with its SE and interval (see the module docstring for the methods)."""
    from scipy import stats

    n = len(values)
    binary = is_binary(values) if binary is None else binary
    method = WILSON if binary else STUDENT
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, method)
    mean = math.fsum(values) / n
    if binary:
        k = round(math.fsum(values))
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        return Estimate(mean, math.sqrt(mean * (1 - mean) / n), float(ci.low), float(ci.high), n, method)
    if n < 2:
        return Estimate(mean, math.nan, math.nan, math.nan, n, method)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0:
        return Estimate(mean, 0.0, mean, mean, n, method)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=se)
    return Estimate(mean, se, float(low), float(high), n, method)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two models on the same samples (``EvalResult.compare``)."""

    a: str
    b: str
    scorer: str
    n: int
    mean_a: float
    mean_b: float
    #: mean_a - mean_b
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    #: Binary scores: samples only ``a`` got right / only ``b`` got right (None for continuous ones).
    a_only: int | None
    b_only: int | None
    #: Samples where ``a`` / ``b`` has no value (no answer, or the scorer failed): counted as 0
    #: (``errors="zero"``) or their pairs left out (``"exclude"``).
    errors_a: int
    errors_b: int
    caveat: str | None
    confidence: float = CONFIDENCE
    errors: str = "zero"

    @property
    def significant(self) -> bool:
        """Whether p < 1 - confidence (0.05 by default)."""
        return self.p_value < 1 - self.confidence

    def text(self) -> str:
        """The comparison in a few plain lines."""
        pct = round(self.confidence * 100)
        lines = [
            f"{self.a} vs {self.b} on {self.scorer}, {self.n} paired samples",
            f"  mean {self.mean_a:.3f} vs {self.mean_b:.3f}: difference {self.difference:+.3f} "
            f"({pct}% CI {self.ci_low:+.3f} to {self.ci_high:+.3f}), p = {self.p_value:.4g}",
            f"  {self.method}",
        ]
        if self.a_only is not None:
            lines.append(
                f"  discordant pairs: {self.a_only} only {self.a} right, {self.b_only} only {self.b} right"
            )
        if self.errors_a or self.errors_b:
            lines.append(
                f"  no value ({'counted as 0' if self.errors == 'zero' else 'left out of the pairs'}): "
                f"{self.errors_a} for {self.a}, {self.errors_b} for {self.b}"
            )
        if self.caveat:
            lines.append(f"  caveat: {self.caveat}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        return f'<pre class="flotorch-eval-compare">{html.escape(self.text())}</pre>'


def paired(
    a_values: Sequence[float],
    b_values: Sequence[float],
    *,
    binary: bool | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float, float, str, int | None, int | None, str | None]:
    """(difference, low, high, p, method, a_only, b_only, caveat) of two aligned lists of scores."""
    from scipy import stats

    n = len(a_values)
    if n != len(b_values):
        raise ValueError("paired scores must be aligned: one value per sample for each model")
    binary = is_binary([*a_values, *b_values]) if binary is None else binary
    caveat = (
        f"only {n} samples: the interval is wide and a non-significant p-value says little"
        if n < SMALL_N
        else None
    )
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, MCNEMAR if binary else WILCOXON, None, None, caveat
    if binary:
        a_only = sum(1 for a, b in zip(a_values, b_values, strict=True) if a == 1.0 and b == 0.0)
        b_only = sum(1 for a, b in zip(a_values, b_values, strict=True) if a == 0.0 and b == 1.0)
        discordant = a_only + b_only
        p = float(stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
        d = (a_only - b_only) / n
        p1, p2 = (a_only + 1) / (n + 2), (b_only + 1) / (n + 2)
        centre, se = p1 - p2, math.sqrt(max(p1 + p2 - (p1 - p2) ** 2, 0.0) / (n + 2))
        z = float(stats.norm.ppf(0.5 + confidence / 2))
        if discordant < FEW_DISCORDANT:
            few = f"only {discordant} discordant pairs decide the exact test"
            caveat = f"{caveat}; {few}" if caveat else few
        return d, centre - z * se, centre + z * se, p, MCNEMAR, a_only, b_only, caveat
    diffs = [a - b for a, b in zip(a_values, b_values, strict=True)]
    spread = estimate(diffs, binary=False, confidence=confidence)
    p = 1.0 if all(x == 0 for x in diffs) else float(stats.wilcoxon(diffs).pvalue)
    return spread.mean, spread.ci_low, spread.ci_high, p, WILCOXON, None, None, caveat
