"""Reading a server's own ``/metrics`` through its backend's map (``BackendSpec.metrics``,
defined in each module of ``infermeter.backends``) onto common series names.

Common names (a sample carries those its server exports; absent means not exported):

=====================  =========  ===========================================================
``running``            gauge      requests in the running batch
``waiting``            gauge      requests queued in the server
``kv_usage``           gauge      KV-cache fraction in use, 0..1
``prefix_hit_rate``    gauge      the server's own prefix-cache hit rate, 0..1
``prefix_queries``     counter    prompt tokens looked up in the prefix cache
``prefix_hits``        counter    of those, tokens found there
``preemptions``        counter    requests preempted (KV cache full)
``prompt_tokens``      counter    prompt tokens the server processed (see each backend)
``generation_tokens``  counter    tokens generated
``batch_max_tokens``   gauge      TGI: the token budget of the current batch
``requests``           counter    requests finished / received
``n_decode``           counter    llama.cpp: llama_decode() calls
=====================  =========  ===========================================================

Histograms (cumulative, kept whole in each sample so any window's delta can be taken):
``ttft``, ``itl``, ``e2e``, ``queue``.

Each entry lists the names newest first; the first one present wins and the summary
names which one matched (``matched``), so a renamed metric is visible, not silently lost.
"""

from __future__ import annotations

from typing import Any

from infermeter.backends import all_backends, find_backend
from infermeter.backends.base import MetricMap, Series
from infermeter.telemetry import prom
from infermeter.telemetry.prom import Exposition

__all__ = ["MetricMap", "Series", "all_maps", "all_wanted", "detect", "metric_map", "normalize", "split_text"]


def all_maps() -> list[MetricMap]:
    """Every backend's metric map, in detection order."""
    maps = [spec.metrics for spec in all_backends().values() if spec.metrics is not None]
    return sorted(maps, key=lambda m: (m.detect_order, m.backend))


def metric_map(backend: str | None) -> MetricMap | None:
    """The map for an infermeter backend name or alias; None for "auto" or one without a map
    (openai, tensorrt-llm, ...): those are recognised from the names they export."""
    spec = find_backend(backend)
    return spec.metrics if spec is not None else None


def detect(expo: Exposition) -> MetricMap | None:
    """Which server exported these names (in ``detect_order``: vLLM first, since a
    vLLM-compatible server may also export TGI-style gauges, as the in-tree test server does)."""
    names = expo.names()
    for m in all_maps():
        if any(n.startswith(m.prefix) for n in names):
            return m
    return None


def all_wanted() -> set[str]:
    out: set[str] = set()
    for m in all_maps():
        out |= m.wanted()
    return out


def split_text(text: str, mmap: MetricMap) -> tuple[str, str]:
    """(scalar lines, histogram lines) of an exposition, cut down to ``mmap``'s names.
    The scalar text carries the ``_sum`` lines of ``histogram_sum`` series; parsing it is
    cheap, parsing the histogram text is not (tens of lines a histogram)."""
    scalars = [n for s in mmap.series if s.kind in ("gauge", "counter") for n in s.names]
    sums = [n + "_sum" for s in mmap.series if s.kind == "histogram_sum" for n in s.names]
    hists = [n for s in mmap.series if s.kind == "histogram" for n in s.names]
    return prom.prefilter(text, scalars, sums), prom.prefilter(text, hists)


def normalize(expo: Exposition, mmap: MetricMap, *, histograms: bool = True
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, matched): the common series of one scrape, and which raw name gave each;
    histograms (``values["hist"]``) unless ``histograms`` is False."""
    values: dict[str, Any] = {}
    matched: dict[str, str] = {}
    hists: dict[str, Any] = {}
    for s in mmap.series:
        if s.kind == "histogram":
            if not histograms:
                continue
            h, name = expo.histogram(s.names)
            if h is not None and name is not None:
                hists[s.key] = h.to_json()
                matched[s.key] = name
        elif s.kind == "histogram_sum":
            v, name = expo.scalar([n + "_sum" for n in s.names])
            if v is not None and name is not None:
                values[s.key] = v
                matched[s.key] = name
        else:
            v, name = expo.scalar(s.names, s.agg)
            if v is not None and name is not None:
                values[s.key] = v
                matched[s.key] = name
    if mmap.derive is not None:
        mmap.derive(values)
    if hists:
        values["hist"] = hists
    return values, matched
