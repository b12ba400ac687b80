"""The master's side after the run: merge what the nodes sent into one result.

Every node streams its result JSON and its ``.records.jsonl`` to the master
(runner/barrier.py); they are merged by ``metrics/merge.py`` from the pooled
per-request records, so the merged percentiles are those of one run over the
same requests.  The merged result lists every node under
``infermeter.nodes``: rank, host, status, clock offset to the master and the
round trip it was measured over; each node's own client self-check stays in
``infermeter.client.per_shard``.  A node that is missing (killed, crashed,
late) is named in a ``node-missing`` warning, and the merge marks its share
of the schedule missing (``merge-incomplete``): the result says it covers
only part of the planned load.

Size: a record is one JSON line per request, about 0.5 kB plus about 20
bytes per streamed token's timestamp (``token_times``), plus the generated
text when it is kept (``--save-generated-text``): 100 000 requests of 256
output tokens are about 550 MB over the cluster network (docs/scale-out.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import orjson

from infermeter.core.notices import Notice
from infermeter.errors import UserError
from infermeter.runner.barrier import NodeState


def received_results(states: Sequence[NodeState]) -> list[Path]:
    """The result JSON files the nodes that finished sent (one per node)."""
    out = []
    for s in states:
        if s.status != "done":
            continue
        results = [p for p in s.files if p.suffix == ".json"]
        if len(results) != 1:
            s.status, s.reason = "missing", f"sent {len(results)} result files, not one"
            continue
        out.append(results[0])
    return out


def merge_nodes(states: Sequence[NodeState], out_path: Path, *, what: str = "node") -> tuple[dict, Path]:
    """Merge the finished nodes' files into ``out_path``; the result names every node and what became of it."""
    from infermeter.metrics.merge import merge_files
    from infermeter.storage.files import write_json_atomic

    paths = received_results(states)
    if not paths:
        why = "; ".join(f"{what} {s.rank}: {s.reason or s.status}" for s in states)
        raise UserError(f"no {what} delivered a result ({why})", f"see the {what}s' logs")
    result, records_path = merge_files(paths, out_path)
    im = result["infermeter"]
    im["nodes"] = [dict(s.to_dict(), **_node_provenance(s)) for s in states]
    lost = [s for s in states if s.status != "done"]
    if lost:
        names = ", ".join(f"{what} {s.rank}" + (f" ({s.host})" if s.host else "") for s in lost)
        count = len(states)
        notice = Notice("node-missing",
                        f"MISSING: {names} delivered no result; their share(s) of the schedule "
                        f"({', '.join(f'{s.rank}/{count}' for s in lost)}) are missing from this result: "
                        + "; ".join(f"{what} {s.rank}: {s.reason or s.status}" for s in lost),
                        {"missing": [{"rank": s.rank, "host": s.host, "status": s.status, "reason": s.reason}
                                     for s in lost]})
        im.setdefault("warnings", []).insert(0, notice.to_dict())
        im["incomplete"] = True
    write_json_atomic(out_path, result)
    return result, records_path


def _node_provenance(s: NodeState) -> dict:
    """What the node itself recorded: its barrier view and its client self-check verdict."""
    for p in s.files:
        if p.suffix == ".json":
            try:
                im = orjson.loads(p.read_bytes())["infermeter"]
            except (OSError, ValueError, KeyError):
                return {}
            client = im.get("client") or {}
            return {"barrier": im.get("barrier"), "provenance": im.get("provenance"),
                    "client_bound": client.get("client_bound"), "client_reasons": client.get("reasons", [])}
    return {}
