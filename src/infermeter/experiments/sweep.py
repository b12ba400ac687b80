"""Run an experiment: target by target, cell by cell, each cell an ordinary run.

Guarantees (see docs/experiments.md):

* a finished cell is never run again by ``resume`` and never lost: its result.json
  is written atomically before cell.json says ``done``;
* a cell that was killed (SIGKILL, power loss) or interrupted (Ctrl-C, SIGTERM)
  mid-run is re-run from scratch; its partial files are moved to
  ``cells/<id>/.partial-<n>/``, never deleted;
* an embedded target's engine is started once for all of that target's cells;
* warm-up requests (``options.warmup_requests``) are sent once per target and workload,
  in the first cell of that workload after the server started, not in every cell;
* a load point's extra repeats (``min_samples``) run only while it lacks samples and
  its ``repeat_budget_s`` is not spent (experiments/repeats.py);
* the outcome says how much of the wall time was measurement: ``efficiency`` =
  the cells' measured durations / the sweep's wall time (also in ``sweeps.jsonl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from infermeter.core.notices import Notice, as_notice
from infermeter.errors import StorageError, TargetError, UserError
from infermeter.experiments.cells import Cell, Estimator, build_plan, runspec_from_settings
from infermeter.experiments.repeats import RepeatPlanner
from infermeter.experiments.spec import ExperimentSpec
from infermeter.experiments.store import Store, _interrupted, copy_file
from infermeter.runner.target import ExistingServer, open_target
from infermeter.storage.files import write_json_atomic

RESULT_FILENAME = "result.json"


class SweepInterrupted(Exception):
    """Ctrl-C / SIGTERM stopped the sweep; the interrupted cell was set aside."""


class SweepEvents:
    """What a sweep reports as it goes; the CLI draws it, tests may record it."""

    def planned(self, todo: list[Cell], done: int, estimator: Estimator) -> None: ...

    def target_start(self, target: str, kind: str, cells: int) -> None: ...

    def target_skipped(self, target: str, reason: str) -> None: ...

    def cell_start(self, index: int, total: int, cell: Cell, eta_s: float) -> None: ...

    def cell_end(self, cell: Cell, row: dict[str, Any], wall_s: float) -> None: ...

    def cell_failed(self, cell: Cell, error: str) -> None: ...

    def cell_skipped(self, cell: Cell, reason: str) -> None: ...

    def log(self, message: str) -> None: ...


@dataclass
class SweepOutcome:
    store: Store
    planned: int
    done_before: int
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # left pending (target unreachable, engine failed)
    set_aside: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # extra repeats with enough samples or no budget left
    interrupted: bool = False
    wall_s: float = 0.0
    measured_s: float = 0.0  # the cells' measured durations (first request sent to last answer), summed
    server_start_s: float = 0.0  # starting servers (embedded engine, launched servers)
    warmups: int = 0  # cells that sent warm-up requests

    @property
    def complete(self) -> bool:
        return not (self.failed or self.skipped or self.interrupted)

    @property
    def efficiency(self) -> float | None:
        """Measured time / wall time of this sweep (None before anything ran), to 4 digits: the value
        printed and the one stored in sweeps.jsonl are the same number."""
        if self.wall_s > 0 and self.measured_s > 0:
            return round(self.measured_s / self.wall_s, 4)
        return None

    def summary(self) -> dict[str, Any]:
        return {"cells_run": len(self.done), "failed": len(self.failed), "left_pending": len(self.skipped),
                "not_run": len(self.not_run), "interrupted": self.interrupted, "wall_s": round(self.wall_s, 3),
                "measured_s": round(self.measured_s, 3), "server_start_s": round(self.server_start_s, 3),
                "warmup_cells": self.warmups,
                "efficiency": self.efficiency}


@dataclass
class _Runtime:
    base_url: str
    tokenizer: str | None
    server_log: Path | None
    model: str | None = None  # the name a launched server answers to
    warmed: set[str] = field(default_factory=set)  # workloads warmed up since this server started


def run_sweep(spec: ExperimentSpec, *, resume: bool = False, only: str | None = None,
              events: SweepEvents | None = None, progress: Callable | None = None,
              engine_progress: Callable[[str, int | None, int | None], None] | None = None,
              argv: list[str] | None = None) -> SweepOutcome:
    ev = events or SweepEvents()
    t_start = time.monotonic()
    plan = build_plan(spec)
    if only is not None and only not in spec.targets:
        raise UserError(f"--only {only!r} is not a target of experiment {spec.name}",
                        f"use one of: {', '.join(spec.targets)}")
    selected = [t for t in spec.targets if only is None or t == only]
    store = Store(spec.resolved_output_dir)
    if store.exists() and not resume:
        raise UserError(f"{str(store.root)!r} already holds an experiment",
                        "pass --resume to continue it, or choose a new output_dir (--output-dir)")
    if store.exists():
        meta = store.read_meta()
        if "sweep" in str(meta.get("kind", "")).split("+") and meta.get("name") != spec.name:
            raise UserError(f"{str(store.root)!r} holds experiment {meta.get('name')!r}, not {spec.name!r}",
                            "choose another output_dir (--output-dir), or resume with that experiment's spec")
    outcome = SweepOutcome(store=store, planned=len(plan), done_before=0)
    with store.lock():
        _reconcile(store, plan, selected, outcome, ev)
        store.write_meta(spec.name, "sweep", spec.description)
        store.write_spec(spec.resolved())
        store.write_plan([c.definition() for c in plan])
        store.rebuild_index()
        estimator = Estimator(spec)
        planner = RepeatPlanner(spec)
        rows = {r["cell_id"]: r for r in store.rows()}
        for cell in plan:
            if store.file_state(cell.cell_id) == "done":
                rec = store.read_cell(cell.cell_id) or {}
                if rec.get("started") and rec.get("finished"):
                    estimator.observe(cell, rec["finished"] - rec["started"])
                planner.observe_row(cell, rows.get(cell.cell_id) or {})
        todo = [c for c in plan if c.target in selected and store.file_state(c.cell_id) != "done"]
        outcome.done_before = sum(1 for c in plan if c.target in selected) - len(todo)
        ev.planned(todo, outcome.done_before, estimator)
        index = 0
        try:
            for target in selected:
                cells = [c for c in todo if c.target == target]
                if not cells:
                    continue
                ev.target_start(target, spec.targets[target].kind, len(cells))
                try:
                    t_server = time.monotonic()
                    with _runtime(spec, target, store, ev, engine_progress) as rt:
                        outcome.server_start_s += time.monotonic() - t_server
                        for i, cell in enumerate(cells):
                            index += 1
                            reason = planner.skip_reason(cell)
                            if reason is not None:
                                outcome.not_run.append(cell.cell_id)
                                store.mark_pending(cell.definition(), note=reason)
                                ev.cell_skipped(cell, reason)
                                continue
                            remaining = [c for c in todo[todo.index(cell):]]
                            ev.cell_start(index, len(todo), cell, estimator.total(remaining))
                            verdict = _run_cell(store, cell, rt, estimator, ev, progress, engine_progress, argv,
                                                outcome, planner)
                            if verdict == "target_error":
                                rest = [c.cell_id for c in cells[i + 1:]]
                                outcome.skipped.extend(rest)
                                index += len(rest)
                                if rest:
                                    ev.target_skipped(target, f"the target failed; its {len(rest)} remaining "
                                                              "cell(s) stay pending")
                                break
                except StorageError:  # a full disk: every later cell would fail the same way
                    raise
                except UserError as exc:  # the engine did not start: this target's cells stay pending
                    pending = [c.cell_id for c in cells if c.cell_id not in outcome.done
                               and c.cell_id not in outcome.failed]
                    outcome.skipped.extend(pending)
                    index += len(pending)
                    ev.target_skipped(target, str(exc))
        except (KeyboardInterrupt, SweepInterrupted):
            outcome.interrupted = True
        finally:
            outcome.wall_s = time.monotonic() - t_start
            store.record_sweep(outcome.summary())
    return outcome


def changed_cells(store: Store, plan: list[Cell]) -> list[str]:
    """Finished cells of the store whose measurement settings differ from the plan's (an edited spec)."""
    out = []
    for cell in plan:
        if store.file_state(cell.cell_id) == "done":
            rec = store.read_cell(cell.cell_id) or {}
            if rec.get("fingerprint") != cell.fingerprint:
                out.append(cell.cell_id)
    return out


