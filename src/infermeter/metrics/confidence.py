"""Confidence intervals and the early-stopping rule, with numpy and the standard library only.

* ``mean_ci``: Student-t interval (default) or a seeded percentile bootstrap.
* ``percentile_ci``: distribution-free order-statistic interval.  With ``n``
  samples and ``B ~ Binomial(n, p/100)`` the interval ``[x_(l), x_(u)]`` (1-based
  order statistics) covers the true p-th percentile with probability
  ``P(l <= B <= u - 1)``; ``l`` and ``u`` are chosen so each tail is at most
  ``(1 - confidence) / 2``.  When ``u`` would have to exceed ``n`` the upper
  bound lies beyond the largest sample: the percentile is **unsupported**.
* ``repeat_ci``: t-interval over per-repeat values (e.g. throughput of repeats).
* ``early_stopping_supports``: MLPerf LoadGen's early-stopping idea for a
  latency claim "Pp <= X": with ``n`` samples of which ``k`` exceed ``X``,
  the claim is supported at ``confidence`` when ``P(Binomial(n, 1 - p/100) <= k)
  <= 1 - confidence`` — i.e. a system whose true over-bound fraction were
  ``1 - p/100`` (or worse) would show this few overlatency samples with at most
  ``1 - confidence`` probability.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from infermeter.core.samplecolumn import SampleColumn


# ---------------------------------------------------------------- binomial

EXACT_LIMIT = 200_000  # above this many samples, binomial tails use the normal approximation

def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (exact up to float rounding)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(_binom_cdf_all(n, p)[k])


def _binom_cdf_all(n: int, p: float) -> np.ndarray:
    """F(k) for k = 0..n."""
    i = np.arange(0, n + 1, dtype=float)
    lg = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))))  # log(j!)
    if p <= 0.0:
        return np.ones(n + 1)
    if p >= 1.0:
        out = np.zeros(n + 1)
        out[-1] = 1.0
        return out
    log_pmf = lg[n] - lg - lg[::-1] + i * math.log(p) + (n - i) * math.log1p(-p)
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


# ---------------------------------------------------------------- Student t

def t_ppf(prob: float, df: int) -> float:
    """Quantile of Student's t: exact for df 1 and 2, a Cornish-Fisher expansion
    (error < 1e-3 for df >= 3 at the usual levels) otherwise."""
    if df < 1:
        raise ValueError("df must be at least 1")
    if df == 1:
        return math.tan(math.pi * (prob - 0.5))
    if df == 2:
        return (2 * prob - 1) / math.sqrt(2 * prob * (1 - prob))
    z = NormalDist().inv_cdf(prob)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


# ---------------------------------------------------------------- intervals

def mean_ci(values: Sequence[float], confidence: float = 0.95, method: str = "t",
            n_boot: int = 2000, seed: int = 0) -> dict:
    """Interval for the mean: ``method`` "t" (Student) or "bootstrap" (percentile
    bootstrap with ``numpy.random.default_rng(seed)``)."""
    if isinstance(values, SampleColumn) and method == "t":  # exact mean and std, in bounded memory
        n = len(values)
        out: dict = {"n": n, "confidence": confidence, "method": method,
                     "estimate": values.mean() if n else None, "low": None, "high": None, "supported": n >= 2}
        if n >= 2:
            sd = values.std() * math.sqrt(n / (n - 1))  # population std to the sample's (ddof=1)
            half = t_ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
            out["low"], out["high"] = out["estimate"] - half, out["estimate"] + half
        return out
    x = _array(values)
    n = int(x.size)
    out = {"n": n, "confidence": confidence, "method": method,
           "estimate": float(x.mean()) if n else None, "low": None, "high": None, "supported": n >= 2}
    if n < 2:
        return out
    if method == "t":
        half = t_ppf(0.5 + confidence / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
        out["low"], out["high"] = out["estimate"] - half, out["estimate"] + half
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        a = (1 - confidence) / 2
        out["low"], out["high"] = (float(v) for v in np.quantile(means, [a, 1 - a]))
    else:
        raise ValueError(f"unknown method {method!r}")
    return out


def order_stat_ranks(n: int, percentile: float, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks ``(l, u)`` of the order-statistic interval; ``l == 0`` means
    no lower bound inside the sample, ``u == n + 1`` no upper bound."""
    q = percentile / 100.0
    alpha = (1 - confidence) / 2
    if n > EXACT_LIMIT:  # normal approximation to the binomial: same ranks to within one at this size
        z = NormalDist().inv_cdf(1 - alpha) * math.sqrt(n * q * (1 - q))
        lower, upper = int(math.floor(n * q - z)), int(math.ceil(n * q + z)) + 1
        return max(lower, 0), min(upper, n + 1)
    cdf = _binom_cdf_all(n, q)  # cdf[j] = P(B <= j)
    # lower: largest l with P(B <= l - 1) <= alpha
    ok = np.nonzero(cdf <= alpha)[0]
    lower = int(ok[-1]) + 1 if ok.size else 0
    # upper: smallest u with P(B <= u - 1) >= 1 - alpha
    reach = np.nonzero(cdf >= 1 - alpha)[0]
    upper = int(reach[0]) + 1 if reach.size else n + 1
    return lower, upper


