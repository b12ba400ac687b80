"""Merge the results of shards (``--shard i/N``, ``--workers N``) into one result.

Statistics are recomputed from the pooled per-request records of every shard
(their ``.records.jsonl`` files), never averaged from per-shard summaries:
a percentile of the union is not the mean of the shards' percentiles.

Times: each shard's record times are relative to its own measured-window
origin, whose wall-clock time is its ``infermeter.start_epoch``.  Records are
moved onto the earliest shard's origin (``t + start_epoch_k - min start_epoch``),
so shards started with one ``--start-at`` need no shift at all.  Shards
that met at a start barrier carry their clock offset to the master
(``infermeter.barrier.clock_offset_s``); their origins are put on the
master's clock first, so the timelines line up across machines.  Throughput
divides by the common window: earliest send to latest end over all shards.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson

from infermeter.errors import UserError
from infermeter.load.schedule import LoadMode, LoadPlan
from infermeter.core.livestats import LatencySnapshot
from infermeter.core.notices import Notice, as_notice, dedupe
from infermeter.metrics.compute import GoodputSLO, compute
from infermeter.metrics.findings import RECOMPUTED, metric_warnings
from infermeter.metrics.tokens import merge_checks, received_counts
from infermeter.core.outcome import ClientStats, RunOutcome
from infermeter.core.records import RequestRecord
from infermeter.core.recordstore import MEMORY_ROWS, RecordStore, run_duration
from infermeter.core.samplecolumn import SampleColumn
from infermeter.storage.files import RecordWriter, read_records, write_json_atomic
from infermeter.storage.result import build_result

_VLLM_OWN_KEYS = {"date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
                  "max_concurrency", "completed", "failed", "duration", "total_input_tokens",
                  "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
                  "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "errors", "infermeter",
                  "endpoint_type", "label", "latencies", "start_times", "generated_texts", "max_output_tokens_per_s",
                  "max_concurrent_requests", "ramp_up_strategy", "ramp_up_start_rps", "ramp_up_end_rps"}


def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """Result JSON files named directly, or found (not recursively) in named folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.glob("*.json")):
                if _is_result(f) and not _is_merged(f):  # an earlier merge in the folder is not a shard
                    found.append(f)
        elif p.is_file():
            if not _is_result(p):
                raise UserError(f"{p} is not an infermeter result JSON", "name the .json files 'infermeter run' wrote")
            found.append(p)
        else:
            raise UserError(f"{p} does not exist", "name result JSON files or folders holding them")
    unique = sorted(set(f.resolve() for f in found))
    if not unique:
        raise UserError("no result JSON files found in " + ", ".join(map(str, paths)),
                        "name the folders or .json files written by 'infermeter run --shard i/N'")
    return unique


def _is_result(path: Path) -> bool:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("infermeter"), dict) and "start_epoch" in data["infermeter"]


def _is_merged(path: Path) -> bool:
    return "merged_from" in orjson.loads(path.read_bytes())["infermeter"]


def _plan_from_dict(d: dict) -> LoadPlan:
    rate = d["request_rate"]
    return LoadPlan(mode=LoadMode(d["mode"]), num_requests=int(d["num_requests"]),
                    request_rate=math.inf if rate == "inf" else float(rate),
                    max_concurrency=d.get("max_concurrency"), burstiness=float(d.get("burstiness", 1.0)),
                    arrival=d.get("arrival", "none"), warmup_requests=int(d.get("warmup_requests", 0)),
                    schedule=d.get("schedule") or "vllm", ramp_up=_ramp_from_dict(d.get("ramp_up")))


def _ramp_from_dict(r: dict | None) -> tuple[str, float, float] | None:
    return (r["strategy"], float(r["start_rps"]), float(r["end_rps"])) if r else None