def _reconcile(store: Store, plan: list[Cell], selected: list[str], outcome: SweepOutcome,
               ev: SweepEvents) -> None:
    """Refuse finished cells of other settings; set aside half-run ones of the selected targets."""
    changed = set(changed_cells(store, plan))
    for cell in plan:
        state = store.file_state(cell.cell_id)
        if state == "done":
            rec = store.read_cell(cell.cell_id) or {}
            if cell.cell_id in changed:
                raise UserError(f"cell {cell.cell_id} in {str(store.root)!r} was run with other settings than "
                                "the spec now gives",
                                "restore the spec as it was (see spec.yaml there), or choose a new output_dir")
            if rec.get("status") != "done":  # killed after result.json was renamed into place
                result_file = store.cell_dir(cell.cell_id) / RESULT_FILENAME
                rec.update(status="done", finished=result_file.stat().st_mtime)
                write_json_atomic(store.cell_dir(cell.cell_id) / "cell.json", rec)
        elif state in ("partial", "failed") and cell.target in selected:
            dest = store.set_aside(cell.cell_id)
            if dest is not None:
                outcome.set_aside.append(cell.cell_id)
                ev.log(f"{cell.cell_id}: {'failed' if state == 'failed' else 'unfinished'} attempt moved to "
                       f"{store.rel(dest)}; the cell runs again")


