"""Confidence intervals (coverage in simulation) and the early-stopping rule (worked examples)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infermeter.metrics.confidence import (binom_cdf, early_stopping_supports, mean_ci, min_samples_for_claim,
                                           order_stat_ranks, percentile_ci, repeat_ci, t_ppf)


def test_binom_cdf_matches_exact_sum():
    for n, p in ((10, 0.3), (80, 0.1), (459, 0.01)):
        for k in (0, 1, 3, n // 2):
            exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
            assert binom_cdf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("df,prob,table", [(1, 0.975, 12.706), (2, 0.975, 4.303), (5, 0.975, 2.571),
                                           (10, 0.975, 2.228), (30, 0.995, 2.750), (199, 0.975, 1.972)])
def test_t_quantiles_match_tables(df, prob, table):
    assert t_ppf(prob, df) == pytest.approx(table, abs=0.01)


# Worked examples, derived by hand: the claim "Pp <= X" at confidence c with k of n over X is
# supported iff P(Binomial(n, 1 - p/100) <= k) <= 1 - c.
#   k = 0: (p/100)^n <= 1 - c  ->  P99 @ 99 %: n >= ln(0.01)/ln(0.99) = 458.2 -> 459;  P90 @ 99 %: 43.7 -> 44.
#   n = 80, P90: P(B <= 1) = 0.9^80 + 80*0.1*0.9^79 = 0.00218 <= 0.01, P(B <= 2) = 0.0107 > 0.01 -> allowed 1.
#   n = 1000, P99 @ 99 %: P(B <= 2) = 0.00274, P(B <= 3) = 0.0101 -> allowed 2.
@pytest.mark.parametrize("n,k,p,c,supported,allowed", [
    (459, 0, 99, 0.99, True, 0), (458, 0, 99, 0.99, False, -1),
    (44, 0, 90, 0.99, True, 0), (43, 0, 90, 0.99, False, -1),
    (80, 1, 90, 0.99, True, 1), (80, 2, 90, 0.99, False, 1),
    (1000, 2, 99, 0.99, True, 2), (1000, 3, 99, 0.99, False, 2),
    (2, 0, 99, 0.99, False, -1),  # "P99" from 2 requests supports nothing
    (29, 0, 90, 0.95, True, 0),  # 0.9^29 = 0.047 <= 0.05
])
def test_early_stopping_worked_examples(n, k, p, c, supported, allowed):
    assert early_stopping_supports(n, k, p, c) == (supported, allowed)


def test_early_stopping_allowance_grows_below_the_nominal_rate():
    _, allowed = early_stopping_supports(10_000, 0, 99, 0.99)
    assert 60 < allowed < 100  # expected overlatency 100; the 99 % margin keeps it well below
    assert min_samples_for_claim(99) == 459 and min_samples_for_claim(90) == 44


def test_percentile_ci_says_unsupported_when_the_bound_is_beyond_the_max():
    assert percentile_ci([1.0, 2.0], 99)["status"] == "unsupported"
    x = np.arange(1, 301, dtype=float)
    assert order_stat_ranks(300, 99)[1] == 301 and not percentile_ci(x, 99)["supported"]
    ci = percentile_ci(np.arange(1, 1001, dtype=float), 99)
    assert ci["supported"] and ci["low"] <= 990 <= ci["high"] <= 1000 and ci["n"] == 1000


def test_mean_and_repeat_intervals():
    assert not mean_ci([5.0])["supported"]
    ci = repeat_ci([10.0, 11.0, 12.0])  # mean 11, s = 1, t(0.975, 2) = 4.303 -> +/- 2.484
    assert ci["low"] == pytest.approx(11 - 4.303 / math.sqrt(3), abs=1e-3)
    assert ci["high"] == pytest.approx(11 + 4.303 / math.sqrt(3), abs=1e-3)
    a = mean_ci([1.0, 2.0, 3.0, 10.0], method="bootstrap", seed=3)
    assert a == mean_ci([1.0, 2.0, 3.0, 10.0], method="bootstrap", seed=3)  # seeded: reproducible


DISTS = {
    # name: (sampler, true mean, true median, true p90)
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 0.5, n), math.exp(0.125), 1.0, math.exp(0.5 * 1.2815515655)),
    "exponential": (lambda rng, n: rng.exponential(1.0, n), 1.0, math.log(2), math.log(10)),
}


@pytest.mark.parametrize("dist", sorted(DISTS))
def test_interval_coverage_is_close_to_nominal(dist):
    sample, mean, median, p90 = DISTS[dist]
    rng = np.random.default_rng(2024)
    trials, n = 500, 200
    hits = {"mean_t": 0, "median": 0, "p90": 0, "mean_boot": 0}
    for i in range(trials):
        x = sample(rng, n)
        c = mean_ci(x, 0.95)
        hits["mean_t"] += c["low"] <= mean <= c["high"]
        c = percentile_ci(x, 50, 0.95)
        hits["median"] += c["low"] <= median <= c["high"]
        c = percentile_ci(x, 90, 0.95)
        hits["p90"] += c["low"] <= p90 <= c["high"]
        if i < 200:  # the bootstrap is slower: 200 trials
            c = mean_ci(x, 0.95, method="bootstrap", n_boot=500, seed=i)
            hits["mean_boot"] += c["low"] <= mean <= c["high"]
    cover = {k: v / (200 if k == "mean_boot" else trials) for k, v in hits.items()}
    for key in ("mean_t", "median", "p90"):
        assert 0.92 <= cover[key] <= 0.98, (key, cover)
    assert 0.90 <= cover["mean_boot"] <= 0.99, cover  # 200 trials: wider binomial noise band


def test_large_samples_use_a_normal_approximation_that_agrees(monkeypatch):
    import infermeter.metrics.confidence as conf

    exact = (order_stat_ranks(150_000, 99), early_stopping_supports(150_000, 0, 99)[1])
    monkeypatch.setattr(conf, "EXACT_LIMIT", 1000)
    approx = (order_stat_ranks(150_000, 99), early_stopping_supports(150_000, 0, 99)[1])
    assert abs(approx[0][0] - exact[0][0]) <= 1 and abs(approx[0][1] - exact[0][1]) <= 1
    assert abs(approx[1] - exact[1]) <= 1
