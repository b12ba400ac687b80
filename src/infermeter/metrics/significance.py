"""Is a difference between two runs more than noise?  Tests on per-request samples, numpy only.

* ``bootstrap_compare``: percentile-bootstrap confidence intervals of the difference
  B − A (and of the relative difference B / A − 1) of means, standard deviations and
  percentiles.  The resampled unit is the *request*: a request's values (one TTFT, or
  all of its inter-token gaps) are drawn together, so gaps of one request, which are
  not independent, do not count as independent evidence.  Each replicate is a vector
  of multinomial weights over the units, so every statistic of one sample comes from
  the same draws in a few vectorised passes; the work is bounded (at most ``budget``
  weighted values per side, and never fewer than ``MIN_RESAMPLES`` resamples).
  Percentiles inside the bootstrap are the smallest value whose cumulative weight
  reaches q (the inverted CDF); the point estimate uses numpy's default (linear
  interpolation), as vLLM's result keys do.
* ``mann_whitney``: the two-sided Mann-Whitney U rank test (normal approximation with
  tie correction and continuity correction), and the probability that a value of B
  is below one of A.
* ``welch_compare``: Welch's t interval of the difference of two groups' means (for
  per-repeat values such as throughput), with the Welch-Satterthwaite degrees of
  freedom rounded down.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from infermeter.metrics.confidence import t_ppf

DEFAULT_RESAMPLES = 1000
MIN_RESAMPLES = 200
BUDGET = 40_000_000  # weighted values touched per side over all resamples (time and memory bound)
CHUNK = 4_000_000  # weighted values per vectorised block


@dataclass(frozen=True)
class Difference:
    """B − A of one statistic, with its confidence interval."""

    statistic: str  # "mean", "std", "median", "p99", "p99.9", ... or "mean of repeats"
    a: float | None
    b: float | None
    diff: float | None  # b - a
    low: float | None  # interval of the difference
    high: float | None
    rel: float | None  # b / a - 1
    rel_low: float | None
    rel_high: float | None
    confidence: float
    method: str
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool:
        """The interval of B − A excludes 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _parse_stat(stat: str) -> float | None:
    """Percentile q for "median"/"pNN", None for "mean"/"std"."""
    if stat in ("mean", "std"):
        return None
    if stat == "median":
        return 50.0
    if stat.startswith("p"):
        try:
            q = float(stat[1:])
        except ValueError:
            q = -1.0
        if 0.0 < q < 100.0:
            return q
    raise ValueError(f"unknown statistic {stat!r} (mean, std, median or pNN)")


def point_estimate(values: np.ndarray, stat: str) -> float | None:
    if values.size == 0:
        return None
    if stat == "mean":
        return float(values.mean())
    if stat == "std":
        return float(values.std())  # population standard deviation, as vLLM's std_*_ms
    return float(np.percentile(values, _parse_stat(stat)))


def _units(values: np.ndarray, owner: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Values sorted ascending, each one's unit index (0..U-1; None: every value is its own
    unit, numbered by its sorted position) and U."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    if owner is None:
        return v, None, int(values.size)
    uniq, inverse = np.unique(np.asarray(owner)[order], return_inverse=True)
    return v, inverse.reshape(-1), int(uniq.size)