@contextlib.contextmanager
def _runtime(spec: ExperimentSpec, target: str, store: Store, ev: SweepEvents,
             engine_progress) -> Iterator[_Runtime]:
    """The target's server under test, live through ``runner.target.open_target``; a launched or embedded
    server's log is kept in the store (``servers/TARGET-EPOCH.log``)."""
    t = spec.targets[target]
    if t.kind == "url":
        with open_target(ExistingServer(str(t.url), flag=f"targets.{target}.url")) as live:
            yield _Runtime(base_url=live.base_url, tokenizer=None, server_log=None)
        return
    if t.kind == "launch":
        yield from _launched(spec, target, store, ev)
        return
    from infermeter.embedded.target import EmbeddedEngine

    cfg = t.embedded
    assert cfg is not None
    engine = EmbeddedEngine(cfg.model, parallel=cfg.parallel, ctx_size=cfg.ctx_size, progress=engine_progress,
                            log=ev.log)
    with open_target(engine) as live:
        try:
            yield _Runtime(base_url=live.base_url, tokenizer=str(engine.tokenizer_dir),
                           server_log=Path(engine.log_path) if engine.log_path else None)
        finally:
            log = getattr(engine, "log_path", None)
            if log and Path(log).exists():
                with contextlib.suppress(OSError):
                    copy_file(Path(log), store.root / "servers" / f"{target}-{int(live.started_epoch)}.log")


