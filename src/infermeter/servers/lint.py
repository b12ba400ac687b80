"""``infermeter lint``: check a dstack task/service file that launches an inference server.

Two passes.  dstack's own configuration models (when the ``dstack`` package is
installed) reject what ``dstack apply`` would reject.  Then checks dstack does not
make, each of which has silently broken a published benchmark:

* ``image``: missing, no tag, or a floating tag (``latest``, ``main``, ...);
* an AMD GPU (MI300X, ...) with an image that is not a ROCm build, or an NVIDIA GPU
  with a ROCm image;
* the server the commands start does not match the image (``vllm serve`` in the TGI image);
* a GPU server (vLLM, TGI, SGLang) that declares no GPU resources;
* the GPU count differs from the tensor parallelism the command asks for;
* the exposed port (``ports`` / ``port``) differs from the port the server listens on;
* environment variable names that are not ``[A-Za-z_][A-Za-z0-9_]*``;
* ``$NAME`` immediately followed by ``-`` (``$MAX-INPUT-TOKEN`` expands ``$MAX`` and then
  the text ``-INPUT-TOKEN``), ``${NAME-word}`` (a default-value expansion, not a variable
  called ``NAME-word``) and unterminated ``${``;
* secrets written as values (``HF_TOKEN=hf_...``) instead of listed by name.

Which server a command starts, its images, whether it needs GPUs and where it listens
come from each backend module's ``LintRules`` and ``Images`` (``infermeter.backends``).

Each finding is one line: ``FILE:LINE: error|warning: KEY: problem — fix``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infermeter.backends import Profile, get_profile, profiles
from infermeter.backends.settings import Vendor
from infermeter.secrets import ENV_NAME, TOKEN_RE, is_secret
from infermeter.servers.dstack_schema import gpu_request
from infermeter.servers.images import image_family, image_problem, is_cuda_only_image, is_rocm_image

_SHELL_VARS = {"HOME", "PATH", "PWD", "USER", "HOSTNAME", "SHELL", "LANG", "TMPDIR", "HF_HOME",
               "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "NODE_RANK"}
_DSTACK_VARS = re.compile(r"^DSTACK_[A-Z0-9_]+$")
_TOKEN_VALUE = TOKEN_RE


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    key: str
    severity: str  # "error" or "warning"
    problem: str
    fix: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.key}: {self.problem} — {self.fix}"


class _Lines:
    """Line numbers of YAML keys and list items (1-based), from the composed node tree."""

    def __init__(self, text: str) -> None:
        self.map: dict[tuple[Any, ...], int] = {}
        try:
            root = yaml.compose(text)
        except yaml.YAMLError:
            root = None
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: Any, path: tuple[Any, ...]) -> None:
        self.map.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (getattr(key, "value", None),)
                self.map[sub] = key.start_mark.line + 1
                self._walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.map[path + (i,)] = item.start_mark.line + 1
                self._walk(item, path + (i,))

    def line(self, *path: Any) -> int | None:
        path = tuple(path)
        while path:
            if path in self.map:
                return self.map[path]
            path = path[:-1]
        return self.map.get(())


def _key(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


@dataclass
class _Ctx:
    file: str
    lines: _Lines
    findings: list[Finding]

    def add(self, path: tuple[Any, ...], severity: str, problem: str, fix: str) -> None:
        finding = Finding(self.file, self.lines.line(*path), _key(path), severity, problem, fix)
        if finding not in self.findings:
            self.findings.append(finding)


def lint_file(path: str | Path, *, use_dstack: bool = True) -> list[Finding]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [Finding(str(path), None, "(file)", "error", f"cannot read it: {exc.strerror or exc}",
                        "give a readable .dstack.yml file")]
    except UnicodeDecodeError:
        return [Finding(str(path), None, "(file)", "error", "it is not UTF-8 text", "save it as UTF-8 YAML")]
    return lint_text(text, str(path), use_dstack=use_dstack)


def lint_text(text: str, file: str = "<text>", *, use_dstack: bool = True) -> list[Finding]:
    """All findings for one dstack configuration, errors and warnings, in file order."""
    ctx = _Ctx(file, _Lines(text), [])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        ctx.findings.append(Finding(file, mark.line + 1 if mark else None, "(file)", "error",
                                    f"not valid YAML: {getattr(exc, 'problem', None) or exc}", "fix the YAML syntax"))
        return ctx.findings
    if not isinstance(data, dict):
        ctx.add((), "error", "the file is not a YAML mapping", "write a dstack configuration (type: task ...)")
        return ctx.findings
    if use_dstack:
        _dstack_pass(ctx, data)
    kind = data.get("type")
    if kind not in ("task", "service"):
        if kind is None:
            ctx.add(("type",), "error", "no 'type'", "add 'type: task' or 'type: service'")
        return _sorted(ctx.findings)
    env = _env_pass(ctx, data)
    commands = _commands(data)
    _command_text_pass(ctx, data, env)
    server, argv = _server(commands)
    _image_pass(ctx, data, server)
    _gpu_pass(ctx, data, server, argv, env)
    _port_pass(ctx, data, server, argv, env)
    return _sorted(ctx.findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.line or 0, f.severity != "error"))


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


# -- dstack's own models -------------------------------------------------------------------


def _dstack_pass(ctx: _Ctx, data: dict[str, Any]) -> None:
    from infermeter.servers.dstack_schema import validate_with_dstack

    check = validate_with_dstack(data)
    if not check.available:
        return
    resolved: list[tuple[tuple[Any, ...], str]] = []
    for loc, msg in check.errors:
        path: list[Any] = []
        node: Any = data
        for part in loc:  # keep the parts that name real keys/items (skip union branch labels)
            if isinstance(node, dict) and part in node:
                path.append(part)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                path.append(part)
                node = node[part]
        resolved.append((tuple(path), msg))
    # a union (env: list or mapping) reports one error per branch: keep the most specific
    deepest: dict[Any, int] = {}
    for path, _ in resolved:
        top = path[0] if path else None
        deepest[top] = max(deepest.get(top, 0), len(path))
    for path, msg in resolved:
        if len(path) < deepest[path[0] if path else None]:
            continue
        shown = msg if len(msg) < 200 else msg[:200] + "..."
        ctx.add(path, "error", f"dstack {check.version} rejects it: {shown}",
                "fix the value to match dstack's configuration reference")


# -- env -------------------------------------------------------------------------------------


def _env_pass(ctx: _Ctx, data: dict[str, Any]) -> dict[str, str | None]:
    """Check env names/values; return {name: value or None (taken from the submitter)}."""
    raw = data.get("env")
    env: dict[str, str | None] = {}
    items: list[tuple[tuple[Any, ...], str, str | None]] = []
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            name, sep, value = str(item).partition("=")
            items.append((("env", i), name, value if sep else None))
    elif isinstance(raw, dict):
        for name, value in raw.items():
            items.append((("env", name), str(name), None if value is None else str(value)))
    for path, name, value in items:
        env[name] = value
        if not ENV_NAME.match(name):
            suggestion = re.sub(r"[^A-Za-z0-9_]", "_", name)
            if suggestion[:1].isdigit():
                suggestion = "_" + suggestion
            ctx.add(path, "error", f"{name!r} is not a valid environment variable name: a shell cannot reference it "
                    f"(names are [A-Za-z_][A-Za-z0-9_]*)", f"rename it to {suggestion} (and every $ reference to it)")
        elif value and is_secret(name, value):
            ctx.add(path, "error", f"{name} holds a secret value in the file",
                    f"list it by name only ('- {name}'); dstack takes the value from the submitting shell")
        elif value and _TOKEN_VALUE.search(value):
            ctx.add(path, "error", f"{name} holds what looks like an access token",
                    "pass secrets by name only (env: [NAME]) and keep values out of files")
    return env


# -- commands ------------------------------------------------------------------------------


def _commands(data: dict[str, Any]) -> list[str]:
    raw = data.get("commands") or []
    if isinstance(raw, str):
        raw = [raw]
    return [str(c) for c in raw if c is not None]


_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)(?P<close>\}?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<after>[^\s\"'/:=,;|&)}]*))")


def _command_text_pass(ctx: _Ctx, data: dict[str, Any], env: dict[str, str | None]) -> None:
    commands = data.get("commands") or []
    if isinstance(commands, str):
        commands = [commands]
    for i, command in enumerate(commands):
        if command is None:
            continue
        text = str(command).replace("${{", "\x00\x00")  # dstack's own ${{ run.args }} templates
        path = ("commands", i)
        for m in _VAR.finditer(text):
            if m.group("braced") is not None:
                inner = m.group("braced")
                if not m.group("close"):
                    ctx.add(path, "error", f"'${{{inner}' is never closed", "close it: ${NAME}")
                    continue
                mm = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(.*)$", inner)
                if mm and mm.group(2).startswith("-") and re.fullmatch(r"-[A-Za-z0-9_-]+", mm.group(2)):
                    whole = inner
                    ctx.add(path, "error", f"'${{{inner}}}' is the value of ${mm.group(1)} or, if that is unset, the "
                            f"text '{mm.group(2)[1:]}': not a variable named {whole}",
                            f"use a valid name ({re.sub(r'[^A-Za-z0-9_]', '_', whole)}) in env and here")
                elif mm is None and not re.fullmatch(r"[#!]?[A-Za-z_0-9@*#?$!-]*(\[.*\])?", inner):
                    ctx.add(path, "warning", f"'${{{inner}}}' is not a plain variable reference",
                            "check the expansion does what you mean")
                continue
            name, after = m.group("name"), m.group("after") or ""
            dotted = re.match(r"\.[A-Za-z0-9_][A-Za-z0-9_.-]*", after)
            if dotted and name + dotted.group(0) in env:  # meant the (invalid) name NAME.x declared in env
                after = dotted.group(0)
                ctx.add(path, "error", f"'${name}{after}' expands ${name} followed by the text '{after}', not the "
                        f"variable {name + after!r} declared in env",
                        f"use a valid variable name (e.g. ${re.sub(r'[^A-Za-z0-9_]', '_', name + after)})")
                continue
            if after.startswith("-") and re.match(r"-[A-Za-z0-9_]", after):
                intended = name + after
                declared = intended in env
                ctx.add(path, "error",
                        f"'${intended}' expands ${name} followed by the text '{after}'"
                        + (f", not the variable {intended!r} declared in env" if declared else ""),
                        f"use a valid variable name (e.g. ${re.sub(r'[^A-Za-z0-9_]', '_', intended)}) "
                        f"declared in env, or write ${{{name}}}{after} if the text is meant")
                continue
            if name not in env and name not in _SHELL_VARS and not _DSTACK_VARS.match(name):
                ctx.add(path, "warning", f"${name} is not declared in env: it expands to an empty string "
                        "unless the image sets it", f"declare {name} in env (or drop the reference)")
        if _TOKEN_VALUE.search(text):
            ctx.add(path, "error", "the command holds what looks like an access token",
                    "pass secrets by env name only (env: [HF_TOKEN]) and reference $HF_TOKEN")


def _server(commands: list[str]) -> tuple[Profile | None, list[str]]:
    """Which server the commands start, and that command's argv (shell words)."""
    for command in commands:
        text = command.replace("\\\n", " ")
        for line in re.split(r"\n|&&|;|\|\|", text):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                words = line.split()
            words = [w[5:] if w.startswith("exec ") else w for w in words]
            while words and (words[0] in ("exec", "env", "nohup") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])):
                words = words[1:]
            if not words:
                continue
            profile = _program(words)
            if profile is not None:
                return profile, words
    return None, []


