"""Expand an experiment spec into its cells, in run order, and estimate how long they take.

Order: target by target; within a target repeat by repeat; within a repeat
workload by workload; within a workload the load grid's bursts, then
concurrencies, then rates, each in the order given.

Each cell is one ordinary run: its ``settings`` are the RunSpec fields (plus how
to reach the target), its ``fingerprint`` a hash of the settings that define the
measurement (not the URL or credentials), so a resumed sweep can tell a finished
cell of the same spec from one of an edited spec.

Duration estimate (documented in docs/experiments.md)::

    seconds = overhead + prompts x input_len / input_tok_s + prompts x output_len / output_tok_s

with prompts = num_prompts + warm-up requests; a rate cell takes at least
num_prompts / rate.  ``input_tok_s`` / ``output_tok_s`` are the target's
``estimate:`` or a nominal default (``NOMINAL``); once cells of a target have
finished, its estimates are scaled by measured / estimated wall time of those
cells.  An embedded target adds ``ENGINE_START_S`` once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from infermeter.experiments.spec import ExperimentSpec, Throughput

NOMINAL = {
    "url": Throughput(input_tok_s=20_000, output_tok_s=2_000),
    "launch": Throughput(input_tok_s=20_000, output_tok_s=2_000),
    "embedded": Throughput(input_tok_s=3_000, output_tok_s=250),
}
CELL_OVERHEAD_S = 2.0  # tokenizer, probe, prompt building, result writing
ENGINE_START_S = 5.0  # embedded engine start (model already generated)
UNKNOWN_INPUT_LEN = 256  # sharegpt/jsonl: the dataset decides; assumed for estimates only
UNKNOWN_OUTPUT_LEN = 256

# What a target's runs cost (docs/cost.md): read after the run, so not measured.
COST_FIELDS = ("gpu_price", "gpu_price_per", "gpu_count", "dstack_run")
# Settings that say how to reach a target or when to give up, not what is measured: a resumed
# sweep may change them without invalidating finished cells.
CONNECTION_FIELDS = ("url", "headers", "api_key_env", "api_key_file", "estimate", *COST_FIELDS)
NOT_MEASURED_RUN_FIELDS = ("metadata", "max_errors", "max_error_rate", "request_timeout", "stall_timeout",
                           "save_generated_text")


@dataclass(frozen=True)
class Cell:
    seq: int
    cell_id: str
    target: str
    workload: str
    dataset: str
    input_len: int | None
    output_len: int | None
    load_mode: str  # burst | concurrency | rate
    load_value: float
    num_prompts: int
    repeat: int
    settings: dict[str, Any] = field(repr=False, hash=False, compare=False)
    fingerprint: str = ""
    extra: bool = False  # a repeat beyond ``repeats``, run only while its point lacks min_samples (and budget)

    @property
    def point(self) -> tuple[str, str, str, float]:
        """(target, workload, load mode, load value): the cells that repeat one measurement."""
        return self.target, self.workload, self.load_mode, float(self.load_value)

    @property
    def load_label(self) -> str:
        return f"{self.load_mode} {_num(self.load_value)}"

    def definition(self) -> dict[str, Any]:
        """What cell.json and plan.json record about the cell (credentials in headers and URLs redacted)."""
        from infermeter.secrets import redact_tree

        settings = redact_tree(self.settings)
        settings["target"]["headers"] = settings["target"].get("headers") or {}
        return {
            "cell_id": self.cell_id, "seq": self.seq, "target": self.target, "workload": self.workload,
            "dataset": self.dataset, "input_len": self.input_len, "output_len": self.output_len,
            "load_mode": self.load_mode, "load_value": self.load_value, "num_prompts": self.num_prompts,
            "repeat": self.repeat, "fingerprint": self.fingerprint, "settings": settings,
            **({"extra": True} if self.extra else {}),
        }


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def cell_id_for(target: str, workload: str, mode: str, value: float, repeat: int) -> str:
    return f"{target}.{workload}.{mode}-{_num(value)}.r{repeat}"


def target_settings(spec: ExperimentSpec, target: str) -> dict[str, Any]:
    t = spec.targets[target]
    out: dict[str, Any] = {"kind": t.kind, "backend": t.backend_name, "endpoint": t.endpoint,
                           "headers": dict(t.headers), "api_key_env": t.api_key_env,
                           "api_key_file": t.api_key_file}
    if t.kind == "url":
        out.update(url=t.url, model=t.model, served_model_name=t.served_model_name, tokenizer=t.tokenizer,
                   trust_remote_code=t.trust_remote_code)
    elif t.kind == "embedded":
        out["engine"] = t.embedded.model_dump()  # type: ignore[union-attr]
    else:
        from infermeter.experiments.serverlimits import launch_settings

        out["launch"] = t.launch.model_dump()  # type: ignore[union-attr]
        out["launch"]["settings"], _notes = launch_settings(spec, target)  # limits from the cells
    out.update({k: getattr(t, k) for k in COST_FIELDS if getattr(t, k) is not None})
    return out


def base_settings(spec: ExperimentSpec, target: str, workload: str,
                  target_part: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of a (target, workload) pair before the load point is chosen."""
    ws = spec.workloads[workload]
    run: dict[str, Any] = {"dataset_name": ws.dataset, **ws.run_fields()}
    run.update(spec.options.model_dump())
    run.update({k: v for k, v in spec.stop.model_dump().items() if k != "cell_timeout_s"})
    grid = spec.grid_for(workload)
    run.update(burstiness=grid.burstiness, arrival=grid.arrival)
    target_part = target_settings(spec, target) if target_part is None else target_part
    return {"target": json.loads(json.dumps(target_part)), "run": run,
            "cell_timeout_s": spec.stop.cell_timeout_s}


