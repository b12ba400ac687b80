"""Print the summary of a benchmarks/gpu/run.sh folder as Markdown (small: one row per cell).

    python summary.py OUTDIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

GIB = 1024 ** 3


def _f(v, fmt: str = "{:,.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _gib(v) -> str:
    return "-" if v is None else f"{v / GIB:.1f} GiB"


def verdict(validity: dict) -> str:
    """VALID, or INVALID with its reasons; the per-metric "too few samples" reasons folded into one."""
    if not validity:
        return "-"
    few: dict[str, list[str]] = {}
    other = []
    for reason in validity.get("reasons", []):
        m = re.match(r"too few samples: (\w+) (p[\d., p]+) from (\d+) samples", reason)
        if m:
            few.setdefault(m.group(2).split(",")[0].strip() + "+", []).append(f"{m.group(1)} ({m.group(3)})")
        else:
            other.append(reason[:80])
    if few:
        other.insert(0, "too few samples for " + "; ".join(f"{p}: {', '.join(ms)}" for p, ms in few.items()))
    return validity.get("label", "-") + (": " + "; ".join(other) if other else "")


def client_line(out: Path, cells: list) -> str:
    """Requests, output lengths, the client's lag and CPU, send lags, and where the cells' time went."""
    n = sum(r["completed"] for _, _, r in cells)
    lens = [(r["infermeter"].get("output_len_stats") or {}) for _, _, r in cells]
    lag = max(((r["infermeter"]["client"].get("loop_lag_p99_ms") or 0.0, name) for name, _, r in cells),
              default=(0.0, "-"))
    cpu = max((r["infermeter"]["client"].get("cpu_utilization") or 0.0 for _, _, r in cells), default=0.0)
    dispatch = max((r["infermeter"]["client"].get("dispatch_lag_max_ms") or 0.0 for _, _, r in cells), default=0.0)
    send = 0.0
    for name, _, r in cells:
        if r["infermeter"]["load"].get("mode") != "rate":
            continue
        for line in (out / "experiment" / "cells" / name / "result.records.jsonl").open():
            rec = json.loads(line)
            if not rec.get("warmup") and rec.get("sent") is not None:
                send = max(send, 1000 * (rec["sent"] - rec["scheduled"]))
    wall = sum(c["finished"] - c["started"] for _, c, _ in cells if c.get("finished") and c.get("started"))
    measured = sum(r["duration"] for _, _, r in cells)
    return (f"requests: {n} measured, output lengths {min(x.get('min', 0) for x in lens)}.."
            f"{max(x.get('max', 0) for x in lens)}; client: loop-lag p99 at most {lag[0]:.2f} ms ({lag[1]}), "
            f"CPU at most {100 * cpu:.1f} % of a core; rate cells: release lag at most {dispatch:.2f} ms, "
            f"send lag at most {send:.2f} ms; cells took {wall:.0f} s, of which measured {measured:.0f} s "
            f"(the rest: warm-up requests and preparation)")


def main(out: Path) -> None:
    machine = out / "machine.txt"
    if machine.exists():
        print(machine.read_text().splitlines()[0])
    store = out / "experiment"
    plan = json.loads((store / "plan.json").read_text())["cells"] if (store / "plan.json").exists() else []
    cells = []
    for planned in sorted(plan, key=lambda c: c["seq"]):  # run order
        folder = store / "cells" / planned["cell_id"]
        cell = json.loads((folder / "cell.json").read_text()) if (folder / "cell.json").exists() else {}
        result = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else None
        cells.append((planned["cell_id"], cell, result))
    print()
    print("| cell | ok/sent | in->out tok | out tok/s | TTFT mean / p99 ms | ITL mean ms | equal outputs"
          " | client | GPU peak | validity |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ready, peaks, bound, unequal = [], [], 0, 0
    for name, cell, r in cells:
        short = name.removeprefix("transformers.").removesuffix(".r0")
        if r is None:
            folder = out / "experiment" / "cells" / name
            status = cell.get("status") or ("interrupted at the time budget (kept in .partial-*)"
                                            if any(folder.glob(".partial-*")) else "not run (time budget)")
            print(f"| {short} | {status} {str(cell.get('error') or '')[:60]} |" + " |" * 8)
            continue
        im = r["infermeter"]
        work = im.get("work", {})
        lens = im.get("output_len_stats") or {}
        exact = work.get("exact")
        equal = "yes" if exact else f"no ({lens.get('min')}..{lens.get('max')})"
        unequal += 0 if exact else 1
        client = im.get("client", {})
        bound += bool(client.get("client_bound"))
        gpus = ((im.get("telemetry") or {}).get("gpu") or {}).get("devices") or {}
        peak = None
        for g in gpus.values():
            if g.get("ready"):
                ready.append(g["ready"]["mem_used_bytes"])
            if g.get("peak"):
                peak = max(peak or 0, g["peak"]["mem_used_bytes"])
                peaks.append(g["peak"]["mem_used_bytes"])
        label = verdict(im.get("validity") or {})
        n_in = r["total_input_tokens"] / max(r["completed"], 1)
        n_out = r["total_output_tokens"] / max(r["completed"], 1)
        print(f"| {short} | {r['completed']}/{r['completed'] + r['failed']} | {n_in:,.0f}->{n_out:,.0f} "
              f"| {_f(r['output_throughput'])} | {_f(r['mean_ttft_ms'])} / {_f(r['p99_ttft_ms'])} "
              f"| {_f(r['mean_itl_ms'], '{:.2f}')} | {equal} | {'CLIENT-BOUND' if client.get('client_bound') else 'ok'} "
              f"| {_gib(peak)} | {label} |")
    print()
    done = sum(1 for _, _, r in cells if r is not None)
    print(f"cells: {done} with results of {len(cells)}; client-bound: {bound}; unequal output lengths: {unequal}")
    print(client_line(out, [(n, c, r) for n, c, r in cells if r is not None]))
    if ready or peaks:
        print(f"GPU memory (NVML): after the model loaded {_gib(ready[0] if ready else None)} (before any request); "
              f"before the last cell {_gib(ready[-1] if ready else None)}; peak {_gib(max(peaks) if peaks else None)}")
    else:
        print("GPU memory: no GPU sampler was available")
    for path in sorted((store / "servers").glob("*.json")):
        start = json.loads(path.read_text())
        devices = ((start.get("telemetry") or {}).get("gpu") or {}).get("devices") or {}
        mem = "; ".join(f"GPU {k}: idle {_gib(g.get('idle_mem_used_bytes'))}, after load "
                        f"{_gib((g.get('ready') or {}).get('mem_used_bytes'))} (server process "
                        f"{_gib((g.get('ready') or {}).get('server_process_mem_bytes'))})"
                        for k, g in devices.items())
        print(f"server {start['target']}: ready {start['startup_s']:.1f} s after launch"
              + (f"; {mem}" if mem else ""))
    sc = out / "selfcheck.json"
    if sc.exists():
        env = json.loads(sc.read_text())["envelope"]
        parts = []
        for itl, e in env["by_itl"].items():
            w1, w5 = e.get("within_1pct"), e.get("within_5pct")
            parts.append(f"ITL {float(itl):g} ms: 1 % up to C={w1['concurrency'] if w1 else '-'}, "
                         f"5 % up to C={w5['concurrency'] if w5 else '-'}")
        print(f"client self-check: {'; '.join(parts)}; max {env.get('max_output_tok_s', 0):,.0f} tok/s, "
              f"{env.get('tokens_per_client_cpu_s') or 0:,.0f} tokens per client CPU s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
