"""Write the small bundled traces (ours, synthetic) in each format the ``trace`` dataset reads.

    python -m infermeter.workloads.data.make_traces

Deterministic (seed 0): rerunning it rewrites the same files.  Each trace has 48
requests over about 24 s of Poisson arrivals (2 req/s), short prompts (so a CPU engine
replays them in seconds) and short answers.  The Mooncake trace uses 16-token hash
blocks: 4 shared "system prompts" of 2-4 blocks each, then 1-3 blocks of the request's
own, so prefix reuse is visible; ``infermeter:mooncake-small`` knows its block size.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N, RATE, BLOCK = 48, 2.0, 16


def rows(seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / RATE, size=N))
    t -= t[0]
    systems = [list(range(100 * g, 100 * g + int(rng.integers(2, 5)))) for g in range(4)]
    next_id = 1000
    out = []
    for ts in t:
        shared = systems[int(rng.integers(0, 4))]
        own = int(rng.integers(1, 4))
        hashes = shared + list(range(next_id, next_id + own))
        next_id += own
        n_in = (len(hashes) - 1) * BLOCK + int(rng.integers(1, BLOCK + 1))
        out.append((float(ts), n_in, int(rng.integers(4, 25)), hashes))
    return out


def main() -> None:
    data = rows()
    with open(HERE / "mooncake-small.jsonl", "w", encoding="utf-8") as f:
        for ts, n_in, n_out, hashes in data:
            f.write(json.dumps({"timestamp": int(round(ts * 1000)), "input_length": n_in,
                                "output_length": n_out, "hash_ids": hashes}) + "\n")
    with open(HERE / "burstgpt-small.csv", "w", encoding="utf-8") as f:
        f.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        for k, (ts, n_in, n_out, _) in enumerate(data):
            model = "ChatGPT" if k % 3 else "GPT-4"
            f.write(f"{ts:.3f},{model},{n_in},{n_out},{n_in + n_out},Conversation log\n")
    start = datetime(2024, 5, 1, 9, 0, 0)
    with open(HERE / "azure-small.csv", "w", encoding="utf-8") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for ts, n_in, n_out, _ in data:
            stamp = (start + timedelta(seconds=ts)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            f.write(f"{stamp},{n_in},{n_out}\n")


if __name__ == "__main__":
    main()
