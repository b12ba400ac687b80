"""What the workloads of docs/workloads.md add to a run: the load plan a trace or a set of
conversations implies, the runner that drives them, and their own figures in the result
(per-turn latency, offered against achieved rate, requests cut off, the prefix-cache hit
rate)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from infermeter.core.exchange import ErrorClass
from infermeter.core.samplecolumn import SampleColumn
from infermeter.core.prompt import Prompt
from infermeter.errors import FieldError
from infermeter.load.schedule import LoadPlan
from infermeter.metrics.compute import Span
from infermeter.runner.plan import RunPlan

PREFIX_DATASETS = ("shared-prefix", "multi-turn", "trace")


def shape_load(run: RunPlan, prompts) -> tuple[LoadPlan, Any, dict[str, Any]]:
    """(this process's load plan, prompts or conversations for the runner, runner keyword arguments)."""
    plan = run.local_load
    conversations = getattr(prompts, "conversations", None)
    offsets = getattr(prompts, "offsets", None)
    if (conversations is not None or offsets is not None) and run.shard is not None:
        raise FieldError("load.shard", run.spec.load.shard, "{workload.dataset_name} {name} runs in one process: "
                         "{load.workers} and {load.shard} do not apply", "drop {load.workers}/{load.shard}",
                         name=run.spec.workload.dataset_name)
    if offsets is not None:
        speed = plan.trace_speed or 1.0
        times = np.asarray(offsets, dtype=float) / speed
        keep = len(times) if not plan.duration_s else int(np.searchsorted(times, plan.duration_s, side="left"))
        keep = max(keep, 1)
        return replace(plan, num_requests=keep), list(prompts)[:keep], {"offsets": times[:keep]}
    if conversations is not None:
        ws = run.workload
        return plan, conversations, {"sessions": True, "use_server_answers": ws.history == "server",
                                     "think_time_s": ws.think_time}
    return plan, prompts, {}


def every_prompt(prompts) -> Sequence[Prompt]:
    """The prompts whose context to check: every turn of a multi-turn workload."""
    conversations = getattr(prompts, "conversations", None)
    if conversations is None:
        return prompts
    return [Prompt(text=t.content, input_len=t.input_len, output_len=t.output_len)
            for c in conversations for t in c.turns]


def workload_metrics(run: RunPlan, plan: LoadPlan, records, telemetry: dict | None, turns_not_sent: int | None) -> dict:
    """The result's ``workload_metrics``: only what applies to this run (one pass keeping no record)."""
    out: dict[str, Any] = {}
    turns: dict[int, _Tally] = defaultdict(_Tally)
    rates: dict[float, _Tally] = defaultdict(_Tally)
    sessions: set[int] = set()
    cut = 0
    for r in records:
        if r.error == ErrorClass.CUT_OFF.value:
            cut += 1
        if r.turn is not None:
            turns[r.turn].add(r)
        if r.session_id is not None:
            sessions.add(r.session_id)
        if r.offered_rate is not None:
            rates[r.offered_rate].add(r)
    try:
        if turns:
            out["per_turn"] = [turns[t].turn_row(t) for t in sorted(turns)]
            out["sessions"] = len(sessions)
            out["turns_not_sent"] = turns_not_sent or 0
        if plan.steps or plan.ramp_up:
            out["offered_vs_achieved"] = [rates[rate].rate_row(rate) for rate in sorted(rates)]
    finally:
        for tally in (*turns.values(), *rates.values()):
            tally.ttft.close()
    if plan.duration_s:
        out["duration"] = {"duration_s": plan.duration_s, "grace_s": plan.duration_grace_s, "cut_off": cut}
    if run.spec.workload.dataset_name in PREFIX_DATASETS:
        out["prefix_cache"] = prefix_cache(telemetry)
    return out


class _Tally:
    """One turn's or one offered rate's requests, counted as they pass."""

    def __init__(self) -> None:
        self.requests = self.completed = self.input_tokens = 0
        self.first_scheduled = math.inf
        self.sent, self.ends = Span(), Span()
        self.ttft = SampleColumn()

    def add(self, r) -> None:
        self.requests += 1
        self.input_tokens += r.input_len
        if r.scheduled is not None:
            self.first_scheduled = min(self.first_scheduled, r.scheduled)
        self.sent.add(r.sent)
        if r.ok:
            self.completed += 1
            self.ends.add(r.end)
            if r.ttft is not None:
                self.ttft.append(r.ttft)

    def turn_row(self, turn: int) -> dict:
        t = self.ttft
        return {"turn": turn, "requests": self.requests, "completed": self.completed,
                "mean_input_len": round(self.input_tokens / self.requests, 1),
                "mean_ttft_ms": round(1e3 * t.mean(), 3) if len(t) else None,
                "median_ttft_ms": round(1e3 * t.median(), 3) if len(t) else None}

    def rate_row(self, rate: float) -> dict:
        """One offered rate (a step, or a ramp's request): what was sent and finished at it."""
        t = self.ttft
        return {"offered_rate": rate, "requests": self.requests, "start_s": round(self.first_scheduled, 3),
                "achieved_send_rate": _r(self.sent.rate()), "completion_rate": _r(self.ends.rate()),
                "mean_ttft_ms": _r(1e3 * t.mean()) if len(t) else None}


def _r(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 3)


def prefix_cache(telemetry: dict | None) -> dict:
    """The server's prefix-cache hit rate over the window, from its /metrics (telemetry)."""
    if not telemetry or not telemetry.get("enabled", True):
        return {"hit_rate": None, "why": "telemetry was off (--no-telemetry)"}
    server = telemetry.get("server") or {}
    window = server.get("window") or {}
    rate = window.get("prefix_hit_rate")
    if rate is not None:
        src = "hits / lookups over the window" if window.get("prefix_queries") else "the server's own running rate"
        return {"hit_rate": rate, "source": src, "backend": server.get("backend")}
    if not server.get("samples"):
        return {"hit_rate": None, "why": "the server's /metrics were not read (none, or not reachable)"}
    return {"hit_rate": None, "why": f"{server.get('backend') or 'the server'} exports no prefix-cache counter in /metrics"}
