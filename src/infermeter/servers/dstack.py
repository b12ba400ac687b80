"""dstack task and service files for a launch profile, checked by dstack's own models,
and the submit / poll / logs / stop path through the ``dstack`` CLI.

Rendered files pin the image per vendor (ROCm images on AMD), ask for exactly
``tensor_parallel`` GPUs of the named model (``MI300X:8``), expose the port the server
listens on, pass every setting explicitly in ``commands``, and list secrets by NAME
only (``env: [HF_TOKEN]``: dstack takes the value from the submitting shell).

Validation uses the optional ``dstack`` package (``pip install 'infermeter[dstack]'``):
``TaskConfiguration`` / ``ServiceConfiguration`` from
``dstack._internal.core.models.configurations`` — the models ``dstack apply`` parses
files with — then ``infermeter.servers.lint`` adds the checks dstack does not make.

The CLI path (checked against dstack 0.22): ``dstack apply -f FILE -y -d`` submits and
detaches; ``dstack run get NAME --json`` reports ``status`` (pending, submitted,
provisioning, running, terminating, terminated, failed, done), ``termination_reason``
and, per job submission, ``termination_reason_message``; ``dstack attach NAME`` forwards
a task's ports to localhost; ``dstack logs NAME``; ``dstack stop NAME -y``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from infermeter.backends import Profile
from infermeter.backends.settings import ServerSettings, Vendor
from infermeter.errors import UserError, safe_text
from infermeter.servers.dstack_schema import dstack_version
from infermeter.servers.images import default_image, image_problem

DEFAULT_GPU = {Vendor.NVIDIA: "H100", Vendor.AMD: "MI300X"}
RUN_NAME = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
FINISHED = {"terminated", "failed", "done"}


def dstack_config(profile: Profile, settings: ServerSettings, vendor: Vendor | str, *,
                  kind: str = "task", name: str | None = None, image: str | None = None,
                  gpu: str | None = None, cpu: str | None = None, disk: str | None = None,
                  shm_size: str | None = "16GB", user: str | None = None) -> dict[str, Any]:
    """A dstack ``task`` or ``service`` configuration (a dict, YAML-ready)."""
    vendor = Vendor(vendor)
    if kind not in ("task", "service"):
        raise UserError(f"dstack configuration kind {kind!r} is not supported", "use task or service")
    image = image or default_image(profile.name, vendor)
    problem = image_problem(image)
    if problem:
        raise UserError(problem, "pin an explicit versioned tag (or a digest)")
    name = name or f"{profile.name.replace('.', '')}-{vendor.value}"
    if not RUN_NAME.match(name):
        raise UserError(f"dstack run name {name!r} is not valid",
                        "use lowercase letters, digits and '-', starting with a letter (2-41 characters)")
    cmd = profile.command(settings, vendor, host="0.0.0.0", container=True)
    env: list[str] = [*cmd.secrets, *(f"{k}={v}" for k, v in cmd.env.items())]
    if "MODEL_ID" not in cmd.env and "MODEL_ID" not in cmd.secrets:  # as the write-up's task files name it
        env.append(f"MODEL_ID={model_id(profile, settings, container=True)}")
    conf: dict[str, Any] = {"type": kind, "name": name, "image": image}
    if user:
        conf["user"] = user
    if env:
        conf["env"] = env
    conf["commands"] = cmd.script()
    if kind == "task":
        conf["ports"] = [settings.port]
    else:
        conf["port"] = settings.port
        conf["model"] = settings.name
    resources: dict[str, Any] = {}
    if cpu:
        resources["cpu"] = cpu
    if vendor is Vendor.CPU:
        resources["gpu"] = 0
    else:
        resources["gpu"] = f"{gpu or DEFAULT_GPU[vendor]}:{settings.tensor_parallel}"
        if shm_size:
            resources["shm_size"] = shm_size
    if disk:
        resources["disk"] = disk
    conf["resources"] = resources
    return conf


def model_id(profile: Profile, settings: ServerSettings, *, container: bool = False) -> str:
    """The model the server loads, as its command names it (a llama.cpp GGUF file by its path in the container)."""
    if container and profile.launch.model_dir and (settings.model.endswith(".gguf") or Path(settings.model).is_file()):
        return f"{profile.launch.model_dir}/{Path(settings.model).name}"
    return settings.model


def render_dstack(profile: Profile, settings: ServerSettings, vendor: Vendor | str, **kw: Any) -> str:
    """The configuration as a ``.dstack.yml`` file."""
    from infermeter import __version__

    conf = dstack_config(profile, settings, vendor, **kw)
    head = (f"# rendered by infermeter {__version__}: {profile.title} on {Vendor(vendor).value}"
            f" ({conf['type']}); secrets are listed by name only\n")
    return head + yaml.safe_dump(conf, sort_keys=False, width=10_000)


# -- the dstack CLI ------------------------------------------------------------------------


@dataclass
class RunState:
    name: str
    status: str
    reason: str | None = None
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def describe(self) -> str:
        parts = [f"dstack run {self.name} {self.status if self.finished else 'is ' + self.status}"]
        if self.reason:
            parts.append(f"({self.reason})")
        text = " ".join(parts)
        if self.message:
            text += f": {self.message}"
        return text


def parse_run(data: dict[str, Any], name: str = "") -> RunState:
    """A ``dstack run get NAME --json`` document as a RunState."""
    status = str(data.get("status") or "unknown")
    reason = data.get("termination_reason")
    message = None
    for job in data.get("jobs") or []:
        for sub in reversed(job.get("job_submissions") or []):
            msg = sub.get("termination_reason_message")
            jr = sub.get("termination_reason")
            if msg or jr:
                message = msg or None
                if jr:
                    reason = f"{reason}/{jr}" if reason and jr != reason else (reason or jr)
                break
        if message:
            break
    if not message:
        message = data.get("error") or None
    spec = data.get("run_spec") or {}
    return RunState(str(spec.get("run_name") or data.get("run_name") or name), status,
                    str(reason) if reason else None, str(message) if message else None, data)


class DstackRun:
    """Submit a dstack configuration, wait for it, read its logs, stop it.

    ``dstack`` is the CLI (``$PATH`` or ``dstack_bin``); ``env`` is the environment it
    runs with (e.g. ``HOME`` pointing at another ``~/.dstack/config.yml``)."""

    def __init__(self, config_path: str | Path, *, name: str | None = None, project: str | None = None,
                 dstack_bin: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> None:
        self.config_path = Path(config_path).resolve()
        if name is None:
            try:
                data = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise UserError(f"cannot read dstack file {str(self.config_path)!r}: {exc}",
                                "give a readable .dstack.yml") from None
            name = data.get("name") if isinstance(data, dict) else None
        if not name:
            raise UserError(f"{self.config_path} has no 'name'", "give the run a name: infermeter polls it by name")
        self.name = str(name)
        self.project = project
        self.dstack = dstack_bin or shutil.which("dstack") or ""
        if not self.dstack:
            raise UserError("the dstack CLI is not installed", "pip install 'infermeter[dstack]' (or 'dstack')")
        self.env = env
        self.timeout = timeout
        self.history: list[str] = []
        self._attach: subprocess.Popen[bytes] | None = None

    def _cli(self, *args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.dstack, *args]
        if self.project:
            argv[2:2] = ["--project", self.project] if args and args[0] in ("apply", "logs", "stop", "attach") else []
        try:
            # dstack apply wants the file inside its working directory: run next to it
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or self.timeout,
                                 env=self.env, stdin=subprocess.DEVNULL, check=False,
                                 cwd=self.config_path.parent)
        except subprocess.TimeoutExpired:
            raise UserError(f"'dstack {' '.join(args)}' did not finish within {timeout or self.timeout:.0f} s",
                            "check that the dstack server answers (dstack ps)") from None
        except OSError as exc:
            raise UserError(f"cannot run {self.dstack}: {exc.strerror or exc}",
                            "install the dstack CLI: pip install 'infermeter[dstack]'") from None
        if check and out.returncode != 0:
            tail = _error_text(out.stderr) or _error_text(out.stdout) or f"exit status {out.returncode}"
            missing = re.search(r"Environment variable (\w+) is not set", tail)
            fix = (f"export {missing.group(1)} in this shell (secrets go to dstack by name, never in the file), "
                   f"or drop --secret {missing.group(1)}" if missing else
                   "fix the cause dstack names (server, project, configuration) and retry")
            raise UserError(f"'dstack {' '.join(args[:2])}' failed: {safe_text(tail, 300)}", fix)
        return out

    def apply(self) -> str:
        """``dstack apply -f FILE -y -d``: submit and detach.  Returns dstack's output."""
        out = self._cli("apply", "-f", self.config_path.name, "-y", "-d")
        return out.stdout

    def get(self) -> RunState:
        args = ["run", "get", self.name, "--json"]
        if self.project:
            args = ["run", "--project", self.project, "get", self.name, "--json"]
        out = self._cli(*args)
        try:
            data = json.loads(out.stdout)
        except ValueError:
            raise UserError(f"'dstack run get {self.name} --json' did not print JSON",
                            "check the dstack CLI version (0.19.26 or later has run get)") from None
        return parse_run(data, self.name)

    def wait(self, until: tuple[str, ...] = ("running",), timeout: float = 1800.0, interval: float = 2.0,
             log: Callable[[str], None] = lambda msg: None) -> RunState:
        """Poll until the run reaches a status in ``until`` or finishes; UserError when it
        fails, stops, or does not get there in time."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.get()
            if not self.history or self.history[-1] != state.status:
                self.history.append(state.status)
                log(f"dstack: {self.name} {state.status}")
            if state.status in until:
                return state
            if state.finished:
                raise UserError(safe_text(state.describe(), 500), _fix_for(state))
            if time.monotonic() > deadline:
                raise UserError(f"dstack run {self.name} is still {state.status} after {timeout:.0f} s",
                                f"see 'dstack ps' and 'dstack logs {self.name}'; raise the timeout if provisioning is slow")
            time.sleep(interval)

    def attach(self) -> None:
        """``dstack attach NAME``: forward the task's ports to localhost (background)."""
        args = [self.dstack, "attach", self.name]
        if self.project:
            args[2:2] = ["--project", self.project]
        self._attach = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=self.env, start_new_session=True,
                                        cwd=self.config_path.parent)

    def logs(self, timeout: float = 60.0) -> str:
        return self._cli("logs", self.name, timeout=timeout, check=False).stdout

    def stop(self) -> None:
        if self._attach is not None and self._attach.poll() is None:
            try:
                os.killpg(self._attach.pid, signal.SIGTERM)
                self._attach.wait(timeout=10)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        self._attach = None
        self._cli("stop", self.name, "-y", check=False)