def _cell_seed(base: int, workload: str, mode: str, value: float, repeat: int) -> int:
    """Prompts differ between cells (no cell reuses another's prompts from a server cache) but
    are the same for every target at the same cell, so targets do equal work."""
    h = hashlib.sha256(f"{workload}|{mode}|{_num(value)}|{repeat}".encode()).digest()
    return base + int.from_bytes(h[:4], "big") % 1_000_000_000


def load_points(spec: ExperimentSpec, workload: str) -> list[tuple[str, float, int, dict[str, Any]]]:
    """(mode, value, num_prompts, RunSpec load fields) for each point of the workload's grid."""
    grid = spec.grid_for(workload)
    out: list[tuple[str, float, int, dict[str, Any]]] = []
    for b in grid.burst:
        out.append(("burst", b, b, {"num_prompts": b, "request_rate": math.inf, "max_concurrency": None}))
    for c in grid.concurrency:
        n = grid.concurrency_prompts(c)
        out.append(("concurrency", c, n, {"num_prompts": n, "request_rate": math.inf, "max_concurrency": c}))
    for r in grid.rate:
        n = grid.rate_prompts(r)
        out.append(("rate", r, n, {"num_prompts": n, "request_rate": r,
                                   "max_concurrency": grid.rate_max_concurrency}))
    return out