def _program(words: list[str]) -> Profile | None:
    for profile in profiles().values():
        if profile.spec.lint is not None and profile.spec.lint.starts(words):
            return profile
    return None


def _resolve(value: str | None, env: dict[str, str | None]) -> str | None:
    """A flag value with a ``$NAME``/``${NAME}`` reference replaced by its env value."""
    if value is None:
        return None
    m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value)
    if m:
        return env.get(m.group(1))
    return value


# -- image -----------------------------------------------------------------------------------


def _image_pass(ctx: _Ctx, data: dict[str, Any], server: Profile | None) -> None:
    image = data.get("image")
    name, count, vendor, declared = gpu_request(data)
    if not image:
        if vendor == "amd":
            ctx.add(("image",), "error", "no image on an AMD GPU: dstack's default image carries CUDA, not ROCm",
                    "set a pinned ROCm image (e.g. rocm/vllm:..., ...-rocm)")
        elif server is not None:
            ctx.add(("image",), "warning", f"no image: {server.title} is not in dstack's default image",
                    "set the server's pinned image")
        return
    image = str(image)
    problem = image_problem(image)
    if problem:
        ctx.add(("image",), "error", problem, "pin an explicit versioned tag (or a digest), e.g. "
                + (server.image(_vendor(vendor)) or "repo:1.2.3" if server else "repo:1.2.3"))
    if vendor == "amd" and not is_rocm_image(image):
        ctx.add(("image",), "error",
                f"{name or 'an AMD'} GPU with image {image!r}, which is not a ROCm build"
                + (" (it carries CUDA)" if is_cuda_only_image(image) else ""),
                "use the ROCm image, e.g. " + (server.image(_vendor("amd")) or "a ROCm build" if server else "a -rocm tag"))
    if vendor == "nvidia" and is_rocm_image(image):
        ctx.add(("image",), "error", f"{name or 'an NVIDIA'} GPU with the ROCm image {image!r}",
                "use the CUDA image, e.g. " + (server.image(_vendor("nvidia")) or "a CUDA build" if server else "a CUDA build"))
    if server is not None and server.spec.images is not None and server.spec.images.family:
        families = image_family(image)
        if families and server.name not in families:
            other = get_profile(families[0])
            ctx.add(("image",), "error", f"the commands start {server.title} but {image!r} is the {other.title} image",
                    f"use {server.title}'s image, e.g. {server.image(_vendor(vendor or 'nvidia')) or ''}".rstrip(", "))


