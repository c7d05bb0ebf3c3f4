"""Paired statistics of a bake-off: the difference of an arm to the baseline seed by seed, its 95% confidence
interval, a verdict, and the smallest effect the seeds at hand could detect.

Seed ``s`` of every arm starts from the same initial weights and sees the same data order where the mechanism
allows, so arm and baseline are compared *paired*: ``d_s = arm_s - baseline_s``. With ``n`` seeds, mean
``d``, sample standard deviation ``s_d``:

* 95% interval: ``d +- t(0.975, n - 1) * s_d / sqrt(n)`` (paired t);
* verdict: ``better`` / ``worse`` when the interval excludes 0 (in the metric's good / bad direction),
  ``undetermined`` otherwise (and always with fewer than 2 seeds);
* smallest detectable effect (two-sided alpha 0.05, power 0.8):
  ``MDE = (t(1 - alpha / 2, n - 1) + t(power, n - 1)) * s_d / sqrt(n)`` -- the usual normal-approximation
  formula with Student quantiles in place of normal ones (it slightly understates the exact noncentral-t value
  at very small ``n``);
* seeds needed for an effect ``delta``: the smallest ``n >= 2`` whose MDE (with ``s_d`` held fixed) is at most
  ``delta``.

Student's t quantiles are computed here (regularised incomplete beta by continued fraction, then bisection), so
no SciPy is needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

ALPHA = 0.05
POWER = 0.8
VERDICTS = ("better", "worse", "undetermined")


def _betacf(a: float, b: float, x: float) -> float:
    # continued fraction of the incomplete beta function (modified Lentz)
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(c) > tiny else 1.0 + aa / tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(c) > tiny else 1.0 + aa / tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. ``t_quantile(0.975, 1)`` = 12.706)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest paired mean difference a two-sided paired t-test at ``alpha`` detects with ``power``, given the
    standard deviation ``sd`` of the per-seed differences and ``n`` seeds (None below 2 seeds)."""
    if n < 2:
        return None
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def seeds_needed(
    sd: float, effect: float, alpha: float = ALPHA, power: float = POWER, max_seeds: int = 1000
) -> int | None:
    """The fewest seeds (>= 2) whose :func:`detectable_effect` is at most ``effect`` (None above ``max_seeds``)."""
    if effect <= 0:
        raise ValueError(f"the effect must be positive, got {effect}")
    for n in range(2, max_seeds + 1):
        mde = detectable_effect(sd, n, alpha, power)
        if mde is not None and mde <= effect:
            return n
    return None


def paired_comparison(
    arm: Sequence[float],
    baseline: Sequence[float],
    lower_is_better: bool = True,
    alpha: float = ALPHA,
    power: float = POWER,
) -> dict[str, Any]:
    """Paired difference ``arm - baseline`` over seeds, its ``1 - alpha`` interval, verdict and detectable effect.

    Returns ``n``, ``difference`` (mean), ``sd`` (of the differences), ``ci`` (``[low, high]``, None below 2
    seeds), ``verdict`` (``better`` / ``worse`` / ``undetermined``) and ``detectable_effect`` (see the module
    docstring; reported whatever the verdict).
    """
    if len(arm) != len(baseline):
        raise ValueError(f"paired values need as many arm as baseline seeds, got {len(arm)} and {len(baseline)}")
    diffs = [float(a) - float(b) for a, b in zip(arm, baseline)]
    n = len(diffs)
    out: dict[str, Any] = {"n": n, "difference": statistics.fmean(diffs) if diffs else None, "sd": None,
                           "ci": None, "verdict": "undetermined", "detectable_effect": None}  # fmt: skip
    if n < 2:
        return out
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    out.update(sd=sd, ci=[low, high], detectable_effect=detectable_effect(sd, n, alpha, power))
    if low > 0 or high < 0:
        out["verdict"] = "better" if (mean < 0) == lower_is_better else "worse"
    return out


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value) and the values."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }
