"""The client side on a fleet: a multi-node dstack task that runs the load as N shards.

When one client machine cannot drive a cluster, the load runs as N shards,
one per node (docs/scale-out.md).  This renders the dstack task: ``nodes: N``,
each node running ``infermeter node`` with the run's arguments; the nodes take
their slice of the one global schedule from dstack's ``DSTACK_NODE_RANK`` and
``DSTACK_NODES_NUM``, meet at the master node (``DSTACK_MASTER_NODE_IP``) at a
start barrier, and send their records there, where rank 0 merges them into
one result (runner/nodes.py).
"""

from __future__ import annotations

import shlex
from typing import Any, Sequence

import yaml

from infermeter.errors import UserError
from infermeter.servers.dstack import RUN_NAME

DEFAULT_IMAGE = "python:3.11-slim-bookworm"
ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_OWNED_FLAGS = ("--shard", "--start-at", "--save-result", "--result-dir", "--result-filename", "--workers")


def load_task_config(run_args: Sequence[str], nodes: int, *, name: str = "infermeter-load", image: str = DEFAULT_IMAGE,
                     install: str = "infermeter", cpu: str = "8..", env_names: Sequence[str] = (),
                     result_dir: str = "/results", user: str | None = None) -> dict[str, Any]:
    """A dstack task dict (YAML-ready) running ``infermeter run RUN_ARGS`` as ``nodes`` shards."""
    if nodes < 1:
        raise UserError(f"--nodes {nodes} must be at least 1", "give the number of client machines")
    if not RUN_NAME.match(name):
        raise UserError(f"dstack run name {name!r} is not valid",
                        "use lowercase letters, digits and '-', starting with a letter (2-41 characters)")
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
        raise UserError(f"image {image!r} has no pinned tag", "pin a versioned tag, e.g. python:3.11-slim-bookworm")
    for arg in run_args:
        if arg.split("=", 1)[0] in _OWNED_FLAGS:
            raise UserError(f"{arg.split('=', 1)[0]} is set per node by the rendered task",
                            "leave it out of the run arguments")
    for env in env_names:
        if not env or env[0].isdigit() or set(env) - ENV_NAME_CHARS:
            raise UserError(f"--env {env!r} is not a valid environment variable name",
                            "use letters, digits and '_' (not starting with a digit)")
    run = " ".join(shlex.quote(a) for a in run_args)
    commands = [
        f"pip install --no-cache-dir {shlex.quote(install)}",
        f"mkdir -p {shlex.quote(result_dir)}",
        f"infermeter node {run} --save-result --result-dir {shlex.quote(result_dir)} --disable-tqdm",
    ]
    conf: dict[str, Any] = {"type": "task", "name": name, "nodes": nodes, "image": image}
    if user:  # with it (and an architecture in 'cpu') dstack needs no image metadata from the registry
        conf["user"] = user
    if env_names:
        conf["env"] = list(env_names)  # names only: values come from the user's environment
    conf["commands"] = commands
    conf["resources"] = {"cpu": cpu, "gpu": 0}
    return conf


def render_load_task(run_args: Sequence[str], nodes: int, **kw: Any) -> str:
    from infermeter import __version__

    conf = load_task_config(run_args, nodes, **kw)
    head = (f"# rendered by infermeter {__version__}: the load as {nodes} shards that meet at the master node,\n"
            f"# start together and send their records to it; it merges them into {kw.get('result_dir', '/results')}"
            "/merged.json\n")
    return head + yaml.safe_dump(conf, sort_keys=False, width=10_000)
