"""``TelemetrySession``: sample GPUs and the server's ``/metrics`` through a run, off the
request path, and summarise it by phase.

Every source runs on its own daemon thread (loop.SamplerLoop) with urllib or the
vendor library; nothing is scheduled on the load generator's event loop.  Usage::

    with TelemetrySession(gpu="auto") as tel:          # idle sample, then "loading"
        ... start the server ...
        tel.attach_server(base_url, backend="vllm")     # scrape its /metrics at 1 Hz
        tel.mark_phase("ready")                         # loaded, before traffic
        tel.mark_phase("load")
        outcome = ... run ...
        summary = tel.stop(outcome=outcome, path=result_path.with_suffix(".telemetry.jsonl"))

``stop`` writes the series (JSONL: a ``meta`` line, then one sample a line, each with
``t`` (epoch), ``t_rel`` (seconds from the run's origin, the clock of the request
records) and ``phase``) and returns the summary dict (summary.py) for the result.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from infermeter.telemetry.base import Availability, Sampler
from infermeter.telemetry.gpu import open_gpu_samplers
from infermeter.telemetry.loop import SamplerLoop
from infermeter.telemetry.phases import IDLE, LOADING, READY, PhaseTimeline
from infermeter.telemetry.server_metrics import ServerMetricsSampler, resolve_all
from infermeter.telemetry.summary import (client_latencies, output_tokens_of, summarize_gpus,
                                          summarize_server, window_of)

SERIES_SCHEMA = 1


class TelemetrySession:
    def __init__(self, *, gpu: str = "auto", gpus: Sequence[int] | None = None, interval: float = 1.0,
                 gpu_interval: float = 0.5, enabled: bool = True, initial_phase: str = IDLE,
                 mark_loading: bool = True, log: Callable[[str], None] = lambda msg: None,
                 extra_samplers: Sequence[Sampler] = ()) -> None:
        self.gpu_choice = gpu
        self.gpus = list(gpus) if gpus is not None else None
        self.interval = interval
        self.gpu_interval = gpu_interval
        self.enabled = enabled
        self.mark_loading = mark_loading
        self.log = log
        self.timeline = PhaseTimeline(initial=initial_phase)
        self.samples: list[dict[str, Any]] = []
        self.tried: list[Availability] = []
        self.server_pid: int | None = None
        self._extra = list(extra_samplers)
        self._loops: list[SamplerLoop] = []
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self.started_epoch: float | None = None

    # -- construction for a run ---------------------------------------------------------

    @classmethod
    def for_run(cls, settings: Any, *, embedded: bool = False,
                log: Callable[[str], None] = lambda msg: None) -> "TelemetrySession":
        """From a RunSpec's telemetry section (``telemetry``, ``telemetry_gpu``,
        ``telemetry_interval``, ``telemetry_gpu_interval`` when it has them; defaults
        otherwise).  An ``embedded`` engine is started by the run: its phases begin at
        ``idle``; an external server is already loaded: they begin at ``ready``."""
        return cls(gpu=getattr(settings, "telemetry_gpu", "auto") or "auto",
                   interval=float(getattr(settings, "telemetry_interval", 1.0) or 1.0),
                   gpu_interval=float(getattr(settings, "telemetry_gpu_interval", 0.5) or 0.5),
                   enabled=bool(getattr(settings, "telemetry", True)),
                   initial_phase=IDLE if embedded else READY, mark_loading=embedded, log=log)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "TelemetrySession":
        self.start()
        if self.mark_loading:
            self.mark_phase(LOADING)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self, sampler: Sampler, samples: list[dict[str, Any]], t: float) -> None:
        with self._lock:
            for s in samples:
                s.setdefault("t", t)  # a remote agent's samples carry their own (clock-corrected) time
                self.samples.append(s)

    def _add_loop(self, sampler: Sampler, interval: float) -> SamplerLoop:
        loop = SamplerLoop(sampler, interval, self._deliver)
        self._loops.append(loop)
        loop.start()
        return loop

    def start(self) -> "TelemetrySession":
        """Open the GPU samplers that work here and start sampling; returns at once after
        the first sample (phase ``idle`` or the initial phase)."""
        if self._started:
            return self
        self._started = True
        self.started_epoch = time.time()
        self.timeline.mark(self.timeline.initial, self.started_epoch)  # the first span: idle (or ready)
        if not self.enabled:
            return self
        samplers, self.tried = open_gpu_samplers(self.gpu_choice, self.gpus)
        for extra in self._extra:
            avail = extra.probe()
            self.tried.append(avail)
            if avail.available:
                samplers.append(extra)
        if self.gpu_choice not in ("auto", "none"):  # asked for by name: say when it does not work
            for a in self.tried:
                if not a.available:
                    self.log(f"telemetry: {a.name} not available: {a.reason}")
        for s in samplers:
            self._add_loop(s, self.gpu_interval if s.kind == "gpu" else self.interval)
        self._sample_all(wait=2.0)
        return self

    def attach_server(self, url: str, backend: str | None = None, *, pid: int | None = None,
                      engine: Any = None) -> Availability:
        """Scrape ``url``'s ``/metrics`` from now on.  ``engine`` (an embedded engine)
        supplies the server's pid for per-process GPU memory."""
        if engine is not None and pid is None:
            pid = getattr(engine, "pid", None) or getattr(getattr(engine, "_server", None), "pid", None)
        self.server_pid = pid
        sampler = ServerMetricsSampler(url, backend)
        if not self.enabled:
            return Availability(sampler.name, False, "telemetry turned off")
        avail = sampler.probe()
        self.tried.append(avail)
        if avail.available:
            loop = self._add_loop(sampler, self.interval)
            loop.poke(wait=2.0)
        return avail  # when not available, the reason is in the summary's "samplers"

    def _sample_all(self, wait: float) -> None:
        targets = [(loop, loop.request()) for loop in self._loops]
        deadline = time.monotonic() + wait
        for loop, target in targets:
            loop.wait_for(target, max(0.0, deadline - time.monotonic()))

    def mark_phase(self, name: str, *, wait: float = 2.0) -> None:
        """A new phase begins now; every source takes a sample at once (waiting up to
        ``wait`` seconds in all), so even a short phase has one."""
        self.timeline.mark(name, time.time())
        if self._loops:
            self._sample_all(wait)

    def after_warmup(self) -> None:
        """Every source samples at once, between the warm-up and the measured window (the load
        generator calls this before it sets the window's origin): the server's counters and
        histograms are then read after the warm-up, so warm-up requests stay out of the window's
        deltas.  The call blocks the event loop for the length of a scrape, on purpose: nothing
        measured is scheduled yet.  Without warm-up requests the ``load`` mark made just before
        the run does this job."""
        if self.enabled and self._loops:
            self._sample_all(wait=2.0)

    def close(self) -> None:
        """Stop sampling (idempotent); no summary, nothing written."""
        for loop in self._loops:
            loop.stop()
            loop.sampler.close()
        self._stopped = True

    # -- the end ------------------------------------------------------------------------------

    def stop(self, outcome: Any = None, *, path: str | Path | None = None,
             window: tuple[float, float] | None = None, origin: float | None = None,
             output_tokens: int | None = None, client: dict[str, Sequence[float]] | None = None,
             warmup: bool = False) -> dict[str, Any]:
        """Take a last sample, stop, write the series to ``path`` and return the summary.

        ``outcome`` (the runner's RunOutcome) supplies the measured window (its
        ``start_epoch`` to the last answer), the output tokens and the client latencies;
        or pass ``window`` (epochs), ``origin``, ``output_tokens`` and ``client``."""
        if outcome is not None:
            records = list(outcome.records)
            origin = outcome.start_epoch if origin is None else origin
            window = window or window_of(records, outcome.start_epoch)
            output_tokens = output_tokens_of(records) if output_tokens is None else output_tokens
            client = client or client_latencies(records)
            warmup = warmup or bool(getattr(outcome, "warmup_records", None))
        if not self.enabled:
            self.close()
            return {"enabled": False}
        if self._loops and not self._stopped:
            self._sample_all(wait=2.0)  # one after the window's end: counters bracket it
        stats = {loop.sampler.name: {**loop.stats(), **_safe_describe(loop.sampler)} for loop in self._loops}
        self.close()
        end_epoch = time.time()
        if window is not None:
            self.timeline.apply_window(window[0], window[1] if window[1] < end_epoch else None, warmup=warmup)
        if origin is None:
            origin = window[0] if window is not None else self.started_epoch
        with self._lock:
            samples = sorted(self.samples, key=lambda s: s["t"])
        resolve_all(samples, [loop.sampler for loop in self._loops])  # off the run: parse histograms now
        for s in samples:
            s["phase"] = self.timeline.phase_at(s["t"])
            s["t_rel"] = round(s["t"] - origin, 6) if origin is not None else None
        summary: dict[str, Any] = {
            "enabled": True,
            "origin_epoch": origin,
            "window": ({"start_epoch": window[0], "end_epoch": window[1],
                        "duration_s": round(window[1] - window[0], 6)} if window else None),
            "phases": self.timeline.spans(until=end_epoch, origin=origin),
            "samplers": [{**a.to_dict(), **stats.get(a.name, {})} for a in self.tried],
        }
        intervals = {loop.sampler.name: loop.interval for loop in self._loops}
        gpus = summarize_gpus(samples, window=window, origin=origin, server_pid=self.server_pid,
                              intervals=intervals)
        summary["gpu"] = {"available": bool(gpus), "devices": gpus, **_gpu_totals(gpus, output_tokens)}
        if not gpus:
            reasons = [f"{a.name}: {a.reason}" for a in self.tried if not a.available and a.name != "server-metrics"]
            summary["gpu"]["reason"] = "; ".join(reasons) or "no GPU sampler"
        summary["server"] = summarize_server(samples, window=window, origin=origin, client=client)
        summary["server"]["pid"] = self.server_pid
        summary["output_tokens"] = output_tokens
        summary["series_file"] = None
        if path is not None and samples:  # nothing sampled (no GPU, no /metrics): no file
            path = Path(path)
            try:
                _write_series(path, samples, summary)
                summary["series_file"] = path.name
            except OSError as exc:  # disk full: the summary is kept, the series is not
                summary["series_file"] = None
                summary["series_error"] = f"{path.name}: {exc.strerror or exc}"
        return summary


