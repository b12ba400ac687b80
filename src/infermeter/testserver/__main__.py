"""``python -m infermeter.testserver``: run the test server in this process.

Prints exactly one line on stdout, ``listening on http://HOST:PORT``, once
the socket accepts connections; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from .config import FAULT_MODES, FaultRule, TestServerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infermeter.testserver",
        description="Controllable streaming LLM test server (OpenAI + TGI protocols).",
    )
    a = p.add_argument
    a("--config-json", help="full TestServerConfig as JSON (or @FILE); flags override it")
    a("--host", help="bind address (default 127.0.0.1)")
    a("--port", type=int, help="port, 0 = any free one (default 0)")
    a("--model", help="served model name (default test-model)")
    a("--alias", action="append", dest="model_aliases", help="extra accepted model name")
    a("--max-model-len", type=int)
    a("--ttft-ms", type=float)
    a("--itl-ms", type=float)
    a("--ttft-per-prompt-token-us", type=float)
    a("--ttft-jitter-ms", type=float)
    a("--itl-jitter-ms", type=float)
    a("--seed", type=int)
    a("--default-max-tokens", type=int)
    a("--eos-after", type=int)
    a("--prompt-tokens-per-word", type=float)
    a("--no-role-chunk", dest="chat_role_chunk", action="store_const", const=False)
    a("--max-concurrency", type=int)
    a(
        "--fault",
        action="append",
        dest="faults",
        metavar="SPEC",
        help="fault rule 'MODE[; key=value]...' (repeatable); modes: "
        + ", ".join(FAULT_MODES)
        + ", http_NNN",
    )
    a("--fault-rate", type=float, help="default fraction for --fault rules without rate/every")
    a("--fault-every", type=int, help="default k for --fault rules without rate/every")
    a("--fault-after", type=int, help="default tokens before a point fault (2)")
    a("--stall-s", type=float)
    a("--delay-s", type=float)
    a("--oversized-bytes", type=int)
    a("--allow-die", action="store_const", const=True)
    a("--cpu", type=int, help="pin the process to this CPU core")
    a("--shared-port", type=int, help="also listen on this port with SO_REUSEPORT (several processes share it)")
    a("--no-uvloop", dest="use_uvloop", action="store_const", const=False)
    a("--backlog", type=int)
    a("--stats-keep-requests", type=int)
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TestServerConfig:
    ns = build_parser().parse_args(argv)
    base: dict = {}
    if ns.config_json:
        text = ns.config_json
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        base = json.loads(text)
    for key, value in vars(ns).items():
        if key == "config_json" or value is None:
            continue
        if key == "faults":
            value = [FaultRule.parse(s).model_dump(exclude_defaults=True) for s in value]
        base[key] = value
    return TestServerConfig.model_validate(base)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = config_from_args(argv)
    except ValueError as e:  # pydantic ValidationError is a ValueError
        print(f"infermeter.testserver: {e}", file=sys.stderr)
        return 2
    if config.cpu is not None:
        os.sched_setaffinity(0, {config.cpu})

    from .server import serve

    def ready(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"listening on http://{shown}:{port}\n")
        sys.stdout.flush()

    coro = serve(config, on_ready=ready)
    if config.use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