def _launched(spec: ExperimentSpec, target: str, store: Store, ev: SweepEvents) -> Iterator[_Runtime]:
    """Start the target's server from its launch profile; its log lives in the store.

    GPU telemetry runs from before the start until the server answers (phases idle ->
    loading -> ready): ``servers/TARGET-EPOCH.json`` holds the server's provenance, its
    start time and the memory it took to load (idle, peak while loading, ready), and
    ``servers/TARGET-EPOCH.telemetry.jsonl`` the samples."""
    from infermeter.experiments.serverlimits import launch_settings
    from infermeter.process import free_port
    from infermeter.servers import LocalServer, ServerSettings, get_profile
    from infermeter.servers.local import embedded_model
    from infermeter.telemetry import TelemetrySession

    cfg = spec.targets[target].launch
    assert cfg is not None
    fitted, notes = launch_settings(spec, target)
    if "port" not in cfg.settings:  # no fixed port asked for: one that is free now
        fitted["port"] = free_port("127.0.0.1")
    settings = ServerSettings(**fitted)
    if get_profile(cfg.profile).name == "llama.cpp":
        settings = embedded_model(settings)  # model: tiny / 1b -> the embedded engine's generated GGUF
    for note in notes:
        ev.log(f"{target}: {note}")
    stem = f"{target}-{int(time.time())}"
    log_path = store.root / "servers" / f"{stem}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = LocalServer(cfg.profile, settings, vendor=cfg.vendor, executable=cfg.executable,
                         log_path=log_path, startup_timeout=cfg.startup_timeout_s)
    ev.log(f"{target}: starting {cfg.profile} ({settings.model})")
    loading: dict[str, Any] = {}

    @contextlib.contextmanager
    def watch(srv) -> Iterator[None]:
        with TelemetrySession(log=ev.log) as telemetry:  # idle sample, then "loading"
            started = time.time()
            yield
            telemetry.server_pid = srv.pid
            telemetry.mark_phase("ready")
            loading["summary"] = telemetry.stop(path=log_path.with_name(f"{stem}.telemetry.jsonl"), origin=started)

    with open_target(server, watch) as live:
        summary = loading.get("summary") or {}
        startup = {"target": target, "started_epoch": live.started_epoch, "ready_epoch": live.ready_epoch,
                   "startup_s": live.startup_s, "provenance": server.provenance(), "telemetry": summary}
        write_json_atomic(log_path.with_name(f"{stem}.json"), startup)
        ev.log(f"{target}: ready at {server.base_url} after {live.startup_s:.1f} s{_loaded_memory(summary)}")
        yield _Runtime(base_url=live.base_url, tokenizer=settings.tokenizer, server_log=log_path,
                       model=server.model_name)


def _loaded_memory(summary: dict) -> str:
    gpu = summary.get("gpu") or {}
    ready = gpu.get("ready_mem_used_bytes")  # summed over the GPUs (telemetry's own total)
    if ready is None:
        return ""
    idle = sum(g.get("idle_mem_used_bytes") or 0 for g in (gpu.get("devices") or {}).values())
    return f"; GPU memory used {ready / 2**30:.1f} GiB (idle {idle / 2**30:.1f} GiB)"