def _safe_describe(sampler: Sampler) -> dict[str, Any]:
    try:
        return sampler.describe()
    except Exception:
        return {}


def _gpu_totals(gpus: dict[str, Any], output_tokens: int | None) -> dict[str, Any]:
    if not gpus:
        return {}
    out: dict[str, Any] = {}
    ready = [g["ready"]["mem_used_bytes"] for g in gpus.values() if g.get("ready")]
    if ready and len(ready) == len(gpus):
        out["ready_mem_used_bytes"] = sum(ready)
    peaks = [g["peak"]["mem_used_bytes"] for g in gpus.values() if g.get("peak")]
    if peaks and len(peaks) == len(gpus):
        out["peak_mem_used_bytes_sum"] = sum(peaks)  # per-device peaks, not necessarily simultaneous
    windows = {key: g.get("window") for key, g in gpus.items() if g.get("window") is not None}
    energies = [w.get("energy_j") for w in windows.values()]
    if energies and all(e is not None for e in energies):
        total = sum(energies)
        out["window_energy_j"] = round(total, 3)
        methods = sorted({w.get("energy_method") for w in windows.values()})
        out["energy_method"] = methods[0] if len(methods) == 1 else "mixed: " + ", ".join(methods)
        if output_tokens:
            out["energy_per_output_token_j"] = round(total / output_tokens, 6)
    elif energies:  # one GPU without a whole window makes the total n/a: never a partial sum
        out["window_energy_j"] = None
        out["energy_na"] = "; ".join(f"GPU {key}: {w.get('energy_na') or 'no energy'}"
                                     for key, w in windows.items() if w.get("energy_j") is None)
    utils = [(g.get("window") or {}).get("mean_util_pct") for g in gpus.values()]
    if utils and all(u is not None for u in utils):
        out["mean_util_pct"] = round(sum(utils) / len(utils), 2)
    return out


def _write_series(path: Path, samples: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One JSON line per sample after a ``meta`` line; written to a temporary file and
    renamed, so a reader never sees half a series."""
    from infermeter.storage.files import write_bytes_atomic

    meta = {"kind": "meta", "schema": SERIES_SCHEMA, "origin_epoch": summary["origin_epoch"],
            "window": summary["window"], "phases": summary["phases"]}
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    write_bytes_atomic(path, [orjson.dumps(meta) + b"\n",
                              *(orjson.dumps(s, option=option) + b"\n" for s in samples)])


def read_series(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(meta, samples) of a telemetry JSONL file."""
    meta = None
    samples = []
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if obj.get("kind") == "meta":
                meta = obj
            else:
                samples.append(obj)
    return meta, samples
