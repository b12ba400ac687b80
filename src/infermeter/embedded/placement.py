"""Which cores the embedded engine and the client run on.

On a machine with few cores the engine and the client share them, and the
scheduler moves both around: the client's event loop then waits behind the
engine's threads now and then, and its token timestamps carry that wait.  The
tiny engine's token gaps are a few milliseconds, so that noise alone can make
a run client-bound (INVALID).  With the engine pinned to its own cores and the
client to another, the client's loop lag falls to a small fraction of a gap.

``--engine-cpus`` (``auto``, ``off`` or a list of cores) decides:

* unset or ``auto``: with 2 or 3 usable cores, the engine gets all but the
  last one (one thread per core) and the client the last one; with one core,
  or with more than 3, nothing is pinned and the engine runs one thread fewer
  than there are cores (the scheduler then has room for the client);
* ``off``: nothing is pinned;
* a list of cores (``0`` or ``0,1``): the engine runs there, one thread per
  core, and the client on the remaining usable cores.

"Usable" means this process's CPU affinity: ``taskset -c 2,3 infermeter run``
places both within cores 2 and 3.  The result records the placement
(``infermeter.target.embedded_engine.placement``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from infermeter.errors import UserError

FLAG = "--engine-cpus"
FEW_CORES = 3  # up to this many usable cores, the engine and the client are pinned apart


@dataclass(frozen=True)
class Placement:
    engine_cpus: tuple[int, ...] | None  # None: not pinned
    client_cpus: tuple[int, ...] | None
    threads: int  # the engine's --threads
    pinned: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("engine_cpus", "client_cpus"):
            d[k] = None if d[k] is None else list(d[k])
        return d


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cores(cpus: Sequence[int]) -> str:
    return ("core " if len(cpus) == 1 else "cores ") + ",".join(str(c) for c in cpus)


def choose(allowed: Sequence[int], setting: str | None) -> Placement:
    """The placement for usable cores ``allowed`` and the ``--engine-cpus`` value ``setting``."""
    allowed = sorted(set(allowed))
    n = len(allowed)
    spread = max(1, n - 1)
    value = (setting or "auto").strip().lower()
    if value == "off":
        return Placement(None, None, spread, False, f"not pinned ({FLAG} off)")
    if value != "auto":
        try:
            engine = sorted({int(x) for x in value.replace(" ", "").split(",") if x})
        except ValueError:
            engine = []
        if not engine:
            raise UserError(f"{FLAG} {setting!r} is not 'auto', 'off' or a list of cores",
                            f"pass e.g. {FLAG} 0 (engine on core 0, the client on the others), or leave it out")
        missing = sorted(set(engine) - set(allowed))
        if missing:
            raise UserError(f"{FLAG} names core(s) {missing} this process may not run on",
                            f"use cores from {allowed}")
        client = tuple(c for c in allowed if c not in engine) or None
        return Placement(tuple(engine), client, len(engine), True,
                         f"as {FLAG} asks: engine on {_cores(engine)}, client on "
                         + (_cores(client) if client else "any core"))
    if n < 2:
        return Placement(None, None, 1, False, "one usable core: the engine and the client share it")
    if n > FEW_CORES:
        return Placement(None, None, spread, False,
                         f"{n} usable cores: not pinned; the engine runs {spread} threads")
    engine, client = tuple(allowed[:-1]), (allowed[-1],)
    return Placement(engine, client, len(engine), True,
                     f"{n} usable cores: engine on {_cores(engine)} ({len(engine)} thread"
                     f"{'s' if len(engine) > 1 else ''}), client on {_cores(client)}, so neither waits "
                     "for the other")



def pin_current_thread(cpus: Sequence[int] | None) -> set[int] | None:
    """Pin the calling thread (the client's event loop) to ``cpus``; returns the affinity to restore."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    return previous


def restore(previous: set[int] | None) -> None:
    if previous is not None:
        os.sched_setaffinity(0, previous)
