"""The entry point of one benchmark run: resolve its spec once, then run it in this
process, or as N worker processes merged."""

from __future__ import annotations

from typing import Any, Callable

from infermeter.runner.plan import resolve
from infermeter.runner.session import ProgressFactory, RunReport, run_single
from infermeter.runner.spec import RunSpec
from infermeter.runner.workers import run_workers


def execute_run(spec: RunSpec, *, argv: list[str] | None = None,
                progress: ProgressFactory | None = None,
                engine_progress: Callable[[str, int | None, int | None], None] | None = None,
                log: Callable[[str], None] = lambda msg: None,
                start_gate: Callable[[], Any] | None = None) -> RunReport:
    """Run ``spec`` and write its result; ``--workers N`` runs N processes, one shard each, merged."""
    plan = resolve(spec)  # every value judged, once, before anything starts
    if spec.load.workers > 1:
        return run_workers(plan, argv=argv, log=log)
    return run_single(plan, argv=argv, progress=progress, engine_progress=engine_progress, log=log,
                      start_gate=start_gate)
