"""Memory over a long run: does the client's RSS stay flat?

Starts the in-tree test server (pinned to core 0, TTFT/ITL 0 ms, tiny
outputs, keeping no per-request stats), runs ``infermeter run`` as a child
process (pinned to core 1 where there is one) for N requests in a closed
loop, and samples the VmRSS of the client and its prompt builder process from
/proc every second.  Prints the time from the client's start to its first
request, RSS at 10 %, 50 % and 100 % of the measured requests (by the finished
count in the records file), the peak, and the request rate.

    python benchmarks/memory_soak.py --num-prompts 100000
    python benchmarks/memory_soak.py --num-prompts 1000000 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (workers, the prompt builder), summed."""
    total = rss_kib(pid) or 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_rss_kib(int(c)) for c in f.read().split())
    except OSError:
        pass
    return total


class LineCounter:
    """Records written so far (one JSONL line each), read on from where the last count stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while block := f.read(1 << 20):
                    self.offset += len(block)
                    self.lines += block.count(b"\n")
        except OSError:
            pass
        return self.lines


def first_send_epoch(records: Path, start_epoch: float, head: int = 20_000) -> float | None:
    """The earliest send among the first records written (they finish in about send order)."""
    import orjson

    first = None
    with records.open("rb") as f:
        for k, line in enumerate(f):
            if k >= head:
                break
            rec = orjson.loads(line)
            if not rec.get("warmup") and rec.get("sent") is not None:
                first = rec["sent"] if first is None else min(first, rec["sent"])
    return None if first is None else start_epoch + first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-prompts", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=4)
    ap.add_argument("--input-len", type=int, default=8)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", help="also write the samples here")
    args = ap.parse_args()

    from infermeter.embedded.tokenizer import ensure_tokenizer
    from infermeter.testserver.helper import run_test_server

    tok_dir = ensure_tokenizer()[0]
    cores = sorted(os.sched_getaffinity(0))
    server_cpu = cores[0]
    client_cpu = cores[1] if len(cores) > 1 else None
    with (tempfile.TemporaryDirectory() as tmpd,
          run_test_server(ttft_ms=0.0, itl_ms=args.itl_ms, stats_keep_requests=0, cpu=server_cpu) as srv):
        tmp = Path(tmpd)
        name = "soak.json"
        records = tmp / "soak.records.jsonl"
        cmd = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())",
               "run", "--backend", "vllm", "--base-url", srv.base_url, "--model", "test-model",
               "--tokenizer", str(tok_dir), "--dataset-name", "random",
               "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
               "--ignore-eos", "--num-prompts", str(args.num_prompts),
               "--max-concurrency", str(args.concurrency), "--disable-tqdm", "--no-telemetry",
               "--save-result", "--result-dir", str(tmp), "--result-filename", name]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        pre = (lambda: os.sched_setaffinity(0, {client_cpu})) if client_cpu is not None else None
        t0 = time.monotonic()
        started = time.time()
        count_lines = LineCounter(records)
        proc = subprocess.Popen(cmd, env=env, preexec_fn=pre, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        samples: list[tuple[float, int, int]] = []  # (seconds, finished records, RSS KiB)
        while proc.poll() is None:
            r = tree_rss_kib(proc.pid)  # the client and its prompt builder process
            if r:
                samples.append((time.monotonic() - t0, count_lines(), r))
            time.sleep(args.interval)
        out, err = proc.communicate()
        wall = time.monotonic() - t0
        if proc.returncode not in (0, 5):
            print(err.decode()[-3000:], file=sys.stderr)
            return 1
        result = json.loads((tmp / name).read_text())
        first = first_send_epoch(records, result["infermeter"]["start_epoch"])

    n = args.num_prompts
    print(f"requests {n}  completed {result['completed']}  failed {result['failed']}  "
          f"measured {result['duration']:.1f} s  {result['request_throughput']:.0f} req/s  "
          f"(process wall {wall:.1f} s, {len(samples)} samples)")
    first_s = None if first is None else first - started
    client = result["infermeter"]["client"]
    print(f"first request sent {first_s:.3f} s after the client process started; "
          f"prompts built before it {client.get('prompts_built_ahead')}, "
          f"sends that waited for a prompt {client.get('prompt_waits')} ({client.get('prompt_wait_s') or 0:.3f} s)")
    print("startup phases (s): " + ", ".join(f"{k} {v}" for k, v in (result["infermeter"].get("startup") or {}).items()))
    print(f"RSS before the first record: {max((s[2] for s in samples if s[1] == 0), default=0) / 1024:.1f} MiB")
    for frac in (0.1, 0.5, 1.0):
        target = int(n * frac)
        hit = next((s for s in samples if s[1] >= target), samples[-1] if samples else None)
        if hit:
            print(f"RSS at {frac:>4.0%} ({hit[1]} records, t={hit[0]:.1f} s): {hit[2] / 1024:.1f} MiB")
    done = [s for s in samples if s[1] >= n]
    if done:
        print(f"RSS after the last record (result building, {len(done)} samples): "
              f"max {max(s[2] for s in done) / 1024:.1f} MiB")
    during = [s for s in samples if 0 < s[1] < n]
    if during:
        print(f"RSS while records were written: min {min(s[2] for s in during) / 1024:.1f} MiB, "
              f"max {max(s[2] for s in during) / 1024:.1f} MiB")
    peak = max(samples, key=lambda s: s[2]) if samples else None
    if peak:
        print(f"peak RSS {peak[2] / 1024:.1f} MiB at t={peak[0]:.1f} s ({peak[1]} records written)")
    if args.json:
        Path(args.json).write_text(json.dumps({"num_prompts": n, "samples": samples, "wall_s": wall,
                                               "first_request_s": first_s, "client": client,
                                               "startup": result["infermeter"].get("startup"),
                                               "request_throughput": result["request_throughput"],
                                               "duration": result["duration"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