def _vendor(name: str | None) -> Vendor:
    return Vendor.AMD if name == "amd" else Vendor.NVIDIA


# -- GPUs ------------------------------------------------------------------------------------


def _gpu_pass(ctx: _Ctx, data: dict[str, Any], server: Profile | None, argv: list[str],
              env: dict[str, str | None]) -> None:
    name, count, vendor, declared = gpu_request(data)
    if server is None:
        return
    rules = server.spec.lint
    gpu_path = ("resources", "gpu") if declared else ("resources",)
    if rules.needs_gpu and (not declared or not count):
        ctx.add(gpu_path, "error", f"{server.title} needs GPUs but the file declares none "
                "(dstack may place it on a CPU-only instance)",
                "add resources: gpu: NAME:COUNT (e.g. MI300X:8 or H100:8) matching the tensor parallelism")
        return
    if not server.tp_flags:  # llama.cpp / transformers serve: no tensor-parallel flag
        single = rules.single_gpu(argv) if rules.single_gpu else None
        if count and count > 1 and single is not None:
            why, alternative = single
            ctx.add(gpu_path, "warning", f"{count} GPUs requested but {server.title} uses one{why}",
                    f"request one GPU{alternative}")
        return
    tp_raw = server.flag_value(argv, server.tp_flags)
    tp = _resolve(tp_raw, env)
    if tp_raw is not None and tp is None:
        ctx.add(("commands",), "warning", f"the tensor parallelism {tp_raw} is not set in env", "declare it in env")
        return
    if tp is None:
        tp_val = 1
        if rules.shards_all_gpus and count and count > 1:
            return  # it shards across all visible GPUs without a tensor-parallel flag (TGI)
    else:
        try:
            tp_val = int(tp)
        except ValueError:
            ctx.add(("commands",), "warning", f"tensor parallelism {tp!r} is not a number", "give a number")
            return
    if declared and count and count != tp_val:
        flag = server.tp_flags[0] if server.tp_flags else "tensor parallelism"
        ctx.add(gpu_path, "error", f"{count} GPU(s) requested but {server.title} runs with {flag} {tp_val}",
                f"make them equal (gpu: {name or 'NAME'}:{tp_val}, or {flag} {count})")


