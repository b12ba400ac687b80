"""Per-backend map from a server's own ``/metrics`` names to common series names.

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

from dataclasses import dataclass
from typing import Any, Callable

from infermeter.telemetry import prom
from infermeter.telemetry.prom import Exposition


@dataclass(frozen=True)
class Series:
    key: str
    names: tuple[str, ...]
    kind: str = "gauge"  # gauge | counter | histogram | histogram_sum
    agg: str = "sum"  # over label sets: sum | mean | max


def _g(key: str, *names: str, agg: str = "sum") -> Series:
    return Series(key, names, "gauge", agg)


def _c(key: str, *names: str) -> Series:
    return Series(key, names, "counter")


def _h(key: str, *names: str) -> Series:
    return Series(key, names, "histogram")


@dataclass(frozen=True)
class MetricMap:
    backend: str
    prefix: str  # how its names start: used to recognise a server's metrics
    series: tuple[Series, ...]
    notes: str = ""
    derive: Callable[[dict[str, Any]], None] | None = None

    def wanted(self) -> set[str]:
        out: set[str] = set()
        for s in self.series:
            out.update(s.names)
        return out


def _llamacpp_derive(values: dict[str, Any]) -> None:
    # llamacpp:prompt_tokens_total excludes prompt tokens reused from the cache
    # (prompt_tokens_cached_total counts those): every prompt token was looked up.
    hits, evaluated = values.get("prefix_hits"), values.get("prompt_tokens")
    if hits is not None and evaluated is not None:
        values["prefix_queries"] = hits + evaluated


VLLM = MetricMap("vllm", "vllm:", (
    _g("running", "vllm:num_requests_running"),
    _g("waiting", "vllm:num_requests_waiting"),
    _g("kv_usage", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", agg="mean"),
    _g("prefix_hit_rate", "vllm:gpu_prefix_cache_hit_rate", agg="mean"),  # V0 only
    _c("prefix_queries", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    _c("prefix_hits", "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    _c("preemptions", "vllm:num_preemptions", "vllm:num_preemptions_total"),
    _c("prompt_tokens", "vllm:prompt_tokens"),
    _c("generation_tokens", "vllm:generation_tokens"),
    _c("requests", "vllm:request_success"),
    _h("ttft", "vllm:time_to_first_token_seconds"),
    _h("itl", "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    _h("e2e", "vllm:e2e_request_latency_seconds"),
    _h("queue", "vllm:request_queue_time_seconds"),
), notes="kv_cache_usage_perc is a fraction 0..1 despite its name; V1 renamed gpu_cache_usage_perc, "
         "gpu_prefix_cache_*, and split time_per_output_token_seconds into inter_token_latency_seconds")

TGI = MetricMap("tgi", "tgi_", (
    _g("running", "tgi_batch_current_size"),
    _g("waiting", "tgi_queue_size"),
    _g("batch_max_tokens", "tgi_batch_current_max_tokens"),
    _c("requests", "tgi_request_success", "tgi_request_count"),
    Series("generation_tokens", ("tgi_request_generated_tokens",), "histogram_sum"),
    Series("prompt_tokens", ("tgi_request_input_length",), "histogram_sum"),
    _h("e2e", "tgi_request_duration"),
    _h("queue", "tgi_request_queue_duration"),
    _h("itl", "tgi_request_mean_time_per_token_duration"),
), notes="TGI exports no time-to-first-token histogram and no KV-cache usage; token counts are the "
         "sums of its per-request token histograms, counted when a request ends; its itl is the "
         "per-request mean time per token")

SGLANG = MetricMap("sglang", "sglang:", (
    _g("running", "sglang:num_running_reqs"),
    _g("waiting", "sglang:num_queue_reqs"),
    _g("kv_usage", "sglang:token_usage", agg="mean"),
    _g("prefix_hit_rate", "sglang:cache_hit_rate", agg="mean"),
    _c("prompt_tokens", "sglang:prompt_tokens"),
    _c("generation_tokens", "sglang:generation_tokens"),
    _c("requests", "sglang:num_requests"),
    _h("ttft", "sglang:time_to_first_token_seconds"),
    _h("itl", "sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    _h("e2e", "sglang:e2e_request_latency_seconds"),
    _h("queue", "sglang:queue_time_seconds"),
), notes="token_usage is the KV-pool fraction in use; cache_hit_rate is SGLang's own running rate")

LLAMACPP = MetricMap("llama.cpp", "llamacpp:", (
    _g("running", "llamacpp:requests_processing"),
    _g("waiting", "llamacpp:requests_deferred"),
    _g("kv_usage", "llamacpp:kv_cache_usage_ratio", agg="mean"),  # older builds only
    _g("kv_tokens", "llamacpp:kv_cache_tokens"),  # older builds only
    _c("prompt_tokens", "llamacpp:prompt_tokens"),
    _c("prefix_hits", "llamacpp:prompt_tokens_cached"),
    _c("generation_tokens", "llamacpp:tokens_predicted"),
    _c("n_decode", "llamacpp:n_decode"),
    _c("prompt_seconds", "llamacpp:prompt_seconds"),
    _c("predict_seconds", "llamacpp:tokens_predicted_seconds"),
    _g("busy_slots_per_decode", "llamacpp:n_busy_slots_per_decode", agg="mean"),
), notes="the llama.cpp of llama-cpp-python 0.3.36 exports no kv_cache_usage_ratio (older builds did) "
         "and no latency histograms; prompt_tokens excludes cached tokens (prompt_tokens_cached)",
   derive=_llamacpp_derive)

MAPS: dict[str, MetricMap] = {m.backend: m for m in (VLLM, TGI, SGLANG, LLAMACPP)}
_ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama_cpp": "llama.cpp",
            "text-generation-inference": "tgi"}


def metric_map(backend: str | None) -> MetricMap | None:
    """The map for an infermeter backend name; None for "auto" or one without a map
    (openai, tensorrt-llm, ...): those are recognised from the names they export."""
    if not backend:
        return None
    key = backend.strip().lower()
    return MAPS.get(_ALIASES.get(key, key))


def detect(expo: Exposition) -> MetricMap | None:
    """Which server exported these names (vLLM first: a vLLM-compatible server may also
    export TGI-style gauges, as the in-tree test server does)."""
    names = expo.names()
    for m in (VLLM, SGLANG, LLAMACPP, TGI):
        if any(n.startswith(m.prefix) for n in names):
            return m
    return None


def all_wanted() -> set[str]:
    out: set[str] = set()
    for m in MAPS.values():
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