def fingerprint(settings: dict[str, Any]) -> str:
    target = {k: v for k, v in settings["target"].items() if k not in CONNECTION_FIELDS}
    run = {k: v for k, v in settings["run"].items() if k not in NOT_MEASURED_RUN_FIELDS}
    blob = json.dumps({"target": target, "run": run}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_plan(spec: ExperimentSpec) -> list[Cell]:
    """Every cell in run order; a point's extra repeats (``min_samples``) follow its last regular one."""
    cells: list[Cell] = []
    targets = {t: target_settings(spec, t) for t in spec.targets}  # derived once per target
    for target in spec.targets:
        for repeat in range(spec.repeats):
            for workload, ws in spec.workloads.items():
                in_len, out_len = ws.lengths()
                for mode, value, n, load in load_points(spec, workload):
                    last = spec.repeats_for(n) if repeat == spec.repeats - 1 else repeat + 1
                    for r in range(repeat, last):
                        settings = base_settings(spec, target, workload, targets[target])
                        run = settings["run"]
                        run.update(load)
                        run["seed"] = _cell_seed(spec.options.seed, workload, mode, value, r)
                        cid = cell_id_for(target, workload, mode, value, r)
                        run["metadata"] = {**spec.options.metadata, "experiment": spec.name,
                                           "experiment_cell": cid, "experiment_target": target,
                                           "experiment_workload": workload, "experiment_repeat": str(r)}
                        cells.append(Cell(seq=len(cells) + 1, cell_id=cid, target=target, workload=workload,
                                          dataset=ws.dataset, input_len=in_len, output_len=out_len,
                                          load_mode=mode, load_value=value, num_prompts=n, repeat=r,
                                          settings=settings, fingerprint=fingerprint(settings),
                                          extra=r >= spec.repeats))
    return cells


def runspec_from_settings(settings: dict[str, Any], *, base_url: str, tokenizer: str | None,
                          result_dir: str, result_filename: str | None = None, progress: bool = False,
                          model: str | None = None):
    """The RunSpec of one cell, pointed at a live base URL (and tokenizer, for an embedded target;
    ``model``: the name a launched server answers to, where it differs from the settings')."""
    from infermeter.runner.spec import RunSpec

    t = settings["target"]
    run = dict(settings["run"])
    fields: dict[str, Any] = {"backend": t["backend"], "base_url": base_url, "endpoint": t.get("endpoint"),
                              "headers": dict(t.get("headers") or {}), "api_key_env": t.get("api_key_env"),
                              "api_key_file": t.get("api_key_file")}
    if t["kind"] == "url":
        fields.update(model=t.get("model"), served_model_name=t.get("served_model_name"),
                      tokenizer=t.get("tokenizer") or tokenizer, trust_remote_code=t.get("trust_remote_code", False))
    elif t["kind"] == "launch":
        server = t["launch"]["settings"]
        fields.update(model=model or server.get("served_model_name") or server["model"],
                      tokenizer=tokenizer or server.get("tokenizer") or server["model"],
                      launch_gpu_count=int(server.get("tensor_parallel") or 1))
    else:
        fields["tokenizer"] = tokenizer
    fields.update({k: t[k] for k in COST_FIELDS if t.get(k) is not None})
    run.setdefault("request_rate", math.inf)
    fields.update(run)
    fields.update(result_dir=result_dir, result_filename=result_filename, progress=progress)
    return RunSpec.from_flat(fields)


# ----------------------------------------------------------------------------- estimates

def nominal_seconds(cell: Cell, spec_estimate: Throughput | None) -> float:
    kind = cell.settings["target"]["kind"]
    tp = spec_estimate or NOMINAL[kind]
    run = cell.settings["run"]
    n = cell.num_prompts + int(run.get("warmup_requests") or 0)
    in_len = cell.input_len if cell.input_len is not None else UNKNOWN_INPUT_LEN
    out_len = cell.output_len if cell.output_len is not None else UNKNOWN_OUTPUT_LEN
    work = n * in_len / tp.input_tok_s + n * out_len / tp.output_tok_s
    if cell.load_mode == "rate":
        work = max(work, cell.num_prompts / cell.load_value)
    timeout = cell.settings.get("cell_timeout_s")
    if timeout:
        work = min(work, float(timeout))
    return CELL_OVERHEAD_S + work


@dataclass
class Estimator:
    """Nominal estimates, scaled per target by measured / estimated time of its finished cells."""

    spec: ExperimentSpec
    measured: dict[str, tuple[float, float]] = field(default_factory=dict)  # target -> (measured s, nominal s)

    def nominal(self, cell: Cell) -> float:
        t = self.spec.targets.get(cell.target)
        return nominal_seconds(cell, t.estimate if t else None)

    def factor(self, target: str) -> float:
        m, n = self.measured.get(target, (0.0, 0.0))
        return m / n if m > 0 and n > 0 else 1.0

    def observe(self, cell: Cell, wall_s: float) -> None:
        m, n = self.measured.get(cell.target, (0.0, 0.0))
        self.measured[cell.target] = (m + max(wall_s, 0.0), n + self.nominal(cell))

    def seconds(self, cell: Cell) -> float:
        return self.nominal(cell) * self.factor(cell.target)

    def total(self, cells: Iterable[Cell]) -> float:
        cells = list(cells)
        total = sum(self.seconds(c) for c in cells)
        engines = {c.target for c in cells if c.settings["target"]["kind"] == "embedded"}
        return total + ENGINE_START_S * len(engines)

    def basis(self, target: str) -> str:
        t = self.spec.targets[target]
        tp = t.estimate or NOMINAL[t.kind]
        src = "target's estimate" if t.estimate else f"nominal for {t.kind} targets"
        text = f"{tp.input_tok_s:,.0f} input + {tp.output_tok_s:,.0f} output tok/s ({src})"
        m, n = self.measured.get(target, (0.0, 0.0))
        if m > 0 and n > 0:
            text += f", x{m / n:.2f} measured on finished cells"
        return text


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