def _run_cell(store: Store, cell: Cell, rt: _Runtime, estimator: Estimator, ev: SweepEvents,
              progress, engine_progress, argv, outcome: SweepOutcome, planner: RepeatPlanner) -> str:
    from infermeter.runner.execute import execute_run

    cid = cell.cell_id
    cdir = store.cell_dir(cid)
    record = store.begin_cell(cell.definition())
    log_offset = _size(rt.server_log)
    t0 = time.monotonic()
    timeout = cell.settings.get("cell_timeout_s")
    fired = {"timeout": False}
    factory = progress
    if timeout:
        if threading.current_thread() is threading.main_thread():
            factory = _with_deadline(progress, float(timeout), fired)
        else:
            ev.log(f"{cid}: stop.cell_timeout_s needs the main thread; not applied")
    try:
        spec = runspec_from_settings(cell.settings, base_url=rt.base_url, tokenizer=rt.tokenizer,
                                     result_dir=str(cdir), result_filename=RESULT_FILENAME,
                                     progress=progress is not None, model=rt.model)
        spec = spec.replace(target_name=cell.target, cell_id=cid)
        if cell.workload in rt.warmed and spec.load.warmup_requests:  # warmed up once per server and workload
            spec = spec.replace(warmup_requests=0)
        record["warmup_requests"] = spec.load.warmup_requests
        report = execute_run(spec, argv=argv, progress=factory, engine_progress=engine_progress, log=ev.log)
        if report.write_error is not None:  # disk full: this cell's files are incomplete
            raise report.write_error
    except KeyboardInterrupt:
        _set_aside_interrupted(store, cell, outcome)
        raise
    except Exception as exc:  # a user or target error, or a bug in one cell: record it, go on with the next
        if not isinstance(exc, UserError) and os.environ.get("INFERMETER_DEBUG"):
            raise
        error = str(exc) if isinstance(exc, UserError) else f"internal error: {type(exc).__name__}: {exc}"
        if isinstance(exc, StorageError):  # disk full: every later cell would fail too; stop the sweep
            with contextlib.suppress(OSError):
                store.fail_cell(record, error)
            raise
        _copy_log(rt, log_offset, cdir)
        store.fail_cell(record, error)
        outcome.failed.append(cid)
        ev.cell_failed(cell, error)
        return "target_error" if isinstance(exc, TargetError) else "failed"
    result = report.result
    if fired["timeout"] and _interrupted(result):
        _mark_timed_out(report.result_path, result, float(timeout))
    if _interrupted(result):
        _set_aside_interrupted(store, cell, outcome)
        raise SweepInterrupted(result["infermeter"]["stopped_early"])
    _copy_log(rt, log_offset, cdir)
    row = store.finish_cell(record, result)
    wall = time.monotonic() - t0
    estimator.observe(cell, wall)
    planner.observe(cell, result.get("completed"), wall)
    rt.warmed.add(cell.workload)
    outcome.warmups += 1 if record["warmup_requests"] else 0
    duration = result.get("duration")
    outcome.measured_s += float(duration) if isinstance(duration, (int, float)) else 0.0
    outcome.done.append(cid)
    ev.cell_end(cell, row, wall)
    return "done"


def _set_aside_interrupted(store: Store, cell: Cell, outcome: SweepOutcome) -> None:
    dest = store.set_aside(cell.cell_id)
    outcome.set_aside.append(cell.cell_id)
    store.mark_pending(cell.definition(), note=f"interrupted; partial files in {store.rel(dest)}" if dest else None)


def _mark_timed_out(path: Path, result: dict[str, Any], timeout: float) -> None:
    reason = f"cell time limit reached (stop.cell_timeout_s {timeout:g})"
    im = result["infermeter"]
    old = im.get("stopped_early")
    im["stopped_early"] = reason
    im["warnings"] = [Notice("stopped-early", f"stopped early: {reason}", {"why": reason}).to_dict()
                      if as_notice(w).code == "stopped-early" or w == f"stopped early: {old}" else w
                      for w in im.get("warnings", [])]
    write_json_atomic(path, result)


def _with_deadline(inner, seconds: float, fired: dict[str, bool]):
    """Wrap the progress factory: after ``seconds`` of load, stop the run the way SIGTERM does
    (the runner's own handler: in-flight requests cancelled, a complete result saved)."""

    @contextlib.asynccontextmanager
    async def factory(counters):
        async def timer() -> None:
            await asyncio.sleep(seconds)
            fired["timeout"] = True
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.ensure_future(timer())
        try:
            if inner is not None:
                async with inner(counters):
                    yield
            else:
                yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return factory


def _size(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return path.stat().st_size
    except OSError:
        return None


def _copy_log(rt: _Runtime, offset: int | None, cdir: Path) -> None:
    if rt.server_log is None or offset is None:
        return
    with contextlib.suppress(OSError):
        copy_file(rt.server_log, cdir / "server.log", offset)