def _replicates(values: np.ndarray, owner: np.ndarray | None, stats: Sequence[str], n_boot: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n_boot`` bootstrap values of each statistic (units drawn with replacement)."""
    v, unit, n_units = _units(values, owner)
    size = v.size
    out = {s: np.empty(n_boot) for s in stats}
    qs = {s: _parse_stat(s) for s in stats}
    centred = v - v.mean()
    step = max(1, CHUNK // max(size, n_units))
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        draws = rng.integers(0, n_units, size=(m, n_units)) + (np.arange(m) * n_units)[:, None]
        counts = np.bincount(draws.ravel(), minlength=m * n_units).reshape(m, n_units)
        w = counts if unit is None else counts[:, unit]  # (m, size): how often each value was drawn
        total = w.sum(axis=1).astype(np.float64)
        total[total == 0] = np.nan  # only where units hold no value (never for a request's own value)
        cum = None
        for s in stats:
            q = qs[s]
            if s == "mean":
                out[s][start:start + m] = (w @ v) / total
            elif s == "std":
                mu = (w @ centred) / total
                out[s][start:start + m] = np.sqrt(np.maximum((w @ centred ** 2) / total - mu ** 2, 0.0))
            else:
                if cum is None:
                    cum = np.cumsum(w, axis=1)
                # first position whose cumulative weight reaches q of the total (the inverted CDF)
                idx = np.argmax(cum >= (q / 100.0 * total)[:, None], axis=1)
                out[s][start:start + m] = v[np.minimum(idx, size - 1)]
    return out


def resamples_for(size_a: int, size_b: int, n_boot: int = DEFAULT_RESAMPLES, budget: int = BUDGET) -> int:
    """Resamples that keep the work within ``budget`` weighted values per side (at least MIN_RESAMPLES)."""
    biggest = max(size_a, size_b, 1)
    return int(min(n_boot, max(MIN_RESAMPLES, budget // biggest)))


def bootstrap_compare(a: Sequence[float], b: Sequence[float], stats: Sequence[str], *,
                      a_owner: Sequence[int] | None = None, b_owner: Sequence[int] | None = None,
                      confidence: float = 0.95, n_boot: int = DEFAULT_RESAMPLES, seed: int = 0,
                      budget: int = BUDGET, unit: str = "request") -> dict[str, Difference]:
    """Bootstrap intervals of B − A for each statistic in ``stats`` (mean, std, median, pNN).

    ``a_owner``/``b_owner`` name the unit (``unit``: a request, a block of requests) each
    value belongs to; values of one unit are resampled together.  Without them every value is its own unit.  A side with
    no value gives a ``Difference`` whose numbers are None (never 0).
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    for s in stats:
        _parse_stat(s)
    units_a = int(np.unique(a_owner).size) if a_owner is not None and xa.size else int(xa.size)
    units_b = int(np.unique(b_owner).size) if b_owner is not None and xb.size else int(xb.size)
    boots = resamples_for(xa.size, xb.size, n_boot, budget)
    unit_word = unit if a_owner is not None else "value"
    method = f"bootstrap ({boots} resamples by {unit_word}, percentile interval)"
    out: dict[str, Difference] = {}
    if units_a < 2 or units_b < 2:
        for s in stats:
            ea, eb = point_estimate(xa, s), point_estimate(xb, s)
            diff = eb - ea if ea is not None and eb is not None else None
            out[s] = Difference(s, ea, eb, diff, None, None, diff / ea if diff is not None and ea else None,
                                None, None, confidence, method, units_a, units_b)
        return out
    rng = np.random.default_rng(seed)
    ra = _replicates(xa, None if a_owner is None else np.asarray(a_owner), stats, boots, rng)
    rb = _replicates(xb, None if b_owner is None else np.asarray(b_owner), stats, boots, rng)
    alpha = (1.0 - confidence) / 2.0
    for s in stats:
        ea, eb = point_estimate(xa, s), point_estimate(xb, s)
        d = rb[s] - ra[s]
        d = d[np.isfinite(d)]
        low, high = (float(x) for x in np.quantile(d, [alpha, 1 - alpha]))
        rel = rel_low = rel_high = None
        if ea:
            rel = eb / ea - 1.0
            with np.errstate(divide="ignore", invalid="ignore"):
                r = rb[s] / ra[s] - 1.0
            r = r[np.isfinite(r)]
            if r.size:
                rel_low, rel_high = (float(x) for x in np.quantile(r, [alpha, 1 - alpha]))
        out[s] = Difference(s, ea, eb, eb - ea, low, high, rel, rel_low, rel_high, confidence, method,
                            units_a, units_b)
    return out


@dataclass(frozen=True)
class RankTest:
    u: float  # U of sample A
    z: float
    p_value: float
    prob_b_lower: float  # P(a value of B < a value of A) + half the ties
    n_a: int
    n_b: int
    method: str = "Mann-Whitney U (two-sided, normal approximation, tie and continuity corrected)"

    def to_dict(self) -> dict:
        return asdict(self)


def average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties given their average rank, and the size of every tie group."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.concatenate(([True], xs[1:] != xs[:-1])) if xs.size else np.array([], dtype=bool)
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, xs.size))
    avg = starts + (counts + 1) / 2.0
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = avg[group]
    return ranks, counts


