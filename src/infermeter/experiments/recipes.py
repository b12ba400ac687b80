"""Built-in experiments: ordinary spec files shipped in ``infermeter/experiments/recipes/``.

``infermeter recipes`` lists them, ``infermeter recipes show NAME`` prints one (copy,
edit, run with ``infermeter sweep FILE``), ``infermeter sweep --recipe NAME`` runs one,
optionally against the user's servers (``--target NAME=URL``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from infermeter.backends import find_backend
from infermeter.errors import UserError
from infermeter.experiments.spec import NAME_RE, ExperimentSpec
from infermeter.experiments.specfile import parse_yaml, spec_from_data

_PACKAGE = "infermeter.experiments"
_FOLDER = "recipes"
TARGET_KEYS = ("backend", "model", "tokenizer", "endpoint", "served_model_name", "api_key_env")


def _files():
    return resources.files(_PACKAGE).joinpath(_FOLDER)


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in _files().iterdir() if p.name.endswith(".yaml"))


def recipe_text(name: str) -> str:
    names = recipe_names()
    if name not in names:
        raise UserError(f"no recipe named {name!r}", f"use one of: {', '.join(names)} (see 'infermeter recipes')")
    return _files().joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def list_recipes() -> list[tuple[str, str]]:
    """(name, description) of every built-in recipe."""
    out = []
    for name in recipe_names():
        data = parse_yaml(recipe_text(name), f"recipe {name}")
        out.append((name, str(data.get("description", "")) if isinstance(data, dict) else ""))
    return out


def recipe_data(name: str) -> dict[str, Any]:
    data = parse_yaml(recipe_text(name), f"recipe {name}")
    assert isinstance(data, dict)
    return data


def load_recipe(name: str, *, targets: list[str] | None = None, model: str | None = None,
                tokenizer: str | None = None, output_dir: str | None = None,
                sets: list[str] | None = None) -> ExperimentSpec:
    data = recipe_data(name)
    apply_overrides(data, targets=targets, model=model, tokenizer=tokenizer, output_dir=output_dir, sets=sets)
    return spec_from_data(data, f"recipe {name}")


def apply_overrides(data: dict[str, Any], *, targets: list[str] | None = None, model: str | None = None,
                    tokenizer: str | None = None, output_dir: str | None = None,
                    sets: list[str] | None = None) -> None:
    """``--target`` replaces the spec's targets; ``--model``/``--tokenizer`` fill URL targets that name none;
    ``--set`` replaces keys (after ``--target``, so it can reach the new targets too)."""
    if targets:
        data["targets"] = dict(parse_target(t) for t in targets)
    if model or tokenizer:
        for t in (data.get("targets") or {}).values():
            if isinstance(t, dict) and "url" in t:
                if model and not t.get("model"):
                    t["model"] = model
                if tokenizer and not t.get("tokenizer"):
                    t["tokenizer"] = tokenizer
    if output_dir:
        data["output_dir"] = output_dir
    apply_sets(data, sets or [])


def parse_target(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=URL[,backend=B][,model=M][,tokenizer=T][,endpoint=E]`` -> (name, target mapping), or
    ``NAME=launch:PROFILE,model=M[,SETTING=VALUE...]``: a server infermeter starts (``launch:``).

    Without ``backend=``, a NAME that is a backend (vllm, tgi, sglang, ...) is the backend; else vllm.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise UserError(f"--target {text!r} is not NAME=URL", "write e.g. --target vllm=http://127.0.0.1:8000")
    if not NAME_RE.match(name):
        raise UserError(f"--target name {name!r} is not a plain name", "use letters, digits, '-' and '_'")
    url, *extras = [p.strip() for p in rest.split(",")]
    if url.startswith("launch:"):
        return name, _launch_target(name, url[len("launch:"):], extras)
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--target {name}={url!r} has no http:// or https:// scheme",
                        f"write it as --target {name}=http://HOST:PORT (or {name}=launch:PROFILE,model=M)")
    target: dict[str, Any] = {"url": url}
    for extra in extras:
        key, sep, value = extra.partition("=")
        key = key.strip()
        if not sep or key not in TARGET_KEYS:
            raise UserError(f"--target {name}: {extra!r} is not one of {', '.join(k + '=...' for k in TARGET_KEYS)}",
                            f"write e.g. --target {name}=http://HOST:PORT,backend=tgi")
        target[key] = value.strip()
    if "backend" not in target:
        spec = find_backend(name)
        target["backend"] = spec.name if spec is not None else "vllm"
    return name, target


LAUNCH_KEYS = ("vendor", "executable", "startup_timeout_s")


def _launch_target(name: str, profile: str, extras: list[str]) -> dict[str, Any]:
    """``launch:PROFILE,model=M,max_batch=8,...``: launch keys and ServerSettings, values read as YAML."""
    from infermeter.backends.settings import ServerSettings

    launch: dict[str, Any] = {"profile": profile.strip(), "settings": {}}
    for extra in extras:
        key, sep, value = extra.partition("=")
        key = key.strip()
        if not sep or (key not in LAUNCH_KEYS and key not in ServerSettings.model_fields):
            raise UserError(f"--target {name}: {extra!r} is not a launch setting",
                            f"use model=..., a server setting ({', '.join(list(ServerSettings.model_fields)[:8])}, "
                            f"...) or {', '.join(LAUNCH_KEYS)}")
        parsed = parse_yaml(value.strip(), f"--target {name} {key}")
        (launch if key in LAUNCH_KEYS else launch["settings"])[key] = (
            value.strip() if key in ("model", "executable", "tokenizer", "served_model_name") else parsed)
    if "model" not in launch["settings"]:
        raise UserError(f"--target {name}=launch:{profile} names no model",
                        f"add model=..., e.g. --target {name}=launch:{profile},model=Qwen/Qwen3-0.6B")
    return {"launch": launch}


def apply_sets(data: dict[str, Any], sets: list[str]) -> None:
    """``--set PATH=VALUE``: replace one key of the spec (``load.burst=[1,2,4]``, ``repeats=3``);
    VALUE is read as YAML, PATH is dotted (``workloads.sonnet80.sonnet_input_len``)."""
    for item in sets:
        path, sep, value = item.partition("=")
        keys = [k.strip() for k in path.split(".")]
        if not sep or not all(keys):
            raise UserError(f"--set {item!r} is not PATH=VALUE", "write e.g. --set load.burst=[1,2,4]")
        node: Any = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key) if isinstance(node, dict) else None
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {path}: {'.'.join(keys[:i + 1])} is not a mapping",
                                "give the path of a key inside the spec (see 'infermeter recipes show NAME')")
            node = child
        node[keys[-1]] = parse_yaml(value, f"--set {path}")
