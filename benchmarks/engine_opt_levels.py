"""The engine's optimisation plan: the compile time it saves and the engine speed it keeps.

    python benchmarks/engine_opt_levels.py [--workdir bench/engine-opt] [--bench-pairs 80] [--http-pairs 10]

Builds llama-server and llama-batched-bench from the pinned sources (the sdist infermeter
builds from) twice, with the flags infermeter uses:

- ``light``: only the light libraries lowered (``opt_levels_cmake(library=False)``), the
  plan before the model library's part;
- ``plan``: the plan as ``infermeter engine build`` applies it.

Then it prints:

1. compile CPU seconds per target, from each folder's ninja log (builds run one after the
   other; their sums move with the machine's speed, so compare the files both built);
2. the model library's speed: llama-batched-bench on the ``tiny`` model, one thread on the
   last core, prompt 256, 256 generated tokens, batch 1 and 8, in alternating pairs; the
   paired ratio plan/light with a 95 % interval, and the same for light/light as the noise
   floor;
3. the server's speed: README command 1's workload run through each llama-server
   (``INFERMETER_LLAMA_SERVER``), alternating pairs; output tok/s and the ratio.

A folder that already holds both binaries is reused (delete it to rebuild).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infermeter.embedded.build import CMAKE_FLAGS, LLAMA_CPP_PYTHON_VERSION  # noqa: E402
from infermeter.embedded.opt_levels import opt_levels_cmake  # noqa: E402

TARGETS = ("llama-server", "llama-batched-bench")


def sources(workdir: Path) -> Path:
    src = workdir / "src"
    if (src / "CMakeLists.txt").is_file():
        return src
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(workdir)], check=True)
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(next(workdir.glob("llama_cpp_python-*.tar.gz"))) as tar:
        tmp = Path(tempfile.mkdtemp(dir=workdir))
        tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name.startswith(prefix)], filter="data")
    (tmp / prefix).rename(src)
    shutil.rmtree(tmp)
    return src


def build(workdir: Path, src: Path, name: str, library: bool) -> Path:
    out = workdir / name
    if all((out / "bin" / t).is_file() for t in TARGETS):
        return out
    include = workdir / f"{name}.cmake"
    include.write_text(opt_levels_cmake(library=library))
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(workdir)}
    subprocess.run(["cmake", "-S", str(src), "-B", str(out), "-G", "Ninja", *CMAKE_FLAGS,
                    f"-DCMAKE_PROJECT_INCLUDE={include}"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", str(out), "-j", str(os.cpu_count() or 1), *TARGETS], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def compile_seconds(folder: Path) -> dict[str, float]:
    """CPU seconds per target (its object folder) from ninja's log."""
    per: dict[str, float] = defaultdict(float)
    for line in (folder / ".ninja_log").read_text().splitlines()[1:]:
        start, end, _, output, _ = line.split("\t")
        key = output.split(".dir/")[0].rsplit("/", 1)[-1] if ".dir/" in output else "link/archive"
        per[key] += (int(end) - int(start)) / 1000
    return dict(per)


def batched_bench(binary: Path, model: Path) -> tuple[float, float]:
    cpu = str((os.cpu_count() or 1) - 1)
    # llama.cpp's logger writes from a thread and may drop the last row at exit: a third,
    # unused batch-1 run comes last
    out = subprocess.run(["taskset", "-c", cpu, str(binary), "-m", str(model), "-c", "8192", "-npp", "256",
                          "-ntg", "256", "-npl", "1,8,1", "-t", "1"], capture_output=True, text=True, check=True)
    speeds: dict[int, float] = {}
    for row in out.stdout.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            speeds.setdefault(int(cells[2]), float(cells[7]))  # S_TG t/s by batch size, first run
    if 1 not in speeds or 8 not in speeds:
        raise SystemExit(f"llama-batched-bench printed no speed for batch 1 or 8:\n{out.stdout[-500:]}")
    return speeds[1], speeds[8]


