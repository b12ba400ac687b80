"""``--workers N``: N client processes, each with its own event loop and one shard of the schedule.

One Python event loop saturates one core; a load that needs more is split
into shards (see ``load/shard.py``), one per process.  Each worker prepares
everything (prompts, connections, warm-up), reports ready, and waits for the
common start epoch the parent hands out once all are ready, so every shard's
measured window starts at the same wall-clock time.  Workers stream their
records to their own JSONL files (records never cross a pipe on the hot
path); the parent merges them (``metrics/merge.py``) into the one result.

``INFERMETER_WORKER_CPUS=2,3,4`` pins worker i to the i-th listed core
(round robin when there are fewer cores than workers); unset, the workers
run wherever the scheduler puts them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from pathlib import Path
from typing import Callable

from infermeter.errors import FieldError, UserError
from infermeter.runner.efficiency import efficiency_for  # energy, cost, per GPU (docs/cost.md)
from infermeter.runner.plan import RunPlan, resolve
from infermeter.runner.spec import RunSpec
from infermeter.telemetry import TelemetrySession

START_MARGIN_S = 0.2  # between the last worker reporting ready and the common start
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


def _worker_main(spec: RunSpec, conn, argv: list[str], cpu: int | None = None) -> None:  # pragma: no cover
    from infermeter.load.eventloop import use_uvloop
    from infermeter.runner.session import run_single

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def gate() -> float:
        conn.send(("ready", None))
        kind, value = await asyncio.to_thread(conn.recv)
        if kind != "start":
            raise UserError("the parent process stopped the run before it started")
        return float(value)

    try:
        use_uvloop()
        report = run_single(resolve(spec), argv=argv, start_gate=gate)
        if report.write_error is not None:  # disk full: the parent cannot merge what is not on disk
            raise report.write_error
        message = ("done", str(report.result_path))
    except FieldError as exc:  # whole, so the parent's caller words it for its user
        message = ("error", exc)
    except UserError as exc:
        message = ("error", (type(exc).__name__, exc.problem, exc.fix, exc.exit_code))
    except BaseException as exc:
        message = ("error", ("internal", f"{type(exc).__name__}: {exc}", None, 1))
    try:
        conn.send(message)
        conn.close()
    except OSError:  # the parent is gone or gave up on us
        pass


def run_workers(plan: RunPlan, *, argv: list[str] | None = None, log: Callable[[str], None] = lambda m: None):
    """Run ``plan`` in ``workers`` processes and merge their shards; returns a RunReport."""
    from infermeter.runner.drive import result_stem
    from infermeter.runner.session import RunReport
    from infermeter.metrics.merge import merge_files
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
    conns, procs = [], []
    for i in range(n):
        child = spec.replace(**{"workers": 1, "shard": f"{i}/{n}", "progress": False,
                                        "result_dir": str(shard_dir), "result_filename": f"shard{i}of{n}.json",
                                        "if_exists": "overwrite",
                                        "start_at": None, "telemetry": False,  # sampled once, here
                                        "dstack_run": None})  # the price is read once, here
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, child_end, list(argv or []), cpus[i]),
                           name=f"infermeter-worker-{i}", daemon=True)
        proc.start()
        child_end.close()
        conns.append(parent_end)
        procs.append(proc)
    log(f"{n} worker processes started; waiting for them to prepare")
    # GPU and server telemetry for the whole run, sampled by this (otherwise idle) process
    telemetry = TelemetrySession.for_run(spec.telemetry, log=log).start()
    try:
        telemetry.attach_server(spec.server_url(), t.backend)
        telemetry.mark_phase("ready")
        _wait_all(conns, procs, "ready", READY_TIMEOUT_S)
        start_at = spec.load.start_at if spec.load.start_at is not None else time.time() + START_MARGIN_S
        for c in conns:
            c.send(("start", start_at))
        log(f"measured window starts at epoch {start_at:.3f}")
        telemetry.mark_phase("load")
        paths = _wait_all(conns, procs, "done", None)
    except BaseException:
        telemetry.close()
        raise
    finally:
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    try:
        result, records_path = merge_files([Path(p) for p in paths], result_path)
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


def _wait_all(conns, procs, want: str, timeout: float | None) -> list:
    """One ``want`` message from every worker; the first error (or death) ends the wait with it."""
    from multiprocessing.connection import wait

    got: dict[int, object] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while len(got) < len(conns):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if left == 0.0:
            raise UserError(f"{len(conns) - len(got)} worker(s) not {want} after {timeout:.0f} s",
                            "check the server and the machine's load")
        pending = [c for i, c in enumerate(conns) if i not in got]
        try:
            ready = wait(pending, timeout=1.0 if left is None else min(left, 1.0))
        except KeyboardInterrupt:
            continue  # the workers got the signal too; they stop and report what they have
        for c in ready:
            i = conns.index(c)
            try:
                kind, value = c.recv()
            except EOFError:
                procs[i].join(timeout=5)
                raise UserError(f"worker {i} exited without a result (exit code {procs[i].exitcode})",
                                "rerun with --workers 1 to see its error") from None
            if kind == "error" and isinstance(value, FieldError):
                raise FieldError(value.field, value.value, f"worker {i}: " + value.templates[0],
                                 value.templates[1], **value.figures)
            if kind == "error":
                name, problem, fix, code = value
                err = UserError(f"worker {i}: {problem}", fix)
                err.exit_code = code
                raise err
            got[i] = value
        for i, p in enumerate(procs):
            if i not in got and not p.is_alive() and p.exitcode not in (None, 0):
                if not conns[i].poll():
                    raise UserError(f"worker {i} died (exit code {p.exitcode})", "rerun with --workers 1 to see why")
    return [got[i] for i in range(len(conns))]
