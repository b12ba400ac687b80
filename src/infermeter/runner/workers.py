"""``--workers N``: N client processes, each with its own event loop and one shard of the schedule.

One Python event loop saturates one core; a load that needs more is split
into shards (see ``load/shard.py``), one per process.  Each worker prepares
everything (prompts, connections, warm-up), then meets the parent at the
start barrier (``runner/barrier.py`` on loopback, the same code a multi-node
dstack task uses), so every shard's measured window starts at one instant.
Workers stream their records to their own JSONL files (records never cross
a connection on the hot path); after the run each sends its files to the
parent, which merges them (``runner/collect.py``, ``metrics/merge.py``) into
the one result.  A worker that dies mid-run is named and its share marked
missing in the merged result.

``INFERMETER_WORKER_CPUS=2,3,4`` pins worker i to the i-th listed core
(round robin when there are fewer cores than workers); unset, the workers
run wherever the scheduler puts them.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Callable

from infermeter.errors import UserError
from infermeter.runner.barrier import NodeLink, Rendezvous
from infermeter.runner.efficiency import efficiency_for  # energy, cost, per GPU (docs/cost.md)
from infermeter.runner.plan import RunPlan
from infermeter.runner.spec import RunSpec
from infermeter.telemetry import TelemetrySession

START_MARGIN_S = 0.2  # between the workers' clocks measured and the common start
READY_TIMEOUT_S = 600.0  # a worker that takes longer to prepare (prompts, warm-up) is given up on


def worker_cpus(value: str | None, workers: int) -> list[int | None]:
    """The core each worker is pinned to (None: not pinned), from ``INFERMETER_WORKER_CPUS``."""
    if not value or not value.strip():
        return [None] * workers
    try:
        cpus = [int(x) for x in value.replace(" ", "").split(",") if x]
    except ValueError:
        cpus = []
    if not cpus or min(cpus) < 0:
        raise UserError(f"INFERMETER_WORKER_CPUS={value!r} is not a list of core numbers",
                        "set it to comma-separated cores, e.g. INFERMETER_WORKER_CPUS=2,3,4,5, or unset it")
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(cpus)
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise UserError(f"INFERMETER_WORKER_CPUS names core(s) {missing} this process may not run on",
                        f"use cores from {sorted(allowed)}")
    return [cpus[i % len(cpus)] for i in range(workers)]


def _worker_main(spec: RunSpec, master: tuple[str, int], rank: int, count: int, argv: list[str],
                 cpu: int | None = None) -> None:  # pragma: no cover
    from infermeter.load.eventloop import use_uvloop
    from infermeter.runner.nodes import run_node

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    use_uvloop()
    link = NodeLink(master[0], master[1], rank, count, connect_timeout=60.0)
    try:
        run_node(spec, link, argv=argv)  # resolves the spec; a FieldError reaches the parent whole
    except BaseException:  # the parent heard of it (link.fail) and says so
        raise SystemExit(1) from None
    finally:
        link.close()
    shutil.rmtree(spec.output.result_dir, ignore_errors=True)  # the parent holds the copy it merges


def run_workers(plan: RunPlan, *, argv: list[str] | None = None, log: Callable[[str], None] = lambda m: None):
    """Run ``plan`` in ``workers`` processes and merge their shards; returns a RunReport."""
    from infermeter.runner.collect import merge_nodes
    from infermeter.runner.drive import result_stem
    from infermeter.runner.session import RunReport
    from infermeter.load.shard import check_start_at
    from infermeter.storage.files import RecordWriter, write_json_atomic
    from infermeter.storage.names import check_result_place, claim, sibling, storage_error

    spec = plan.spec
    t, o = spec.target, spec.output
    check_start_at(spec.load.start_at)
    n = spec.load.workers
    cpus = worker_cpus(os.environ.get("INFERMETER_WORKER_CPUS"), n)
    result_dir = Path(o.result_dir)
    check_result_place(result_dir, o.result_filename, o.if_exists)
    # the run's names are claimed now (an empty records file; the merge writes it), so the
    # shards' folder is this run's own
    result_path, claimed = claim(
        result_dir, o.result_filename or
        f"{result_stem(plan, t.backend, (t.served_model_name or t.model or 'model'))}.json",
        o.if_exists if o.result_filename else "next",
        lambda path, replace: RecordWriter(path, replace=replace))
    claimed.close()
    shard_dir = sibling(result_path, ".shards")
    try:
        shard_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, shard_dir, folder=True) from None
    ctx = multiprocessing.get_context("spawn")
    # the same barrier and collection as client nodes on a cluster (runner/barrier.py), on loopback
    rendezvous = Rendezvous(n, shard_dir, ready_timeout=READY_TIMEOUT_S, margin=START_MARGIN_S,
                            fixed_start=spec.load.start_at, what="worker")
    port = rendezvous.start()
    procs = []
    for i in range(n):
        child = spec.replace(**{"workers": 1, "shard": f"{i}/{n}", "progress": False,
                                "result_dir": str(shard_dir / f"node{i}"),
                                "result_filename": f"shard{i}of{n}.json", "if_exists": "overwrite",
                                "start_at": None, "telemetry": False,  # sampled once, here
                                "dstack_run": None})  # the price is read once, here
        proc = ctx.Process(target=_worker_main, args=(child, ("127.0.0.1", port), i, n, list(argv or []), cpus[i]),
                           name=f"infermeter-worker-{i}", daemon=True)
        proc.start()
        procs.append(proc)
    log(f"{n} worker processes started; waiting for them to prepare")
    # GPU and server telemetry for the whole run, sampled by this (otherwise idle) process
    telemetry = TelemetrySession.for_run(spec.telemetry, log=log).start()
    try:
        telemetry.attach_server(spec.server_url(), t.backend)
        telemetry.mark_phase("ready")
        _follow(rendezvous, procs, rendezvous.started)
        if rendezvous.error is None:
            log(f"measured window starts at epoch {rendezvous.start_epoch:.3f}")
            telemetry.mark_phase("load")
            _follow(rendezvous, procs, rendezvous.finished)
        if rendezvous.error is not None:
            raise rendezvous.error
    except BaseException:
        telemetry.close()
        raise
    finally:
        rendezvous.close()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    try:
        result, records_path = merge_nodes(rendezvous.states, result_path, what="worker")
    except OSError as exc:  # disk full while merging: the shards' files are kept
        raise storage_error(exc, result_path) from None
    result["infermeter"]["workers"] = n
    result["infermeter"]["shards_dir"] = os.path.relpath(shard_dir, result_path.parent)
    origin = float(result["infermeter"]["start_epoch"])
    result["infermeter"]["telemetry"] = telemetry.stop(
        path=result_path.with_name(result_path.stem + ".telemetry.jsonl"), origin=origin,
        window=(origin, origin + float(result.get("duration") or 0.0)),
        output_tokens=int(result.get("total_output_tokens") or 0))
    result["infermeter"]["efficiency"] = efficiency_for(result, spec)
    report = RunReport(result=result, result_path=result_path, records_path=records_path)
    try:
        write_json_atomic(result_path, result)
    except OSError as exc:  # disk full at the end: the caller prints the summary and says so
        report.result_saved, report.write_error = False, storage_error(exc, result_path)
    return report


def _follow(rendezvous: Rendezvous, procs: list, event) -> None:
    """Wait for ``event``; a worker process that dies without a word is given up on (its share missing)."""
    while True:
        try:
            if event.wait(0.5):
                return
        except KeyboardInterrupt:
            continue  # the workers got the signal too; they stop and send what they have
        for i, p in enumerate(procs):
            if not p.is_alive():
                rendezvous.give_up(i, f"worker {i} exited (exit code {p.exitcode})")
