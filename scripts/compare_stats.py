"""Whether two frameworks' accuracies over seeds differ: Welch's t, its CIs, TOST, Bonferroni.

Seeds give independent runs per framework with possibly unequal variances, hence Welch's t
(not Student's) with the Welch-Satterthwaite degrees of freedom. Equivalence is the two
one-sided tests (TOST) at level 0.05, which is the same as the 90% CI lying inside the margin.
The t quantiles come from scipy, already installed as a dependency of jax.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

EQUIVALENCE_MARGIN = 2.0  # Accuracy points: a difference inside +-2 counts as the same result.
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Comparison:
  """`a` minus `b`: means, standard deviations, the difference's CIs and tests."""

  n_a: int
  n_b: int
  mean_a: float
  mean_b: float
  std_a: float  # Sample standard deviation (ddof=1); nan for one seed.
  std_b: float
  diff: float
  ci95: tuple[float, float]
  ci90: tuple[float, float]
  df: float
  p_value: float  # Two-sided, for "the means differ".
  tost_p: float  # For "the means are within +-margin": equivalent when below ALPHA.
  margin: float

  @property
  def equivalent(self) -> bool:
    return self.tost_p < ALPHA


def welch(a: Sequence[float], b: Sequence[float], margin: float = EQUIVALENCE_MARGIN) -> Comparison:
  """Welch's comparison of the means of `a` and `b` (nan intervals with fewer than 2 each)."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  mean_a, mean_b, diff = a.mean(), b.mean(), a.mean() - b.mean()
  if min(len(a), len(b)) < 2:
    nan = math.nan
    std = [x.std(ddof=1) if len(x) > 1 else nan for x in (a, b)]
    return Comparison(
      len(a), len(b), mean_a, mean_b, *std, diff, (nan, nan), (nan, nan), nan, nan, nan, margin
    )
  var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(var_a + var_b)
  if se == 0:  # Identical seeds on each side: the difference is known exactly.
    df, p = math.inf, float(diff == 0)
    ci95 = ci90 = (diff, diff)
    tost = 0.0 if abs(diff) < margin else 1.0
  else:
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    t = stats.t(df, loc=diff, scale=se)  # The difference's sampling distribution.
    ci95, ci90 = t.interval(0.95), t.interval(0.90)
    p = 2 * min(t.cdf(0), t.sf(0))
    tost = max(t.cdf(-margin), t.sf(margin))  # H0: diff <= -margin; H0: diff >= margin.
  return Comparison(
    len(a),
    len(b),
    mean_a,
    mean_b,
    a.std(ddof=1),
    b.std(ddof=1),
    diff,
    tuple(map(float, ci95)),
    tuple(map(float, ci90)),
    float(df),
    float(p),
    float(tost),
    margin,
  )


def separated_epochs(
  curves: Mapping[str, tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
  alpha: float = ALPHA,
) -> tuple[float, list[dict]]:
  """The (recipe, epoch) pairs whose mean test accuracies differ, Bonferroni-corrected.

  Args:
    curves: recipe -> (a's per-seed curves, b's per-seed curves), each curve one value per epoch.
    alpha: the family-wise error rate over every epoch of every recipe.
  Returns:
    The per-test level (alpha / number of tests), and for every pair below it: recipe, epoch
    (1-based), the difference and its p-value. Pairs with fewer than 2 seeds a side are no test.
  """
  tests = []
  for recipe, (a, b) in curves.items():
    for epoch, (x, y) in enumerate(zip(np.transpose(a), np.transpose(b), strict=True), 1):
      comparison = welch(x, y)
      if not math.isnan(comparison.p_value):
        tests.append(
          {"recipe": recipe, "epoch": epoch, "diff": comparison.diff, "p_value": comparison.p_value}
        )
  level = alpha / len(tests) if tests else math.nan
  return level, [t for t in tests if t["p_value"] < level]
