"""One shard of a load as a node of a barrier: local worker processes and dstack nodes alike.

A node prepares its run, waits at the barrier (runner/barrier.py) for the
common start, runs its slice of the schedule (load/shard.py), writes its
result with the barrier's provenance (its clock offset to the master), and
streams its files to the master.  ``run_cluster`` is what each node of a
multi-node dstack task runs (``infermeter node``): rank 0 is also the master,
which gathers and merges everything (runner/collect.py) into one result and
prints it between markers for whoever follows the task's log.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Callable, Mapping

import orjson

from infermeter.errors import UserError
from infermeter.runner.barrier import DEFAULT_PORT, NodeLink, Rendezvous, sent_error
from infermeter.runner.spec import RunSpec

RESULT_BEGIN = "----- infermeter merged result begin -----"
RESULT_END = "----- infermeter merged result end -----"
# per-request lists of the vLLM-compatible result: megabytes for a long run, and all in the records file
PER_REQUEST_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "errors", "generated_texts", "start_times",
                    "latencies")


def run_node(spec: RunSpec, link: NodeLink, *, argv: list[str] | None = None,
             log: Callable[[str], None] = lambda m: None, progress=None):
    """Run ``spec`` (one shard) gated by ``link``, record the barrier, send the files; returns its RunReport.
    Its values are judged here (``runner.plan.resolve``): a bad one reaches the master as the FieldError it is."""
    from infermeter.runner.plan import resolve
    from infermeter.runner.session import run_single
    from infermeter.storage.files import write_json_atomic

    async def gate() -> float:
        return await asyncio.to_thread(link.wait_start)

    try:
        report = run_single(resolve(spec), argv=argv, start_gate=gate, log=log, progress=progress)
        if report.write_error is not None:  # the master cannot merge what is not on disk
            raise report.write_error
    except UserError as exc:
        link.fail(exc.problem, exc.fix, exc.exit_code, field_error=sent_error(exc))
        raise
    except BaseException as exc:
        link.fail(f"{type(exc).__name__}: {exc}")
        raise
    report.result["infermeter"]["barrier"] = dict(link.info, host=socket.gethostname())
    write_json_atomic(report.result_path, report.result)
    link.send_files([report.result_path, report.records_path])
    return report


def cluster_env(env: Mapping[str, str] | None = None) -> tuple[str, int, int, int]:
    """(master address, port, rank, node count) from the variables dstack sets on every node."""
    env = os.environ if env is None else env
    missing = [k for k in ("DSTACK_MASTER_NODE_IP", "DSTACK_NODE_RANK", "DSTACK_NODES_NUM") if not env.get(k)]
    if missing:
        raise UserError(f"{', '.join(missing)} not set: 'infermeter node' runs inside a multi-node dstack task",
                        "submit it with 'infermeter shards --submit', or set the variables by hand")
    try:
        rank, nodes = int(env["DSTACK_NODE_RANK"]), int(env["DSTACK_NODES_NUM"])
        port = int(env.get("INFERMETER_BARRIER_PORT") or DEFAULT_PORT)
    except ValueError:
        raise UserError("DSTACK_NODE_RANK, DSTACK_NODES_NUM and INFERMETER_BARRIER_PORT must be integers",
                        "let dstack set them") from None
    if not 0 <= rank < nodes:
        raise UserError(f"DSTACK_NODE_RANK {rank} is outside 0..{nodes - 1}", "let dstack set it")
    return env["DSTACK_MASTER_NODE_IP"], port, rank, nodes


def run_cluster(spec: RunSpec, *, env: Mapping[str, str] | None = None, argv: list[str] | None = None,
                log: Callable[[str], None] = lambda m: None, ready_timeout: float | None = None):
    """This node's part of a multi-node load; on rank 0, the merged result's (result, path, records path)."""
    from infermeter.runner.collect import merge_nodes

    master, port, rank, nodes = cluster_env(env)
    result_dir = Path(spec.output.result_dir)
    node_spec = spec.replace(shard=f"{rank}/{nodes}", workers=1, start_at=None,
                             result_filename=f"shard{rank}of{nodes}.json", if_exists="overwrite",
                             result_dir=str(result_dir / f"node{rank}"), progress=False)
    rendezvous = None
    if rank == 0:
        kw = {} if ready_timeout is None else {"ready_timeout": ready_timeout}
        rendezvous = Rendezvous(nodes, result_dir / "shards", host="0.0.0.0", port=port, **kw)
        rendezvous.start()
        log(f"master: waiting for {nodes} node(s) on port {port}")
    link = NodeLink("127.0.0.1" if rank == 0 else master, port, rank, nodes)
    try:
        run_node(node_spec, link, argv=argv, log=log)
    except BaseException:
        if rendezvous is None:
            raise
        # the master's own shard failed: the others may still have delivered theirs
        rendezvous.give_up(0, "the master's own shard failed")
        if rendezvous.error is not None or not rendezvous.started.is_set():
            rendezvous.close()
            raise
    finally:
        link.close()
    if rendezvous is None:
        return None
    try:
        _wait(rendezvous, log)
    finally:
        rendezvous.close()
    if rendezvous.error is not None:
        raise rendezvous.error
    out = result_dir / "merged.json"
    result, records_path = merge_nodes(rendezvous.states, out)
    result["infermeter"]["barrier_start_epoch"] = rendezvous.start_epoch
    return result, out, records_path


def _wait(rendezvous: Rendezvous, log: Callable[[str], None]) -> None:
    while not rendezvous.wait(5.0):
        pass
    for s in rendezvous.states:
        log(f"node {s.rank} ({s.host or '?'}): {s.status}" + (f" — {s.reason}" if s.reason else ""))


def print_result_block(result: dict, out=None) -> None:
    """The merged result between markers, on one line, for 'dstack logs' readers (cli/shards_cmd.py)."""
    out = out or sys.stdout
    small = {k: v for k, v in result.items() if k not in PER_REQUEST_KEYS}  # those are in the records
    out.write(f"\n{RESULT_BEGIN}\n{orjson.dumps(small).decode()}\n{RESULT_END}\n")
    out.flush()


def result_from_log(text: str) -> dict | None:
    """The last merged result printed by ``print_result_block`` in a log, or None."""
    end = text.rfind(RESULT_END)
    begin = text.rfind(RESULT_BEGIN, 0, end if end >= 0 else None)
    if begin < 0 or end < 0:
        return None
    body = "".join(line.strip() for line in text[begin + len(RESULT_BEGIN):end].splitlines())
    try:
        return orjson.loads(body)
    except ValueError:
        return None
