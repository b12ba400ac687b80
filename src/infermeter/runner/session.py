"""One benchmark run, start to finish, as a straight pipeline:

1. prepare  (``runner/plan.resolve``, done by ``runner/execute.py``; here the machine
   and the result place: open-file limit, result folder, tokenizer path),
2. target   (``runner/target.open_target``: the URL, or the embedded engine),
3. drive    (``runner/drive.py``: probe, prompts, load, records),
4. analyse  (``runner/analyse.py``: metrics, validity, the result),
5. write    (the result file, here).

It keeps the promise that nothing starts before everything is checked, and that
a failure mid-run loses no completed request.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from infermeter.errors import UserError
from infermeter.load.schedule import LoadMode
from infermeter.load.shard import check_start_at
from infermeter.runner.analyse import analyse
from infermeter.runner.drive import ProgressFactory, drive
from infermeter.runner.limits import ensure_open_files
from infermeter.runner.plan import RunPlan
from infermeter.runner.startup import Startup
from infermeter.runner.target import ExistingServer, open_target
from infermeter.storage.files import write_json_atomic
from infermeter.storage.names import check_result_place, storage_error
from infermeter.telemetry import TelemetrySession
from infermeter.workloads.tokenizer import Tokenizer, load_tokenizer

__all__ = ["ProgressFactory", "RunReport", "run_single"]


@dataclass
class RunReport:
    result: dict[str, Any]
    result_path: Path
    records_path: Path
    server_log: Path | None = None
    # a file that could not be written (disk full): the result above is still whole in memory
    write_error: UserError | None = None
    result_saved: bool = True


def run_single(plan: RunPlan, *, argv: list[str] | None = None,
               progress: ProgressFactory | None = None,
               engine_progress: Callable[[str, int | None, int | None], None] | None = None,
               log: Callable[[str], None] = lambda msg: None,
               start_gate: Callable[[], Any] | None = None) -> RunReport:
    """One run in this process (``--workers 1``, or one worker's shard)."""
    startup = Startup.begin()
    t0 = time.perf_counter()
    tokenizer = prepare(plan, log)
    if tokenizer is not None:
        startup.phase("tokenizer", t0)
    t_server = time.perf_counter()
    # GPU + /metrics sampling, off the hot path
    with (TelemetrySession.for_run(plan.spec.telemetry, embedded=plan.embedded, log=log) as telemetry,
          _target(plan, log, engine_progress) as (base_url, engine)):
        startup.phase("server", t_server)
        driven = drive(plan, base_url, engine, telemetry, tokenizer, progress=progress, log=log,
                       start_gate=start_gate, startup=startup)
    try:
        result = analyse(plan, driven, argv)
    finally:
        close = getattr(driven.outcome.records, "close", None)
        if close is not None:  # a spilled RecordStore's file
            close()
    report = RunReport(result=result, result_path=driven.result_path, records_path=driven.records_path,
                       server_log=engine.log_path if engine else None)
    return write(report, driven.writer)


def prepare(plan: RunPlan, log: Callable[[str], None]) -> Tokenizer | None:
    """What the machine and the file system must allow before anything starts; a given
    tokenizer is loaded now, so a wrong path fails before any server is started or contacted."""
    spec, load = plan.spec, plan.local_load
    check_start_at(spec.load.start_at)
    check_result_place(Path(spec.output.result_dir), spec.output.result_filename, spec.output.if_exists)
    width = min(load.max_concurrency or load.num_requests, load.num_requests)
    note = ensure_open_files(width, strict=load.mode is not LoadMode.RATE or load.max_concurrency is not None,
                             what=(f"--max-concurrency {width}" if load.max_concurrency
                                   else f"{width} requests in flight at once"))
    if note:
        log(note)
    t = spec.target
    return load_tokenizer(t.tokenizer, trust_remote_code=t.trust_remote_code) if t.tokenizer else None


@contextlib.contextmanager
def _target(plan: RunPlan, log, engine_progress) -> Iterator[tuple[str, Any]]:
    """The run's server under test (the URL, or the embedded engine), live through ``open_target``."""
    server: Any
    if plan.embedded:
        from infermeter.embedded.target import EmbeddedEngine

        e = plan.spec.engine
        server = EmbeddedEngine(e.engine_model, parallel=e.engine_parallel, ctx_size=e.engine_ctx_size,
                                progress=engine_progress, log=log, cpus=e.engine_cpus)
    else:
        server = ExistingServer(plan.spec.server_url())
    with open_target(server) as live:
        yield live.base_url, (None if isinstance(server, ExistingServer) else server)


def write(report: RunReport, writer) -> RunReport:
    """The result file; a disk that filled up is reported, the result stays whole in memory."""
    result = report.result
    if writer.error is not None:  # the records stopped at the last whole line; the result says so
        result["infermeter"]["records_incomplete"] = {"written": writer.count,
                                                      "error": writer.error.strerror or str(writer.error)}
        report.write_error = storage_error(writer.error, report.records_path)
    try:
        write_json_atomic(report.result_path, result)
    except OSError as exc:  # disk full at the end: the caller prints the summary and says so
        report.result_saved = False
        report.write_error = report.write_error or storage_error(exc, report.result_path)
    return report