class ShardRecords:
    """A shard's measured records, read from its ``.records.jsonl`` each time they are walked
    (so a merge of long runs holds none of them in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[RequestRecord]:
        return (r for r in read_records(self.path) if not r.warmup)


def load_shard(path: Path) -> tuple[dict, ShardRecords]:
    result = orjson.loads(Path(path).read_bytes())
    name = result["infermeter"].get("records_file")
    if not name:
        raise UserError(f"{path} names no records file", "merge needs the per-request records of every shard")
    rpath = Path(path).with_name(name)
    if not rpath.exists():
        raise UserError(f"{rpath} (the records of {path}) is missing",
                        "keep each shard's .records.jsonl next to its result JSON")
    return result, ShardRecords(rpath)


def shifted(shards: Sequence[tuple[dict, Iterable[RequestRecord]]]) -> Iterator[tuple[int, RequestRecord]]:
    """(shard number, record) for every shard's records, on the earliest shard's origin."""
    base = min(common_epoch(r) for r, _ in shards)
    for k, (result, records) in enumerate(shards):
        offset = common_epoch(result) - base
        for rec in records:
            if offset:
                rec.shift(-offset)
            yield k, rec


def merge_shards(shards: Sequence[tuple[dict, Iterable[RequestRecord]]], *, names: Sequence[str] = ()
                 ) -> tuple[dict, RecordStore]:
    """One result (same form as a run's) and the merged records, from shard results and their records.

    The records are pooled in a RecordStore (spilled to disk past its bound, in index order
    when it is not); the caller closes it."""
    if not shards:
        raise UserError("nothing to merge", "name at least one result")
    names = list(names) or [f"result {k}" for k in range(len(shards))]
    results = [r for r, _ in shards]
    first = results[0]
    im0 = first["infermeter"]
    notes: list[Notice] = []
    _check_same_run(results, names, notes)

    base = min(common_epoch(r) for r in results)
    # the per-request texts (vLLM's generated_texts) of up to MEMORY_ROWS requests when the shards saved them
    merged = RecordStore(keep_text=MEMORY_ROWS if "generated_texts" in first else None)
    owner = bytearray()  # shard number + 1 of each request number seen (0: not seen)
    counts = [0] * len(shards)
    for k, rec in shifted(shards):
        i = rec.index
        if i >= 0:
            if i >= len(owner):
                owner.extend(bytes(max(i + 1 - len(owner), len(owner))))
            if owner[i]:
                raise UserError(f"request {i} appears in both {names[owner[i] - 1]} and {names[k]}",
                                "merge each shard of a run once, and shards of one run only")
            owner[i] = min(k + 1, 255)
        counts[k] += 1
        merged.append(rec)
    sources = []
    for (result, _), name, n in zip(shards, names, counts):
        shard = result["infermeter"].get("shard")
        sources.append({"file": name, "shard": f"{shard['index']}/{shard['count']}" if shard else None,
                        "start_epoch": result["infermeter"]["start_epoch"], "offset_s": common_epoch(result) - base,
                        "requests": n})
    merged.sort_by_index()

    plan = _merged_plan(results)
    percentiles = list(im0["percentiles"])
    slo = (im0.get("goodput") or {}).get("slo_ms")
    goodput = GoodputSLO(dict(slo)) if slo else None
    duration = run_duration(merged)
    check = merge_checks([r["infermeter"]["work"].get("token_count_crosscheck") or {} for r in results])
    metrics = compute(merged, duration, percentiles, goodput, received_counts(check))
    metrics["work"]["token_count_crosscheck"] = check
    client = _merge_client(results, names, merged, plan)
    stopped = [f"{n}: {r['infermeter']['stopped_early']}" for r, n in zip(results, names)
               if r["infermeter"].get("stopped_early")]
    outcome = RunOutcome(records=merged, warmup_records=[], start_epoch=base, duration=duration, client=client,
                         stopped_early="; ".join(stopped) or None)
    warnings = [n.to_dict() for n in dedupe(_merged_warnings(results, metrics, client, plan) + notes)]
    target = dict(im0["target"])
    target["connection_notes"] = sorted({n for r in results for n in r["infermeter"]["target"].get("connection_notes", [])})
    metadata = {k: v for k, v in first.items() if k not in _VLLM_OWN_KEYS}
    out = build_result(
        outcome=outcome, metrics=metrics, plan=plan, backend=first["backend"], model_id=first["model_id"],
        tokenizer_id=first["tokenizer_id"], target=target, workload=im0["workload"], percentiles=percentiles,
        percentile_metrics=im0["percentile_metrics"], warnings=warnings, records_file=None, metadata=metadata,
        command=list(im0.get("provenance", {}).get("command", [])),
        label=first.get("label"), save_detailed="generated_texts" in first,
    )
    hists = [r["infermeter"].get("histograms") for r in results]
    if all(hists):  # every shard's live histograms: their merge is exact (core/livestats.py)
        out["infermeter"]["histograms"] = LatencySnapshot.merged(
            [LatencySnapshot.from_dict(h) for h in hists]).to_dict()
    out["infermeter"]["warmup_requests"] = sum(int(r["infermeter"].get("warmup_requests", 0)) for r in results)
    out["infermeter"]["merged_from"] = sources
    out["infermeter"]["cell_id"] = im0.get("cell_id")
    from infermeter.metrics.validity import ValidityOptions, assess  # the merged samples judged as one run's

    tol = client.client_error_tolerance_pct  # the shards' own (the strictest), else the default
    out["infermeter"]["validity"] = assess(out, merged, ValidityOptions(client_error_tolerance_pct=tol)
                                           if tol is not None else None)
    return out, merged


def merge_files(paths: Sequence[str | Path], out_path: str | Path) -> tuple[dict, Path]:
    """Merge result files (or folders of them) into ``out_path`` and its ``.records.jsonl``."""
    files = find_results(paths)
    out_path = Path(out_path)
    files = [f for f in files if f != out_path.resolve()]  # re-merging into a folder of shards
    shards = [load_shard(f) for f in files]
    result, merged = merge_shards(shards, names=[str(f) for f in files])
    try:
        records_path = out_path.with_name(out_path.stem + ".records.jsonl")
        if records_path.exists():
            records_path.unlink()
        im = result["infermeter"]
        columns = {"target": im["target"].get("name") or result.get("label") or result["backend"],
                   "cell_id": im.get("cell_id") or ""}
        # every field of every record (texts too): read from the shards' files again; in request
        # order where the pool fitted in memory, else shard after shard
        records: Iterable[RequestRecord] = (rec for _, rec in shifted(shards))
        if not merged.spilled:
            records = sorted(records, key=lambda r: r.index)
        with RecordWriter(records_path, keep_text=True, columns=columns) as writer:
            for rec in records:
                writer(rec)
    finally:
        merged.close()
    result["infermeter"]["records_file"] = records_path.name
    write_json_atomic(out_path, result)
    return result, records_path


def _check_same_run(results: list[dict], names: list[str], notes: list[Notice]) -> None:
    first = results[0]
    for r, n in zip(results[1:], names[1:]):
        for key in ("model_id", "backend"):
            if r.get(key) != first.get(key):
                raise UserError(f"{n} has {key} {r.get(key)!r}, {names[0]} has {first.get(key)!r}",
                                "merge only shards of one run")
        if r["infermeter"]["target"].get("protocol") != first["infermeter"]["target"].get("protocol"):
            raise UserError(f"{n} used another protocol than {names[0]}", "merge only shards of one run")
    shards = [r["infermeter"].get("shard") for r in results]
    if all(s is None for s in shards):
        if len(results) > 1:
            notes.append(Notice("merge-not-shards", f"merged {len(results)} results that are not shards of one "
                                "run (no --shard): their loads were added up", {"results": len(results)}))
        return
    if any(s is None for s in shards):
        raise UserError("some results are shards (--shard) and some are not", "merge the shards of one run only")
    counts = {s["count"] for s in shards}
    if len(counts) != 1:
        raise UserError(f"shards of different splits ({', '.join(map(str, sorted(counts)))} shards)",
                        "merge the shards of one run only")
    count = counts.pop()
    indices = [s["index"] for s in shards]
    dup = sorted({i for i in indices if indices.count(i) > 1})
    if dup:
        raise UserError(f"shard {dup[0]}/{count} is given more than once", "name each shard's result once")
    loads = {orjson.dumps(s["global_load"], option=orjson.OPT_SORT_KEYS) for s in shards}
    seeds = {r["infermeter"]["workload"].get("seed") for r in results}
    if len(loads) != 1 or len(seeds) != 1:
        raise UserError("the shards were cut from different plans (load or seed differ)",
                        "run every shard with the same load flags and --seed")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        notes.append(Notice("merge-incomplete", f"INCOMPLETE: shard(s) {', '.join(f'{i}/{count}' for i in missing)} "
                            "missing from the merge; the result covers only part of the planned load",
                            {"missing": [f"{i}/{count}" for i in missing]}))
    epochs = {common_epoch(r) for r in results}
    if max(epochs) - min(epochs) > 1.0:
        notes.append(Notice("merge-start-spread", f"the shards started {max(epochs) - min(epochs):.1f} s apart "
                            "(no common --start-at): their loads overlapped only partly",
                            {"spread_s": max(epochs) - min(epochs)}))


def common_epoch(result: dict) -> float:
    """A shard's window start on the master's clock: its own ``start_epoch`` less the clock offset
    measured at the start barrier (runner/barrier.py), when it met one."""
    offset = (result["infermeter"].get("barrier") or {}).get("clock_offset_s") or 0.0
    return float(result["infermeter"]["start_epoch"]) - float(offset)


def _merged_plan(results: list[dict]) -> LoadPlan:
    shard = results[0]["infermeter"].get("shard")
    if shard is not None:
        return _plan_from_dict(shard["global_load"])
    plans = [_plan_from_dict(r["infermeter"]["load"]) for r in results]
    p = plans[0]
    conc = [q.max_concurrency for q in plans]
    rate = sum(q.request_rate for q in plans) if p.mode is LoadMode.RATE else p.request_rate
    return LoadPlan(p.mode, sum(q.num_requests for q in plans), rate,
                    sum(c for c in conc if c) if all(conc) else None, p.burstiness, p.arrival,
                    sum(q.warmup_requests for q in plans), p.schedule, p.ramp_up)


def _merge_client(results: list[dict], names: list[str], records: Iterable[RequestRecord], plan: LoadPlan) -> ClientStats:
    cs = [r["infermeter"]["client"] for r in results]
    samples = sum(int(c.get("loop_samples", 0)) for c in cs)
    mean = (sum(c["loop_lag_mean_ms"] * c.get("loop_samples", 0) for c in cs) / samples) if samples else \
        max(c["loop_lag_mean_ms"] for c in cs)
    wall = max(c["wall_seconds"] for c in cs)
    cpu = sum(c["cpu_seconds"] for c in cs)
    stats = ClientStats(
        loop_lag_mean_ms=mean,
        loop_lag_p99_ms=max(c["loop_lag_p99_ms"] for c in cs),  # the worst shard: percentiles do not average
        loop_lag_max_ms=max(c["loop_lag_max_ms"] for c in cs),
        loop_samples=samples, cpu_seconds=cpu, wall_seconds=wall,
        cpu_utilization=max(c["cpu_utilization"] for c in cs),  # of one core, the busiest process
        max_rss_mib=max(c["max_rss_mib"] for c in cs),
    )
    if plan.mode is LoadMode.RATE:
        with SampleColumn() as lags:
            lags.extend(lag for r in records if (lag := r.dispatch_lag) is not None)
            if len(lags):
                stats.dispatch_lag_p99_ms = lags.percentile([99], 1e3)[0]
                stats.dispatch_lag_max_ms = lags.max() * 1e3
    reasons = [f"{n}: {why}" for c, n in zip(cs, names) for why in c.get("reasons", [])]
    stats.reasons = reasons
    stats.client_bound = any(c.get("client_bound") for c in cs)
    bounds = [c.get("client_error_bound_pct") or {} for c in cs]
    if any(bounds):  # the worst shard's possible error: each shard stamped its own requests
        stats.client_error_bound_pct = {k: max((b[k] for b in bounds if b.get(k) is not None), default=None)
                                        for k in ("ttft", "itl")}
        tols = [c.get("client_error_tolerance_pct") for c in cs if c.get("client_error_tolerance_pct") is not None]
        stats.client_error_tolerance_pct = min(tols) if tols else None
    stats.cpu_busy = any(c.get("cpu_busy") for c in cs)
    pauses = [c for c in cs if c.get("gc_pause_max_ms") is not None]
    if pauses:  # the longest pause of any process; the time and count of all
        stats.gc_pause_max_ms = max(c["gc_pause_max_ms"] for c in pauses)
        stats.gc_pause_total_ms = sum(c.get("gc_pause_total_ms") or 0.0 for c in pauses)
        stats.gc_collections = sum(int(c.get("gc_collections") or 0) for c in pauses)
    waited = [c for c in cs if c.get("prompt_waits") is not None]
    if waited:
        stats.prompt_waits = sum(int(c["prompt_waits"]) for c in waited)
        stats.prompt_wait_s = sum(float(c.get("prompt_wait_s") or 0.0) for c in waited)
    ahead = [c.get("prompts_built_ahead") for c in cs if "prompts_built_ahead" in c]
    if ahead and any(a is not None for a in ahead):
        stats.prompts_built_ahead = sum(int(a) for a in ahead if a is not None)
    extra: dict[str, Any] = {"processes": len(cs), "cpu_seconds_total": cpu}
    for key in ("verdict",):
        vals = [c.get(key) for c in cs if c.get(key)]
        if vals:
            extra[key] = vals
    stats.__dict__["per_shard"] = [dict(c, file=n) for c, n in zip(cs, names)]
    stats.__dict__.update(extra)
    return stats


def _merged_warnings(results: list[dict], metrics: dict, client: ClientStats, plan: LoadPlan) -> list[Notice]:
    """The merged result's warnings: those that follow from the pooled records recomputed (by code),
    the others carried over once.  Older results' plain-text warnings are carried as ``note``s."""
    computed = metric_warnings(metrics, client, rate_mode=plan.mode is LoadMode.RATE)
    carried = [n for r in results for n in map(as_notice, r["infermeter"].get("warnings", []))
               if n.code not in RECOMPUTED and not _old_recomputed(n)]
    head = [n for n in computed if n.code in ("unequal-work", "server-count-mismatch")]
    return head + carried + [n for n in computed if n not in head]


_OLD_RECOMPUTED_PREFIXES = ("UNEQUAL WORK", "CLIENT-BOUND", "sends ran late")


def _old_recomputed(n: Notice) -> bool:
    """A plain-text warning of an older result that the merge recomputes (and would otherwise repeat)."""
    if n.code != "note":
        return False
    text = n.message
    return (text.startswith(_OLD_RECOMPUTED_PREFIXES) or " requests failed (" in text
            or "rest on too few samples" in text)
