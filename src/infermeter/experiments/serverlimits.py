"""A launched server's limits, derived from the experiment that will measure it.

A server started with limits smaller than the experiment's cells answers them with
errors (a prompt over ``max_model_len`` gets HTTP 400 everywhere; TGI answers requests
over ``--max-concurrent-requests`` with 429).  So a ``launch:`` target, and
``infermeter serve --for EXPERIMENT``, take their limits from the cells:

* ``max_model_len`` = the longest request: the largest prompt plus output of any
  workload (with ``random_range_ratio`` its upper bound; a chat endpoint adds
  ``CHAT_HEADROOM`` tokens for the server-side template);
* ``max_batch`` = the most requests in flight: the largest burst, concurrency, or
  rate cell's ``rate_max_concurrency`` (without one, its number of requests),
  at most what the server accepts (llama.cpp: 256 slots; the rest wait in its queue).

A setting the spec gives explicitly is kept, and where it cannot serve the cells
(``max_model_len`` under the longest request, or ``max_batch`` under the largest
burst on a server that refuses requests over it) the experiment is refused with one
line, before any server starts.  A queueing server (vLLM, SGLang, llama.cpp) may
have a smaller ``max_batch``: the surplus waits in its queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from infermeter.errors import UserError
from infermeter.experiments.spec import ExperimentSpec, WorkloadSpec

CHAT_HEADROOM = 64  # tokens a server-side chat template may add to a prompt


@dataclass(frozen=True)
class Needs:
    """What the experiment's cells ask of a server, and which cell asks most."""

    model_len: int | None  # None: every workload's prompt lengths are up to its dataset file
    model_len_from: str
    concurrency: int
    concurrency_from: str


def max_lengths(ws: WorkloadSpec) -> tuple[int | None, int | None]:
    """Largest (prompt, output) tokens one request of the workload may have."""
    in_len, out_len = ws.lengths()
    ratio = (ws.random_range_ratio or 0.0) if ws.dataset == "random" else 0.0
    if ratio and in_len is not None and out_len is not None:
        prefix = ws.random_prefix_len or 0
        in_len = prefix + math.ceil((in_len - prefix) * (1 + ratio))
        out_len = math.ceil(out_len * (1 + ratio))
    return in_len, out_len


def needs(spec: ExperimentSpec, *, chat: bool = False) -> Needs:
    best_len: tuple[int, str] | None = None
    best_conc: tuple[int, str] = (1, "")
    for name, ws in spec.workloads.items():
        in_len, out_len = max_lengths(ws)
        if in_len is not None:
            total = in_len + (out_len or 0) + (CHAT_HEADROOM if chat else 0)
            what = f"workload {name}: {in_len} prompt + {out_len or 0} output tokens" + (
                f" + {CHAT_HEADROOM} for the chat template" if chat else "")
            if best_len is None or total > best_len[0]:
                best_len = (total, what)
        grid = spec.grid_for(name)
        points = [(b, f"burst {b} of workload {name}") for b in grid.burst]
        points += [(c, f"concurrency {c} of workload {name}") for c in grid.concurrency]
        for r in grid.rate:
            n = grid.rate_max_concurrency or grid.rate_prompts(r)
            points.append((n, f"rate {r:g} of workload {name} ({n} requests may be in flight)"))
        for value, what in points:
            if value > best_conc[0]:
                best_conc = (value, what)
    return Needs(best_len[0] if best_len else None, best_len[1] if best_len else "",
                 best_conc[0], best_conc[1] or "one request at a time")


def fit_settings(settings: dict[str, Any], profile: Any, need: Needs, *, where: str,
                 explicit: set[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``settings`` with the limits the cells need filled in, and a note per derived value.

    ``explicit``: the keys the user set (default: the keys ``settings`` holds); an explicit
    value that cannot serve the cells raises a one-line ``UserError``; ``where`` names the
    settings in that message (``targets.tgi.launch.settings``, or ``--`` for command-line flags)."""
    given = set(settings) if explicit is None else explicit
    out = dict(settings)
    notes: list[str] = []
    launch = profile.launch
    if need.model_len is not None and launch.has_max_model_len:
        if "max_model_len" in given and out.get("max_model_len") is not None:
            have = int(out["max_model_len"])
            if have < need.model_len:
                raise UserError(f"{_name(where, 'max_model_len')} {have} is shorter than the experiment's longest "
                                f"request ({need.model_len} tokens, {need.model_len_from})",
                                f"raise it to {need.model_len} or more, or leave it out to use the experiment's own")
        else:
            out["max_model_len"] = max(need.model_len, 16)
            notes.append(f"max_model_len {out['max_model_len']} ({need.model_len_from})")
    cap = launch.max_batch_cap
    if "max_batch" in given and out.get("max_batch") is not None:
        have = int(out["max_batch"])
        if cap is not None and have > cap:
            raise UserError(f"{_name(where, 'max_batch')} {have} is more than {profile.title} accepts ({cap})",
                            f"use {cap} or less: requests beyond it wait in the server's queue")
        if have < need.concurrency and launch.max_batch_rejects:
            raise UserError(f"{_name(where, 'max_batch')} {have} is below the experiment's {need.concurrency} "
                            f"requests in flight ({need.concurrency_from}): {profile.title} refuses requests over "
                            "it (HTTP 429)",
                            f"raise it to {need.concurrency} or more, or leave it out to use the experiment's own")
    elif cap is not None and need.concurrency > cap:
        out["max_batch"] = cap
        notes.append(f"max_batch {cap}, {profile.title}'s most ({need.concurrency_from}; the rest queue)")
    else:
        out["max_batch"] = need.concurrency
        notes.append(f"max_batch {need.concurrency} ({need.concurrency_from})")
    return out, notes


def _name(where: str, key: str) -> str:
    """``targets.T.launch.settings.max_batch``, or the flag ``--max-batch`` where ``where`` is ``--``."""
    return "--" + key.replace("_", "-") if where == "--" else f"{where}.{key}"


def launch_settings(spec: ExperimentSpec, target: str) -> tuple[dict[str, Any], list[str]]:
    """The settings a ``launch:`` target's server starts with: the spec's, plus the derived limits."""
    from infermeter.servers import get_profile

    t = spec.targets[target]
    assert t.launch is not None
    profile = get_profile(t.launch.profile)
    endpoint = t.endpoint or profile.endpoint
    need = needs(spec, chat="chat" in endpoint)
    return fit_settings(t.launch.settings, profile, need, where=f"targets.{target}.launch.settings")
