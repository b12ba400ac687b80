"""How often does the regression gate (``infermeter compare --fail-if``) raise a false alarm,
and how often does it catch a real slowdown?  Runs against the in-tree test server.

Three test-server configurations, each one server process (its jitter drawn afresh per request):

* A:  TTFT 400 ms ± 200 ms (uniform jitter), one output token;
* B5: the same with TTFT 420 ms (5 % slower);
* B2: the same with TTFT 408 ms (2 % slower).

Runs (``infermeter run`` settings: random dataset, 16-token prompts, ``--ignore-eos``, one
output token, ``--max-concurrency 192``; the default run size is 1000 requests):

* false alarms: 2 x PAIRS runs of A at 1000 requests, compared in disjoint pairs (A vs A);
* detection of 5 %: the first DETECT A runs against DETECT runs of B5, 1000 requests each;
* detection of 2 %: A against B2 at 1000, 2000 and 4000 requests.

Every pair goes through the same code as ``infermeter compare`` (load the result files and
their records, bootstrap and rank tests, the gate), with the gate of docs/ci.md:
``--fail-if "mean_ttft_ms>+3%" --fail-if "p99_ttft_ms>+5%" --fail-if "mean_e2el_ms>+3%"``.
A few pairs are also run through the command line itself to check its exit codes.

    nice python benchmarks/gate_power.py --out /tmp/gate-bench           # runs, then analyses
    python benchmarks/gate_power.py --out /tmp/gate-bench --analyse-only # analyses saved runs again

Runs that the validity check marks INVALID (e.g. client-bound on a busy machine) are
counted and reported: the gate gives them no verdict, so they cannot raise a false alarm
and cannot be caught either.  Every figure is also given with the validity labels removed
(``*_validity_ignored``): the statistics alone, on every pair.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

GATE = ["mean_ttft_ms>+3%", "p99_ttft_ms>+5%", "mean_e2el_ms>+3%"]
CONFIGS = {"A": 400.0, "B5": 420.0, "B2": 408.0}
JITTER_MS = 200.0
CONCURRENCY = 192


def collect(out: Path, pairs: int, detect: int, sizes2: dict[int, int]) -> None:
    from infermeter.embedded.models import ensure_tokenizer
    from infermeter.runner.execute import execute_run
    from infermeter.runner.spec import RunSpec
    from infermeter.testserver.helper import run_test_server

    tok, _ = ensure_tokenizer()
    plan: list[tuple[str, int, int]] = []  # (config, size, index)
    plan += [("A", 1000, i) for i in range(2 * pairs)]
    plan += [("B5", 1000, i) for i in range(detect)]
    for n, k in sizes2.items():
        if n != 1000:
            plan += [("A", n, i) for i in range(k)]
        plan += [("B2", n, i) for i in range(k)]
    servers = {name: run_test_server(ttft_ms=ttft, ttft_jitter_ms=JITTER_MS, itl_ms=100, seed=7 + i)
               for i, (name, ttft) in enumerate(CONFIGS.items())}
    started = time.time()
    try:
        for done, (cfg, n, i) in enumerate(plan):
            folder = out / f"{cfg}-n{n}"
            name = f"r{i:03d}.json"
            if (folder / name).is_file():
                continue
            spec = RunSpec.from_flat(dict(
                backend="vllm", base_url=servers[cfg].base_url, model="test-model", tokenizer=str(tok),
                dataset_name="random", random_input_len=16, random_output_len=1, ignore_eos=True,
                num_prompts=n, max_concurrency=CONCURRENCY, result_dir=str(folder), result_filename=name,
                progress=False, seed=i))
            r = execute_run(spec).result
            print(f"[{time.time() - started:6.0f}s] {done + 1}/{len(plan)} {cfg} n={n} #{i}: mean TTFT "
                  f"{r['mean_ttft_ms']:.1f} ms, {r['infermeter']['validity']['label']}", flush=True)
    finally:
        for s in servers.values():
            s.stop()


def _runs(out: Path, cfg: str, n: int) -> list[Path]:
    return sorted((out / f"{cfg}-n{n}").glob("r*.json"))


def analyse(out: Path, pairs: int, detect: int, sizes2: dict[int, int]) -> dict:
    from infermeter.reports.compare_report import build
    from infermeter.reports.compare_sides import load_runs
    from infermeter.reports.gate import parse_fail_if

    gate = [parse_fail_if(e) for e in GATE]

    def load(path: Path, strip_validity: bool) -> list:
        runs = load_runs(path)
        if strip_validity:  # the statistics alone, as if every run were VALID
            for r in runs:
                r.result.get("infermeter", {}).pop("validity", None)
        return runs

    def judge(a: Path, b: Path, strip_validity: bool = False, blocks: int = 20) -> dict:
        rep = build(load(a, strip_validity), load(b, strip_validity), str(a), str(b), thresholds=gate,
                    blocks=blocks)
        comp = rep.comparisons[0]
        return {"exit": rep.exit_code, "invalid": any("INVALID" in r for r in comp.reasons),
                "verdicts": {v.key: v.verdict for v in comp.verdicts},
                "gate": {g.threshold.text: g.status for g in rep.gate},
                "rel": {v.key: v.rel for v in comp.verdicts}}

    summary: dict = {"gate": GATE}
    t0 = time.time()
    a_runs = _runs(out, "A", 1000)
    fa = [judge(a_runs[2 * i], a_runs[2 * i + 1]) for i in range(min(pairs, len(a_runs) // 2))]
    keys = list(fa[0]["verdicts"]) if fa else []
    summary["false_alarms"] = {
        "pairs": len(fa), "invalid_pairs": sum(p["invalid"] for p in fa),
        "gate_failed": sum(p["exit"] != 0 for p in fa),
        "per_metric_significant": {k: sum(p["verdicts"][k] in ("better", "worse") for p in fa) for k in keys},
        "pairs_with_any_significant": sum(any(v in ("better", "worse") for v in p["verdicts"].values()) for p in fa),
    }
    fa_all = [judge(a_runs[2 * i], a_runs[2 * i + 1], True) for i in range(min(pairs, len(a_runs) // 2))]
    summary["false_alarms_validity_ignored"] = {
        "pairs": len(fa_all), "gate_failed": sum(p["exit"] != 0 for p in fa_all),
        "per_metric_significant": {k: sum(p["verdicts"][k] in ("better", "worse") for p in fa_all) for k in keys},
        "gate_failed_in_valid_pairs": sum(p["exit"] != 0 for p, q in zip(fa_all, fa) if not q["invalid"]),
        "mean_ttft_rel": [round(p["rel"].get("mean_ttft_ms") or 0.0, 4) for p in fa_all]}
    by_req = [judge(a_runs[2 * i], a_runs[2 * i + 1], blocks=0) for i in range(min(pairs, len(a_runs) // 2))]
    summary["false_alarms_by_request"] = {  # resampling single requests (--blocks 0), validity kept
        "pairs": len(by_req), "invalid_pairs": sum(p["invalid"] for p in by_req),
        "gate_failed": sum(p["exit"] != 0 for p in by_req)}
    b5 = _runs(out, "B5", 1000)
    det = [judge(a_runs[i], b5[i]) for i in range(min(detect, len(b5)))]
    summary["detect_5pct"] = _detection(det)
    summary["detect_5pct_validity_ignored"] = _detection(
        [judge(a_runs[i], b5[i], True) for i in range(min(detect, len(b5)))])
    summary["detect_2pct"] = {}
    for n in sizes2:
        a_n, b_n = _runs(out, "A", n), _runs(out, "B2", n)
        res = [judge(a_n[i], b_n[i]) for i in range(min(sizes2[n], len(a_n), len(b_n)))]
        summary["detect_2pct"][n] = _detection(res)
        summary["detect_2pct"][f"{n}_validity_ignored"] = _detection(
            [judge(a_n[i], b_n[i], True) for i in range(len(res))])
    summary["analysis_s"] = round(time.time() - t0, 1)
    summary["runs_invalid"] = {f"{p.parent.name}": 0 for p in out.glob("*/r*.json")}
    for p in out.glob("*/r*.json"):
        label = ((json.loads(p.read_text()).get("infermeter") or {}).get("validity") or {}).get("label")
        summary["runs_invalid"][p.parent.name] += label == "INVALID"
    summary["false_alarms_validity_ignored"]["mean_ttft_rel_sd"] = float(
        np.std(summary["false_alarms_validity_ignored"]["mean_ttft_rel"], ddof=1))
    summary["ttft_by_tenth"] = by_tenth(a_runs[:60])
    summary["runs"] = {d.name: len(list(d.glob("r*.json"))) for d in sorted(out.iterdir()) if d.is_dir()}
    # the command line on one pair of each kind: its exit codes
    from infermeter.cli.main import main

    fail_if = [x for e in GATE for x in ("--fail-if", e)]
    if fa:
        summary["cli_exit_same_config"] = main(["compare", str(a_runs[0]), str(a_runs[1]), "--json", *fail_if])
    if det:
        summary["cli_exit_5pct_slower"] = main(["compare", str(a_runs[0]), str(b5[0]), "--json", *fail_if])
    return summary


def by_tenth(paths: list[Path]) -> dict:
    """Mean TTFT of each tenth of a run's requests (in send order): mean and standard deviation
    over the runs (is the start of a run different, and by how much from run to run?)."""
    from infermeter.storage.files import read_records

    rows = []
    for p in paths:
        recs = sorted((r for r in read_records(p.with_name(p.stem + ".records.jsonl")) if r.ok and not r.warmup),
                      key=lambda r: r.sent)
        t = np.array([r.ttft * 1e3 for r in recs])
        rows.append([float(b.mean()) for b in np.array_split(t, 10)])
    m = np.array(rows)
    return {"runs": len(rows), "mean_ms": [round(x, 1) for x in m.mean(axis=0)],
            "sd_ms": [round(x, 1) for x in m.std(axis=0, ddof=1)]}


def _detection(res: list[dict]) -> dict:
    return {"pairs": len(res), "invalid_pairs": sum(p["invalid"] for p in res),
            "gate_failed": sum(p["exit"] != 0 for p in res),
            "mean_ttft_worse": sum(p["verdicts"].get("mean_ttft_ms") == "worse" for p in res),
            "median_ttft_worse": sum(p["verdicts"].get("median_ttft_ms") == "worse" for p in res),
            "p99_ttft_worse": sum(p["verdicts"].get("p99_ttft_ms") == "worse" for p in res),
            "ttft_distribution_worse": sum(p["verdicts"].get("ttft_distribution") == "worse" for p in res),
            "mean_ttft_rel": [round(p["rel"].get("mean_ttft_ms") or 0.0, 4) for p in res]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the runs (reused: finished runs are not rerun)")
    ap.add_argument("--pairs", type=int, default=50, help="A-vs-A pairs for the false-alarm rate")
    ap.add_argument("--detect", type=int, default=20, help="A-vs-B5 pairs at the default run size")
    ap.add_argument("--sizes", default="1000:10,2000:6,4000:5", help="run size:pairs for the 2 %% change")
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    sizes2 = {int(a): int(b) for a, b in (x.split(":") for x in args.sizes.split(","))}
    started = time.time()
    if not args.analyse_only:
        collect(out, args.pairs, args.detect, sizes2)
    collected = time.time() - started
    summary = analyse(out, args.pairs, args.detect, sizes2)
    summary["collect_s"] = round(collected, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
