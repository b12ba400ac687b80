"""Small statistics helpers with the conventions of vLLM's serving benchmark.

Percentiles use numpy's default (linear interpolation); ``std`` is the
population standard deviation.  An empty sample has no value: every
statistic of it is None (null in JSON, never 0), and its count, 0, says so.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from infermeter.core.samplecolumn import SampleColumn, describe_column, pct_label

__all__ = ["describe", "min_samples_for", "pct_label"]


def describe(values_s: Sequence[float] | SampleColumn,
             percentiles: Iterable[float]) -> dict[str, float | None]:
    """mean/median/std/percentiles in milliseconds of a sample given in seconds (None when empty).

    A SampleColumn gives the same statistics, computed in bounded memory.
    """
    if isinstance(values_s, SampleColumn):
        return describe_column(values_s, percentiles)
    arr = np.asarray(values_s, dtype=float) * 1e3
    out: dict[str, float | None] = {"count": int(arr.size)}
    if arr.size == 0:
        out.update(mean=None, median=None, std=None, min=None, max=None)
        for p in percentiles:
            out[f"p{pct_label(p)}"] = None
        return out
    out.update(mean=float(arr.mean()), median=float(np.median(arr)), std=float(arr.std()),
               min=float(arr.min()), max=float(arr.max()))
    for p, v in zip(percentiles, np.percentile(arr, list(percentiles))):
        out[f"p{pct_label(p)}"] = float(v)
    return out


def min_samples_for(p: float) -> int:
    """Fewest samples for which the p-th percentile is not simply the maximum.

    With n samples the p-th percentile is an observed value below the maximum
    only when n * (1 - p/100) >= 1; fewer samples cannot support it.
    """
    tail = 1.0 - p / 100.0
    if tail <= 0:
        return 1 << 62
    return int(np.ceil(1.0 / tail - 1e-9))