# -- ports -----------------------------------------------------------------------------------


def _port_pass(ctx: _Ctx, data: dict[str, Any], server: Profile | None, argv: list[str],
               env: dict[str, str | None]) -> None:
    if server is None:
        return
    raw = server.flag_value(argv, server.port_flags)
    listen = _resolve(raw, env)
    if raw is not None and listen is None:
        return
    if listen is None:
        rule = server.spec.lint.listen_port
        listen = rule(env, str(data.get("image") or "")) if rule else server.default_port
    try:
        listen_port = int(str(listen))
    except ValueError:
        return
    exposed: list[tuple[tuple[Any, ...], int]] = []
    if data.get("type") == "service":
        port = data.get("port")
        if port is None:
            ctx.add(("port",), "error", "a service without 'port'", f"add port: {listen_port}")
        else:
            p = _container_port(port)
            if p is not None:
                exposed.append((("port",), p))
    else:
        for i, item in enumerate(data.get("ports") or []):
            p = _container_port(item)
            if p is not None:
                exposed.append((("ports", i), p))
        if not exposed:
            ctx.add(("ports",), "warning", f"no ports exposed: {server.title} listens on {listen_port}",
                    f"add ports: [{listen_port}] to reach it")
            return
    if exposed and all(p != listen_port for _, p in exposed):
        path, p = exposed[0]
        how = f"{listen_port} ({server.port_flags[0]} {raw})" if raw else f"its default {listen_port}"
        ctx.add(path, "error", f"exposes port {p} but {server.title} listens on {how}",
                f"expose {listen_port} or pass --port {p} to the server")


def _container_port(item: Any) -> int | None:
    if isinstance(item, int):
        return item
    if isinstance(item, dict):
        item = item.get("container_port")
        return item if isinstance(item, int) else None
    text = str(item)
    tail = text.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None
