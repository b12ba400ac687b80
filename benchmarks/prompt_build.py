"""What building prompts costs: microseconds per prompt for ``prompt_builder(...).at(...)``
and the request body, by dataset and length, with the project's generated tokenizer.

    python benchmarks/prompt_build.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    from infermeter.clients.protocols import make_protocol
    from infermeter.core.protocol import RequestOptions
    from infermeter.embedded.tokenizer import ensure_tokenizer
    from infermeter.workloads import prompt_builder
    from infermeter.workloads.specs import RandomSpec, SonnetSpec
    from infermeter.workloads.tokenizer import load_tokenizer

    tok = load_tokenizer(str(ensure_tokenizer()[0]))
    protocol = make_protocol("openai-completions", "/v1/completions")
    options = RequestOptions(model="m", ignore_eos=True)
    n = 5000
    for name, spec in [("random 8", RandomSpec(input_len=8, output_len=4)),
                       ("random 1024", RandomSpec(input_len=1024, output_len=128)),
                       ("sonnet 550", SonnetSpec())]:
        builder = prompt_builder(spec, tok, 10_000_000, 0, False)
        builder.at(range(100))
        t = time.perf_counter()
        prompts = builder.at(range(1000, 1000 + n))
        build = time.perf_counter() - t
        t = time.perf_counter()
        for p in prompts:
            protocol.build_body(p, options)
        body = time.perf_counter() - t
        print(f"{name:>12}: {build / n * 1e6:8.1f} us per prompt, {body / n * 1e6:5.1f} us per body")
    return 0


if __name__ == "__main__":
    sys.exit(main())