def _fix_for(state: RunState) -> str:
    text = f"{state.reason or ''} {state.message or ''}".lower()
    if "no matching fleet" in text or "no_capacity" in text or "no fleets" in text:
        return "create a fleet with matching resources (dstack apply -f fleet.dstack.yml) or relax 'resources'"
    if "stopped_by_user" in text or "aborted" in text:
        return "it was stopped; apply it again"
    return f"see 'dstack logs {state.name}' and 'dstack run get {state.name} --json'"


def _error_text(text: str | None) -> str:
    """The informative part of dstack's error output (pydantic errors: the summary, the
    field and the message, without the "further information" links)."""
    lines = [ln.strip() for ln in (text or "").splitlines()
             if ln.strip() and not ln.strip().startswith("For further information")]
    for i, line in enumerate(lines):
        if "validation error" in line:
            return " | ".join(lines[i:i + 5])
    return lines[-1] if lines else ""


class DstackServer:
    """A server under test as a dstack run; a context manager like ``LocalServer``.

    ``start()`` renders the configuration, lints it (errors stop here), submits it
    (``dstack apply -f FILE -y -d``), polls ``dstack run get NAME --json`` until it runs
    (a failed or stopped run raises ``UserError`` with dstack's own reason), then, for a
    task, forwards its port with ``dstack attach`` and waits until the server answers on
    localhost.  ``stop()`` saves ``dstack logs NAME`` next to the configuration and runs
    ``dstack stop NAME -y``."""

    where = "dstack"

    def __init__(self, profile: Profile, settings: ServerSettings, vendor: Vendor | str, *, kind: str = "task",
                 workdir: str | Path | None = None, project: str | None = None, dstack_bin: str | None = None,
                 env: dict[str, str] | None = None, startup_timeout: float = 3600.0, poll_interval: float = 2.0,
                 log: Callable[[str], None] = lambda msg: None, **render: Any) -> None:
        self.profile = profile
        self.settings = settings
        self.vendor = Vendor(vendor)
        self.kind = kind
        self.config = dstack_config(profile, settings, self.vendor, kind=kind, **render)
        self.image = self.config["image"]
        self.name = self.config["name"]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="infermeter-dstack-"))
        self.config_path = self.workdir / f"{self.name}.dstack.yml"
        self.log_path = self.workdir / f"{self.name}.log"
        self.project = project
        self.dstack_bin = dstack_bin
        self.env = env
        self.startup_timeout = startup_timeout
        self.poll_interval = poll_interval
        self.log = log
        self.run: DstackRun | None = None
        self.state: RunState | None = None
        self.command = profile.command(settings, self.vendor, host="0.0.0.0", container=True)
        self.started_at: float | None = None
        self.ready_after_s: float | None = None

    @property
    def base_url(self) -> str:
        if self.kind == "service" and self.state is not None:
            url = ((self.state.raw.get("service") or {}).get("url")) or ""
            if url:
                return str(url).rstrip("/")
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def model_name(self) -> str:
        return self.profile.served_name(self.settings)

    @property
    def running(self) -> bool:
        return self.state is not None and self.state.status == "running"

    def __enter__(self) -> "DstackServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "DstackServer":
        from infermeter.servers.lint import has_errors, lint_text

        self.workdir.mkdir(parents=True, exist_ok=True)
        text = render_dstack(self.profile, self.settings, self.vendor, kind=self.kind,
                             **{k: v for k, v in self._render_kw().items() if v is not None})
        findings = lint_text(text, str(self.config_path))
        if has_errors(findings):
            raise UserError(f"the rendered dstack file fails its own checks: {findings[0].format()}",
                            "report this as a bug (or adjust --image/--gpu)")
        self.config_path.write_text(text, encoding="utf-8")
        self.run = DstackRun(self.config_path, name=self.name, project=self.project, dstack_bin=self.dstack_bin,
                             env=self.env)
        self.started_at = time.time()
        t0 = time.monotonic()
        try:
            self.log(f"dstack apply -f {self.config_path} -y -d")
            self.run.apply()
            self.state = self.run.wait(("running",), timeout=self.startup_timeout, interval=self.poll_interval,
                                       log=self.log)
            if self.kind == "task":
                self.run.attach()
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - t0
        return self

    def _render_kw(self) -> dict[str, Any]:
        conf = self.config
        res = conf.get("resources") or {}
        gpu = res.get("gpu")
        return {"name": conf.get("name"), "image": conf.get("image"), "user": conf.get("user"), "cpu": res.get("cpu"),
                "disk": res.get("disk"), "shm_size": res.get("shm_size"),
                "gpu": str(gpu).split(":")[0] if isinstance(gpu, str) else None}

    def _wait_ready(self, deadline: float) -> None:
        from infermeter.process import http_get

        if self.kind == "service":
            return  # the gateway/proxy answers only with the user's dstack token: dstack's probes gate readiness
        for path in self.profile.ready_paths:
            while True:
                status, _ = http_get(self.base_url + path, timeout=5.0)
                if status == 200:
                    break
                state = self.run.get() if self.run else None
                if state is not None and state.finished:
                    raise UserError(safe_text(state.describe(), 500), _fix_for(state))
                if time.monotonic() > deadline:
                    raise UserError(f"{self.profile.title} on dstack did not answer {path} in time",
                                    f"see 'dstack logs {self.name}'")
                time.sleep(self.poll_interval)

    def logs(self) -> str:
        return self.run.logs() if self.run is not None else ""

    def stop(self) -> None:
        if self.run is None:
            return
        try:
            text = self.run.logs()
            if text:
                self.log_path.write_text(text, encoding="utf-8")
        except UserError:
            pass
        self.run.stop()
        try:
            self.state = self.run.get()
        except UserError:
            pass

    def info(self) -> dict[str, Any] | None:
        from infermeter.process import http_get

        if not self.profile.info_path or not self.running:
            return None
        status, body = http_get(self.base_url + self.profile.info_path, timeout=10.0)
        try:
            data = json.loads(body) if status == 200 else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def version(self) -> str:
        from infermeter.servers.provenance import version_from_info

        return version_from_info(self.profile.name, self.info()) or "unknown"

    def gpu_info(self) -> dict[str, Any]:
        """The GPUs dstack provisioned, from the run's job provisioning data."""
        unknown = {"vendor": "unknown", "model": "unknown", "count": "unknown", "driver": "unknown",
                   "source": None}
        if self.state is None:
            return unknown
        sub = self.state.raw.get("latest_job_submission") or {}
        data = sub.get("job_provisioning_data") or {}
        gpus = (((data.get("instance_type") or {}).get("resources") or {}).get("gpus")) or []
        if not gpus:
            return unknown
        names = sorted({str(g.get("name")) for g in gpus})
        vendors = sorted({str(g.get("vendor") or "unknown") for g in gpus})
        return {"vendor": ", ".join(vendors), "model": ", ".join(names), "count": len(gpus), "driver": "unknown",
                "memory_mib": [g.get("memory_mib") for g in gpus], "source": "dstack run get",
                "backend": data.get("backend"), "region": data.get("region")}

    def provenance(self) -> dict[str, Any]:
        from infermeter.servers.provenance import provenance

        record = provenance(self)
        record["dstack"] = {"config": str(self.config_path), "run": self.name, "kind": self.kind,
                            "status_history": list(self.run.history) if self.run else [],
                            "dstack_version": dstack_version()}
        if self.state is not None:  # the offer it runs on: the price for --dstack-run (docs/cost.md)
            from infermeter.servers.dstack_price import offer_of

            offer = offer_of(self.state.raw, self.name)
            record["dstack"]["price_per_hour"] = offer.price_per_hour
            record["dstack"]["price_note"] = offer.reason
        return record