def cluster_variances(values: np.ndarray, blocks: np.ndarray) -> tuple[float, float]:
    """(variance of the mean when the blocks are the independent units, variance of the mean
    when every value is): the cluster-robust (linearised) estimate and var/n."""
    n = values.size
    uniq, inv = np.unique(blocks, return_inverse=True)
    k = uniq.size
    if n < 2 or k < 2:
        return float("nan"), float("nan")
    mean = float(values.mean())
    resid = np.bincount(inv, weights=values - mean)  # per block: sum of (y - mean)
    v_block = k / (k - 1) * float((resid ** 2).sum()) / n ** 2
    return v_block, float(values.var(ddof=1)) / n


def design_effect(a: np.ndarray, b: np.ndarray, a_blocks: np.ndarray, b_blocks: np.ndarray) -> float:
    """How much the blocks inflate the variance of the two sides' mean ranks (at least 1)."""
    ranks, _ = average_ranks(np.concatenate([a, b]))
    va, ia = cluster_variances(ranks[:a.size], a_blocks)
    vb, ib = cluster_variances(ranks[a.size:], b_blocks)
    if not all(math.isfinite(x) for x in (va, ia, vb, ib)) or ia + ib <= 0:
        return 1.0
    return max(1.0, (va + vb) / (ia + ib))


def mann_whitney(a: Sequence[float], b: Sequence[float], a_blocks: Sequence[int] | None = None,
                 b_blocks: Sequence[int] | None = None) -> RankTest | None:
    """The rank test of "A and B come from the same distribution"; None when a side is empty.

    With ``a_blocks``/``b_blocks`` (values close in time, which share the machine's state),
    z is divided by the square root of the design effect: the variance inflation of the
    sides' mean ranks that the blocks show (never below 1)."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = int(xa.size), int(xb.size)
    if n1 == 0 or n2 == 0:
        return None
    ranks, ties = average_ranks(np.concatenate([xa, xb]))
    n = n1 + n2
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    tie_term = float((ties.astype(float) ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value equal
        return RankTest(u1, 0.0, 1.0, 0.5, n1, n2)
    method = RankTest.method
    if a_blocks is not None and b_blocks is not None:
        deff = design_effect(xa, xb, np.asarray(a_blocks), np.asarray(b_blocks))
        var *= deff
        method += f", z divided by the blocks' design effect sqrt({deff:.2f})"
    dev = abs(u1 - mu)
    z = max(dev - 0.5, 0.0) / math.sqrt(var)
    p = min(1.0, 2.0 * (1.0 - NormalDist().cdf(z)))
    return RankTest(u1, math.copysign(z, u1 - mu), p, u1 / (n1 * n2), n1, n2, method)


def welch_compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                  statistic: str = "mean of repeats") -> Difference:
    """Welch's interval of mean(B) − mean(A) over per-run values (at least 2 per side).

    The relative interval divides the difference's interval by mean(A) (A's own
    uncertainty is left out of it: a slight understatement, said in the method)."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = int(xa.size), int(xb.size)
    ma = float(xa.mean()) if na else None
    mb = float(xb.mean()) if nb else None
    method = f"Welch t interval over repeats ({na} vs {nb} runs)"
    diff = mb - ma if ma is not None and mb is not None else None
    rel = diff / ma if diff is not None and ma else None
    if na < 2 or nb < 2:
        return Difference(statistic, ma, mb, diff, None, None, rel, None, None, confidence, method, na, nb)
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se = math.sqrt(va + vb)
    if se == 0.0:
        low = high = diff
    else:
        df = se ** 4 / ((va ** 2 / (na - 1) if va else 0.0) + (vb ** 2 / (nb - 1) if vb else 0.0))
        half = t_ppf(0.5 + confidence / 2.0, max(1, int(math.floor(df)))) * se
        low, high = diff - half, diff + half
    rel_low = low / ma if ma else None
    rel_high = high / ma if ma else None
    if ma is not None and ma < 0:
        rel_low, rel_high = rel_high, rel_low
    return Difference(statistic, ma, mb, diff, low, high, rel, rel_low, rel_high, confidence, method, na, nb)