def paired(a: Path, b: Path, model: Path, pairs: int) -> str:
    ratios: dict[int, list[float]] = {1: [], 8: []}
    for i in range(pairs):
        if i % 2:
            sb = batched_bench(b, model)
            sa = batched_bench(a, model)
        else:
            sa = batched_bench(a, model)
            sb = batched_bench(b, model)
        for k, batch in enumerate((1, 8)):
            ratios[batch].append(sb[k] / sa[k])
    parts = []
    for batch, r in ratios.items():
        mean = sum(r) / len(r)
        sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
        slower = sum(x < 1 for x in r)
        parts.append(f"batch {batch}: ratio {mean:.3f} +- {1.96 * sd / math.sqrt(len(r)):.3f} "
                     f"(slower in {slower} of {len(r)})")
    return "; ".join(parts)


def http_run(binary: Path, out: Path) -> float:
    out.mkdir(parents=True)
    subprocess.run(["infermeter", "run", "--dataset-name", "random", "--random-input-len", "256",
                    "--random-output-len", "64", "--ignore-eos", "--num-prompts", "200", "--max-concurrency", "8",
                    "--disable-tqdm", "--save-result", "--result-dir", str(out)],
                   env={**os.environ, "INFERMETER_LLAMA_SERVER": str(binary)}, check=True,
                   stdout=subprocess.DEVNULL)
    result = json.loads(Path(glob.glob(str(out / "*.json"))[0]).read_text())
    return float(result["output_throughput"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="bench/engine-opt")
    ap.add_argument("--bench-pairs", type=int, default=80)
    ap.add_argument("--http-pairs", type=int, default=10)
    args = ap.parse_args()
    if args.bench_pairs < 0 or 0 < args.bench_pairs < 4:
        ap.error("--bench-pairs: 0 (skip) or at least 4 (its noise floor runs half as many pairs)")
    if args.http_pairs < 0:
        ap.error("--http-pairs: 0 (skip) or more")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    src = sources(workdir)
    light = build(workdir, src, "light", library=False)
    plan = build(workdir, src, "plan", library=True)

    print("compile CPU seconds per target (light -> plan):")
    cl, cp = compile_seconds(light), compile_seconds(plan)
    for key in sorted(set(cl) | set(cp), key=lambda k: -cl.get(k, 0)):
        if cl.get(key, 0) + cp.get(key, 0) >= 1:
            print(f"  {key:28s} {cl.get(key, 0):7.1f} -> {cp.get(key, 0):7.1f}")
    print(f"  {'total':28s} {sum(cl.values()):7.1f} -> {sum(cp.values()):7.1f}")

    from infermeter.embedded.models import ensure_model

    model = ensure_model("tiny").gguf
    bench_l, bench_p = light / "bin" / "llama-batched-bench", plan / "bin" / "llama-batched-bench"
    if args.bench_pairs:
        print(f"library speed, plan/light, {args.bench_pairs} pairs: {paired(bench_l, bench_p, model, args.bench_pairs)}")
        print(f"noise floor, light/light, {args.bench_pairs // 2} pairs: "
              f"{paired(bench_l, bench_l, model, args.bench_pairs // 2)}")
    if args.http_pairs:
        runs = Path(tempfile.mkdtemp(prefix="http-", dir=workdir))
        ratios = []
        for i in range(args.http_pairs):
            order = [("light", light), ("plan", plan)] if i % 2 == 0 else [("plan", plan), ("light", light)]
            speed = {name: http_run(folder / "bin" / "llama-server", runs / f"{name}{i}") for name, folder in order}
            ratios.append(speed["plan"] / speed["light"])
            print(f"  pair {i + 1}: light {speed['light']:.1f} plan {speed['plan']:.1f} output tok/s")
        mean = sum(ratios) / len(ratios)
        print(f"server speed, plan/light, README command 1's workload: mean ratio {mean:.3f}, "
              f"plan slower in {sum(r < 1 for r in ratios)} of {len(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