def percentile_ci(values: Sequence[float], percentile: float, confidence: float = 0.95) -> dict:
    """Distribution-free interval for the ``percentile``-th percentile.

    ``supported`` is False (and ``high`` None) when the interval's upper bound
    would be beyond the largest sample: the data cannot bound that percentile.
    """
    if isinstance(values, SampleColumn):  # exact order statistics, in bounded memory
        n = len(values)
        estimate = values.percentile([percentile])[0] if n else None
        order_stat = values.order_stat  # 0-based
    else:
        x = np.sort(np.asarray(values, dtype=float))
        n = int(x.size)
        estimate = float(np.percentile(x, percentile)) if n else None
        order_stat = lambda k: float(x[k])  # noqa: E731
    out: dict = {"n": n, "percentile": percentile, "confidence": confidence, "estimate": estimate,
                 "low": None, "high": None, "supported": False}
    if n == 0:
        out["status"] = "unsupported"
        return out
    lower, upper = order_stat_ranks(n, percentile, confidence)
    out["low"] = order_stat(lower - 1) if lower >= 1 else None
    if upper <= n:
        out["high"] = order_stat(upper - 1)
        out["supported"] = True
    out["status"] = "supported" if out["supported"] else "unsupported"
    return out


def _array(values) -> np.ndarray:
    if isinstance(values, SampleColumn):
        return np.concatenate([np.empty(0), *values.chunks()])
    return np.asarray(values, dtype=float)


def repeat_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """t-interval over the values of repeated runs (e.g. their request throughput)."""
    return mean_ci(values, confidence, method="t")


# ---------------------------------------------------------------- early stopping

def early_stopping_supports(n: int, k: int, percentile: float, confidence: float = 0.99) -> tuple[bool, int]:
    """Does a sample of ``n`` with ``k`` over the bound support "P<percentile> <= bound"?

    Returns ``(supported, max_overlatency_allowed)``: the largest ``k`` for which
    ``P(Binomial(n, 1 - percentile/100) <= k) <= 1 - confidence`` (-1 when even
    zero overlatency samples are too few to support the claim).
    """
    if n <= 0:
        return False, -1
    tail = 1.0 - percentile / 100.0
    if n > EXACT_LIMIT:  # normal approximation (with continuity correction)
        z = NormalDist().inv_cdf(confidence)
        allowed = int(math.floor(n * tail - z * math.sqrt(n * tail * (1 - tail)) - 0.5))
        allowed = max(allowed, -1)
        return k <= allowed, allowed
    cdf = _binom_cdf_all(n, tail)
    ok = np.nonzero(cdf <= 1.0 - confidence)[0]
    allowed = int(ok[-1]) if ok.size else -1
    return k <= allowed, allowed


def min_samples_for_claim(percentile: float, confidence: float = 0.99) -> int:
    """Fewest samples for which zero overlatency samples support the claim:
    smallest n with ``(p/100)^n <= 1 - confidence``."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(percentile / 100.0) - 1e-12))
