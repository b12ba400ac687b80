"""``infermeter shards --submit``: submit the multi-node load task, follow it, fetch the merged result.

The task (servers/loadtask.py) runs ``infermeter node`` on every node; rank 0
merges every node's records and prints the merged result (without its
per-request lists) between markers on its standard output.  This follows the
run with ``dstack run get`` until it finishes and reads that block from
``dstack logs`` (which shows the master's job): logs need nothing set up
beyond the task itself, where a dstack volume would have to exist first in
the fleet's backend and region.  The full result and the pooled records stay
in the master node's result folder (mount a volume there to keep them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from infermeter.errors import UserError
from infermeter.runner.nodes import result_from_log
from infermeter.servers.dstack import DstackRun
from infermeter.servers.loadtask import render_load_task


def submit_load(run_args: Sequence[str], nodes: int, *, workdir: str | Path | None = None,
                env: Mapping[str, str] | None = None, dstack_bin: str | None = None, project: str | None = None,
                timeout: float = 6 * 3600.0, interval: float = 5.0,
                log: Callable[[str], None] = lambda m: None, **render: Any) -> dict:
    """Submit, follow to the end, and return the merged result the master printed."""
    text = render_load_task(run_args, nodes, **render)
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="infermeter-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    name = render.get("name", "infermeter-load")
    path = folder / f"{name}.dstack.yml"
    path.write_text(text, encoding="utf-8")
    run = DstackRun(path, name=name, env=dict(env) if env is not None else None, dstack_bin=dstack_bin,
                    project=project)
    log(f"dstack apply -f {path} ({nodes} nodes)")
    run.apply()
    failure: UserError | None = None
    try:
        run.wait(until=("done",), timeout=timeout, interval=interval, log=log)
    except UserError as exc:  # a node's share missing fails the master's job, yet its merged result is whole
        failure = exc
    except KeyboardInterrupt:
        run.stop()
        raise
    result = result_from_log(run.logs(timeout=120)) if failure is None or _ran(run) else None
    if result is None:
        if failure is not None:
            raise failure
        raise UserError(f"dstack run {name} finished but its log holds no merged result",
                        f"see 'dstack logs {name}'; the master node's result folder holds what was merged")
    return result


def _ran(run: DstackRun) -> bool:
    """Whether the run got as far as running (only then can its log hold a result)."""
    return any(status in ("running", "terminating", "done") for status in run.history)
